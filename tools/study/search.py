"""Search efficiency: how fast each proposer finds good mixers, per training and per CPU-hour.

    .venv/bin/python tools/study/search.py --methods mutator,random,llm --seeds 0,1,2 \
        --trainings 60 --out bench-out/search
    .venv/bin/python tools/study/search.py --config my-run.yaml --trainings 24 --out bench-out/s
    .venv/bin/python tools/study/search.py --summarize-only --out bench-out/search

For each method and seed it runs a whole search with `evolve.search.driver.Driver` in
`<out>/search-<method>-s<seed>/` (the run config of `--config`, default the embedded demo, with
search.seed = seed and search.max_candidates = --trainings): `mutator`, `independent` (the
mutator applied to the reference baseline alone: no archive, sampling or lessons) and `llm` set
search.proposer; `llm_independent` is the model's independent control (search.proposer
independent with search.independent_of llm: the researcher prompted with the reference baseline
alone, in the base config's llm.mode); `random` passes
`evolve.search.random_search.RandomProposer` to the driver. A method the driver refuses (e.g.
llm or llm_independent when no model answers) is recorded as an error and the study goes on.
Runs under one --out share the site's result cache for their baselines: a baseline trained
with the same seed in an earlier run is reused, not trained again (journaled `reused`, no
CPU-hours); proposals are never taken from the cache (a design another method's run trained
would cost this one nothing). Baseline cost is reported apart and left out of the curves;
--cpu-hours bounds each run's proposals (search.max_cpu_hours), so that the methods are
compared at equal compute. Rerunning resumes unfinished
runs and returns quickly from finished ones; a changed config (e.g. more --trainings) is
refused by the run unless --force.

Then it reads each run's journal (or, with --summarize-only and no run folder, the reading
committed under --record) and writes summary.json, summary.md and two plots
(best_vs_trainings.png, best_vs_cpu_hours.png): per method, the best whole-budget fitness at the
budget with its 95% t interval over search seeds, the loop against each control (paired over
the search seeds both ran), proposals evaluated per CPU-hour, and the CPU-hours until a proposal
beat the run's best baselines on bits per byte and on recall at once.

CPU-hours of a training = the journal's `cpu_hours`: the process CPU time of each of its jobs
(a screening rung and its continuation are two), as the job measured it (result.json `cpu_s`);
robust to a machine shared with other work, which wall time is not.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from evolve.search.run_config import (PROPOSERS, default_run_config, load_run_config,
                           run_config_from_dict)
from evolve.config.loading import to_dict
from evolve.search.fitness import diff_ci, mean_ci, mqar_accuracy
from evolve.state.fsio import read_json
from evolve.state.store import Store
from evolve.state.view import RunView

METHODS = ("mutator", "random", "independent", "llm", "llm_independent")
RUN_NAME = re.compile(r"^search-(?P<method>[a-z_]+)-s(?P<seed>\d+)$")
ERRORS_FILE = "errors.json"
"""Runs that raised, by run name: kept across reruns so that --summarize-only still knows."""


def run_name(method: str, seed: int) -> str:
    return f"search-{method}-s{seed}"


def run_config(base: Any, method: str, seed: int, trainings: int, out: Path,
               cpu_hours: float | None = None) -> Any:
    data = to_dict(base)
    data["name"] = run_name(method, seed)
    data["root"] = str(out)
    data["search"].update(seed=seed, max_candidates=trainings)
    if cpu_hours is not None:
        data["search"]["max_cpu_hours"] = cpu_hours
    # The random control's proposer is passed to the driver; run.yaml names it where the
    # config knows the value, else `mutator` (never `auto`, which would probe for a model).
    if method == "random" and "random" not in PROPOSERS:
        data["search"]["proposer"] = "mutator"
    elif method == "llm_independent":
        data["search"].update(proposer="independent", independent_of="llm")
    else:
        data["search"]["proposer"] = method
    return run_config_from_dict(data, source=f"{data['name']} (study config)")


def run_search(cfg: Any, method: str, seed: int, force: bool) -> str | None:
    """Run (or resume) one search; returns why the driver stopped ('complete' when done)."""
    from evolve.search.driver import Driver

    proposer = None
    if method == "random":
        from evolve.search.random_search import RandomProposer

        proposer = RandomProposer(random.Random(f"random-{seed}"))
    # Baselines come from the site's result cache (the same seed's runs share them); proposals
    # never do: a design another method's run already trained would cost this method nothing.
    driver = Driver(cfg, force=force, proposer=proposer, reuse_kinds=("baseline",))
    driver.run()
    return driver.stop_reason


# ---- reading a run ---------------------------------------------------------------------------


def read_run(run: Path) -> dict[str, Any]:
    """The run's proposal trainings in the order they were evaluated, with cost and best-so-far.

    An entry is a proposal's evaluation: at the whole budget (`scored`, its fitness), at a
    screening rung (`rung`, its rung fitness, bits per byte and recall; the best-so-far
    counts whole-budget fitness only) or a failure (`failed`, stopped early included).
    `cpu_hours` is the running total of the proposals' CPU time (the journal's cpu_hours: each
    job's process CPU time; a reused result costs nothing). The run's best baseline on each
    axis (lowest bits per byte, highest recall at fitness.mqar_pairs, over its seeds' mean) is
    the bar a proposal must clear on both at once."""
    view = RunView.open(run)
    store, state = view.store, view.state
    config = store.config()
    pairs = (config.get("fitness") or {}).get("mqar_pairs")

    def measured(result: dict[str, Any]) -> tuple[float | None, float | None]:
        """Bits per byte and MQAR accuracy at the run's fitness.mqar_pairs of an ok result
        (None for a track it did not train, as a rung of lm alone)."""
        if result.get("status") != "ok":
            return None, None
        metrics = result.get("metrics") or {}
        return metrics.get("bpb"), mqar_accuracy(metrics, pairs)

    def scores(cid: str) -> tuple[float | None, float | None]:
        """`measured` of a candidate's whole-budget result."""
        result = view.result(cid) or {}
        if float(result.get("budget_fraction", 1.0)) < 1.0:
            return None, None
        return measured(result)

    def rung_scores(cid: str, rung: float) -> tuple[float | None, float | None]:
        """`measured` of a proposal's rung result: what screening ranked it on."""
        return measured(read_json(store.candidate(cid).rung_result(rung), None) or {})

    proposals = {cid: view.proposal(cid) for cid in state.candidates}
    kinds = {cid: p.get("kind", "proposal") for cid, p in proposals.items()}
    trainings: list[dict[str, Any]] = []
    best, cpu_total = None, 0.0
    cost_by_kind: dict[str, float] = {}
    events = list(store.events())
    for ev in events:
        cid, name = ev.get("candidate"), ev.get("event")
        if cid not in state.candidates or name not in ("scored", "rung", "failed"):
            continue
        cost = float(ev.get("cpu_hours") or 0.0)
        cost_by_kind[kinds[cid]] = cost_by_kind.get(kinds[cid], 0.0) + cost
        if kinds[cid] != "proposal":
            continue
        cpu_total += cost
        entry: dict[str, Any] = {"id": cid, "event": name, "cpu_hours": round(cpu_total, 6)}
        if name == "scored":
            entry["fitness"] = ev.get("fitness")
            entry["bpb"], entry["mqar"] = scores(cid)
            if entry["fitness"] is not None and (best is None or entry["fitness"] > best):
                best = entry["fitness"]
        elif name == "rung":
            entry.update(rung=ev.get("rung"), rung_fitness=ev.get("rung_fitness"))
            entry["rung_bpb"], entry["rung_mqar"] = rung_scores(cid, float(ev.get("rung")))
        else:
            entry.update(stopped_early=bool(ev.get("stopped_early")),
                         error=str(ev.get("error", ""))[:200])
        entry["best"] = best
        trainings.append(entry)
    baselines: dict[str, list[tuple[float | None, float | None]]] = {}
    for cid, prop in proposals.items():
        # Baselines of the run's own training only (not those re-trained at a larger preset).
        if kinds[cid] == "baseline" and prop.get("preset") is None \
                and state.candidates[cid].fitness is not None:
            baselines.setdefault(prop.get("name"), []).append(scores(cid))
    bars = best_baselines(baselines)
    stops = [e.get("reason") for e in events if e.get("event") == "driver_stop"]
    proposed = sum(kind == "proposal" for kind in kinds.values())
    evaluated = [t for t in trainings if t["event"] in ("scored", "rung", "failed")]
    return {"run": run.name, "config": {"search": config.get("search"),
                                        "fitness": config.get("fitness")},
            "trainings": trainings, "best": best, "best_baselines": bars,
            "first_beat_both": first_beating_both(trainings, bars),
            "baseline_cpu_hours": round(cost_by_kind.get("baseline", 0.0), 6),
            "followup_cpu_hours": round(sum(v for k, v in cost_by_kind.items()
                                            if k not in ("proposal", "baseline")), 6),
            "proposal_cpu_hours": round(cpu_total, 6), "proposals": proposed,
            "proposals_evaluated": len({t["id"] for t in evaluated}),
            "rejected": sum(c.status == "rejected" for c in state.candidates.values()),
            "reused": sum(e.get("event") == "reused" for e in events),
            "versions": _versions(view),
            "stopped": stops[-1] if stops else None}


def _versions(view: RunView) -> dict[str, str]:
    """The library versions the run's trainings recorded (the first result that has them)."""
    for c in view.state.candidates.values():
        found = (view.result(c.id) or {}).get("versions")
        if found:
            return found
    return {}


def best_baselines(baselines: dict[str, list[tuple[float | None, float | None]]]
                   ) -> dict[str, Any]:
    """The best baseline on bits per byte (lowest seed mean) and on recall (highest), by name."""
    out: dict[str, Any] = {}
    for axis, index, pick in (("bpb", 0, min), ("mqar", 1, max)):
        means = {name: statistics.fmean(v[index] for v in vals if v[index] is not None)
                 for name, vals in baselines.items()
                 if any(v[index] is not None for v in vals)}
        if means:
            name = pick(means, key=means.get)
            out[axis] = {"baseline": name, "value": means[name]}
    return out


def first_beating_both(trainings: list[dict[str, Any]], bars: dict[str, Any]
                       ) -> dict[str, Any] | None:
    """The first proposal with lower bits per byte than the best baseline on bits per byte and
    higher recall than the best baseline on recall: its id, the count of evaluations and the
    CPU-hours until it (None: never, or the run has no such baselines)."""
    if "bpb" not in bars or "mqar" not in bars:
        return None
    for i, t in enumerate(trainings):
        if t.get("bpb") is not None and t.get("mqar") is not None \
                and t["bpb"] < bars["bpb"]["value"] and t["mqar"] > bars["mqar"]["value"]:
            return {"id": t["id"], "evaluations": i + 1, "cpu_hours": t["cpu_hours"]}
    return None


# ---- aggregating -----------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "n": len(values)} if values else {"mean": None, "min": None, "max": None, "n": 0}


def best_at_cost(run: dict[str, Any], cost: float) -> float | None:
    best = None
    for t in run["trainings"]:
        if t["cpu_hours"] > cost:
            break
        best = t["best"]
    return best


def interval(values: list[float]) -> dict[str, Any]:
    """Mean with its 95% t interval over search seeds, and the spread."""
    if not values:
        return {"mean": None, "ci95": None, "min": None, "max": None, "n": 0}
    mean, half = mean_ci(values)
    return {"mean": mean, "ci95": half, "min": min(values), "max": max(values),
            "n": len(values)}


def aggregate(runs: dict[int, dict[str, Any]], grid_points: int = 50) -> dict[str, Any]:
    """Per method: the best fitness at the budget with its 95% interval over search seeds, the
    CPU-hours until a proposal beat the best baselines on both axes, proposals evaluated per
    CPU-hour, and best-so-far on evaluation-count and CPU-hour grids (a seed whose run ended
    earlier is not extrapolated)."""
    longest = max((len(r["trainings"]) for r in runs.values()), default=0)
    by_count = []
    for k in range(1, longest + 1):
        vals = [r["trainings"][k - 1]["best"] for r in runs.values()
                if len(r["trainings"]) >= k and r["trainings"][k - 1]["best"] is not None]
        by_count.append({"trainings": k, **spread(vals)})
    top = max((r["trainings"][-1]["cpu_hours"] for r in runs.values() if r["trainings"]),
              default=0.0)
    by_cost = []
    for i in range(1, grid_points + 1):
        cost = top * i / grid_points
        vals = [b for r in runs.values() if r["trainings"]
                and r["trainings"][-1]["cpu_hours"] >= cost
                and (b := best_at_cost(r, cost)) is not None]
        by_cost.append({"cpu_hours": cost, **spread(vals)})
    firsts = {str(seed): r["first_beat_both"] for seed, r in runs.items()}
    rates = [r["proposals_evaluated"] / r["proposal_cpu_hours"] for r in runs.values()
             if r["proposal_cpu_hours"]]
    return {"seeds": sorted(runs),
            "final_best": interval([r["best"] for r in runs.values() if r["best"] is not None]),
            "final_best_by_seed": {str(seed): r["best"] for seed, r in runs.items()},
            "proposals_evaluated": spread([r["proposals_evaluated"] for r in runs.values()]),
            "proposals_per_cpu_hour": interval(rates),
            "cpu_hours": spread([r["proposal_cpu_hours"] for r in runs.values()]),
            "baseline_cpu_hours": spread([r["baseline_cpu_hours"] for r in runs.values()]),
            "first_beat_both": firsts,
            "beat_both": sum(v is not None for v in firsts.values()),
            "by_trainings": by_count, "by_cpu_hours": by_cost}


def versus(methods: dict[str, Any], loop: str, control: str) -> dict[str, Any] | None:
    """The loop's best fitness at the budget minus the control's, with its 95% interval: paired
    over the search seeds both ran (the same seeds share their baselines), else Welch's."""
    a, b = methods.get(loop), methods.get(control)
    if not a or not b:
        return None
    ra, rb = a["final_best_by_seed"], b["final_best_by_seed"]
    both = sorted(s for s in ra if s in rb and ra[s] is not None and rb[s] is not None)
    per_seed: dict[str, float] = {}
    if len(both) >= 2:
        diff, half = mean_ci([ra[s] - rb[s] for s in both])
        kind = f"paired over {len(both)} search seeds"
        per_seed = {s: ra[s] - rb[s] for s in both}
    else:
        va = [v for v in ra.values() if v is not None]
        vb = [v for v in rb.values() if v is not None]
        if len(va) < 2 or len(vb) < 2:
            return None
        diff, half = diff_ci(va, vb)
        kind = f"Welch, {len(va)} and {len(vb)} search seeds"
    verdict = ("the loop is better" if diff - half > 0 else "the control is better"
               if diff + half < 0 else "not distinguishable")
    return {"loop": loop, "control": control, "difference": diff, "ci95": half,
            "interval": kind, "per_seed": per_seed, "verdict": verdict}


# ---- writing ---------------------------------------------------------------------------------


def _f(x: Any, spec: str = "+.4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _spread(s: dict[str, Any], spec: str = "+.4f") -> str:
    if not s.get("n"):
        return "-"
    return f"{_f(s['mean'], spec)} [{_f(s['min'], spec)}, {_f(s['max'], spec)}]"


def markdown(methods: dict[str, Any], comparisons: list[dict[str, Any]],
             errors: dict[str, str]) -> str:
    head = ["method", "search seeds", "proposals evaluated", "proposals per CPU-h",
            "best fitness at the budget (95% CI)", "beat the best baselines on both axes",
            "CPU-h until then (per seed)", "CPU-h (proposals)", "CPU-h (baselines)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, agg in methods.items():
        fb, rate = agg["final_best"], agg["proposals_per_cpu_hour"]
        firsts = " ".join("-" if v is None else f"{v['cpu_hours']:.3f}"
                          for v in agg["first_beat_both"].values()) or "-"
        failed = sum(k.startswith(f"search-{method}-") for k in errors)
        seeds = f"{len(agg['seeds'])}" + (f" ({failed} failed)" if failed else "")
        lines.append("| " + " | ".join([
            method, seeds, _spread(agg["proposals_evaluated"], ".0f"),
            _f(rate["mean"], ".1f") + (f" ± {rate['ci95']:.1f}" if rate.get("ci95") is not None
                                       and not math.isnan(rate["ci95"]) else ""),
            _f(fb["mean"]) + (f" ± {fb['ci95']:.4f}" if fb.get("ci95") is not None
                              and not math.isnan(fb["ci95"]) else ""),
            f"{agg['beat_both']} of {len(agg['seeds'])}", firsts,
            _spread(agg["cpu_hours"], ".3f"), _spread(agg["baseline_cpu_hours"], ".3f")]) + " |")
    text = "\n".join(lines) + "\n"
    text += ("\nbest fitness = the best whole-budget fitness of a proposal when the run's CPU-hour "
             "budget was spent (0 = the reference baseline of the same run), mean ± the half-width "
             "of its 95% t interval over search seeds; 'beat the best baselines on both axes': a "
             "proposal with lower bits per byte than the run's best baseline on bits per byte and "
             "higher recall (at fitness.mqar_pairs) than its best baseline on recall, one seed "
             "each; CPU-hours are the proposals' process CPU time (baselines apart; a result "
             "reused from the site's cache costs nothing: only baselines are).\n")
    if comparisons:
        text += ("\n| loop | control | difference of best fitness | 95% CI | interval | "
                 "verdict |\n|---|---|---|---|---|---|\n")
        for c in comparisons:
            diffs = ", ".join(f"{d:+.3f}" for d in c.get("per_seed", {}).values())
            text += (f"| {c['loop']} | {c['control']} | {c['difference']:+.4f} | "
                     f"± {c['ci95']:.4f} | {c['interval']}{f' ({diffs})' if diffs else ''} | "
                     f"{c['verdict']} |\n")
    if errors:
        text += "\nErrors:\n" + "".join(f"- {k}: {v.splitlines()[0] if v else v}\n"
                                         for k, v in sorted(errors.items()))
    return text


def runs_markdown(runs: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Per run, its best whole-budget proposal (one training seed) and the bars it was held to."""
    lines = ["| run | best proposal | its bpb / MQAR (one seed) | fitness | proposals "
             "(gate-rejected) | the run's best baselines (bpb; MQAR) |", "|---|---|---|---|---|---|"]
    for method, by_seed in runs.items():
        for seed, r in sorted(by_seed.items()):
            scored = [t for t in r["trainings"] if t["event"] == "scored"
                      and t.get("fitness") is not None]
            if not scored:
                continue
            best = max(scored, key=lambda t: t["fitness"])
            bars = r["best_baselines"]
            lines.append(
                f"| {method}, seed {seed} | {best['id']} | {_f(best['bpb'], '.3f')} / "
                f"{_f(best['mqar'], '.3f')} | {best['fitness']:+.3f} | {r['proposals']} "
                f"({r['rejected']}) | {bars['bpb']['baseline']} {bars['bpb']['value']:.3f}; "
                f"{bars['mqar']['baseline']} {bars['mqar']['value']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(methods: dict[str, Any], runs: dict[str, dict[int, dict[str, Any]]],
         out: Path) -> list[Path]:
    # matplotlib's object API on the Agg canvas, as evolve.views.report does: no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    paths = []
    for key, xname, label, fname in (
            ("by_trainings", "trainings", "proposal trainings finished", "best_vs_trainings.png"),
            ("by_cpu_hours", "cpu_hours", "CPU-hours of proposal trainings",
             "best_vs_cpu_hours.png")):
        fig = Figure(figsize=(7, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for method, agg in methods.items():
            pts = [p for p in agg[key] if p["n"]]
            for r in runs[method].values():  # each seed as a faint step line
                xs = [i + 1 if key == "by_trainings" else t["cpu_hours"]
                      for i, t in enumerate(r["trainings"]) if t["best"] is not None]
                ys = [t["best"] for t in r["trainings"] if t["best"] is not None]
                if xs:
                    ax.step(xs, ys, where="post", color=colors[method], alpha=0.3, lw=0.8)
            if pts:
                xs = [p[xname] for p in pts]
                # Best-so-far is a step function: its mean and spread are drawn as steps too.
                ax.plot(xs, [p["mean"] for p in pts], color=colors[method], lw=2,
                        drawstyle="steps-post", label=f"{method} (mean of {len(agg['seeds'])})")
                ax.fill_between(xs, [p["min"] for p in pts], [p["max"] for p in pts],
                                color=colors[method], alpha=0.15, step="post")
        ax.axhline(0.0, color="k", lw=0.8, ls="--", label="reference baseline")
        if key == "by_trainings":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(label)
        ax.set_ylabel("best-so-far fitness")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        paths.append(out / fname)
    return paths


def collect(out: Path, record: Path | None, methods: list[str], seeds: list[int] | None,
            errors: dict[str, str]) -> dict[str, dict[int, dict[str, Any]]]:
    """Each run's reading: from its run folder under `out` when there is one (and then written
    to `record`), else from `record` alone (the committed study)."""
    runs: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in methods}
    names: dict[str, Path | None] = {}
    for folder in sorted(out.iterdir()) if out.exists() else []:
        if RUN_NAME.match(folder.name) and Store.is_run(folder):
            names[folder.name] = folder
    for path in sorted(record.glob("search-*.json")) if record and record.exists() else []:
        names.setdefault(path.stem, None)
    for name, folder in sorted(names.items()):
        match = RUN_NAME.match(name)
        if not match or name in errors:
            continue
        method, seed = match["method"], int(match["seed"])
        if method not in runs or (seeds is not None and seed not in seeds):
            continue
        if folder is not None:
            reading = read_run(folder)
            if reading["stopped"] != "complete":
                # A run stopped before its budget was spent (a signal, STOP): resumed by the
                # next study call; neither summarized nor recorded until then.
                print(f"{name}: not complete (stopped: {reading['stopped']}), left out",
                      file=sys.stderr)
                continue
            if record is not None:
                record.mkdir(parents=True, exist_ok=True)
                (record / f"{name}.json").write_text(json.dumps(reading, indent=1) + "\n")
        else:
            reading = json.loads((record / f"{name}.json").read_text())  # type: ignore[operator]
        runs[method][seed] = reading
    return runs


def _confirm_tool() -> Any:
    """tools/study/search_confirm.py: a sibling script, imported as a module (the folder of the
    script that runs is first on sys.path; tests/study_tools.py puts it there for the tests)."""
    import search_confirm

    return search_confirm


def confirm_table(runs: dict[str, dict[int, dict[str, Any]]], confirm: Path,
                  baseline_record: Path, seeds: int) -> dict[str, Any] | None:
    """The confirmation of each method's best (tools/study/search_confirm.py) with the fitness
    and baselines of the study's runs."""
    readings = [r for by_seed in runs.values() for r in by_seed.values()]
    if not readings:
        return None
    config = readings[0]["config"]
    return _confirm_tool().confirmation(confirm, baseline_record, config["fitness"] or {},
                                        list(config["search"]["baselines"]),
                                        list(range(seeds)))


def summarize(out: Path, methods: list[str], seeds: list[int] | None,
              record: Path | None = None, confirm: Path | None = None,
              baseline_record: Path | None = None, confirm_seeds: int = 5) -> dict[str, Any]:
    errors = read_json(out / ERRORS_FILE, {}) or {}
    runs = collect(out, record, methods, seeds, errors)
    # A method whose runs all failed keeps its row (with its errors under the table).
    aggregated = {m: aggregate(r) for m, r in runs.items()}
    # Each loop against the controls of the 2026 study: its own proposer without an archive
    # (the mutator's independent form, or the model's) and uniform random samples.
    pairs = (("mutator", "independent"), ("mutator", "random"), ("llm", "llm_independent"),
             ("llm", "independent"), ("llm", "random"))
    comparisons = [c for loop, control in pairs
                   if (c := versus(aggregated, loop, control)) is not None]
    text = markdown(aggregated, comparisons, errors) + "\n" + runs_markdown(runs)
    confirmed = None
    if confirm is not None and baseline_record is not None:
        confirmed = confirm_table(runs, confirm, baseline_record, confirm_seeds)
        if confirmed is not None:
            text += ("\nConfirmation of each method's best (tools/study/search_confirm.py):\n\n"
                     + _confirm_tool().markdown(confirmed))
    summary = {"cost_measure": "cpu_hours = the journal's cpu_hours (each job's process CPU "
                               "time), proposal trainings only",
               "methods": aggregated, "comparisons": comparisons, "errors": errors,
               "confirmation": confirmed,
               "runs": {run_name(m, s): r for m, rs in runs.items() for s, r in rs.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(text)
    plot(aggregated, runs, out)
    print(text)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1,2", help="search seeds, comma-separated")
    parser.add_argument("--trainings", type=int, default=60,
                        help="at most this many proposals per run (search.max_candidates)")
    parser.add_argument("--cpu-hours", type=float,
                        help="the budget of each run: its proposals' CPU-hours "
                             "(search.max_cpu_hours); the methods are compared at it")
    parser.add_argument("--config", help="run config (default: the embedded demo)")
    parser.add_argument("--out", default="bench-out/search")
    parser.add_argument("--record", type=Path,
                        help="folder for each run's reading (small JSON: commit it); "
                             "--summarize-only reads the runs from it when --out lacks them")
    parser.add_argument("--force", action="store_true",
                        help="let existing runs take a changed config (e.g. more --trainings)")
    parser.add_argument("--summarize-only", action="store_true")
    parser.add_argument("--export-best", type=Path, metavar="DIR",
                        help="write each method's best whole-budget design over --seeds to "
                             "DIR/<method>_best_s<seed>_<candidate>.py (from its run folder under --out) and print "
                             "the tools/study/proxy.py command that confirms them; trains nothing")
    parser.add_argument("--confirm", type=Path, metavar="DIR",
                        help="add the confirmation of each method's best to the summary, from "
                             "DIR (the --export-best folder, holding proxy.py's records)")
    parser.add_argument("--baseline-record", type=Path, default=Path("docs/results/proxy-study"),
                        help="tools/study/proxy.py's records of the baselines at the study "
                             "budget, which the confirmation compares with (default: %(default)s)")
    parser.add_argument("--confirm-seeds", type=int, default=5,
                        help="training seeds 0..N-1 of the confirmation (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if args.export_best is not None:
        errors = read_json(out / ERRORS_FILE, {}) or {}
        tool = _confirm_tool()
        runs = collect(out, args.record, methods, seeds, errors)
        paths = tool.export(tool.best_designs(runs), out, args.export_best)
        pairs = next((r["config"]["fitness"].get("mqar_pairs") for by_seed in runs.values()
                      for r in by_seed.values()), None)
        # The study's configs train at tools/study/study-budget.yaml's budget (say so there).
        print("wrote " + ", ".join(map(str, paths)) + "; confirm them with:\n"
              f"  .venv/bin/python tools/study/proxy.py --seeds {args.confirm_seeds} "
              f"--config tools/study/study-budget.yaml --train-pairs {pairs or 8} "
              f"--mixers {','.join(map(str, paths))} --out bench-out/search-confirm "
              f"--record {args.export_best}")
        return 0
    if not args.summarize_only:
        base = load_run_config(args.config) if args.config else default_run_config()
        out.mkdir(parents=True, exist_ok=True)
        signalled = None
        for seed in seeds:  # a seed at a time, every method: a part of the study is whole seeds
            for method in methods:
                if signalled:  # a stop asked of the study (SIGTERM, Slurm's pre-timeout signal)
                    break      # ends the study, not just the run it reached
                name = run_name(method, seed)
                t0 = time.time()
                errors = read_json(out / ERRORS_FILE, {}) or {}
                try:
                    reason = run_search(run_config(base, method, seed, args.trainings, out,
                                                   args.cpu_hours), method, seed, args.force)
                    errors.pop(name, None)
                    print(f"{name}: stopped ({reason}) after {time.time() - t0:.0f} s",
                          flush=True)
                    if str(reason).startswith("signal"):
                        signalled = reason
                except Exception as exc:  # a refused method must not stop the others
                    errors[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                    print(f"{name}: error: {type(exc).__name__}: {exc}", flush=True)
                (out / ERRORS_FILE).write_text(json.dumps(errors, indent=2))
                if args.record is not None:  # each finished run is committed-able at once
                    collect(out, args.record, [method], [seed], errors)
    summarize(out, methods, seeds, args.record, args.confirm, args.baseline_record,
              args.confirm_seeds)
    print(f"wrote {out / 'summary.json'}, {out / 'summary.md'} and the plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
