"""Read-only views of a run: status, leaderboard, one candidate. No locks are taken, so they
work from any node while the driver runs (every file they read is replaced atomically).

The leaderboard ranks proposals and baselines. Follow-up trainings (kind "replica": the same
file with another seed or at a promotion preset; kind "ablation": one change reverted) are not
rows of their own: a proposal's replicas show up as its confirmation (its confirmation
file, written by the driver once all seeds finished): `seeds`, `mean` ± `ci95` of
fitness over them and a `verdict` ("better" / "worse" than the reference, "=" when the interval
includes zero, "-" for a one-seed score not confirmed). Promotions (a confirmation per preset)
add `verify` {preset: verdict}. A baseline is one row per name at the run's preset, with the
mean ± ci95 over its seeds.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evolve.model.space import BASELINE_SPECS, MixerSpec, SpecError
from evolve.search.followup import nearest_baseline
from evolve.state.fsio import StateError
from evolve.state.journal import ACTIVE_STATUSES, DROPPED, TRAINED
from evolve.state.store import Store
from evolve.state.view import FOLLOW_UPS, RunView

WHAT_WIDTH = 44
"""Characters of the leaderboard's "what" column; a longer design ends in an ellipsis."""


def as_view(run: Path | RunView) -> RunView:
    """`run` read once: a RunView given is used as it is (the report shares one)."""
    return run if isinstance(run, RunView) else RunView.open(run)


@dataclass
class Designs:
    """The run's baselines as specs, to say what a candidate's spec changes of which."""

    baselines: dict[str, MixerSpec]
    conv_size: int | None
    """The run's conv width: a spec's conv_size None ("the run's") is read as this value."""

    @classmethod
    def of(cls, store: Store) -> Designs:
        try:
            cfg = store.config()
        except (StateError, OSError):  # a damaged run.yaml: every baseline, no conv width
            cfg = {}
        cfg = cfg if isinstance(cfg, dict) else {}
        names = [n for n in (cfg.get("search") or {}).get("baselines") or ()
                 if n in BASELINE_SPECS] or list(BASELINE_SPECS)
        train = cfg.get("train") or {}
        track = train.get("lm") or train.get("mqar") or {}
        conv = (track.get("model") or {}).get("conv_size") if isinstance(track, dict) else None
        designs = cls({}, conv if isinstance(conv, int) else None)
        for name in names:
            spec = designs.spec(BASELINE_SPECS[name].to_dict())
            if spec is not None:
                designs.baselines[name] = spec
        return designs

    def spec(self, data: Any) -> MixerSpec | None:
        """A proposal's spec with the run's conv width filled in; None without a valid one."""
        try:
            spec = MixerSpec.from_dict(data)
            if spec.conv_size is None and self.conv_size is not None:
                spec = spec.replace(conv_size=self.conv_size)
        except (SpecError, ValueError, TypeError):
            return None
        return spec


def lineage_baseline(view: RunView, cid: str) -> str | None:
    """The baseline at the root of `cid`'s first-parent chain, by name; None if it is not one."""
    cands = view.state.candidates
    seen = set()
    while cid in cands and cands[cid].parents and cid not in seen:
        seen.add(cid)
        cid = cands[cid].parents[0]
    root = view.proposal(cid) if cid in cands else {}
    return str(root.get("name")) if root.get("kind") == "baseline" and root.get("name") else None


def _value(value: Any) -> str:
    if value is None:
        return "default"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def design_text(prop: dict[str, Any], parents: list[str], designs: Designs,
                prefer: str | None = None) -> str:
    """What a candidate is, not why: a baseline's name; for a spec, the baseline it is nearest
    (ties: `prefer`, its lineage's) and each field it changes, "deltanet: value_ratio 2,
    out_norm none"; for code the model wrote, "code (parent ID)"."""
    if prop.get("kind") == "baseline":
        return str(prop.get("name") or "baseline")
    spec = designs.spec(prop["spec"]) if prop.get("spec") else None
    if spec is None or not designs.baselines:
        what = "code" if not prop.get("spec") else "unreadable spec"
        return f"{what} (parent {parents[0]})" if parents else what
    base, fields = nearest_baseline(spec, designs.baselines, prefer)
    if not fields:
        return f"{base} (same design)"
    return f"{base}: " + ", ".join(f"{f} {_value(getattr(spec, f))}" for f in fields)


