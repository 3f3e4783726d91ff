"""Trainings that test a claim instead of exploring: replicas with more seeds (noise-aware
confirmation), the same file at a larger preset (promotion), and one-at-a-time reversions of a
design's changes to its nearest baseline (ablation).

    verdict = confirm(cand_results, ref_results, cfg.fitness)   # {"better": True, "fitness": ..}
    name, diffs = nearest_baseline(spec, BASELINE_SPECS)
    for field, variant in ablation_variants(spec, BASELINE_SPECS[name]): ...
    table = ablation_table(full_results, {field: results}, ref_results, cfg.fitness)

A claim "better than the reference" stands only when the 95% interval of the difference
between the candidate's seeds and the reference baseline's seeds excludes zero (Welch's
interval: neither side's spread is assumed equal to the other's).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from evolve.search.fitness import Reference, diff_ci, fitness
from evolve.model.space import FIELDS, MixerSpec, SpecError

TERMS = ("fitness", "delta_bpb", "delta_mqar", "delta_bench")


@dataclass(kw_only=True)
class PromoteConfig:
    """Re-running the best candidates at a larger preset once the search is complete."""

    top: int = 0
    """How many of the best candidates to re-train at `preset` (0: no promotion). With
    search.confirm_top > 0 only candidates confirmed better than the reference qualify."""
    preset: str = "verify"
    """The preset they are re-trained at (the reference baseline is trained there too)."""
    train: dict[str, Any] = field(default_factory=dict)
    """Overrides of that preset, with the keys of the run file's `train` section."""
    launch: dict[str, Any] = field(default_factory=dict)
    """Overrides of the run's `launch` keys for the promoted trainings, e.g. {partition: gpu,
    gpus_per_task: 1} when a CPU search promotes to a GPU preset."""

    def __post_init__(self) -> None:
        from evolve.config.loading import choice
        from evolve.train.presets import PRESETS

        choice("promote.preset", self.preset, PRESETS)
        if self.top < 0:
            raise ValueError(f"promote.top={self.top!r} must be >= 0")
        self.train_config()  # unknown keys and bad values fail when the run file is read

    def train_config(self) -> Any:
        """The TrainConfig of promoted trainings: the preset with `train` applied."""
        from evolve.config.loading import check_keys, deep_update, from_dict, to_dict
        from evolve.train.presets import TrainConfig, preset

        check_keys(TrainConfig, self.train, "search.promote.train", {}, "search.promote.train")
        return from_dict(TrainConfig, deep_update(to_dict(preset(self.preset)), self.train),
                         source="search.promote.train")


def _values(results: list[Mapping[str, Any]], ref: Reference, cfg: Any) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {t: [] for t in TERMS}
    for r in results:
        score = fitness(dict(r), ref, cfg)
        for t in TERMS:
            if score.get(t) is not None:
                out[t].append(float(score[t]))
    return out


def confirm(cand_results: list[Mapping[str, Any]], ref_results: list[Mapping[str, Any]],
            cfg: Any, ref_name: str = "reference") -> dict[str, Any]:
    """Each term's difference (candidate seeds minus reference seeds, both measured against the
    reference's mean) with its 95% interval; `better` when fitness's interval excludes zero
    on the positive side."""
    ok_c = [r for r in cand_results if r.get("status") == "ok"]
    ok_r = [r for r in ref_results if r.get("status") == "ok"]
    ref = Reference.from_results(ok_r, ref_name, getattr(cfg, "mqar_pairs", None))
    c, b = _values(ok_c, ref, cfg), _values(ok_r, ref, cfg)
    out: dict[str, Any] = {"seeds": len(ok_c), "reference_seeds": len(ok_r),
                           "reference": ref_name}
    for t in TERMS:
        if c[t] and b[t]:
            mean, half = diff_ci(c[t], b[t])
            out[t] = {"mean": mean, "ci95": half, "values": c[t]}
    f = out.get("fitness")
    out["better"] = bool(f and not math.isnan(f["ci95"]) and f["mean"] - f["ci95"] > 0)
    out["worse"] = bool(f and not math.isnan(f["ci95"]) and f["mean"] + f["ci95"] < 0)
    return out


