"""What multi-fidelity screening buys: proposals evaluated per CPU-hour in screened runs of
tools/study/search.py against a full-budget run, with the mean CPU seconds of each kind of
job, from the runs' committed readings alone.

    .venv/bin/python tools/study/screening.py \
        docs/results/search-full/search-mutator-s5.json \
        docs/results/search-lmrung/search-mutator-s5.json --out bench-out/screening

The first reading is the reference (full budget: every proposal trained whole). A reading's
`trainings` hold the running total of the proposals' CPU-hours (each job's process CPU time),
so each job's cost is the step of that total at its event: `rung` a screening rung's job,
`scored` a continuation (after a rung) or a whole training, `failed` a job that failed or was
stopped early. What the rungs measured (readings of search.py from 2026-12-05 on keep each
rung's bits per byte and recall): how many rung results recalled no better than chance
(`--chance`, MQAR accuracy at fitness.mqar_pairs). Prints a Markdown table and writes
<out>/screening.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def job_costs(reading: dict[str, Any]) -> dict[str, Any]:
    """Per kind of job (rung, continuation, whole, failed): how many and their mean CPU
    seconds; and how many of the proposals that reached a rung went on."""
    costs: dict[str, list[float]] = {"rung": [], "continuation": [], "whole": [], "failed": []}
    screened: set[str] = set()
    went_on: set[str] = set()
    previous = 0.0
    for t in reading["trainings"]:
        cost, previous = (t["cpu_hours"] - previous) * 3600.0, t["cpu_hours"]
        if t["event"] == "rung":
            costs["rung"].append(cost)
            screened.add(t["id"])
        elif t["event"] == "scored":
            kind = "continuation" if t["id"] in screened else "whole"
            costs[kind].append(cost)
            if kind == "continuation":
                went_on.add(t["id"])
        else:
            costs["failed"].append(cost)
    return {"jobs": {kind: {"n": len(v), "mean_cpu_s": statistics.fmean(v) if v else None}
                     for kind, v in costs.items()},
            "reached_rung": len(screened), "went_on": len(went_on)}


def rung_recall(reading: dict[str, Any], chance: float) -> dict[str, int] | None:
    """Of the rung results with a recall score, how many were below `chance`; None when the
    reading does not keep rung scores (older readings) or has no rungs."""
    rungs = [t for t in reading["trainings"] if t["event"] == "rung"]
    if not rungs or any("rung_mqar" not in t for t in rungs):
        return None
    scored = [t["rung_mqar"] for t in rungs if t["rung_mqar"] is not None]
    return {"scored": len(scored), "at_chance": sum(v < chance for v in scored)}


def row(reading: dict[str, Any], reference_rate: float | None,
        chance: float = 0.035) -> dict[str, Any]:
    """One run's line: its screening settings, proposals evaluated per CPU-hour, the ratio to
    the reference run's, its job costs and what its rungs' recall said."""
    fidelity = (reading["config"].get("search") or {}).get("fidelity") or {}
    rate = reading["proposals_evaluated"] / reading["proposal_cpu_hours"]
    return {"run": reading["run"], "fidelity": fidelity,
            "rung_recall": rung_recall(reading, chance),
            "proposals_evaluated": reading["proposals_evaluated"],
            "proposal_cpu_hours": reading["proposal_cpu_hours"], "per_cpu_hour": rate,
            "ratio": rate / reference_rate if reference_rate else 1.0, **job_costs(reading)}


def _settings(fidelity: dict[str, Any]) -> str:
    if not fidelity.get("rungs"):
        return "full budget"
    parts = [f"rungs {fidelity['rungs']}", f"eta {fidelity.get('eta')}"]
    if fidelity.get("promotion_budget"):
        parts.append("promotion_budget")
    if fidelity.get("rung_tracks"):
        parts.append(f"rung_tracks {list(fidelity['rung_tracks'])}")
    return ", ".join(parts)


def markdown(rows: list[dict[str, Any]], names: list[str]) -> str:
    def secs(r: dict[str, Any], kind: str) -> str:
        job = r["jobs"][kind]
        return "-" if not job["n"] else f"{job['mean_cpu_s']:.1f} s ({job['n']})"

    lines = ["| reading | screening | proposals evaluated | in CPU-h | per CPU-h | ratio to the "
             "first | a rung job | a continuation | a whole training | failed or stopped | "
             "continued | rung recall at chance |", "|" + "---|" * 12]
    for name, r in zip(names, rows, strict=True):
        went = f"{r['went_on']} of {r['reached_rung']}" if r["reached_rung"] else "-"
        recall = r["rung_recall"]
        at_chance = "-" if recall is None else "not trained" if not recall["scored"] else \
            f"{recall['at_chance']} of {recall['scored']}"
        lines.append(f"| {name} | {_settings(r['fidelity'])} | {r['proposals_evaluated']} | "
                     f"{r['proposal_cpu_hours']:.3f} | {r['per_cpu_hour']:.1f} | "
                     f"{r['ratio']:.2f}x | {secs(r, 'rung')} | {secs(r, 'continuation')} | "
                     f"{secs(r, 'whole')} | {secs(r, 'failed')} | {went} | {at_chance} |")
    return "\n".join(lines) + ("\n\nCPU seconds: the mean of each kind of job (how many in "
                               "brackets), the proposals' process CPU time only; rung recall at "
                               "chance: rung results whose MQAR accuracy was below --chance, of "
                               "those scored on it ('-': not kept in the reading).\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("readings", nargs="+", type=Path,
                        help="search.py readings; the first is the full-budget reference")
    parser.add_argument("--out", type=Path, default=Path("bench-out/screening"))
    parser.add_argument("--chance", type=float, default=0.035,
                        help="recall below this counts as chance (1/32 = 0.031 at 16 pairs of "
                             "the tiny preset's 64-token vocabulary)")
    args = parser.parse_args(argv)
    readings = [json.loads(p.read_text()) for p in args.readings]
    reference = readings[0]["proposals_evaluated"] / readings[0]["proposal_cpu_hours"]
    rows = [row(r, reference, args.chance) for r in readings]
    names = [str(p) for p in args.readings]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "screening.json").write_text(json.dumps(
        {"readings": names, "rows": rows}, indent=1) + "\n")
    print(markdown(rows, names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
