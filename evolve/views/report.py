"""Static HTML report of a run, with PNG plots: readable after `scp`, no server, no network.

    evolve report state/demo                     # writes state/demo/report/index.html
    evolve report state/demo --out /tmp/demo-report
    write_report(Path("state/demo"), Path("/tmp/r"))     # returns the path of index.html

The page holds: best fitness against candidates and against GPU-hours (wall hours when the run
recorded none, e.g. the local executor on CPU), the lineage tree, bits per byte against
throughput with its Pareto front, the training curves of the top candidates against the
baselines, failures by gate, the leaderboard (with each confirmed candidate's mean ± 95%
interval over its seeds and its verdict), the confirmations and promotions, the ablation of the
best candidate (its table and a bar chart of each change's contribution), the lessons with
links to their evidence, and one section per candidate (its anchor is its id). Images are
referenced by relative paths and the CSS is inline, so the folder can be copied anywhere.
Every text taken from the run (motivations and lessons are model-written) is escaped. The run
is only read, never locked.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evolve.views.board import (Designs, as_view, design_text, fmt_ci, leaderboard,
                                lineage_baseline, llm_calls, shorten, status, term, verdict_word)
from evolve.search.followup import nearest_baseline
from evolve.state.fsio import StateError, atomic_write_bytes, atomic_write_text, read_json
from evolve.state.journal import FAILING
from evolve.state.layout import RunLayout
from evolve.state.store import Store
from evolve.state.view import RunView

CANDIDATE_REF = re.compile(r"\bc\d{6,}\b")
FAILURE_EVENTS = {"failed": "training (job failed)", "lost": "training (job lost)",
                  "submit_failed": "submission refused", "gate_incomplete": "sandbox incomplete",
                  "duplicate_rejected": "novelty (duplicate code)"}
"""Journal events that record a failure, and the stage they are counted under."""


@dataclass
class Candidate:
    """What the report shows of one candidate."""

    id: str
    status: str
    kind: str
    name: str
    generation: int
    parents: list[str]
    fitness: float | None
    gpu_hours: float
    proposal: dict[str, Any]
    result: dict[str, Any] | None
    checks: dict[str, Any] | None
    analysis: dict[str, Any] | None
    error: str | None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    confirmations: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    """The confirmation (key None) and the promotions' confirmations (key: the preset)."""
    llm_calls: dict[str, int] = field(default_factory=dict)
    """Stored model calls per role."""
    design: str = ""
    """What it is (`board.design_text`): a baseline's name, a spec's changes, or code."""
    anchor: str | None = None
    """The candidate the lineage plot draws it under: its first parent, else the baseline
    node its spec derives from (None: neither)."""

    @property
    def label(self) -> str:
        return self.name or self.id

    @property
    def metrics(self) -> dict[str, Any]:
        return (self.result or {}).get("metrics") or {}


@dataclass
class TrainedPoint:
    """A proposal at the moment it was scored, and what the run had spent by then."""

    id: str
    fitness: float
    gpu_hours: float
    wall_hours: float


@dataclass
class RunData:
    """What the plots and tables are drawn from."""

    name: str
    candidates: dict[str, Candidate]
    trained: list[TrainedPoint]
    """Scored proposals in the order they were scored."""
    failures: list[tuple[str, str, str]]
    """(stage, candidate id or '', reason) per gate rejection or failure event."""
    cognition: list[dict[str, Any]]
    """Lessons of the run's cognition base, and ideas that gathered evidence in it."""
    ablation: dict[str, Any] | None = None
    """The run's ablation file: the plan, and the table once its trainings finished."""


def esc(value: Any) -> str:
    """`value` as HTML text: every run-supplied string passes through here."""
    return html.escape("" if value is None else str(value), quote=True)


def _read(path: Path) -> Any:
    # A half-written or hand-edited file must not stop the report; it says so instead.
    try:
        return read_json(path, None)
    except StateError as exc:
        return {"unreadable": str(exc)}


def _curves(metrics: Path) -> dict[str, list[tuple[int, float]]]:
    """Loss by step per track from train/metrics.jsonl (a resumed step keeps its last value)."""
    by_track: dict[str, dict[int, float]] = {}
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a torn last line of a training still running
        if isinstance(row, dict) and "loss" in row and "step" in row:
            track = by_track.setdefault(str(row.get("track", "lm")), {})
            track[int(row["step"])] = float(row["loss"])
    return {t: sorted(steps.items()) for t, steps in by_track.items()}