def versus(cand_results: list[Mapping[str, Any]], other_results: list[Mapping[str, Any]],
           ref_results: list[Mapping[str, Any]], cfg: Any,
           ref_name: str = "reference") -> dict[str, Any]:
    """The candidate against another baseline (e.g. Gated DeltaNet when the reference is
    DeltaNet): each term's difference with its 95% interval, both sides scored against the
    reference's mean."""
    ref = Reference.from_results([r for r in ref_results if r.get("status") == "ok"], ref_name,
                                 getattr(cfg, "mqar_pairs", None))
    c = _values([r for r in cand_results if r.get("status") == "ok"], ref, cfg)
    o = _values([r for r in other_results if r.get("status") == "ok"], ref, cfg)
    out: dict[str, Any] = {"seeds": len(o[TERMS[0]])}
    for t in TERMS:
        if c[t] and o[t]:
            mean, half = diff_ci(c[t], o[t])
            out[t] = {"mean": mean, "ci95": half}
    f = out.get("fitness")
    out["better"] = bool(f and not math.isnan(f["ci95"]) and f["mean"] - f["ci95"] > 0)
    return out


def differing_fields(a: MixerSpec, b: MixerSpec) -> list[str]:
    return [f for f in FIELDS if getattr(a, f) != getattr(b, f)]


def nearest_baseline(spec: MixerSpec, baselines: Mapping[str, MixerSpec],
                     prefer: str | None = None) -> tuple[str, list[str]]:
    """The baseline with the fewest differing fields (ties: `prefer`, else the first listed),
    and those fields."""
    diffs = {n: differing_fields(spec, b) for n, b in baselines.items()}
    best = min(diffs, key=lambda n: (len(diffs[n]), n != prefer))
    return best, diffs[best]


def ablation_variants(spec: MixerSpec, base: MixerSpec) -> list[tuple[str, MixerSpec | None, str]]:
    """(field, variant, note) for each field where `spec` differs from `base`: the variant is
    `spec` with that one field set back to the baseline's value, or None (with the reason) when
    that combination is not a valid design."""
    out: list[tuple[str, MixerSpec | None, str]] = []
    for name in differing_fields(spec, base):
        try:
            variant = spec.replace(**{name: getattr(base, name)})
        except (SpecError, ValueError) as exc:
            out.append((name, None, f"not a valid design: {exc}"))
            continue
        if variant.digest() == spec.digest():
            out.append((name, None, "inert in this design: reverting it changes nothing"))
            continue
        out.append((name, variant, ""))
    return out


def ablation_table(full: list[Mapping[str, Any]], variants: Mapping[str, list[Mapping[str, Any]]],
                   ref_results: list[Mapping[str, Any]], cfg: Any,
                   ref_name: str = "reference") -> list[dict[str, Any]]:
    """One row per reverted field: the variant's fitness and what reverting it cost (full
    minus variant, with its interval: positive means the field's change helped)."""
    ok_r = [r for r in ref_results if r.get("status") == "ok"]
    ref = Reference.from_results(ok_r, ref_name, getattr(cfg, "mqar_pairs", None))
    full_v = _values([r for r in full if r.get("status") == "ok"], ref, cfg)
    rows = []
    for name, results in variants.items():
        ok = [r for r in results if r.get("status") == "ok"]
        v = _values(ok, ref, cfg)
        row: dict[str, Any] = {"field": name, "seeds": len(ok), "failed": len(results) - len(ok)}
        for t in TERMS:
            if v[t]:
                row[t] = _mean_ci(v[t])
                if full_v[t]:
                    d, h = diff_ci(full_v[t], v[t])
                    row[f"contribution_{t}"] = {"mean": d, "ci95": h}
        rows.append(row)
    return rows


def _mean_ci(values: list[float]) -> dict[str, float]:
    from evolve.search.fitness import mean_ci

    mean, half = mean_ci(values)
    return {"mean": mean, "ci95": half}
