"""Every design a run trained with several seeds, compared with each baseline of the run.

    .venv/bin/python tools/study/designs.py bench-out/confirm-nonorm
    .venv/bin/python tools/study/designs.py RUN --pairs 16 --min-seeds 3 --out bench-out/designs

The driver's own verdicts (confirmation.json, ablation.json) compare a candidate with the
reference and rank the changes of one design. A run that confirms and ablates also trains
other designs with the same seeds: each ablation variant is a design of its own, trained with
confirm_seeds seeds. This tool pools a run's trainings by design (the rendered mixer's code
hash, so a replica and its original are one design, and two spellings of one spec that render
different code are two) and compares every design that has at least --min-seeds seeds with
every baseline, on bits per byte and on MQAR accuracy at --pairs key-value pairs (default: the
run's fitness.mqar_pairs), with Welch 95% intervals (evolve.search.fitness.diff_ci). A seed trained
twice for one design counts once (the first finished).

It prints a table (+ is better for the design) and writes <out>/designs.json and designs.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from evolve.search.fitness import diff_ci, mean_ci, mqar_accuracy
from evolve.state.fsio import read_json
from evolve.state.store import Store


def collect(run: Path, pairs: int | None) -> dict[str, dict[str, Any]]:
    """Designs by code hash: their name, the candidates and per-seed bpb / MQAR accuracy."""
    store = Store.open(run)
    state = store.replay()
    designs: dict[str, dict[str, Any]] = {}
    for cid in sorted(state.candidates):
        paths = store.candidate(cid)
        proposal = read_json(paths.proposal, None) or {}
        result = read_json(paths.result, None) or {}
        if result.get("status") != "ok":
            continue
        key = proposal.get("code_hash") or cid
        design = designs.setdefault(key, {"name": _name(cid, proposal), "code_hash": key, "kind":
                                          proposal.get("kind", "proposal"), "candidates": [],
                                          "seeds": {}})
        if proposal.get("kind") == "baseline":  # a baseline names the design, whoever came first
            design["name"], design["kind"] = _name(cid, proposal), "baseline"
        seed = result.get("seed", proposal.get("seed"))
        if seed in design["seeds"]:
            continue
        metrics = result.get("metrics") or {}
        design["candidates"].append(cid)
        design["seeds"][seed] = {"bpb": metrics.get("bpb"),
                                 "mqar": mqar_accuracy(metrics, pairs)}
    return designs


def _name(cid: str, proposal: dict[str, Any]) -> str:
    kind = proposal.get("kind")
    if kind == "baseline":
        return str(proposal.get("name") or cid)
    if kind == "ablation":
        return f"{proposal.get('of')} without its {proposal.get('revert')} change"
    if kind == "replica":
        return str(proposal.get("of") or cid)
    return cid


def _values(design: dict[str, Any], metric: str) -> list[float]:
    return [s[metric] for s in design["seeds"].values() if s[metric] is not None]


def compare(designs: dict[str, dict[str, Any]], min_seeds: int) -> list[dict[str, Any]]:
    """One row per (design, baseline): mean ± 95% of each metric and of the differences."""
    baselines = [d for d in designs.values() if d["kind"] == "baseline"]
    rows = []
    for design in designs.values():
        if len(design["seeds"]) < min_seeds:
            continue
        bpb, mqar = _values(design, "bpb"), _values(design, "mqar")
        for base in baselines:
            if base is design or len(base["seeds"]) < min_seeds:
                continue
            # + is better for the design: lower bits per byte, higher recall.
            d_bpb = diff_ci(_values(base, "bpb"), bpb)
            d_mqar = diff_ci(mqar, _values(base, "mqar"))
            rows.append({
                "design": design["name"], "code_hash": design["code_hash"], "kind": design["kind"],
                "candidates": design["candidates"], "seeds": sorted(design["seeds"]),
                "bpb": mean_ci(bpb), "mqar": mean_ci(mqar),
                "versus": base["name"], "versus_seeds": sorted(base["seeds"]),
                "delta_bpb": d_bpb, "delta_mqar": d_mqar,
                "better_bpb": _excludes_zero(d_bpb), "better_mqar": _excludes_zero(d_mqar),
            })
    return rows


def _excludes_zero(diff: tuple[float, float]) -> bool:
    mean, half = diff
    return not math.isnan(half) and mean - half > 0


def _ci(pair: tuple[float, float], spec: str) -> str:
    mean, half = pair
    if mean is None or math.isnan(mean):
        return "-"
    return f"{mean:{spec}}" + ("" if math.isnan(half) else f" ± {half:.3f}")


def markdown(rows: list[dict[str, Any]], pairs: int | None) -> str:
    at = f"@{pairs}" if pairs else ""
    lines = [f"| design | code hash | first candidate | seeds | bpb | MQAR{at} | versus | Δ bpb (+ = lower) "
             f"| Δ MQAR{at} | better on both |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        both = "**yes**" if r["better_bpb"] and r["better_mqar"] else "no"
        lines.append(
            f"| {r['design']} | {r['code_hash']} | {r['candidates'][0]} | {len(r['seeds'])} | {_ci(r['bpb'], '.3f')} "
            f"| {_ci(r['mqar'], '.3f')} | {r['versus']} ({len(r['versus_seeds'])}) "
            f"| {_ci(r['delta_bpb'], '+.3f')} | {_ci(r['delta_mqar'], '+.3f')} | {both} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a run's state folder (holds journal.jsonl)")
    ap.add_argument("--pairs", type=int, default=None,
                    help="MQAR key-value pairs to score (default: the run's fitness.mqar_pairs)")
    ap.add_argument("--min-seeds", type=int, default=3,
                    help="leave out designs and baselines with fewer seeds (default 3)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for designs.json and designs.md (default: the run folder)")
    args = ap.parse_args(argv)
    if not (args.run / "journal.jsonl").is_file():
        print(f"designs.py: {args.run} is not a run folder (no journal.jsonl there)",
              file=sys.stderr)
        return 2
    pairs = args.pairs
    if pairs is None:
        pairs = (Store.open(args.run).config().get("fitness") or {}).get("mqar_pairs")
    try:
        designs = collect(args.run, pairs)
    except ValueError as err:  # e.g. --pairs the results were not evaluated at
        print(f"designs.py: {err}", file=sys.stderr)
        return 2
    rows = compare(designs, args.min_seeds)
    text = markdown(rows, pairs)
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    (out / "designs.json").write_text(json.dumps({"run": str(args.run), "pairs": pairs,
                                                  "min_seeds": args.min_seeds, "rows": rows},
                                                 indent=1))
    (out / "designs.md").write_text(text)
    print(text, end="")
    print(f"wrote {out / 'designs.json'} and {out / 'designs.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
