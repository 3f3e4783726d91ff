"""`evolve import FILE --run RUN [--name N] [--layer CLASS]`: a design from outside into a run.

    evolve import my_layer.py --run state/myrun --name my-gated-delta

FILE is a layer written against fla's layer interface (a class built with fla's keywords,
hidden_size, num_heads, ..., whose forward(hidden_states, ...) returns (o, attn_weights,
past_key_values)), or a mixer that already meets evolve's contract. evolve.model.fla_adapter
turns it into a candidate; it enters the run the way the researcher's seed designs do (the
driver's own steps: a proposal written into the run, then the gates in their sandbox, no pass
the model's proposals do not get), and the next `evolve run` trains it if it passed. A design
that fails a gate is recorded as rejected with the gate's reason (checks.json, the journal),
not patched. A file that is neither kind of layer gets a one-line error saying what was
expected. The run must not have a driver running (it alone writes the journal).
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


def import_into(driver: Any, code: str, proposal: dict[str, Any]) -> str:
    """Write `code` into the driver's run as a proposal and gate it, as the driver does for the
    researcher's seed designs; the new candidate's id. The caller holds the driver lock."""
    state = driver.view.state
    generation = max([1, *(c.generation or 0 for c in state.candidates.values())])
    cid = driver._new_candidate(code, proposal, generation=generation)
    driver._gate(cid)
    return cid


def main_import(argv: list[str]) -> int:
    from evolve.model.fla_adapter import adapt

    args = parser().parse_args(argv)
    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"evolve import: {path}: no such file")
    # Adapted before the run is opened: a file that is not a layer fails fast, touching nothing.
    adapted = adapt(path.read_text(encoding="utf-8"), str(path), layer=args.layer)
    from evolve.gates.check import read_report
    from evolve.search.driver import Driver
    from evolve.search.run_config import run_config_from_dict
    from evolve.state.store import Store

    store = Store.open(args.run)
    cfg = run_config_from_dict(store.config(), source=str(store.run_yaml))
    cfg.root, cfg.name = str(store.root.parent), store.root.name
    driver = Driver(cfg)
    name = args.name or path.stem
    what = f"fla-style layer {adapted.layer}" if adapted.layer else "evolve mixer"
    proposal = {"kind": "proposal", "proposer": "import", "name": name, "parents": [],
                "motivation": f"imported from {path.name} ({what})",
                "source": str(path.resolve()), "layer": adapted.layer,
                "adapter_notes": adapted.notes}
    with driver.store.driver_lock():
        cid = import_into(driver, adapted.code, proposal)
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