def load_run(run: Path | RunView) -> tuple[RunData, list[Candidate]]:
    """Everything the report draws, read from the run folder without locks."""
    view = as_view(run)
    store = view.store
    cands: list[Candidate] = []
    for c in view.candidates():
        paths = store.candidate(c.id)
        prop = view.proposal(c.id)
        err = view.file(c.id, "error")
        cands.append(Candidate(
            id=c.id, status=c.status, kind=view.kind(c.id),
            name=str(prop.get("name", "")), generation=c.generation or 0,
            parents=list(c.parents), fitness=c.fitness, gpu_hours=c.gpu_hours, proposal=prop,
            result=view.result(c.id), checks=view.file(c.id, "checks"),
            analysis=view.file(c.id, "analysis"),
            error=c.error or (err.get("reason") if isinstance(err, dict) else None),
            curves=_curves(paths.metrics), confirmations=view.confirmations(c.id),
            llm_calls=llm_calls(paths.dir)))
    for c in cands:  # a file that could not be read is shown, not hidden
        if c.id in view.damaged and not c.error:
            c.error = f"damaged: {view.damaged[c.id]}"
    _lineage(view, cands)
    data = RunData(name=store.name, candidates={c.id: c for c in cands},
                   trained=_trained_order(store, cands), failures=_failures(store, cands),
                   cognition=_cognition(store), ablation=view.ablation())
    return data, cands


def _lineage(view: RunView, cands: list[Candidate]) -> None:
    """Fill in each candidate's `design` and `anchor`."""
    designs = Designs.of(view.store)
    known = {c.id for c in cands}
    baseline_node: dict[str, str] = {}
    for c in cands:  # id order: a baseline's node is its first seed at the run's preset
        if c.kind == "baseline" and c.name and c.proposal.get("preset") is None:
            baseline_node.setdefault(c.name, c.id)
    for c in cands:
        prefer = lineage_baseline(view, c.id)
        c.design = design_text(c.proposal, c.parents, designs, prefer)
        if c.parents:
            c.anchor = c.parents[0] if c.parents[0] in known else None
            continue
        spec = designs.spec(c.proposal.get("spec")) if c.kind != "baseline" else None
        if spec is not None and designs.baselines:
            c.anchor = baseline_node.get(nearest_baseline(spec, designs.baselines, prefer)[0])


def _trained_order(store: Store, cands: list[Candidate]) -> list[TrainedPoint]:
    """Scored proposals in the order they were scored, with GPU and wall hours spent by then."""
    kinds = {c.id: c.kind for c in cands}
    points: list[TrainedPoint] = []
    gpu = 0.0
    t0: float | None = None
    for ev in store.events():
        t0 = ev.get("t", 0.0) if t0 is None else t0
        if ev.get("event") in ("done", "failed", "lost") and ev.get("gpu_hours"):
            gpu += float(ev["gpu_hours"])
        if (ev.get("event") == "scored" and ev.get("fitness") is not None
                and kinds.get(ev.get("candidate", "")) == "proposal"):
            points.append(TrainedPoint(id=ev["candidate"], fitness=float(ev["fitness"]),
                                       gpu_hours=gpu,
                                       wall_hours=(ev.get("t", 0.0) - (t0 or 0.0)) / 3600.0))
    return points


def _failures(store: Store, cands: list[Candidate]) -> list[tuple[str, str, str]]:
    """(stage, candidate id or '', reason) for every gate rejection and failure event."""
    rows: list[tuple[str, str, str]] = []
    journal_gate: dict[str, str] = {}
    for ev in store.events():
        name = str(ev.get("event"))
        if name == "checked" and ev.get("passed") is False and ev.get("failed_gate"):
            journal_gate[ev.get("candidate", "")] = str(ev["failed_gate"])
        stage = FAILURE_EVENTS.get(name)
        if stage is None:
            continue
        reason = ev.get("error") or ev.get("reason") or ev.get("detail") or ""
        for cid in [ev["candidate"]] if "candidate" in ev else ev.get("candidates", [""]):
            rows.append((stage, str(cid), str(reason)))
    # checks.json holds the full verdicts; the journal line is the fallback when a crash came
    # between the two.
    gates = [(f"gate: {(c.checks or {}).get('failed_gate') or journal_gate.get(c.id) or 'unknown'}",
              c.id, c.error or "") for c in cands if c.status == "rejected"]
    return gates + rows


def _cognition(store: Store) -> list[dict[str, Any]]:
    entries = []
    folder = store.cognition_dir
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        entry = _read(path)
        if not isinstance(entry, dict):
            continue
        if entry.get("kind") == "lesson" or entry.get("supporting") or entry.get("contradicting"):
            entries.append(entry)
    return entries


# ---- plots ----------------------------------------------------------------------------------
# Figures are drawn with matplotlib's object API on the Agg canvas: no pyplot state, no display.

