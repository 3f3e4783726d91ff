"""`evolve import FILE --run RUN [--name N] [--layer CLASS]`: a design from outside into a run.

    evolve import my_layer.py --run state/myrun --name my-gated-delta

FILE is a layer written against fla's layer interface (a class built with fla's keywords,
hidden_size, num_heads, ..., whose forward(hidden_states, ...) returns (o, attn_weights,
past_key_values)), or a mixer that already meets evolve's contract. evolve.model.fla_adapter
turns it into a candidate; it enters the run the way the researcher's seed design files do
(evolve.search.seed_designs.enter: the driver's own steps, a proposal written into the run, then
the gates in their sandbox, no pass the model's proposals do not get), and the next `evolve run`
trains it if it passed. Novelty is judged as the driver judges a proposal: a file whose code is
already in the run (comments, docstrings and layout aside) is refused, naming the candidate that
has it; one whose idea is closer than novelty.similarity_threshold to an archived design is
imported, labelled a near-duplicate in its proposal (`novelty`), and the nearest design and the
similarity are printed. A design that fails a gate is recorded as rejected with the gate's reason
(checks.json, the journal), not patched. A file that is neither kind of layer gets a one-line
error saying what was expected. The run must not have a driver running (it alone writes the
journal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evolve import", description=(
        "Bring a design written against fla's layer interface (or evolve's own contract) into "
        "a run as a gated proposal."))
    p.add_argument("file", help="the layer's Python file")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--name", help="the design's name in the run (default: the file's stem)")
    p.add_argument("--layer", help="the class to import when the file has several layers")
    return p


def import_draft(driver: Any, draft: Any) -> tuple[str, Any]:
    """Enter `draft` into the driver's run in its latest generation (at least 1), as the driver
    enters a seed design file: screened for novelty, written, gated. The new candidate's id and
    the novelty verdict; DuplicateDesign when its code is already in the run. The caller holds
    the driver lock."""
    from evolve.search.seed_designs import enter

    state = driver.view.state
    generation = max([1, *(c.generation or 0 for c in state.candidates.values())])
    return enter(driver, draft, generation)


def import_into(driver: Any, code: str, proposal: dict[str, Any]) -> str:
    """`code` with the fields of `proposal` (proposer, motivation, name, ...) entered as
    `import_draft` does (tools/study/outside.py enters ASI-Arch's designs this way); the new
    candidate's id. The caller holds the driver lock."""
    from evolve.search.proposers import Draft

    extra = {k: v for k, v in proposal.items()
             if k not in ("kind", "proposer", "motivation", "parents")}
    draft = Draft(code=code, motivation=proposal.get("motivation", ""),
                  parents=list(proposal.get("parents", [])),
                  proposer=proposal.get("proposer", "import"), extra=extra)
    return import_draft(driver, draft)[0]


def main_import(argv: list[str]) -> int:
    from evolve.search.seed_designs import DuplicateDesign, file_draft

    args = parser().parse_args(argv)
    path = Path(args.file)
    # Adapted before the run is opened: a file that is not a layer fails fast, touching nothing.
    draft = file_draft(path, proposer="import", name=args.name, layer=args.layer)
    from evolve.search.driver import Driver
    from evolve.search.run_config import run_config_from_dict
    from evolve.state.store import Store

    store = Store.open(args.run)
    cfg = run_config_from_dict(store.config(), source=str(store.run_yaml))
    cfg.root, cfg.name = str(store.root.parent), store.root.name
    driver = Driver(cfg)
    with driver.store.driver_lock():
        try:
            cid, verdict = import_draft(driver, draft)
        except DuplicateDesign as exc:
            print(f"evolve import: refused: {exc}", file=sys.stderr)
            return 1
    return _report(driver, cid, draft, verdict)


def _report(driver: Any, cid: str, draft: Any, verdict: Any) -> int:
    """Say what became of the imported candidate `cid`: 0 when it passed every gate."""
    from evolve.gates.check import read_report

    name = draft.extra["name"]
    layer = draft.extra.get("layer")
    what = f"fla-style layer {layer}" if layer else "evolve mixer"
    if verdict.kind == "near_duplicate":
        nearest = driver.view.proposal(verdict.nearest_id).get("name")
        print(f"evolve import: {cid} ({name}) is a near-duplicate of {verdict.nearest_id}"
              f"{f' ({nearest})' if nearest else ''}: similarity {verdict.similarity:.3f} >= "
              f"novelty.similarity_threshold {driver.cfg.novelty.similarity_threshold}; imported, "
              "labelled so in its proposal", file=sys.stderr)
    report = read_report(driver.store.candidate(cid).dir)
    if report is None:
        print(f"evolve import: {cid} ({name}) was written but its gates did not finish (the "
              f"sandbox failed); `evolve run` gates it again", file=sys.stderr)
        return 1
    if report.passed:
        print(f"evolve import: {cid} ({name}, {what}) passed every gate; the next `evolve run` "
              "on this run trains it")
        return 0
    failed = report.verdict(report.failed_gate) if report.failed_gate else None
    reason = failed.message.strip() if failed else "incomplete"
    print(f"evolve import: {cid} ({name}, {what}) rejected by the {report.failed_gate} gate: "
          f"{reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main_import(sys.argv[1:]))