def shorten(text: str, width: int = WHAT_WIDTH) -> str:
    """`text` cut to `width` characters, ending in an ellipsis when cut."""
    return text if len(text) <= width else text[:width - 1].rstrip(" ,") + "…"


def clean(x: Any) -> Any:
    """A number for JSON: NaN and infinities (an interval over one seed) become None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def verdict_word(conf: dict[str, Any] | None) -> str:
    """"better" / "worse" than the reference, "=" when not distinguishable, "-" without a
    confirmation."""
    if not isinstance(conf, dict):
        return "-"
    return "better" if conf.get("better") else "worse" if conf.get("worse") else "="


def term(conf: dict[str, Any] | None, name: str = "fitness") -> tuple[Any, Any]:
    """(mean, ci95) of one term of a confirmation or ablation row; None where absent."""
    t = (conf or {}).get(name) or {}
    return clean(t.get("mean")), clean(t.get("ci95"))


def llm_calls(folder: Path) -> dict[str, int]:
    """Stored model calls (llm/<role>-<n>.json) per role below a candidate folder."""
    counts: Counter[str] = Counter()
    llm = folder / "llm"
    for path in llm.glob("*-*.json") if llm.is_dir() else []:
        role, _, n = path.stem.rpartition("-")
        if role and n.isdigit() and not path.name.startswith("."):
            counts[role] += 1
    return dict(sorted(counts.items()))


def _reused_note(results: list[dict[str, Any]]) -> str:
    """"(reused) " when a result came from the site's result cache, not a training of this run
    ("(2 of 3 reused) " for a baseline's seeds); it leads the "what" column, so it is never cut."""
    n = sum(1 for r in results if r.get("reused"))
    if not n:
        return ""
    return "(reused) " if n == len(results) else f"({n} of {len(results)} reused) "


def _avg(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float))]
    return sum(nums) / len(nums) if nums else None