STATUS_COLORS = {"rejected": "#bbbbbb", "failed": "#d62728", "lost": "#d62728",
                 "cancelled": "#bbbbbb", "submit_failed": "#d62728"}
TOP_CURVES = 4
"""Proposals whose training curves are drawn against the baselines."""


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Any, path: Path) -> bool:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return True


def plot_progress(data: RunData, path: Path) -> bool:
    """Best fitness so far against proposals trained, and against GPU (or wall) hours."""
    pts = data.trained
    if not pts:
        return False
    best, running = [], float("-inf")
    for p in pts:
        running = max(running, p.fitness)
        best.append(running)
    gpu = pts[-1].gpu_hours > 0
    hours = [p.gpu_hours if gpu else p.wall_hours for p in pts]
    fig, (a, b) = _figure(11, 3.8, ncols=2)
    for ax, xs, xlabel in ((a, list(range(1, len(pts) + 1)), "proposals trained (in order)"),
                           (b, hours, "GPU-hours spent by the run" if gpu else
                            "wall-clock hours since the run started (no GPU-hours recorded)")):
        ax.scatter(xs, [p.fitness for p in pts], s=14, color="#9ecae1", label="each proposal")
        ax.step(xs, best, where="post", color="#08519c", label="best so far")
        ax.axhline(0.0, color="black", lw=0.8, ls="--", label="reference baseline")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fitness")
        ax.xaxis.get_major_locator().set_params(integer=ax is a)
        ax.grid(alpha=0.3)
    a.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _layers(cands: dict[str, Candidate]) -> dict[str, tuple[float, int]]:
    """(x, generation) per candidate, one unit apart within a generation: the children of one
    anchor (`Candidate.anchor`, drawn in an earlier generation) are centred under it, overlaps
    pushed apart and the layer shifted back by the mean push; candidates without an anchor
    follow on the right (a layer of none, e.g. the baselines, is centred on 0)."""
    by_gen: dict[int, list[Candidate]] = {}
    for c in cands.values():
        by_gen.setdefault(c.generation, []).append(c)
    pos: dict[str, tuple[float, int]] = {}
    for gen in sorted(by_gen):
        groups: dict[str | None, list[str]] = {}
        for c in sorted(by_gen[gen], key=lambda c: c.id):
            anchor = c.anchor if c.anchor in pos else None
            groups.setdefault(anchor, []).append(c.id)
        wanted: list[tuple[float, str]] = []
        for anchor, members in groups.items():
            if anchor is not None:
                centre = pos[anchor][0]
                wanted += [(centre - (len(members) - 1) / 2 + j, cid)
                           for j, cid in enumerate(members)]
        loose = groups.get(None, [])
        start = max(x for x, _ in wanted) + 1 if wanted else -(len(loose) - 1) / 2
        wanted += [(start + j, cid) for j, cid in enumerate(loose)]
        wanted.sort()
        placed: list[float] = []
        for x, _ in wanted:
            placed.append(max(x, placed[-1] + 1) if placed else x)
        shift = sum(w - x for (w, _), x in zip(wanted, placed)) / len(placed)
        for (_, cid), x in zip(wanted, placed):
            pos[cid] = (x + shift, gen)
    return pos


