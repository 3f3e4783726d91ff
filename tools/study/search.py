"""Search efficiency: how fast each proposer finds good mixers, per training and per CPU-hour.

    .venv/bin/python tools/study/search.py --methods mutator,random,llm --seeds 0,1,2 \
        --trainings 60 --out bench-out/search
    .venv/bin/python tools/study/search.py --config my-run.yaml --trainings 24 --out bench-out/s
    .venv/bin/python tools/study/search.py --summarize-only --out bench-out/search

For each method and seed it runs a whole search with `evolve.search.driver.Driver` in
`<out>/search-<method>-s<seed>/` (the run config of `--config`, default the embedded demo, with
search.seed = seed and search.max_candidates = --trainings): `mutator`, `independent` (the
mutator applied to the reference baseline alone: no archive, sampling or lessons) and `llm` set
search.proposer, `random` passes `evolve.search.random_search.RandomProposer` to the driver. A method
the driver refuses (e.g. llm before it is wired in) is recorded as an error and the study goes
on. Runs under one --out share the site's result cache: a baseline (or a design) trained with the
same seed in an earlier run is reused, not trained again (journaled `reused`, no CPU-hours);
baseline cost is reported apart and left out of the curves. Rerunning resumes unfinished
runs and returns quickly from finished ones; a changed config (e.g. more --trainings) is
refused by the run unless --force.

Then it reads each run's journal and writes summary.json, summary.md and two plots
(best_vs_trainings.png, best_vs_cpu_hours.png): best-so-far fitness against the number of
finished proposal trainings (in the order they finished; a failed training counts and leaves
the best unchanged) and against CPU-hours, with the mean and min/max over seeds per method, and
the trainings each seed needed to first beat the reference baseline (fitness > 0) and, where
the run trained it, gated_deltanet.

CPU-hours of a training = result.json `wall_s` (from the start of the training job's work to
its result, evaluation included; the last life only if it was pre-empted) x torch threads
(train.runtime.num_threads, or launch.cpus_per_task when that is 0) / 3600; job.json's
`elapsed_s` when there is no result.json.
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
from evolve.search.fitness import mqar_accuracy
from evolve.state.fsio import read_json
from evolve.state.store import Store
from evolve.state.view import RunView

METHODS = ("mutator", "random", "independent", "llm")
RUN_NAME = re.compile(r"^search-(?P<method>[a-z_]+)-s(?P<seed>\d+)$")
ERRORS_FILE = "errors.json"
"""Runs that raised, by run name: kept across reruns so that --summarize-only still knows."""


def run_name(method: str, seed: int) -> str:
    return f"search-{method}-s{seed}"


def run_config(base: Any, method: str, seed: int, trainings: int, out: Path) -> Any:
    data = to_dict(base)
    data["name"] = run_name(method, seed)
    data["root"] = str(out)
    data["search"].update(seed=seed, max_candidates=trainings)
    # The random control's proposer is passed to the driver; run.yaml names it where the
    # config knows the value, else `mutator` (never `auto`, which would probe for a model).
    if method == "random" and "random" not in PROPOSERS:
        data["search"]["proposer"] = "mutator"
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
    driver = Driver(cfg, force=force, proposer=proposer)
    driver.run()
    return driver.stop_reason


# ---- reading a run ---------------------------------------------------------------------------


def read_run(run: Path) -> dict[str, Any]:
    """The run's proposal trainings in the order they finished, with cost and best-so-far."""
    view = RunView.open(run)
    store, state = view.store, view.state
    config = store.config()
    runtime = config.get("train", {}).get("runtime", {})
    threads = runtime.get("num_threads") or config.get("launch", {}).get("cpus_per_task") or 1

    def result_of(cid: str) -> dict[str, Any]:
        return view.result(cid) or {}

    def cpu_hours(cid: str) -> float:
        result = result_of(cid)
        seconds = result.get("wall_s")
        if seconds is None:
            seconds = (view.file(cid, "job") or {}).get("elapsed_s") or 0.0
        used = ((result.get("config") or {}).get("runtime") or {}).get("num_threads") or threads
        return float(seconds) * used / 3600.0

    pairs = (config.get("fitness") or {}).get("mqar_pairs")

    def scores(cid: str) -> tuple[float | None, float | None]:
        """Bits per byte and MQAR accuracy at the run's fitness.mqar_pairs, of an ok result."""
        result = result_of(cid)
        if result.get("status") != "ok":
            return None, None
        metrics = result.get("metrics") or {}
        return metrics.get("bpb"), mqar_accuracy(metrics, pairs)

    proposals = {cid: view.proposal(cid) for cid in state.candidates}
    finished: list[str] = []
    gpu: dict[str, float] = {}
    t0 = None
    for ev in store.events():
        t0 = ev.get("t") if t0 is None else t0
        cid = ev.get("candidate")
        # The launcher's done/failed ends a training (a later `failed` for a bad result.json
        # is the same training); `lost` is resubmitted, so it does not.
        if ev.get("event") in ("done", "failed") and cid in state.candidates \
                and cid not in gpu and state.candidates[cid].attempts > 0:
            gpu[cid] = float(ev.get("gpu_hours") or 0.0)
            finished.append(cid)
    trainings, best, cpu_total, gpu_total = [], None, 0.0, 0.0
    baseline_cpu = other_cpu = 0.0
    for cid in finished:
        cost = cpu_hours(cid)
        kind = proposals[cid].get("kind", "proposal")
        if kind != "proposal":  # baselines, and follow-ups (replicas, ablations) after the search
            if kind == "baseline":
                baseline_cpu += cost
            else:
                other_cpu += cost
            continue
        cpu_total += cost
        gpu_total += gpu[cid]
        fit = state.candidates[cid].fitness
        if fit is not None and (best is None or fit > best):
            best = fit
        bpb, mqar = scores(cid)
        trainings.append({"id": cid, "fitness": fit, "status": state.candidates[cid].status,
                          "best": best, "cpu_hours": cpu_total, "gpu_hours": gpu_total,
                          "bpb": bpb, "mqar": mqar})
    baselines, baseline_scores = {}, {}
    for cid, prop in proposals.items():
        # Baselines of the run's own training only (not those re-trained at a larger preset).
        if prop.get("kind") == "baseline" and prop.get("preset") is None \
                and state.candidates[cid].fitness is not None:
            baselines.setdefault(prop.get("name"), []).append(state.candidates[cid].fitness)
            baseline_scores.setdefault(prop.get("name"), []).append(scores(cid))
    thresholds = {"reference": 0.0}
    if "gated_deltanet" in baselines:
        thresholds["gated_deltanet"] = statistics.fmean(baselines["gated_deltanet"])
    first = {name: next((i + 1 for i, t in enumerate(trainings)
                         if t["fitness"] is not None and t["fitness"] > value), None)
             for name, value in thresholds.items()}
    if "gated_deltanet" in baseline_scores:
        # The goal is better than Gated DeltaNet on both axes, not on their sum.
        pairs_ok = [(b, m) for b, m in baseline_scores["gated_deltanet"]
                    if b is not None and m is not None]
        if pairs_ok:
            first["gated_deltanet_both"] = first_beating_both(
                trainings, statistics.fmean(b for b, _ in pairs_ok),
                statistics.fmean(m for _, m in pairs_ok))
    events = list(store.events())
    stops = [e.get("reason") for e in events if e.get("event") == "driver_stop"]
    proposed = sum(p.get("kind", "proposal") == "proposal" for p in proposals.values())
    return {"run": str(run), "trainings": trainings, "best": best, "thresholds": thresholds,
            "first_beat": first, "baselines": {k: statistics.fmean(v) for k, v in
                                               baselines.items()},
            "baseline_cpu_hours": baseline_cpu, "followup_cpu_hours": other_cpu,
            "proposals": proposed,
            "rejected": sum(c.status == "rejected" for c in state.candidates.values()),
            "stopped": stops[-1] if stops else None,
            "wall_hours": ((events[-1]["t"] - t0) / 3600.0) if events and t0 else 0.0}