def _rows(view: RunView) -> list[dict[str, Any]]:
    from evolve.search.fitness import mean_ci

    store, state = view.store, view.state
    designs = Designs.of(store)
    rows = []
    baselines: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for c in state.candidates.values():
        prop = view.proposal(c.id)
        kind = view.kind(c.id)
        if kind in FOLLOW_UPS:
            continue
        result = view.result(c.id)
        if c.id in view.damaged:
            rows.append({"id": c.id, "kind": kind, "status": "damaged", "fitness": None,
                         "label": f"damaged: {view.damaged[c.id]}", "parents": c.parents,
                         "generation": c.generation, "proposer": prop.get("proposer"),
                         "seeds": 0, "mean": None, "ci95": None, "verdict": "-",
                         "bpb": None, "mqar": None, "bench": None, "tokens_per_s": None,
                         "reference_seeds": None, "replicas": 0, "verify": {},
                         "members": [c.id]})
            continue
        if result is None:
            continue
        rung = float(result.get("budget_fraction", 1.0))
        if kind == "baseline":
            if rung < 1.0:
                continue  # between screening rungs: its whole-budget result is yet to come
            if prop.get("preset") is None:  # promotion-preset baselines are references only
                baselines.setdefault(str(prop.get("name") or c.id), []).append((c.id, result))
            continue
        # A screened proposal (paused at a rung, or continuing) has no whole-budget metrics
        # yet: its rung's fitness is shown apart, never ranked with whole trainings.
        m = result.get("metrics", {}) if rung == 1.0 else {}
        confs = view.confirmations(c.id)
        conf = confs.get(None)
        if conf is not None:
            mean, ci95 = term(conf)
            seeds = conf.get("seeds")
        else:
            mean, ci95, seeds = c.fitness, None, 1 if c.fitness is not None else 0
        status_text, fitness_value = c.status, c.fitness
        if any(isinstance(v, float) and not math.isfinite(v)
               for v in (c.fitness, m.get("bpb"), m.get("mqar_acc"))):
            # A NaN or infinite metric is a failed training, never a score to rank.
            status_text, fitness_value, mean, ci95 = "failed (non-finite metric)", None, None, None
        label = _reused_note([result]) + design_text(prop, c.parents, designs,
                                                     lineage_baseline(view, c.id))
        rows.append({"id": c.id, "kind": kind, "label": label,
                     "status": status_text, "fitness": fitness_value, "bpb": m.get("bpb"),
                     "mqar": m.get("mqar_acc"), "bench": m.get("benchmark_avg"),
                     "tokens_per_s": m.get("tokens_per_s"), "parents": c.parents,
                     "generation": c.generation, "proposer": prop.get("proposer"),
                     "seeds": seeds, "mean": mean, "ci95": ci95, "verdict": verdict_word(conf),
                     "reference_seeds": (conf or {}).get("reference_seeds"),
                     "replicas": len([r for r in view.derived(c.id, "replica")
                                      if view.proposal(r).get("preset") is None]),
                     "verify": {p: verdict_word(v) for p, v in confs.items() if p is not None},
                     "members": (conf or {}).get("members") or [c.id],
                     "rung": rung if rung < 1.0 else None, "rung_fitness": c.rungs.get(rung)})
    for name, members in baselines.items():
        cands = [state.candidates[cid] for cid, _ in members]
        fits = [c.fitness for c in cands if c.fitness is not None]
        mean, half = mean_ci(fits) if fits else (None, None)
        metric = lambda key: _avg([r.get("metrics", {}).get(key) for _, r in members])
        first = cands[0]
        rows.append({"id": first.id, "kind": "baseline",
                     "label": _reused_note([r for _, r in members]) + name, "status": first.status,
                     "fitness": clean(mean), "bpb": metric("bpb"), "mqar": metric("mqar_acc"),
                     "bench": metric("benchmark_avg"), "tokens_per_s": metric("tokens_per_s"),
                     "parents": [], "generation": first.generation, "proposer": "baseline",
                     "seeds": len(fits), "mean": clean(mean), "ci95": clean(half),
                     "verdict": "-", "reference_seeds": None, "replicas": 0, "verify": {},
                     "members": [cid for cid, _ in members]})
    rows.sort(key=lambda r: (r["mean"] is None, -(r["mean"] or 0.0), r["id"]))
    return rows


def leaderboard(run: Path | RunView) -> list[dict[str, Any]]:
    """Every trained proposal and baseline (replicas and ablations folded in), best first.

    `fitness` is a proposal's own score (its first seed); `mean` ± `ci95` over `seeds` is its
    confirmation's when it has one (and the ranking key); baselines give mean ± ci95 over
    their seeds at the run's preset (`members`: their candidate ids). `label` is the design,
    not the motivation (`design_text`): a baseline's name, the fields a spec changes of its
    nearest baseline, or "code (parent ID)"."""
    return _rows(as_view(run))


def versus_best_baselines(board: list[dict[str, Any]], best: dict[str, Any] | None
                          ) -> dict[str, dict[str, Any]]:
    """The best proposal against the run's best baseline on each axis, not only against the
    fitness reference: {"bpb": {...}, "mqar": {...}}, each with the baseline that is best on it
    (lowest bits per byte, highest recall), both values and whether the proposal is better.
    Empty until a proposal and a baseline have the metric."""
    out: dict[str, dict[str, Any]] = {}
    baselines = [r for r in board if r["kind"] == "baseline"]
    for key, lower_is_better in (("bpb", True), ("mqar", False)):
        have = [r for r in baselines if isinstance(r.get(key), (int, float))]
        if best is None or not have or not isinstance(best.get(key), (int, float)):
            continue
        pick = min if lower_is_better else max
        top = pick(have, key=lambda r: r[key])
        better = best[key] < top[key] if lower_is_better else best[key] > top[key]
        out[key] = {"baseline": top["label"], "baseline_value": top[key],
                    "proposal": best["id"], "value": best[key], "better": better}
    return out