def plot_lineage(data: RunData, path: Path) -> bool:
    """Parents -> children, one row per generation, coloured by fitness or by failure."""
    cands = data.candidates
    if not cands:
        return False
    from matplotlib import cm, colormaps, colors

    pos = _layers(cands)
    widest = max(Counter(g for _, g in pos.values()).values())
    gens = max(g for _, g in pos.values()) + 1
    fig, (ax,) = _figure(min(28.0, max(7.0, 0.8 * widest)), min(28.0, max(3.0, 0.9 * gens + 1)))
    for c in cands.values():
        for p in c.parents:
            if p in pos:
                ax.plot([pos[p][0], pos[c.id][0]], [pos[p][1], pos[c.id][1]], color="#999999",
                        lw=0.7, zorder=1)
        if not c.parents and c.anchor in pos:  # no parent: dotted to the baseline it derives from
            a = pos[c.anchor]
            ax.plot([a[0], pos[c.id][0]], [a[1], pos[c.id][1]], color="#bbbbbb", lw=0.7,
                    ls=":", zorder=1)
    scored = [c.fitness for c in cands.values() if c.fitness is not None]
    span = max([abs(f) for f in scored] + [1e-9])
    norm = colors.Normalize(-span, span)
    cmap = colormaps["RdYlGn"]
    for c in cands.values():
        x, y = pos[c.id]
        face = (cmap(norm(c.fitness)) if c.fitness is not None
                else STATUS_COLORS.get(c.status, "white"))
        ax.scatter([x], [y], s=140, c=[face], edgecolors="black", linewidths=0.6, zorder=2,
                   marker="s" if c.kind == "baseline" else
                   "X" if c.status in STATUS_COLORS else "o")
        if len(cands) <= 60:
            ax.annotate(c.name or c.id, (x, y), xytext=(0, 9), textcoords="offset points",
                        ha="center", fontsize=7)
    if scored:
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="fitness")
    ax.set_ylim(gens - 0.5, -0.7)  # generation 0 (the baselines) on top
    ax.set_ylabel("generation")
    ax.set_yticks(range(gens))
    ax.set_xticks([])
    ax.set_title("squares: baselines; X: rejected (grey) or failed (red); circles: proposals",
                 fontsize=9)
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (tokens/s, bpb) points no other point beats on both (faster and lower bpb)."""
    front: list[tuple[float, float]] = []
    for tps, bpb in sorted(points, key=lambda p: (-p[0], p[1])):
        if not front or bpb < front[-1][1]:
            front.append((tps, bpb))
    return front


def plot_pareto(data: RunData, path: Path) -> bool:
    """Held-out bits per byte against training throughput; the Pareto front marked."""
    pts = [(c, float(c.metrics["tokens_per_s"]), float(c.metrics["bpb"]))
           for c in data.candidates.values()
           if isinstance(c.metrics.get("tokens_per_s"), (int, float))
           and isinstance(c.metrics.get("bpb"), (int, float))]
    if not pts:
        return False
    fig, (ax,) = _figure(8, 5)
    for kind, marker, color in (("proposal", "o", "#3182bd"), ("baseline", "s", "black")):
        sel = [(t, b) for c, t, b in pts if (c.kind == "baseline") == (kind == "baseline")]
        if sel:
            ax.scatter(*zip(*sel), marker=marker, color=color, s=30, label=kind + "s", zorder=2)
    front = pareto_front([(t, b) for _, t, b in pts])
    ax.step(*zip(*front), where="post", color="#d62728", lw=1, zorder=1)
    ax.scatter(*zip(*front), s=110, facecolors="none", edgecolors="#d62728", zorder=3,
               label="Pareto front")
    for c, t, b in pts:
        if c.kind == "baseline" or len(pts) <= 30:
            ax.annotate(c.label, (t, b), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set_xlabel("training throughput (tokens/s, higher is better)")
    ax.set_ylabel("held-out bits per byte (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_curves(data: RunData, path: Path) -> bool:
    """Training loss by step per track: the top proposals against the baselines."""
    cands = list(data.candidates.values())
    top = sorted((c for c in cands if c.kind == "proposal" and c.fitness is not None),
                 key=lambda c: -(c.fitness or 0.0))[:TOP_CURVES]
    shown = [c for c in cands if c.kind == "baseline"] + top
    tracks = sorted({t for c in shown for t in c.curves})
    if not tracks:
        return False
    fig, axes = _figure(5.5 * len(tracks), 4, ncols=len(tracks))
    for ax, track in zip(axes, tracks):
        for c in shown:
            curve = c.curves.get(track)
            if not curve:
                continue
            base = c.kind == "baseline"
            label = (f"{c.label} (seed {c.proposal.get('seed', '?')})" if base
                     else f"{c.id} ({_num(c.fitness, '+.3f')})")
            ax.plot(*zip(*curve), ls="--" if base else "-", lw=1.2, marker=".", label=label)
        ax.set_title(f"track {track}")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_failures(data: RunData, path: Path) -> bool:
    """How many candidates each gate rejected, and how many trainings failed or were lost."""
    counts = Counter(stage for stage, _, _ in data.failures)
    if not counts:
        return False
    stages = sorted(counts, key=lambda s: (-counts[s], s))
    fig, (ax,) = _figure(8, 0.4 * len(stages) + 1.2)
    ax.barh(stages[::-1], [counts[s] for s in stages[::-1]], color="#d62728")
    ax.set_xlabel("count")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _save(fig, path)


def _ablation_rows(data: RunData) -> list[tuple[str, float, float]]:
    """(field, contribution to fitness, its 95% half-width or 0) per ablation table row."""
    out = []
    for row in (data.ablation or {}).get("table") or []:
        if not isinstance(row, dict):
            continue
        mean, half = term(row, "contribution_fitness")
        if isinstance(mean, (int, float)):
            out.append((str(row.get("field")), float(mean),
                        float(half) if isinstance(half, (int, float)) else 0.0))
    return out


def plot_ablation(data: RunData, path: Path) -> bool:
    """What each change of the ablated candidate contributes to its fitness (full design minus
    the design with that change reverted), with 95% intervals."""
    rows = _ablation_rows(data)
    if not rows:
        return False
    fig, (ax,) = _figure(8, 0.45 * len(rows) + 1.4)
    names = [r[0] for r in rows][::-1]
    means = [r[1] for r in rows][::-1]
    ax.barh(names, means, xerr=[r[2] for r in rows][::-1], capsize=4,
            color=["#31a354" if m > 0 else "#d62728" for m in means])
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_xlabel("contribution to fitness (full design minus the reverted one), 95% interval")
    ax.set_title(f"ablation of {(data.ablation or {}).get('candidate')} against "
                 f"{(data.ablation or {}).get('baseline')}", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


PLOTS: dict[str, tuple[str, Callable[[RunData, Path], bool]]] = {
    "progress": ("Best fitness so far", plot_progress),
    "lineage": ("Lineage", plot_lineage),
    "pareto": ("Quality against throughput", plot_pareto),
    "curves": ("Training curves: top proposals against the baselines", plot_curves),
    "failures": ("Failures by gate", plot_failures),
}
"""File stem -> (section title, draw function returning False when there is nothing to draw)."""


# ---- HTML -----------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: 2px 8px; text-align: left;
 border-bottom: 1px solid #eee; vertical-align: top; } th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; } .muted { color: #777; }
.cand { border-left: 3px solid #ddd; padding-left: 1em; margin: 1.2em 0; }
pre { background: #f7f7f7; padding: .5em; overflow-x: auto; white-space: pre-wrap; }
.lesson { margin: .6em 0; } .support { color: #1a7f37; } .contradict { color: #b42318; }
"""


