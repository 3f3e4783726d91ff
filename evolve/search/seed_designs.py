"""The researcher's own designs, put into a run as proposals (`search.seed_designs`).

A run file may start the search from designs the researcher already has in mind (one from a
paper, the winner of an earlier run) instead of only from the baselines. An entry is either a
spec: optionally `base: <baseline>` (that baseline's design) with the fields that differ, and an
optional `motivation`; or a design file: `file:` a Python file holding a layer written against
fla's layer interface (or a mixer already meeting evolve's contract), adapted by
evolve.model.fla_adapter exactly as `evolve import` adapts it, with an optional `name` (default:
the file's stem), `layer` (the class, when the file holds several layers) and `motivation`.
A relative `file` is resolved against the run file's folder when the run file loads, and the
absolute path is what the frozen run.yaml records.

The driver creates each entry once per run (a resumed run does not create it again), gates it
like any proposal (a researcher's design gets no pass the model's does not get) and trains it in
the first generation; it counts towards search.max_candidates and can be a parent, confirmed,
ablated and promoted like any candidate. A design file is also screened for novelty as the
driver screens a proposal (`enter`): one whose code is already in the run is not created again.

    search:
      seed_designs:
        - base: gated_deltanet
          decay_param: logsigmoid
          out_gate: none
          value_ratio: 2
          motivation: the mutator's best design of an earlier run, to confirm and ablate
        - file: designs/my_layer.py     # relative to the run file's folder, or absolute
          name: my-gated-delta
          layer: MyLayer
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from evolve import EvolveError
from evolve.gates.novelty import NoveltyVerdict
from evolve.model.fla_adapter import EXPECTED, adapt
from evolve.model.space import BASELINE_SPECS, FIELDS, MixerSpec, SpecError
from evolve.search.proposers import Draft

if TYPE_CHECKING:
    from evolve.search.driver import Driver

SEED_PROPOSER = "researcher's seed design"
"""The `proposer` of a seed design's proposal file."""
_EXTRA_KEYS = ("base", "motivation")
FILE_KEYS = ("file", "name", "layer", "motivation")
"""The keys of a design-file entry (`file` required)."""
_FILE_EXPECTED = f"a Python file holding {EXPECTED}, or an evolve mixer (class Mixer)"


class DuplicateDesign(EvolveError, ValueError):
    """A design whose code is already in the run (an archived candidate's, comments, docstrings
    and layout aside): never created, never trained twice."""

    def __init__(self, message: str, existing: str) -> None:
        super().__init__(message)
        self.existing = existing
        """The candidate that already has this code."""

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.existing)


@dataclass(frozen=True, kw_only=True)
class DesignFile:
    """A `file:` entry of search.seed_designs, checked in shape; read and adapted by `draft`."""

    index: int
    """Its position in search.seed_designs (the proposal's `seed_design`)."""
    path: Path
    """The layer file (absolute once the run file has loaded)."""
    name: str
    """The design's name in the run."""
    layer: str | None = None
    """The class to wrap when the file holds several layers."""
    motivation: str | None = None
    """The researcher's reason; None: one saying where the design came from."""

    def draft(self) -> Draft:
        """The file adapted as a proposal; ValueError naming the entry, the file and what was
        expected when the file is missing or not a layer."""
        return file_draft(self.path, proposer=SEED_PROPOSER, name=self.name, layer=self.layer,
                          motivation=self.motivation, where=f"seed_designs[{self.index}]",
                          extra={"seed_design": self.index})


def _design_file(entry: Mapping[str, Any], index: int) -> DesignFile:
    where = f"seed_designs[{index}]"
    path = entry["file"]
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{where}.file is {path!r}; expected the path of {_FILE_EXPECTED}")
    spec_keys = [k for k in entry if k == "base" or k in FIELDS]
    if spec_keys:
        # Adapted code is not a rendering of a spec: a spec beside it would describe something
        # the file does not do (and mislead the mutator and the ablations).
        raise ValueError(f"{where} ({path}): `file` cannot be combined with spec fields "
                         f"({', '.join(map(repr, spec_keys))}); a design file takes "
                         f"{', '.join(FILE_KEYS)}; a spec design takes base, motivation and "
                         "spec fields, without file")
    unknown = [k for k in entry if k not in FILE_KEYS]
    if unknown:
        raise ValueError(f"{where} ({path}): unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"valid keys of a design file: {', '.join(FILE_KEYS)}")
    for key in ("name", "layer"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise ValueError(f"{where}.{key} ({path}) is {entry[key]!r}; expected a string")
    motivation = entry.get("motivation")
    return DesignFile(index=index, path=Path(path), name=entry.get("name") or Path(path).stem,
                      layer=entry.get("layer"),
                      motivation=None if motivation is None else str(motivation))


def seed_design(entry: Any, index: int) -> tuple[MixerSpec, str] | DesignFile:
    """Entry `index` of search.seed_designs: a spec design's spec and motivation, or a design
    file (checked in shape only: `check_files` reads it); ValueError naming the entry and the
    valid choices when it is not a valid design."""
    where = f"seed_designs[{index}]"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a mapping of spec fields (with an optional 'base' "
                         f"and 'motivation') or a design file ({', '.join(FILE_KEYS)}), got "
                         f"{type(entry).__name__} {entry!r}")
    if "file" in entry:
        return _design_file(entry, index)
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
                         f"{', '.join((*_EXTRA_KEYS, *FIELDS))} (a design file instead: "
                         f"{', '.join(FILE_KEYS)})")
    try:
        spec = MixerSpec.from_dict({**base, **fields})
    except SpecError as exc:
        raise ValueError(f"{where}: {exc}") from None
    changed = ", ".join(f"{k}={v}" for k, v in fields.items())
    default = (f"the researcher's design: {base_name} with {changed}" if base_name and changed
               else f"the researcher's design ({changed or 'the default spec'})")
    motivation = str(entry.get("motivation") or default)
    return spec, motivation


def seed_designs(entries: Any) -> list[tuple[MixerSpec, str] | DesignFile]:
    """Every entry of search.seed_designs, validated (design files in shape only)."""
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"seed_designs must be a list of designs, got {type(entries).__name__}")
    return [seed_design(entry, i) for i, entry in enumerate(entries)]