def first_beating_both(trainings: list[dict[str, Any]], bpb: float,
                       mqar: float) -> int | None:
    """The 1-based count of trainings until one scored lower bits per byte than `bpb` and
    higher MQAR accuracy than `mqar` (None: never)."""
    return next((i + 1 for i, t in enumerate(trainings)
                 if t.get("bpb") is not None and t.get("mqar") is not None
                 and t["bpb"] < bpb and t["mqar"] > mqar), None)


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


def aggregate(runs: dict[int, dict[str, Any]], grid_points: int = 50) -> dict[str, Any]:
    """Per training count and on a CPU-hour grid: mean and min/max over the seeds that got
    there (a seed whose run ended earlier is not extrapolated)."""
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
    thresholds = sorted({name for r in runs.values() for name in r["first_beat"]})
    first = {name: {str(seed): r["first_beat"].get(name) for seed, r in runs.items()}
             for name in thresholds}
    finals = [r["best"] for r in runs.values() if r["best"] is not None]
    return {"seeds": sorted(runs), "final_best": spread(finals),
            "trainings": spread([len(r["trainings"]) for r in runs.values()]),
            "cpu_hours": spread([r["trainings"][-1]["cpu_hours"] for r in runs.values()
                                 if r["trainings"]]),
            "baseline_cpu_hours": spread([r["baseline_cpu_hours"] for r in runs.values()]),
            "first_beat": first, "by_trainings": by_count, "by_cpu_hours": by_cost}