class _Ids:
    """Turns candidate ids inside already-escaped text into links to their sections."""

    def __init__(self, known: set[str]) -> None:
        self.known = known

    def __call__(self, escaped: str) -> str:
        return CANDIDATE_REF.sub(
            lambda m: f'<a href="#{m[0]}">{m[0]}</a>' if m[0] in self.known else m[0], escaped)

    def text(self, value: Any) -> str:
        return self(esc(value))


def _num(x: Any, spec: str) -> str:
    return "-" if not isinstance(x, (int, float)) else format(x, spec)


def _summary(view: RunView) -> str:
    s = status(view)
    counts = ", ".join(f"{esc(k)} {v}" for k, v in sorted(s["by_status"].items()))
    best = s.get("best")
    best_text = (f'<a href="#{esc(best["id"])}">{esc(best["id"])}</a> fitness '
                 f'{_num(best["fitness"], "+.4f")}' if best else "none yet")
    return (f"<table><tr><th>driver</th><td>{esc(s['driver'])}</td></tr>"
            f"<tr><th>candidates</th><td>{s['candidates']} in {s['generations']} generations "
            f"({counts})</td></tr><tr><th>in flight</th><td>{s['in_flight']}</td></tr>"
            f"<tr><th>GPU-hours</th><td>{s['gpu_hours']}</td></tr>"
            f"<tr><th>best proposal</th><td>{best_text}</td></tr>" + _summary_more(s)
            + "</table>")


def _summary_more(s: dict[str, Any]) -> str:
    """Rows for follow-ups, confirmations and the model, when the run has any."""
    rows = []
    for key, v in (s.get("versus_best_baselines") or {}).items():
        rows.append((f"best proposal vs best baseline ({esc(key)})",
                     f"{esc(v['proposal'])} {_num(v['value'], '.4f')} against "
                     f"{esc(v['baseline'])} {_num(v['baseline_value'], '.4f')}: "
                     f"<b>{'better' if v['better'] else 'not better'}</b>"))
    f = s.get("follow_ups") or {}
    if any(sum(v.values()) for v in f.values()):
        rows.append(("follow-up trainings", "; ".join(
            f"{esc(k)}s: {v['in_flight']} in flight, {v['done']} done, {v['failed']} failed"
            for k, v in f.items())))
    c = s.get("confirmed") or {}
    if c.get("candidates"):
        rows.append(("confirmed", f"{c['candidates']} candidates: {c['better']} better than "
                     f"the reference, {c['same']} not distinguishable, {c['worse']} worse"))
    for preset, p in (s.get("promoted") or {}).items():
        rows.append((f"promoted ({esc(preset)})", f"{p['candidates']} candidates: "
                     f"{p['better']} better, {p['same']} not distinguishable, {p['worse']} worse"))
    llm = s.get("llm") or {}
    if llm.get("source") or llm.get("calls") or llm.get("fallbacks"):
        calls = ", ".join(f"{esc(k)} {v}" for k, v in llm["calls"].items()) or "none"
        rows.append(("model", f"{esc(llm.get('source') or '-')}; stored calls: {calls}; "
                     f"proposals by the model {llm['proposals']}, by the mutator in its place "
                     f"{llm['fallbacks']}"))
    if llm.get("analyzers"):
        rows.append(("analyses", ", ".join(f"{esc(k)} {v}" for k, v in llm["analyzers"].items())))
    return "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)


