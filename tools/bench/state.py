"""Benchmark of the run state store: journal replay, parent sampling, locked read-modify-write.

Measures, in one run:
  1. replay of a journal holding 10,000 candidates (~7 events each) into their current state,
     against the same replay parsing one line at a time (goal: under 1 s);
  2. choosing a parent and inspirations over those 10,000 candidates, per strategy (goal: under
     50 ms);
  3. 16 processes doing 200 read-modify-writes each of one JSON counter under the store's lock
     (file and soft kinds): lost updates (must be 0) and updates per second, against the same
     writers without the lock (which do lose updates, showing the check can fail).

Run from the repository root:
    .venv/bin/python tools/bench/state.py                    # writes bench-out/state.json
    .venv/bin/python tools/bench/state.py --candidates 2000 --writers 4 --updates 50 --out /tmp/s.json

Times are the minimum and the median over --repeats runs. The state lives in a temporary folder
(--dir to put it on the filesystem you care about, e.g. the cluster's shared one).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from evolve.state.journal import replay_events
from evolve.search.sampling import STRATEGIES, SamplingConfig, sample
from evolve.state.store import Store, StoreConfig, atomic_write_json, read_json

GOAL_REPLAY_S = 1.0
GOAL_SAMPLE_S = 0.050


@dataclass
class Row:
    """One measured task."""

    task: str
    """What was measured."""
    size: str
    """How much work one run is."""
    min_s: float
    """Fastest run, seconds."""
    median_s: float
    """Median run, seconds."""
    goal: str
    """The goal, if any, and whether it was met."""
    extra: dict[str, Any]
    """Task-specific figures (lost updates, throughput, ratios)."""


def _time(run: Callable[[], Any], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def build_journal(root: Path, num: int, seed: int) -> Store:
    """A run whose journal holds `num` candidates through a whole life each, 16 per generation."""
    rng = random.Random(seed)
    store = Store.create(root, {"bench": "state"}, cfg=StoreConfig(fsync=False))
    # Events are appended directly: new_candidate's mkdir per candidate is not what is measured.
    rec = store.record
    for gen_start in range(0, num, 16):
        gen = gen_start // 16
        ids = [f"c{i:06d}" for i in range(gen_start, min(gen_start + 16, num))]
        for i, cid in enumerate(ids):
            parents = [f"c{rng.randrange(gen_start):06d}"] if gen_start else []
            rec("created", cid, generation=gen)
            rec("proposed", cid, parents=parents, proposer="llm", island=i % 4)
            rec("checked", cid, passed=True)
        sub = f"s{gen:06d}"
        rec("submit_begin", submission=sub, executor="slurm", folder=f"jobs/{sub}", candidates=ids)
        for i, cid in enumerate(ids):
            rec("submitted", cid, submission=sub, job_id=f"{1000 + gen}_{i}", attempt=1)
            rec("running", cid, job_id=f"{1000 + gen}_{i}")
            rec("done", cid, job_id=f"{1000 + gen}_{i}", gpu_hours=rng.random(), requeues=0)
            rec("scored", cid, fitness=rng.gauss(0.0, 1.0))
    return store


def bench_replay(store: Store, num: int, repeats: int) -> Row:
    lines = store.journal_path.read_bytes().splitlines()
    state = store.replay()
    assert len(state.candidates) == num, len(state.candidates)
    best, median = _time(store.replay, repeats)
    slow, _ = _time(lambda: replay_events([json.loads(ln) for ln in lines]), repeats)
    return Row(task="journal replay", size=f"{num} candidates, {len(lines)} events",
               min_s=best, median_s=median,
               goal=f"< {GOAL_REPLAY_S:g} s: {'met' if median < GOAL_REPLAY_S else 'MISSED'}",
               extra={"events": len(lines), "bytes": store.journal_path.stat().st_size,
                      "per_line_parse_min_s": slow, "speedup_vs_per_line": slow / best})


def bench_sampling(store: Store, repeats: int) -> list[Row]:
    cands = list(store.replay().candidates.values())
    rows = []
    base = None
    for strategy in STRATEGIES:
        cfg = SamplingConfig(strategy=strategy, num_inspirations=4)
        rng = random.Random(0)
        best, median = _time(lambda: sample(cands, cfg, rng, generation=7), repeats)
        base = best if strategy == "uniform" else base
        rows.append(Row(task=f"sample parent ({strategy})", size=f"{len(cands)} candidates",
                        min_s=best, median_s=median,
                        goal=f"< {GOAL_SAMPLE_S * 1000:g} ms: "
                             f"{'met' if median < GOAL_SAMPLE_S else 'MISSED'}", extra={}))
    for row in rows:
        row.extra["vs_uniform"] = row.min_s / base if base else None
    return rows


def _writer(root: str, kind: str | None, n: int, start: Any) -> None:
    store = Store.open(root, StoreConfig(lock=kind or "file"))
    path = store.root / "counter.json"
    start.wait()
    for _ in range(n):
        if kind is None:  # the same read-modify-write without the lock
            atomic_write_json(path, {"n": read_json(path)["n"] + 1})
        else:
            store.update_json(path, lambda d: {"n": d["n"] + 1}, lock="counter")


def bench_locks(root: Path, writers: int, updates: int) -> list[Row]:
    ctx = mp.get_context("fork")
    store = Store.create(root, {"bench": "locks"})
    rows = []
    for kind in ("file", "soft", None):
        atomic_write_json(store.root / "counter.json", {"n": 0})
        start = ctx.Event()
        procs = [ctx.Process(target=_writer, args=(str(store.root), kind, updates, start))
                 for _ in range(writers)]
        for p in procs:
            p.start()
        t0 = time.perf_counter()
        start.set()
        for p in procs:
            p.join()
        took = time.perf_counter() - t0
        if any(p.exitcode for p in procs):
            raise SystemExit(f"a writer failed ({kind} lock): exit codes {[p.exitcode for p in procs]}")
        total = writers * updates
        lost = total - read_json(store.root / "counter.json")["n"]
        label = f"{kind} lock" if kind else "no lock (control)"
        goal = "0 lost: " + ("met" if lost == 0 else "MISSED") if kind else "expected to lose some"
        rows.append(Row(task=f"read-modify-write, {label}", size=f"{writers} procs x {updates}",
                        min_s=took, median_s=took, goal=goal,
                        extra={"updates": total, "lost_updates": lost,
                               "updates_per_s": total / took}))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=10_000)
    p.add_argument("--writers", type=int, default=16)
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", type=Path, default=None, help="where to create the temporary runs")
    p.add_argument("--out", type=Path, default=Path("bench-out/state.json"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="evolve-bench-state-") as tmp:
        t0 = time.perf_counter()
        store = build_journal(Path(tmp) / "replay", args.candidates, args.seed)
        build_s = time.perf_counter() - t0
        rows = [bench_replay(store, args.candidates, args.repeats)]
        rows += bench_sampling(store, max(args.repeats, 20))
        rows += bench_locks(Path(tmp) / "locks", args.writers, args.updates)
    print(f"{'task':<40} {'size':<34} {'min':>10} {'median':>10}  goal / figures")
    for r in rows:
        figures = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in r.extra.items())
        print(f"{r.task:<40} {r.size:<34} {r.min_s * 1000:>8.1f}ms {r.median_s * 1000:>8.1f}ms"
              f"  {r.goal}; {figures}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "journal_build_s": build_s,
              "rows": [asdict(r) for r in rows]}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    missed = [r.task for r in rows if "MISSED" in r.goal]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