def _phase(status: str) -> str:
    return "done" if status in TRAINED else "failed" if status in DROPPED else "in_flight"


def status(run: Path | RunView) -> dict[str, Any]:
    view = as_view(run)
    store, state = view.store, view.state
    by_status = Counter(c.status for c in state.candidates.values())
    events = list(store.events())
    last_start = next((e for e in reversed(events) if e.get("event") == "driver_start"), None)
    last_stop = next((e for e in reversed(events) if e.get("event") == "driver_stop"), None)
    # Running is a fact of the driver lock, not of the journal: a driver killed with -9 (or on a
    # lost node) never wrote its driver_stop.
    holder = store.driver_holder()
    started = last_start is not None and (last_stop is None or last_stop["t"] < last_start["t"])
    ready = next((e for e in reversed(events) if e.get("event") == "llm_ready"), None)
    board = _rows(view)
    best = next((r for r in board if r["kind"] == "proposal" and r["fitness"] is not None), None)

    follow = {k: {"in_flight": 0, "done": 0, "failed": 0} for k in FOLLOW_UPS}
    confirmed = {"candidates": 0, "better": 0, "worse": 0, "same": 0}
    promoted: dict[str, dict[str, int]] = {}
    calls: Counter[str] = Counter()
    analyzers: Counter[str] = Counter()
    llm_proposals = fallbacks = 0
    for c in state.candidates.values():
        kind = view.kind(c.id)
        prop = view.proposal(c.id)
        folder = store.candidate(c.id).dir
        if kind in follow:
            follow[kind][_phase(c.status)] += 1
        if kind == "proposal":
            for preset, conf in view.confirmations(c.id).items():
                word = {"better": "better", "worse": "worse", "=": "same"}[verdict_word(conf)]
                bucket = confirmed if preset is None else promoted.setdefault(
                    preset, {"candidates": 0, "better": 0, "worse": 0, "same": 0})
                bucket["candidates"] += 1
                bucket[word] += 1
            llm_proposals += str(prop.get("proposer", "")).startswith("llm-")
            fallbacks += bool(prop.get("llm_error"))
        calls.update(llm_calls(folder))
        analysis = view.file(c.id, "analysis")
        if isinstance(analysis, dict) and analysis.get("analyzer"):
            analyzers[str(analysis["analyzer"])] += 1
    abl = view.ablation()
    ablation = None
    if abl is not None:
        plan = abl.get("plan") or []
        ablation = {"candidate": abl.get("candidate"), "baseline": abl.get("baseline"),
                    "complete": bool(abl.get("complete")), "fields": len(plan),
                    "skipped": sum(1 for p in plan if p.get("note")),
                    "rows": len(abl.get("table") or [])}
    return {"run": str(store.root), "candidates": len(state.candidates), "by_status": dict(by_status),
            "generations": max((c.generation or 0 for c in state.candidates.values()), default=0),
            "in_flight": sum(by_status.get(s, 0) for s in ACTIVE_STATUSES),
            "gpu_hours": round(sum(c.gpu_hours for c in state.candidates.values()), 4),
            "cpu_hours": round(sum(c.cpu_hours for c in state.candidates.values()), 4),
            "screening": _screening(events, view),
            "driver": (f"running (pid {holder.get('pid')} on {holder.get('host')})"
                       if holder else "running" if holder is not None else
                       "died without stopping (no process holds the driver lock)" if started else
                       f"stopped ({last_stop.get('reason')})" if last_stop else "never started"),
            "novelty_returned": sum(e.get("event") == "novelty_returned" for e in events),
            "reused": sum(e.get("event") == "reused" for e in events),
            "best": best, "versus_best_baselines": versus_best_baselines(board, best),
            "follow_ups": follow, "confirmed": confirmed, "promoted": promoted,
            "ablation": ablation, "local_trainings": _local_trainings(view),
            "llm": {"source": ready.get("source") if ready else None,
                    "calls": dict(sorted(calls.items())), "proposals": llm_proposals,
                    "fallbacks": fallbacks, "analyzers": dict(sorted(analyzers.items()))}}