def _leaderboard(view: RunView, ids: _Ids) -> str:
    head = ("rank", "id", "kind", "what", "fitness", "mean ± 95% CI", "seeds", "verdict",
            "promotion", "bpb", "MQAR", "tokens/s", "parents", "gen")
    rows = []
    for i, r in enumerate(leaderboard(view), start=1):
        promotion = ", ".join(f"{p}: {w}" for p, w in (r.get("verify") or {}).items()) or "-"
        rows.append(
            f"<tr><td class=num>{i}</td><td>{ids.text(r['id'])}</td><td>{esc(r['kind'])}</td>"
            f"<td title=\"{esc(r['label'])}\">{ids.text(shorten(r['label']))}</td>"
            f"<td class=num>{_num(r['fitness'], '+.4f')}</td>"
            f"<td class=num>{esc(fmt_ci(r.get('mean'), r.get('ci95')))}</td>"
            f"<td class=num>{esc(r.get('seeds'))}</td><td>{esc(r.get('verdict'))}</td>"
            f"<td>{esc(promotion)}</td>"
            f"<td class=num>{_num(r['bpb'], '.4f')}</td><td class=num>{_num(r['mqar'], '.3f')}</td>"
            f"<td class=num>{_num(r['tokens_per_s'], ',.0f')}</td>"
            f"<td>{ids.text(', '.join(r['parents']))}</td>"
            f"<td class=num>{esc(r['generation'])}</td></tr>")
    if not rows:
        return "<p class=muted>No candidate has finished training yet.</p>"
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows)
            + "</table>")


def _confirmation_section(cands: list[Candidate], ids: _Ids) -> str:
    """Every confirmation and promotion: seeds, fitness mean ± 95% CI, verdict; '' if none."""
    rows = []
    for c in cands:
        for preset, conf in sorted(c.confirmations.items(), key=lambda kv: kv[0] or ""):
            fit, bpb = term(conf), term(conf, "delta_bpb")
            failed = conf.get("failed") or 0
            rows.append(
                f"<tr><td>{ids.text(c.id)}</td><td>{ids.text(c.label)}</td>"
                f"<td>{esc(preset or 'run')}</td>"
                f"<td class=num>{esc(conf.get('seeds'))}"
                + (f" ({esc(failed)} failed)" if failed else "") + "</td>"
                f"<td class=num>{esc(conf.get('reference_seeds'))}</td>"
                f"<td class=num>{esc(fmt_ci(*fit))}</td><td class=num>{esc(fmt_ci(*bpb))}</td>"
                f"<td><b>{esc(verdict_word(conf))}</b></td>"
                f"<td>{ids.text(', '.join(map(str, conf.get('members') or [])))}</td></tr>")
    if not rows:
        return ""
    head = ("candidate", "what", "preset", "seeds", "reference seeds",
            "fitness mean ± 95% CI", "bpb delta ± 95% CI", "verdict", "trainings")
    return ("<h2>Confirmation</h2><p class=muted>Each candidate re-trained with more seeds (and "
            "at a larger preset when promoted), against the reference baseline's seeds at the "
            "same preset. better / worse: the 95% interval of the difference excludes zero; "
            "=: it does not.</p><table><tr>" + "".join(f"<th>{h}</th>" for h in head)
            + "</tr>" + "".join(rows) + "</table>")


def _ablation_section(data: RunData, ids: _Ids, out: Path) -> str:
    """The ablation file as a table (skipped fields with their note) and a bar chart; '' if none."""
    abl = data.ablation
    if not abl:
        return ""
    table = {str(r.get("field")): r for r in abl.get("table") or [] if isinstance(r, dict)}
    rows = []
    for p in abl.get("plan") or []:
        if not isinstance(p, dict):
            continue
        name = str(p.get("field"))
        change = f"{esc(str(p.get('from')))} &rarr; {esc(str(p.get('to')))}"
        row = table.pop(name, None)
        if p.get("note"):
            cells = f"<td colspan=4 class=muted>skipped: {ids.text(p['note'])}</td>"
        elif row is None:
            cells = "<td colspan=4 class=muted>" + (
                "no result" if abl.get("complete") else "training") + "</td>"
        else:
            cells = _ablation_cells(row)
        rows.append(f"<tr><td>{esc(name)}</td><td>{change}</td>{cells}</tr>")
    for name, row in table.items():  # a table row the plan does not name (hand-edited file)
        rows.append(f"<tr><td>{esc(name)}</td><td>-</td>{_ablation_cells(row)}</tr>")
    drawn = plot_ablation(data, out / "ablation.png")
    state = "complete" if abl.get("complete") else "in progress: the table follows once every " \
        "training of it has finished"
    head = ("field", "change reverted (candidate &rarr; baseline)", "seeds",
            "variant fitness ± 95% CI", "contribution to fitness ± 95% CI",
            "contribution to bpb delta ± 95% CI")
    base = abl.get("baseline") or "(not chosen yet)"
    return (f"<h2>Ablation</h2><p>Each change of {ids.text(abl.get('candidate'))} relative to "
            f"its nearest baseline {esc(base)}, reverted one at a time; the "
            f"contribution is the full design's value minus the reverted one's (positive: the "
            f"change helped). Chosen as {esc(str(abl.get('chosen') or 'the best candidate'))}. "
            f"<span class=muted>{esc(state)}.</span></p><table><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
            + ('<img src="ablation.png" alt="ablation: contribution of each change">'
               if drawn else ""))


