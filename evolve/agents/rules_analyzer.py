"""The model-free analyzer: what a finished candidate did against its parents and the reference.

    report = analyze(candidate, parents, reference)   # {"analysis": "...", "lessons": [...]}

Used when no model serves the run; the LLM analyzer (evolve.agents.analyzer) writes richer text. Lessons
are only drawn where the difference is larger than the noise the run has measured.
"""

from __future__ import annotations

from typing import Any

from evolve.model.space import MixerSpec

NOISE_BPB = 0.05
"""Differences in bits per byte below this are not resolvable at tiny scale (docs/BASELINES.md)."""
NOISE_MQAR = 0.05
"""Differences in MQAR accuracy below this are within seed noise at tiny scale."""


def spec_changes(parent: MixerSpec | None, child: MixerSpec | None) -> dict[str, tuple[Any, Any]]:
    if parent is None or child is None:
        return {}
    a, b = parent.to_dict(), child.to_dict()
    return {k: (a.get(k), b.get(k)) for k in b if a.get(k) != b.get(k)}


def _delta(cand: dict[str, Any], other: dict[str, Any], key: str) -> float | None:
    x, y = cand.get(key), other.get(key)
    return None if x is None or y is None else x - y


def analyze(cand: dict[str, Any], parents: list[dict[str, Any]], reference: dict[str, Any],
            run: str = "") -> dict[str, Any]:
    """`cand`/`parents`/`reference`: {"id", "metrics", "spec" (MixerSpec|None), "fitness"}."""
    lines: list[str] = []
    lessons: list[dict[str, Any]] = []
    m = cand.get("metrics", {})
    lines.append(f"{cand['id']}: bpb {m.get('bpb')}, MQAR {m.get('mqar_acc')}, fitness "
                 f"{cand.get('fitness')}; reference {reference.get('id')}: bpb "
                 f"{reference.get('metrics', {}).get('bpb')}, MQAR "
                 f"{reference.get('metrics', {}).get('mqar_acc')}.")
    for parent in parents:
        changes = spec_changes(parent.get("spec"), cand.get("spec"))
        d_bpb = _delta(m, parent.get("metrics", {}), "bpb")
        d_mqar = _delta(m, parent.get("metrics", {}), "mqar_acc")
        desc = ", ".join(f"{k}: {a} -> {b}" for k, a, b in
                         ((k, *v) for k, v in changes.items())) or "no spec change recorded"
        lines.append(f"Against parent {parent['id']} ({desc}): d_bpb={_fmt(d_bpb)}, "
                     f"d_mqar={_fmt(d_mqar)}.")
        effects = []
        if d_bpb is not None and abs(d_bpb) > NOISE_BPB:
            effects.append(f"{'lowered' if d_bpb < 0 else 'raised'} bits per byte by "
                           f"{abs(d_bpb):.3f}")
        if d_mqar is not None and abs(d_mqar) > NOISE_MQAR:
            effects.append(f"{'raised' if d_mqar > 0 else 'lowered'} MQAR accuracy by "
                           f"{abs(d_mqar):.3f}")
        if changes and effects:
            helped = (d_bpb or 0) < -NOISE_BPB or (d_mqar or 0) > NOISE_MQAR
            lessons.append({
                "title": f"{desc} {'helped' if helped else 'hurt'}",
                "trigger": "designs like " + (parent.get("name") or parent["id"]),
                "insight": f"Changing {desc} {' and '.join(effects)} at this scale.",
                "guidance": ("Keep this change and build on it." if helped else
                             "Avoid this change, or pair it with a compensating one."),
                "source": f"run {run}: {cand['id']} vs parent {parent['id']}",
                "evidence": f"{cand['id']} against {parent['id']}: d_bpb={_fmt(d_bpb)}, "
                            f"d_mqar={_fmt(d_mqar)}",
                "tags": ["rules", "helped" if helped else "hurt"],
            })
    if cand.get("status") == "failed":
        lines.append(f"Training failed: {cand.get('reason')}")
    return {"analyzer": "rules", "analysis": " ".join(lines), "lessons": lessons}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"
