"""The model-free proposer: point mutations and crossover of mixer specs, seeded.

    rng = random.Random(0)
    for child in propose(list(BASELINE_SPECS.values()), rng, 8):
        print(child.spec.digest(), child.motivation)

Every child is valid, sub-quadratic, and new: it differs from each parent, from every spec in
`archive` (canonical digests) and from its siblings. It is the fallback proposer when no model
is configured, and it needs no torch.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from evolve.model.edits import allowed_values, describe_changes, show_value as _show
from evolve.model.space import FIELDS, MixerSpec, SpecError, baseline_name, repair


@dataclass(kw_only=True)
class MutatorConfig:
    """How the mutator draws children."""

    min_edits: int = 1
    """Fewest fields a point mutation changes."""
    max_edits: int = 3
    """Most fields a point mutation changes."""
    crossover_rate: float = 0.25
    """Probability that a child is a crossover of two parents (when there are two)."""
    attempts_per_child: int = 50
    """Draws allowed per requested child before `propose` gives up and returns fewer."""
    field_weights: dict[str, float] = field(default_factory=dict)
    """Relative chance of each field being mutated (default 1.0; 0 freezes a field)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_edits <= self.max_edits <= len(FIELDS):
            raise ValueError(f"need 1 <= min_edits ({self.min_edits}) <= max_edits "
                             f"({self.max_edits}) <= {len(FIELDS)}")
        if not 0.0 <= self.crossover_rate <= 1.0:
            raise ValueError(f"crossover_rate={self.crossover_rate} must be in [0, 1]")
        if self.attempts_per_child < 1:
            raise ValueError(f"attempts_per_child={self.attempts_per_child} must be >= 1")
        unknown = [name for name in self.field_weights if name not in FIELDS]
        if unknown:
            raise ValueError(f"field_weights has unknown field(s) {', '.join(unknown)}; valid "
                             f"fields: {', '.join(FIELDS)}")
        negative = {k: w for k, w in self.field_weights.items() if w < 0}
        if negative:
            raise ValueError(f"field_weights must be >= 0; got {negative}")


@dataclass(frozen=True, kw_only=True)
class Proposal:
    """A child spec with the machine-written reason for it."""

    spec: MixerSpec
    """The child."""
    motivation: str
    """What changed and why it might help, e.g. "From deltanet: changed beta from ..."."""
    operator: str
    """'mutation' or 'crossover'."""
    parents: tuple[str, ...]
    """Ids of the parents (as given to `propose`, else baseline names or spec digests)."""


def propose(parents: Sequence[MixerSpec], rng: random.Random | int, n: int, *,
            archive: Iterable[str] = (), parent_ids: Sequence[str] | None = None,
            config: MutatorConfig | None = None) -> list[Proposal]:
    """Up to `n` new children of `parents` (fewer only if the attempts run out)."""
    if not parents:
        raise ValueError("propose needs at least one parent spec")
    if parent_ids is not None and len(parent_ids) != len(parents):
        raise ValueError(f"{len(parent_ids)} parent_ids for {len(parents)} parents")
    rng = random.Random(rng) if isinstance(rng, int) else rng
    cfg = config or MutatorConfig()
    ids = list(parent_ids) if parent_ids is not None else [_name(p) for p in parents]
    seen = set(archive) | {p.digest() for p in parents}
    distinct = len({p.digest() for p in parents}) > 1
    out: list[Proposal] = []
    for _ in range(n * cfg.attempts_per_child):
        if len(out) == n:
            break
        if distinct and rng.random() < cfg.crossover_rate:
            child = _crossover(parents, ids, rng)
        else:
            child = _mutate(parents, ids, rng, cfg)
        if child is not None and child.spec.digest() not in seen:
            seen.add(child.spec.digest())
            out.append(child)
    return out


def _mutate(parents: Sequence[MixerSpec], ids: list[str], rng: random.Random,
            cfg: MutatorConfig) -> Proposal | None:
    i = rng.randrange(len(parents))
    parent = parents[i]
    candidates = [f for f in FIELDS
                  if cfg.field_weights.get(f, 1.0) > 0 and allowed_values(parent, f)]
    count = min(rng.randint(cfg.min_edits, cfg.max_edits), len(candidates))
    chosen: list[str] = []
    if parent.is_quadratic:  # a child of softmax attention must leave it to pass the cost gate
        chosen.append("update_rule")
    while len(chosen) < count:
        pool = [f for f in candidates if f not in chosen]
        chosen.append(rng.choices(pool, weights=[cfg.field_weights.get(f, 1.0) for f in pool])[0])
    values = parent.to_dict()
    for name in chosen:
        values[name] = rng.choice(allowed_values(parent, name))
    fixed = repair(values, keep=set(chosen))
    if fixed is None:
        return None
    child = _build(fixed[0])
    if child is None or child == parent:
        return None
    motivation = f"From {ids[i]}: " + "; ".join(describe_changes(parent, child, chosen))
    return Proposal(spec=child, motivation=_with_fixes(motivation, child, parent, fixed[1]),
                    operator="mutation", parents=(ids[i],))


def _crossover(parents: Sequence[MixerSpec], ids: list[str], rng: random.Random
               ) -> Proposal | None:
    i, j = rng.sample(range(len(parents)), 2)
    a, b = parents[i], parents[j]
    if a == b:
        return None
    values = a.to_dict()
    taken = [f for f in FIELDS if getattr(a, f) != getattr(b, f) and rng.random() < 0.5]
    values.update({f: getattr(b, f) for f in taken})
    if values["update_rule"] == "softmax":  # keep the sub-quadratic parent's state update
        values["update_rule"] = a.update_rule if b.is_quadratic else b.update_rule
    fixed = repair(values)
    if fixed is None:
        return None
    child = _build(fixed[0])
    if child is None or child in (a, b) or child.is_quadratic:
        return None
    from_b = [f for f in FIELDS if getattr(child, f) == getattr(b, f) != getattr(a, f)]
    took = ", ".join(f"{f}={_show(getattr(b, f))}" for f in from_b)
    motivation = (f"Crossover of {ids[i]} and {ids[j]}: took {took} from {ids[j]}, "
                  f"the rest from {ids[i]}")
    return Proposal(spec=child, motivation=_with_fixes(motivation, child, a, fixed[1]),
                    operator="crossover", parents=(ids[i], ids[j]))


def _build(values: dict) -> MixerSpec | None:
    try:
        child = MixerSpec(**values)
    except SpecError:
        return None
    return None if child.is_quadratic else child


def _with_fixes(motivation: str, child: MixerSpec, base: MixerSpec, fixed: dict[str, str]
                ) -> str:
    """`motivation` plus the repairs that left a field different from `base`'s."""
    notes = [f"set {name} to {_show(getattr(child, name))} ({why})"
             for name, why in fixed.items() if getattr(child, name) != getattr(base, name)]
    return motivation + (f"; to keep the spec valid, {'; '.join(notes)}" if notes else "") + "."


def _name(spec: MixerSpec) -> str:
    return baseline_name(spec) or f"spec {spec.digest()[:8]}"