def _ablation_cells(row: dict[str, Any]) -> str:
    failed = row.get("failed") or 0
    return (f"<td class=num>{esc(row.get('seeds'))}"
            + (f" ({esc(failed)} failed)" if failed else "") + "</td>"
            f"<td class=num>{esc(fmt_ci(*term(row)))}</td>"
            f"<td class=num>{esc(fmt_ci(*term(row, 'contribution_fitness')))}</td>"
            f"<td class=num>{esc(fmt_ci(*term(row, 'contribution_delta_bpb')))}</td>")


def _failure_table(data: RunData, ids: _Ids) -> str:
    if not data.failures:
        return "<p class=muted>No failures recorded.</p>"
    rows = "".join(f"<tr><td>{esc(stage)}</td><td>{ids.text(cid)}</td>"
                   f"<td>{ids.text(reason[:400])}</td></tr>"
                   for stage, cid, reason in data.failures)
    return f"<table><tr><th>stage</th><th>candidate</th><th>reason</th></tr>{rows}</table>"


def _lesson_html(lesson: dict[str, Any], ids: _Ids) -> str:
    polarity = str(lesson.get("polarity", ""))
    cls = "contradict" if polarity == "contradict" else "support"
    evidence = lesson.get("evidence") or []
    if not isinstance(evidence, list):
        evidence = [evidence]
    links = ", ".join(ids.text(e) for e in evidence)
    return (f"<div class=lesson><b class={cls}>{ids.text(lesson.get('title', ''))}</b><br>"
            f"{ids.text(lesson.get('insight', ''))} <i>{ids.text(lesson.get('guidance', ''))}</i>"
            f"<br><span class=muted>evidence: {links or '-'}</span></div>")


def _lessons(cands: list[Candidate], cognition: list[dict[str, Any]], ids: _Ids) -> str:
    parts = []
    for c in cands:
        for lesson in (c.analysis or {}).get("lessons") or []:
            if isinstance(lesson, dict):
                parts.append(f"<p class=muted>from the analysis of {ids.text(c.id)}:</p>"
                             + _lesson_html(lesson, ids))
    if not parts:
        parts.append("<p class=muted>No analysis has drawn a lesson yet.</p>")
    parts.append("<h3>Cognition base</h3>")
    if not cognition:
        parts.append("<p class=muted>No lessons in the run's cognition base, and no idea of it "
                     "has gathered evidence yet.</p>")
    for e in cognition:
        evidence = "".join(
            f"<li class={cls}>{word}: {ids.text(ev.get('source', ''))}: "
            f"{ids.text(ev.get('note', ''))}</li>"
            for key, cls, word in (("supporting", "support", "supports"),
                                   ("contradicting", "contradict", "contradicts"))
            for ev in e.get(key) or [] if isinstance(ev, dict))
        parts.append(f"<div class=lesson><b>{esc(e.get('id'))} ({esc(e.get('kind'))}): "
                     f"{ids.text(e.get('title'))}</b><br>{ids.text(e.get('insight'))} "
                     f"<i>{ids.text(e.get('guidance'))}</i><br><span class=muted>source: "
                     f"{ids.text(e.get('source'))}; observations {esc(e.get('observations'))}"
                     f"</span><ul>{evidence}</ul></div>")
    return "".join(parts)