def _screening(events: list[dict[str, Any]], view: RunView) -> dict[str, Any] | None:
    """search.fidelity's work so far: per rung, the proposals that reached it and went on, and
    the trainings stopped early for being far behind every baseline (None: no screening)."""
    rungs: dict[float, dict[str, int]] = {}
    at: dict[str, float] = {}
    for e in events:
        if e.get("event") == "rung" and view.kind(e["candidate"]) == "proposal":
            at[e["candidate"]] = float(e["rung"])
            rungs.setdefault(float(e["rung"]), {"reached": 0, "went_on": 0})["reached"] += 1
        elif e.get("event") == "promoted" and e.get("candidate") in at:
            rungs[at[e["candidate"]]]["went_on"] += 1
    stopped = sum(bool(e.get("event") == "failed" and e.get("stopped_early")) for e in events)
    if not rungs and not stopped:
        return None
    return {"rungs": {f"{r:g}": v for r, v in sorted(rungs.items())}, "stopped_early": stopped}


def _local_trainings(view: RunView) -> list[dict[str, Any]]:
    """The run's training processes alive on this machine (`evolve stop RUN --jobs` ends them):
    after a driver stopped they train on, and a resumed driver reattaches to them."""
    from evolve.launch.job_state import run_processes

    jobs = {c.job_id: c.id for c in view.state.candidates.values() if c.job_id}
    return [{"pid": p.pid, "candidate": jobs.get(str(p.parent)), "submission": p.submission}
            for p in run_processes(view.store.jobs_dir) if p.role == "training"]


def _fmt(x: Any, spec: str) -> str:
    return "-" if not isinstance(x, (int, float)) or isinstance(x, bool) else format(x, spec)


def fmt_ci(mean: Any, ci95: Any, spec: str = "+.4f") -> str:
    """"+0.0123 ± 0.0040", or the mean alone when there is no interval."""
    if not isinstance(mean, (int, float)):
        return "-"
    half = format(ci95, spec.lstrip("+")) if isinstance(ci95, (int, float)) else None
    return format(mean, spec) + (f" ± {half}" if half is not None else "")


