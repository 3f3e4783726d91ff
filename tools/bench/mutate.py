"""Benchmark of the model-free mutator: distinct valid specs per second from the five baselines.

Compares, in one run, proposing children alone (point mutations and crossover) against
proposing and rendering each child to a mixer file, and against the goal of 100 distinct valid
children in under a second. Needs no torch.

Run from the repository root:
    .venv/bin/python tools/bench/mutate.py                     # writes bench-out/mutate.json
    .venv/bin/python tools/bench/mutate.py --n 1000 --repeats 5 --out /tmp/m.json

Each time is the minimum and the median over --repeats runs (seeds seed, seed+1, ...).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from evolve.state.fsio import atomic_write_json
from evolve.model.render import render
from evolve.model.space import BASELINE_SPECS
from evolve.search.mutator import MutatorConfig, propose

GOAL_SECONDS = 1.0
GOAL_COUNT = 100


@dataclass
class Row:
    """One timed task."""

    task: str
    """What was timed."""
    children: int
    """Children returned by the last run (all distinct, valid and new)."""
    min_s: float
    """Fastest run, seconds."""
    median_s: float
    """Median run, seconds."""
    specs_per_s: float
    """children / min_s."""


def _time(task: str, run: Callable[[int], int], seeds: list[int]) -> Row:
    times, count = [], 0
    for seed in seeds:
        start = time.perf_counter()
        count = run(seed)
        times.append(time.perf_counter() - start)
    best = min(times)
    return Row(task=task, children=count, min_s=best, median_s=statistics.median(times),
               specs_per_s=count / best if best > 0 else float("inf"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=GOAL_COUNT, help="children per run")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crossover-rate", type=float, default=MutatorConfig().crossover_rate)
    parser.add_argument("--out", type=Path, default=Path("bench-out/mutate.json"))
    args = parser.parse_args(argv)

    parents = list(BASELINE_SPECS.values())
    config = MutatorConfig(crossover_rate=args.crossover_rate)
    seeds = list(range(args.seed, args.seed + args.repeats))
    distinct: set[str] = set()

    def children(seed: int) -> list:
        kids = propose(parents, random.Random(seed), args.n, config=config)
        distinct.update(k.spec.digest() for k in kids)
        return kids

    rows = [
        _time("propose", lambda seed: len(children(seed)), seeds),
        _time("propose + render", lambda seed: len([render(k.spec) for k in children(seed)]),
              seeds),
    ]
    # The goal's time, extrapolated from this run's per-child time when --n is not 100.
    goal_time = rows[0].min_s / max(rows[0].children, 1) * GOAL_COUNT
    goal_met = rows[0].children == args.n and goal_time < GOAL_SECONDS
    print(f"{'task':<18} {'children':>8} {'min s':>9} {'median s':>9} {'specs/s':>10}")
    for row in rows:
        print(f"{row.task:<18} {row.children:>8} {row.min_s:>9.4f} {row.median_s:>9.4f} "
              f"{row.specs_per_s:>10.0f}")
    ratio = rows[1].min_s / rows[0].min_s
    print(f"rendering costs {ratio:.2f}x proposing alone; {len(distinct)} distinct specs over "
          f"{len(seeds)} seeds; goal ({GOAL_COUNT} in < {GOAL_SECONDS:g} s): "
          f"{'met' if goal_met else 'NOT met'} ({goal_time * 1e3:.1f} ms, "
          f"{GOAL_SECONDS / goal_time:.0f}x under budget)")
    result = {"n": args.n, "repeats": args.repeats, "seed": args.seed,
              "crossover_rate": args.crossover_rate, "rows": [asdict(r) for r in rows],
              "render_over_propose": ratio, "distinct_over_seeds": len(distinct),
              "goal_seconds": goal_time, "goal_met": goal_met, "python": sys.version.split()[0]}
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)  # a reader never sees half a file
    return 0 if goal_met else 1


if __name__ == "__main__":
    sys.exit(main())