def _candidate_html(c: Candidate, ids: _Ids) -> str:
    metrics = (c.result or {}).get("metrics") or {}
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    rows = [("status", esc(c.status)), ("kind", esc(c.kind + (f" {c.name}" if c.name else ""))),
            ("design", ids.text(c.design or "-")),
            ("generation", esc(c.generation)), ("parents", ids.text(", ".join(c.parents) or "-")),
            ("fitness", _num(c.fitness, "+.4f")),
            ("proposer", esc(c.proposal.get("proposer", "-"))),
            ("metrics", esc(", ".join(f"{k} {v:.4g}" for k, v in shown.items()) or "-"))]
    p = c.proposal
    if c.kind == "replica":
        where = f" at preset {p['preset']}" if p.get("preset") else ""
        rows.append(("re-trains", ids.text(f"{p.get('of')} with seed {p.get('seed')}{where}")))
    elif c.kind == "ablation":
        rows.append(("re-trains", ids.text(f"{p.get('of')} with its {p.get('revert')} change "
                                           f"reverted (seed {p.get('seed')})")))
    if str(p.get("proposer", "")).startswith("llm-"):
        rows.append(("model", esc(f"{p.get('model') or '?'} "
                                  f"(prompt {p.get('prompt_hash') or '-'})")))
        if p.get("changes"):
            rows.append(("changes", ids.text("; ".join(map(str, p["changes"])))))
        if p.get("lessons_used"):
            rows.append(("lessons used", esc(", ".join(map(str, p["lessons_used"])))))
    if p.get("llm_error"):
        rows.append(("model fallback", "the mutator filled the slot: "
                     + ids.text(str(p["llm_error"])[:400])))
    if c.llm_calls:
        rows.append(("stored model calls", esc(", ".join(f"{k} {v}"
                                                         for k, v in c.llm_calls.items()))))
    for preset, conf in sorted(c.confirmations.items(), key=lambda kv: kv[0] or ""):
        rows.append(("confirmation" if preset is None else f"verify ({esc(preset)})",
                     f"<b>{esc(verdict_word(conf))}</b>: fitness {esc(fmt_ci(*term(conf)))} "
                     f"over {esc(conf.get('seeds'))} seeds"))
    if c.checks:
        verdict = "passed" if c.checks.get("passed") else f"failed at {c.checks.get('failed_gate')}"
        rows.append(("checks", esc(verdict)))
    if c.error:
        # The journal keeps the last error of a candidate that was resubmitted and then trained.
        failed = c.status in FAILING
        rows.append(("error" if failed else "earlier error", ids.text(c.error[:1000])))
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    analysis = (c.analysis or {}).get("analysis")
    return (f'<div class=cand id="{esc(c.id)}"><h3>{esc(c.id)}: {esc(c.label)}</h3>'
            f"<p>{ids.text(c.proposal.get('motivation', ''))}</p><table>{table}</table>"
            + (f"<p><b>analysis</b> ({esc((c.analysis or {}).get('analyzer', ''))}): "
               f"{ids.text(analysis)}</p>" if analysis else "")
            + f"<p class=muted>files: candidates/{esc(c.id)}/</p></div>")


def write_report(run: Path, out: Path) -> Path:
    """Write index.html and its PNG plots into `out`; returns the path of index.html."""
    run, out = Path(run), Path(out)
    view = RunView.open(run)  # the run is read once; every section draws from this view
    data, cands = load_run(view)
    out.mkdir(parents=True, exist_ok=True)
    ids = _Ids(set(data.candidates))
    figures = []
    for name, (title, draw) in PLOTS.items():
        drawn = draw(data, out / f"{name}.png")
        figures.append(f"<h2>{esc(title)}</h2>" + (
            f'<img src="{name}.png" alt="{esc(title)}">' if drawn else
            "<p class=muted>Nothing to draw yet.</p>"))
        if name == "failures":
            figures.append(_failure_table(data, ids))
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    page = (
        f"<!DOCTYPE html><html><head><meta charset=utf-8><title>evolve report: {esc(data.name)}"
        f"</title><style>{CSS}</style></head><body><h1>evolve report: {esc(data.name)}</h1>"
        f"<p class=muted>{esc(run.absolute())}, generated {esc(generated)}</p>"
        + _summary(view) + "<h2>Leaderboard</h2>" + _leaderboard(view, ids)
        + _confirmation_section(cands, ids) + _ablation_section(data, ids, out)
        + "".join(figures) + "<h2>Lessons</h2>" + _lessons(cands, data.cognition, ids)
        + "<h2>Candidates</h2>" + "".join(_candidate_html(c, ids) for c in reversed(cands))
        + "</body></html>\n")
    index = out / "index.html"
    atomic_write_text(index, page)
    return index


def main_report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="evolve report",
                                     description="Write a run's static HTML report with plots.")
    parser.add_argument("run", help="run folder, e.g. state/demo")
    parser.add_argument("--out", help="output folder (default: RUN/report/)")
    args = parser.parse_args(argv)
    run = Path(args.run)
    try:
        index = write_report(run, Path(args.out) if args.out else RunLayout(run).report_dir)
    except StateError as exc:
        print(f"evolve report: {exc}", file=sys.stderr)
        return 2
    print(index)
    return 0