def print_status(run: Path, as_json: bool = False) -> int:
    s = status(run)
    if as_json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"run {s['run']}: driver {s['driver']}")
    print(f"  candidates {s['candidates']} in {s['generations']} generations; in flight "
          f"{s['in_flight']}; GPU-hours {s['gpu_hours']}; CPU-hours {s['cpu_hours']}")
    print("  by status: " + ", ".join(f"{k} {v}" for k, v in sorted(s["by_status"].items())))
    if s["local_trainings"]:
        print(f"  live local trainings (`evolve stop {s['run']} --jobs` ends them): " + ", ".join(
            f"{t['candidate'] or '?'} pid {t['pid']}" for t in s["local_trainings"]))
    if s["screening"]:
        print("  screening: " + "; ".join(
            f"rung {r}: {v['went_on']} of {v['reached']} proposals went on"
            for r, v in s["screening"]["rungs"].items())
            + f"; stopped early behind every baseline: {s['screening']['stopped_early']}")
    if s["reused"]:
        print(f"  results reused from the site's result cache (not trained again): {s['reused']}")
    if s["novelty_returned"]:
        print(f"  drafts sent back to the proposer as too close to an archived design: "
              f"{s['novelty_returned']}")
    f = s["follow_ups"]
    if any(sum(v.values()) for v in f.values()):
        print("  follow-ups: " + "; ".join(
            f"{k}s {v['in_flight']} in flight, {v['done']} done, {v['failed']} failed"
            for k, v in f.items()))
    c = s["confirmed"]
    if c["candidates"]:
        print(f"  confirmed: {c['candidates']} candidates, {c['better']} better than the "
              f"reference, {c['same']} not distinguishable, {c['worse']} worse")
    for preset, p in s["promoted"].items():
        print(f"  promoted to {preset}: {p['candidates']}, {p['better']} better, "
              f"{p['same']} not distinguishable, {p['worse']} worse")
    if s["ablation"]:
        a = s["ablation"]
        print(f"  ablation of {a['candidate']} against {a['baseline'] or '-'}: "
              f"{a['fields']} fields "
              f"({a['skipped']} skipped), {'complete' if a['complete'] else 'in progress'}")
    llm = s["llm"]
    if llm["source"] or llm["calls"] or llm["proposals"] or llm["fallbacks"]:
        calls = ", ".join(f"{k} {v}" for k, v in llm["calls"].items()) or "none"
        print(f"  model: {llm['source'] or '-'}; calls stored: {calls}; proposals by the model "
              f"{llm['proposals']}, by the mutator in its place {llm['fallbacks']}")
    if llm["analyzers"]:
        print("  analyses: " + ", ".join(f"{k} {v}" for k, v in llm["analyzers"].items()))
    if s["best"]:
        b = s["best"]
        conf = f", {b['verdict']} over {b['seeds']} seeds" if b["verdict"] != "-" else ""
        print(f"  best proposal: {b['id']} fitness {fmt_ci(b['mean'], b['ci95'])}{conf} "
              f"(bpb {_fmt(b['bpb'], '.4f')}, MQAR {_fmt(b['mqar'], '.3f')})")
        for key, v in s["versus_best_baselines"].items():
            print(f"    {key} against the run's best baseline on it ({v['baseline']}): "
                  f"{_fmt(v['value'], '.4f')} vs {_fmt(v['baseline_value'], '.4f')}, "
                  f"{'better' if v['better'] else 'not better'}")
    return 0


def print_top(run: Path, limit: int = 20, as_json: bool = False) -> int:
    rows = leaderboard(run)[:limit]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ("rank", "id", "kind", "fitness", "mean ± ci95", "seeds", "verdict", "bpb", "MQAR",
            "tok/s", "promotion", "what")
    # A screened proposal's fitness is its rung's, marked with the fraction of the budget.
    table = [(str(i + 1), r["id"], r["kind"],
              _fmt(r["fitness"], "+.4f") if not r.get("rung") else
              f"{_fmt(r.get('rung_fitness'), '+.4f')} at {r['rung']:g}",
              fmt_ci(r["mean"], r["ci95"]), str(r["seeds"]), r["verdict"],
              _fmt(r["bpb"], ".4f"), _fmt(r["mqar"], ".3f"), _fmt(r["tokens_per_s"], ",.0f"),
              ", ".join(f"{p}: {w}" for p, w in r["verify"].items()) or "-",
              shorten(r["label"]))
             for i, r in enumerate(rows)]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"leaderboard: {run}")
        for h in head:
            t.add_column(h)
        for row in table:
            t.add_row(*row)
        Console().print(t)
    else:
        widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h)
                  for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
        for row in table:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def describe_confirmation(conf: dict[str, Any]) -> str:
    """One line: verdict, fitness mean ± ci over the seeds, the reference's seeds."""
    mean, ci95 = term(conf)
    bpb = term(conf, "delta_bpb")
    failed = f", {conf['failed']} failed" if conf.get("failed") else ""
    return (f"{verdict_word(conf)}: fitness {fmt_ci(mean, ci95)} over {conf.get('seeds')} seeds"
            f"{failed} (bpb delta {fmt_ci(*bpb)}; reference {conf.get('reference')}, "
            f"{conf.get('reference_seeds')} seeds)")


