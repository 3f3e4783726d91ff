"""The researcher's own designs, put into a run as proposals (`search.seed_designs`).

A run file may start the search from designs the researcher already has in mind (one from a
paper, the winner of an earlier run) instead of only from the baselines. Each entry is a spec:
optionally `base: <baseline>` (that baseline's design) with the fields that differ, and an
optional `motivation`. The driver renders each one, gates it like any proposal (a researcher's
design gets no pass the model's does not get) and trains it in the first generation; it counts
towards search.max_candidates and can be a parent, confirmed, ablated and promoted like any
candidate.

    search:
      seed_designs:
        - base: gated_deltanet
          decay_param: logsigmoid
          out_gate: none
          value_ratio: 2
          motivation: the mutator's best design of an earlier run, to confirm and ablate
"""

from __future__ import annotations

from typing import Any, Mapping

from evolve.model.space import BASELINE_SPECS, FIELDS, MixerSpec, SpecError

_EXTRA_KEYS = ("base", "motivation")


def seed_design(entry: Any, index: int) -> tuple[MixerSpec, str]:
    """The spec and motivation of entry `index` of search.seed_designs; ValueError naming the
    entry and the valid choices when it is not a valid design."""
    where = f"seed_designs[{index}]"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a mapping of spec fields (with an optional 'base' "
                         f"and 'motivation'), got {type(entry).__name__} {entry!r}")
    fields = {k: v for k, v in entry.items() if k not in _EXTRA_KEYS}
    base_name = entry.get("base")
    if base_name is None:
        base: dict[str, Any] = {}
    elif base_name in BASELINE_SPECS:
        base = BASELINE_SPECS[base_name].to_dict()
    else:
        raise ValueError(f"{where}.base is {base_name!r}; valid bases: "
                         f"{', '.join(BASELINE_SPECS)}")
    unknown = [k for k in fields if k not in FIELDS]
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: "
                         f"{', '.join((*_EXTRA_KEYS, *FIELDS))}")
    try:
        spec = MixerSpec.from_dict({**base, **fields})
    except SpecError as exc:
        raise ValueError(f"{where}: {exc}") from None
    changed = ", ".join(f"{k}={v}" for k, v in fields.items())
    default = (f"the researcher's design: {base_name} with {changed}" if base_name and changed
               else f"the researcher's design ({changed or 'the default spec'})")
    motivation = str(entry.get("motivation") or default)
    return spec, motivation


def seed_designs(entries: Any) -> list[tuple[MixerSpec, str]]:
    """Every entry of search.seed_designs, validated."""
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"seed_designs must be a list of designs, got {type(entries).__name__}")
    return [seed_design(entry, i) for i, entry in enumerate(entries)]