# ---- writing ---------------------------------------------------------------------------------


def _f(x: Any, spec: str = "+.4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _spread(s: dict[str, Any], spec: str = "+.4f") -> str:
    if not s.get("n"):
        return "-"
    return f"{_f(s['mean'], spec)} [{_f(s['min'], spec)}, {_f(s['max'], spec)}]"


def markdown(methods: dict[str, Any], errors: dict[str, str]) -> str:
    head = ["method", "seeds", "trainings", "best @25%", "best @50%", "final best",
            "to beat ref (per seed)", "to beat gated_deltanet",
            "to beat gated_deltanet on bpb and MQAR", "CPU-h (proposals)",
            "CPU-h (baselines)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, agg in methods.items():
        counts = agg["by_trainings"]

        def at(frac: float) -> str:
            if not counts:
                return "-"
            return _spread(counts[max(0, math.ceil(frac * len(counts)) - 1)])

        def firsts(name: str) -> str:
            per_seed = agg["first_beat"].get(name)
            return " ".join("-" if v is None else str(v) for v in per_seed.values()) \
                if per_seed else "n/a"

        failed = sum(k.startswith(f"search-{method}-") for k in errors)
        seeds = f"{len(agg['seeds'])}" + (f" ({failed} failed)" if failed else "")
        lines.append("| " + " | ".join([
            method, seeds, _spread(agg["trainings"], ".0f"), at(0.25), at(0.5),
            _spread(agg["final_best"]), firsts("reference"), firsts("gated_deltanet"),
            firsts("gated_deltanet_both"),
            _spread(agg["cpu_hours"], ".3f"), _spread(agg["baseline_cpu_hours"], ".3f")]) + " |")
    text = "\n".join(lines) + "\n"
    text += ("\nbest = best-so-far fitness, mean [min, max] over seeds (0 = the reference "
             "baseline of the same run); @25%/@50% of the longest run's trainings; 'to beat': "
             "trainings until a proposal first scored above it (- never); 'on bpb and MQAR': "
             "until one had both lower bits per byte and higher MQAR accuracy (at the run's "
             "fitness.mqar_pairs) than the run's gated_deltanet, one seed each.\n")
    if errors:
        text += "\nErrors:\n" + "".join(f"- {k}: {v.splitlines()[0] if v else v}\n"
                                         for k, v in sorted(errors.items()))
    return text


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


def summarize(out: Path, methods: list[str], seeds: list[int] | None) -> dict[str, Any]:
    errors = read_json(out / ERRORS_FILE, {}) or {}
    runs: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in methods}
    for folder in sorted(out.iterdir()) if out.exists() else []:
        match = RUN_NAME.match(folder.name)
        if not match or not Store.is_run(folder):
            continue
        method, seed = match["method"], int(match["seed"])
        if method in runs and (seeds is None or seed in seeds) and folder.name not in errors:
            runs[method][seed] = read_run(folder)
    # A method whose runs all failed keeps its row (with its errors under the table).
    aggregated = {m: aggregate(r) for m, r in runs.items()}
    text = markdown(aggregated, errors)
    summary = {"cost_measure": "cpu_hours = result.json wall_s x torch threads / 3600, "
                               "proposal trainings only",
               "methods": aggregated, "errors": errors,
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
                        help="proposals trained per run (search.max_candidates)")
    parser.add_argument("--config", help="run config (default: the embedded demo)")
    parser.add_argument("--out", default="bench-out/search")
    parser.add_argument("--force", action="store_true",
                        help="let existing runs take a changed config (e.g. more --trainings)")
    parser.add_argument("--summarize-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(args.out)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if not args.summarize_only:
        base = load_run_config(args.config) if args.config else default_run_config()
        out.mkdir(parents=True, exist_ok=True)
        for method in methods:
            for seed in seeds:
                name = run_name(method, seed)
                t0 = time.time()
                errors = read_json(out / ERRORS_FILE, {}) or {}
                try:
                    reason = run_search(run_config(base, method, seed, args.trainings, out),
                                        method, seed, args.force)
                    errors.pop(name, None)
                    print(f"{name}: stopped ({reason}) after {time.time() - t0:.0f} s",
                          flush=True)
                except Exception as exc:  # a refused method must not stop the others
                    errors[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
                    print(f"{name}: error: {type(exc).__name__}: {exc}", flush=True)
                (out / ERRORS_FILE).write_text(json.dumps(errors, indent=2))
    summarize(out, methods, seeds)
    print(f"wrote {out / 'summary.json'}, {out / 'summary.md'} and the plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