def print_candidate(run: Path, cid: str, as_json: bool = False) -> int:
    view = RunView.open(run)
    store, state = view.store, view.state
    if cid not in state.candidates:
        known = ", ".join(list(state.candidates)[-5:])
        raise ValueError(f"{run}: no candidate {cid!r} (latest: {known})")
    paths = store.candidate(cid)
    confs = view.confirmations(cid)
    prop = view.proposal(cid) or None
    info = {"id": cid, "kind": view.kind(cid), "status": state.candidates[cid].status,
            "fitness": state.candidates[cid].fitness,
            "parents": state.candidates[cid].parents,
            "proposal": prop, "checks": view.file(cid, "checks"),
            "result": view.result(cid), "analysis": view.file(cid, "analysis"),
            "error": view.file(cid, "error"),
            "confirmation": confs.get(None),
            "promotions": {p: v for p, v in confs.items() if p is not None},
            "replicas": view.derived(cid, "replica"), "ablations": view.derived(cid, "ablation"),
            "llm_calls": llm_calls(paths.dir)}
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    prop = prop or {}
    print(f"{cid}: {info['kind']}, {info['status']}, fitness {_fmt(info['fitness'], '+.4f')}, "
          f"parents {', '.join(info['parents']) or '-'}")
    if info["kind"] == "replica":
        where = f" at preset {prop['preset']}" if prop.get("preset") else ""
        print(f"re-trains: {prop.get('of')} with seed {prop.get('seed')}{where}")
    elif info["kind"] == "ablation":
        print(f"re-trains: {prop.get('of')} with its {prop.get('revert')} change reverted "
              f"(seed {prop.get('seed')})")
    print(f"motivation: {prop.get('motivation', '-')}")
    proposer = str(prop.get("proposer", "-"))
    if proposer.startswith("llm-"):
        print(f"proposed by the model: {prop.get('model') or '?'} ({proposer}, prompt "
              f"{prop.get('prompt_hash') or '-'}, attempts {prop.get('attempts', '-')})")
        if prop.get("changes"):
            print("  changes: " + "; ".join(map(str, prop["changes"])))
        if prop.get("edits"):
            print("  edits: " + json.dumps(prop["edits"]))
        if prop.get("lessons_used"):
            print("  lessons used: " + ", ".join(map(str, prop["lessons_used"])))
    else:
        print(f"proposer: {proposer}" + (f" ({prop['operator']})" if prop.get("operator") else ""))
    if prop.get("llm_error"):
        print(f"the model gave no usable proposal, the mutator filled the slot: "
              f"{prop['llm_error']}")
    if info["llm_calls"]:
        print("stored model calls: " + ", ".join(f"{k} {v}" for k, v in info["llm_calls"].items())
              + f" (in {paths.llm})")
    if info["checks"]:
        print(f"checks: {'passed' if info['checks']['passed'] else 'failed at ' + str(info['checks']['failed_gate'])}")
    if info["result"]:
        print("metrics: " + json.dumps(info["result"].get("metrics", {})))
    if info["confirmation"]:
        print("confirmation: " + describe_confirmation(info["confirmation"]))
    elif info["replicas"]:
        print(f"confirmation: pending ({len(info['replicas'])} replicas)")
    for preset, conf in info["promotions"].items():
        print(f"verify ({preset}): " + describe_confirmation(conf))
    if info["replicas"]:
        print("replicas: " + ", ".join(info["replicas"]))
    if info["ablations"]:
        print("ablations: " + ", ".join(
            f"{a} ({view.proposal(a).get('revert')})" for a in info["ablations"]))
    if info["analysis"]:
        print(f"analysis ({info['analysis'].get('analyzer', '?')}): "
              f"{info['analysis'].get('analysis')}")
        if info["analysis"].get("llm_error"):
            print(f"  analyzer fallback: {info['analysis']['llm_error']}")
    if paths.mixer.exists():
        print("--- mixer.py ---")
        print(paths.mixer.read_text())
    return 0