def resolve_files(entries: Any, folder: Path) -> Any:
    """`entries` with each relative `file` made absolute against `folder` (the run file's), so
    that the frozen run.yaml names the same file from wherever the driver is started. Entries
    of any other shape are returned as they are, for `seed_designs` to refuse."""
    if not isinstance(entries, (list, tuple)):
        return entries
    out = []
    for entry in entries:
        if isinstance(entry, Mapping) and isinstance(entry.get("file"), str) \
                and entry["file"].strip():
            entry = {**entry, "file": str((folder / Path(entry["file"]).expanduser()).resolve())}
        out.append(entry)
    return out


def check_files(entries: Any) -> None:
    """Every design file of search.seed_designs read and adapted now, so that a missing file or
    one that is not a layer fails when the run file loads, not when the driver reaches it."""
    for design in seed_designs(entries):
        if isinstance(design, DesignFile):
            design.draft()


def file_draft(path: Path, *, proposer: str, name: str | None = None, layer: str | None = None,
               motivation: str | None = None, where: str = "",
               extra: dict[str, Any] | None = None) -> Draft:
    """`path` adapted by evolve.model.fla_adapter (an fla-style layer wrapped as `Mixer`, an
    evolve mixer as it is) as a draft without parents; its proposal keeps the design's name, the
    file's absolute path, the wrapped layer and the adapter's notes. ValueError (the adapter's
    NotAnFlaLayer / AdaptError) naming `where`, the file and what was expected."""
    prefix = f"{where}: " if where else ""
    if not path.is_file():
        raise ValueError(f"{prefix}{path}: no such file; expected {_FILE_EXPECTED}")
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{prefix}{path}: not a UTF-8 text file; expected {_FILE_EXPECTED}"
                         ) from None
    try:
        adapted = adapt(source, str(path), layer=layer)
    except ValueError as exc:  # NotAnFlaLayer, AdaptError: keep the class, name the entry
        raise type(exc)(f"{prefix}{exc}") from None
    what = f"fla-style layer {adapted.layer}" if adapted.layer else "evolve mixer"
    return Draft(code=adapted.code, motivation=motivation or f"imported from {path.name} ({what})",
                 parents=[], proposer=proposer,
                 extra={**(extra or {}), "name": name or path.stem, "source": str(path.resolve()),
                        "layer": adapted.layer, "adapter_notes": adapted.notes})


def enter(driver: Driver, draft: Draft, generation: int) -> tuple[str, NoveltyVerdict]:
    """`draft` (a design from outside the search: `evolve import`, a seed design file) written
    into the driver's run as a proposal of `generation` and gated; the new candidate's id and
    the novelty verdict. Novelty is the driver's own (ProposeSteps._novel): code already in the
    run is refused (journaled `duplicate_rejected`; DuplicateDesign naming the candidate that
    has it); a near-duplicate enters labelled in its proposal's `novelty` entry as the driver
    labels one, since there is no proposer to send it back to. The caller holds the driver
    lock."""
    novelty, designs = driver._novelty_index(driver._archive())
    verdict = driver._novel(draft, novelty, designs)
    if verdict is None:
        existing = novelty.duplicate_of(draft.code)
        assert existing is not None, "designs from outside carry no spec: only code can match"
        name = driver.view.proposal(existing).get("name")
        label = draft.extra.get("source") or draft.extra.get("name") or "the design"
        raise DuplicateDesign(
            f"{label}: the same code as {existing}{f' ({name})' if name else ''}, already in "
            "this run (comments, docstrings and layout aside); not entered again: a design is "
            "never trained twice", existing)
    cid = driver._new_candidate(draft.code, driver._draft_record(draft, verdict), generation,
                                records=draft.records)
    driver._gate(cid)
    return cid, verdict
