"""Benchmark of the driver: its own overhead per candidate, and the speed-up from parallel workers.

Measures, in one run:
  1. the driver's own time per candidate: a demo-size search (local executor, mutator, two
     baselines, trainings cut to 2 steps) with every phase of `Driver.step()` timed by wrapping
     the instance's methods (nothing in evolve/search/driver.py changes). Bookkeeping (polling jobs,
     scoring, analysis by rules, proposing with the model-free mutator, submitting, stop checks)
     is reported apart from the CHECK gates (a sandbox subprocess per candidate), from the
     lesson merge into the cognition base (it embeds with MiniLM: a model call), from
     submitit's sleep between the tasks of a local array, and from training and LLM calls
     (not in the driver's process at all). The overhead is quoted as a share of one real `tiny`
     training of deltanet (`evolve train --mixer deltanet --preset tiny`):
        busy share  = bookkeeping per candidate, idle polls excluded / tiny training seconds
        idle share  = cost of one idle loop iteration / search.poll_s  (the driver's duty cycle
                      while it waits; charged in full to one training, the worst case)
     Goal: busy + idle share under 1%.
  2. an idle loop iteration of a driver whose archive holds --scale analyzed proposals (100
     and 1,000 by default): how the per-poll cost grows late in a long search. Goal: its duty
     cycle under 1% at the largest size too.
  3. candidates per hour with 1 and with 4 parallel workers: 8 trainings of fixed length (a
     checkpointable job that sleeps --job-seconds, writing a checkpoint each second) submitted
     as one array through `evolve.launch.launcher.Launcher` on the local executor, at
     array_parallelism 1 and 4. Goal: speed-up of at least 3.5x.

Run from the repository root (on an idle 2-core machine about 10 minutes, most of it the tiny
training and the serial array; far longer when other work shares the cores):
    .venv/bin/python tools/bench/driver.py                         # writes bench-out/driver.json
    .venv/bin/python tools/bench/driver.py --tiny-seconds 131      # reuse a measured training
    .venv/bin/python tools/bench/driver.py --skip-speedup --scale "" --out /tmp/d.json

Times are wall-clock (`perf_counter`) and the driver process's CPU time (`process_time`); on a
machine shared with other work, wall time includes waiting for a core, CPU time does not. The
load average before and after is printed and stored.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import submitit
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GOAL_OVERHEAD = 0.01
GOAL_SPEEDUP = 3.5
GATES = "gates"
THROTTLE = "submit: executor sleep"
MERGE = "lesson merge (MiniLM)"
"""Merging lessons into the cognition base embeds them with a model (MiniLM, when installed):
a model call, shown apart; its first call also loads the model."""
BOOKKEEPING = ("poll jobs", "score", "analyze (rules)", "propose (mutator)", "archive + novelty",
               "submit", "stop checks", "step (rest)", "startup")
"""Phases that are the driver's own work; gates, training and model calls are not among them."""


# ---- part 1: the driver's own time ------------------------------------------------------------

@dataclass
class Phases:
    """Exclusive wall and CPU time per phase of wrapped methods (a nested call's time is
    charged to the inner phase only)."""

    wall: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: Counter = field(default_factory=Counter)
    steps: list[tuple[float, float, bool]] = field(default_factory=list)
    """(inclusive wall, inclusive CPU, progressed) of each Driver.step() call."""
    each: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    """Exclusive wall time of each call, per phase."""
    _stack: list[list[float]] = field(default_factory=list)

    def wrap(self, obj: Any, attr: str, phase: str) -> None:
        inner = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([0.0, 0.0])
            w0, c0 = time.perf_counter(), time.process_time()
            result: Any = None
            try:
                result = inner(*args, **kwargs)
                return result
            finally:
                w, c = time.perf_counter() - w0, time.process_time() - c0
                child_w, child_c = self._stack.pop()
                self.wall[phase] += w - child_w
                self.cpu[phase] += c - child_c
                self.calls[phase] += 1
                self.each[phase].append(w - child_w)
                if self._stack:
                    self._stack[-1][0] += w
                    self._stack[-1][1] += c
                if attr == "step":
                    self.steps.append((w, c, bool(result)))

        setattr(obj, attr, timed)  # an instance attribute shadows the class's method


def search_config(root: Path, candidates: int, poll_s: float) -> Path:
    cfg = {
        "name": "bench", "root": str(root / "state"), "preset": "tiny",
        "train": {"lm": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1},
                  "mqar": {"max_steps": 2, "batch_size": 16, "checkpoint_every": 2,
                           "log_every": 1},
                  "eval": {"lm_eval_tasks": [], "bpb_windows": 2},
                  "mqar_task": {"num_eval_examples": 16},
                  "runtime": {"num_threads": 1}},
        "search": {"proposer": "mutator", "max_candidates": candidates, "generation_size": 2,
                   "max_in_flight": 4, "baselines": ["deltanet", "linear_attention"],
                   "poll_s": poll_s},
        "launch": {"executor": "local", "array_parallelism": 2, "timeout_min": 30},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def instrument(driver: Any, phases: Phases) -> Callable[[], None]:
    """Wrap the driver's phases; returns a function that unwraps the one class-level wrap."""
    from submitit.core.core import PicklingExecutor as Executor

    original = Executor.__dict__["_throttle"]

    # submitit's local executor sleeps 0.2 s between the tasks of an array (a Slurm array is one
    # sbatch call): time spent waiting in the driver, not work; it is shown apart.
    phases.wrap(Executor, "_throttle", THROTTLE)
    for obj, attr, phase in (
            (driver.launcher, "poll", "poll jobs"), (driver.launcher, "submit", "submit"),
            (driver.launcher, "resume", "startup"), (driver, "_recover_created", "startup"),
            (driver, "_submit_baselines", "startup"), (driver, "_score_finished", "score"),
            (driver, "_analyze_scored", "analyze (rules)"), (driver, "_merge_lessons", MERGE),
            (driver, "_propose_if_room", "archive + novelty"), (driver, "_gate", GATES),
            (driver.proposer, "propose", "propose (mutator)"),
            (driver, "_submit_checked", "submit"), (driver, "_should_stop", "stop checks"),
            (driver, "_complete", "stop checks"), (driver, "_follow_up", "follow-ups"),
            (driver, "step", "step (rest)")):
        phases.wrap(obj, attr, phase)

    def restore() -> None:
        Executor._throttle = original  # type: ignore[method-assign]

    return restore


def measure_search(root: Path, candidates: int, poll_s: float) -> dict[str, Any]:
    from evolve.search.run_config import load_run_config
    from evolve.search.driver import Driver

    cfg = load_run_config(search_config(root, candidates, poll_s))
    phases = Phases()
    t0 = time.perf_counter()
    w0, c0 = time.perf_counter(), time.process_time()
    driver = Driver(cfg)
    phases.wall["startup"] += time.perf_counter() - w0
    phases.cpu["startup"] += time.process_time() - c0
    restore = instrument(driver, phases)
    try:
        code = driver.run()
    finally:
        restore()
    total_s = time.perf_counter() - t0
    if code != 0 or driver.stop_reason != "complete":
        raise SystemExit(f"the bench search did not complete: {driver.stop_reason}")
    state = driver.store.replay()
    n = len(state.candidates)
    gated = phases.calls[GATES]
    idle = [(w, c) for w, c, progressed in phases.steps if not progressed]
    # One idle iteration of the loop: a step that found nothing, and the two stop checks.
    stop_w = phases.wall["stop checks"] / max(phases.calls["stop checks"], 1)
    stop_c = phases.cpu["stop checks"] / max(phases.calls["stop checks"], 1)
    idle_w = (statistics.fmean(w for w, _ in idle) if idle else 0.0) + 2 * stop_w
    idle_c = (statistics.fmean(c for _, c in idle) if idle else 0.0) + 2 * stop_c
    book_w = sum(phases.wall[p] for p in BOOKKEEPING)
    book_c = sum(phases.cpu[p] for p in BOOKKEEPING)
    return {
        "candidates": n, "statuses": dict(Counter(c.status for c in state.candidates.values())),
        "gated": gated, "search_wall_s": total_s, "poll_s": poll_s,
        "steps": len(phases.steps), "idle_steps": len(idle),
        "phases": {p: {"wall_s": phases.wall[p], "cpu_s": phases.cpu[p], "calls": phases.calls[p]}
                   for p in (*BOOKKEEPING, THROTTLE, MERGE, GATES)},
        "bookkeeping_wall_s": book_w, "bookkeeping_cpu_s": book_c,
        "idle_iteration_wall_s": idle_w, "idle_iteration_cpu_s": idle_c,
        "busy_per_candidate_wall_s": (book_w - len(idle) * idle_w) / n,
        "busy_per_candidate_cpu_s": (book_c - len(idle) * idle_c) / n,
        "gates_per_candidate_wall_s": phases.wall[GATES] / max(gated, 1),
        "throttle_per_candidate_wall_s": phases.wall[THROTTLE] / n,
        "merge_wall_s": phases.wall[MERGE], "merge_cpu_s": phases.cpu[MERGE],
        "merge_calls_wall_s": phases.each[MERGE],
    }


def measure_idle_at_scale(root: Path, size: int, poll_s: float, repeats: int = 5
                          ) -> dict[str, Any]:
    """One idle loop iteration (step + the two stop checks) of a driver whose archive holds
    `size` analyzed proposals: what the driver spends per poll while trainings run, late in a
    long search."""
    from evolve.search.run_config import load_run_config
    from evolve.search.driver import Driver

    path = search_config(root / f"scale-{size}", size, poll_s)
    cfg = yaml.safe_load(path.read_text())
    cfg["store"] = {"fsync": False}  # building the archive only; reads do not depend on it
    path.write_text(yaml.safe_dump(cfg))
    driver = Driver(load_run_config(path))
    store = driver.store
    for i in range(size):
        cid = store.new_candidate(generation=1 + i // 4, parents=[])
        paths = store.candidate(cid)
        store.write_text(paths.mixer, "# not trained: an archive entry for the bench\n")
        store.write_json(paths.proposal, {"kind": "proposal", "proposer": "mutator",
                                          "motivation": f"entry {i}", "parents": [], "seed": 0})
        for event, fields in (("proposed", {}), ("checked", {"passed": True}),
                              ("submitted", {"job_id": str(i), "submission": "s0"}),
                              ("done", {"gpu_hours": 0.0}), ("scored", {"fitness": i / size}),
                              ("analyzed", {"lessons": 0})):
            store.record(event, cid, **fields)
    times = []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        progressed = driver.step()
        driver._should_stop()
        complete = driver._complete()
        times.append((time.perf_counter() - w0, time.process_time() - c0))
        if progressed or not complete:
            raise SystemExit(f"archive of {size}: the driver was not idle ({progressed=}, "
                             f"{complete=})")
    wall = statistics.median(w for w, _ in times)
    cpu = statistics.median(c for _, c in times)
    return {"archive": size, "idle_iteration_wall_s": wall, "idle_iteration_cpu_s": cpu,
            "duty": wall / poll_s, "events": store.replay().num_events}


def measure_tiny(root: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one real `evolve train --mixer deltanet --preset tiny`."""
    out = root / "tiny-deltanet"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "evolve.cli.main", "train", "--mixer", "deltanet",
                           "--preset", "tiny", "--out", str(out), "--json"], cwd=REPO,
                          capture_output=True, text=True)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"the tiny training failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return took, cpu


# ---- part 2: parallel workers -----------------------------------------------------------------

class SleepJob(submitit.helpers.Checkpointable):
    """A training of fixed wall time: sleeps `seconds` in one-second steps, checkpointing each
    step to train/checkpoint.json (a requeued job resumes there), then writes result.json."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, candidate_dir: str, train_cfg: dict[str, Any]) -> dict[str, Any]:
        from evolve.state.store import CandidatePaths, atomic_write_json, read_json

        paths = CandidatePaths.of(candidate_dir)
        ckpt = paths.train / "checkpoint.json"
        paths.train.mkdir(parents=True, exist_ok=True)
        done = float(read_json(ckpt, {"slept": 0.0})["slept"])
        start = time.time()
        while done < self.seconds:
            step = min(1.0, self.seconds - done)
            time.sleep(step)
            done += step
            atomic_write_json(ckpt, {"slept": done})
        result = {"status": "ok", "slept": done, "started": start, "ended": time.time()}
        atomic_write_json(paths.result, result)
        return result


def measure_workers(root: Path, workers: int, candidates: int, seconds: float) -> dict[str, Any]:
    from evolve.launch.launcher import LaunchConfig, Launcher
    from evolve.state.store import Store, read_json

    store = Store.create(root / f"workers-{workers}", {"bench": "workers", "workers": workers})
    cids = [store.new_candidate(generation=0) for _ in range(candidates)]
    for cid in cids:
        store.record("checked", cid, passed=True)
    serial_s = candidates * seconds
    cfg = LaunchConfig(executor="local", array_parallelism=workers, cpus_per_task=1,
                       timeout_min=max(5, int(3 * serial_s / 60) + 1), poll_s=0.5)
    launcher = Launcher(store, cfg)
    t0, epoch0 = time.perf_counter(), time.time()
    launcher.submit(cids, this_module().SleepJob(seconds), {}, generation=0)
    final = launcher.wait(timeout_s=3 * serial_s + 120, poll_s=0.5)
    took = time.perf_counter() - t0
    if final != {c: "done" for c in cids}:
        raise SystemExit(f"{workers} worker(s): not every job finished: {final}")
    spans = [read_json(store.candidate(c).result) for c in cids]
    first_start = min(s["started"] for s in spans) - epoch0
    last_end = max(s["ended"] for s in spans) - epoch0
    busy = last_end - first_start
    return {"workers": workers, "candidates": candidates, "job_s": seconds, "wall_s": took,
            "candidates_per_hour": candidates / took * 3600,
            "max_concurrent": max_overlap([(s["started"], s["ended"]) for s in spans]),
            # Where the time beyond the sleeping went: before the first training started
            # (submission, process start, imports), between trainings (slot hand-over, starts
            # not overlapped), after the last one ended (until the launcher collected it).
            "to_first_start_s": first_start,
            "between_s": busy - seconds * -(-candidates // workers),
            "after_last_end_s": took - last_end}


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The most intervals that were open at one moment."""
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    best = now = 0
    for _, d in edges:
        now += d
        best = max(best, now)
    return best


def this_module() -> Any:
    """This file imported by name, so that the jobs' pickles name an importable module."""
    import importlib

    return importlib.import_module("driver")


# ---- report -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=4, help="proposals in the bench search")
    p.add_argument("--poll-s", type=float, default=2.0, help="search.poll_s (the default: 2)")
    p.add_argument("--tiny-seconds", type=float, default=None,
                   help="wall seconds of a tiny training measured before (skips measuring it)")
    p.add_argument("--tiny-cpu-seconds", type=float, default=None,
                   help="CPU seconds of that training (for the CPU-based share)")
    p.add_argument("--jobs", type=int, default=8, help="trainings per array in part 2")
    p.add_argument("--job-seconds", type=float, default=20.0, help="length of each training")
    p.add_argument("--workers", default="1,4", help="parallelisms to compare (first: base)")
    p.add_argument("--scale", default="100,1000",
                   help="archive sizes at which to time an idle loop iteration ('' to skip)")
    p.add_argument("--skip-speedup", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--dir", type=Path, default=None, help="where to create the temporary runs")
    p.add_argument("--out", type=Path, default=Path("bench-out/driver.json"))
    args = p.parse_args(argv)
    report: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                              "host": platform.node(), "load_before": os.getloadavg()}
    missed = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="evolve-bench-driver-") as tmp:
        root = Path(tmp)
        if not args.skip_overhead:
            search = measure_search(root, args.candidates, args.poll_s)
            if args.tiny_seconds:
                tiny, tiny_cpu = args.tiny_seconds, args.tiny_cpu_seconds
            else:
                tiny, tiny_cpu = measure_tiny(root)
            busy = search["busy_per_candidate_wall_s"] / tiny
            idle = search["idle_iteration_wall_s"] / args.poll_s
            search.update(tiny_training_s=tiny, tiny_training_cpu_s=tiny_cpu,
                          tiny_measured=args.tiny_seconds is None,
                          busy_share=busy, idle_share=idle, overhead_share=busy + idle,
                          # CPU against CPU: what the figures would be without contention.
                          busy_share_cpu=(search["busy_per_candidate_cpu_s"] / tiny_cpu
                                          if tiny_cpu else None),
                          idle_share_cpu=search["idle_iteration_cpu_s"] / args.poll_s,
                          gates_share=search["gates_per_candidate_wall_s"] / tiny,
                          throttle_share=search["throttle_per_candidate_wall_s"] / tiny)
            report["overhead"] = search
            print_overhead(search)
            if busy + idle >= GOAL_OVERHEAD:
                missed.append("overhead")
        sizes = [int(n) for n in args.scale.split(",") if n.strip()]
        if sizes:
            scale = [measure_idle_at_scale(root, n, args.poll_s) for n in sizes]
            report["idle_at_scale"] = scale
            print_scale(scale, args.poll_s)
            if scale[-1]["duty"] >= GOAL_OVERHEAD:
                missed.append("overhead at scale")
        if not args.skip_speedup:
            counts = [int(w) for w in args.workers.split(",")]
            rows = [measure_workers(root, w, args.jobs, args.job_seconds) for w in counts]
            for r in rows:
                r["speedup"] = r["candidates_per_hour"] / rows[0]["candidates_per_hour"]
            report["workers"] = rows
            print_workers(rows)
            if rows[-1]["speedup"] < GOAL_SPEEDUP:
                missed.append("speed-up")
    report["load_after"] = os.getloadavg()
    print(f"load average before {report['load_before'][0]:.1f}, after "
          f"{report['load_after'][0]:.1f} on {os.cpu_count()} CPUs (other work inflates wall "
          "times)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if missed else 0


def print_overhead(s: dict[str, Any]) -> None:
    n = s["candidates"]
    print(f"driver overhead: demo search of {n} candidates ({s['statuses']}), "
          f"{s['search_wall_s']:.1f} s, {s['steps']} steps ({s['idle_steps']} idle), "
          f"poll_s {s['poll_s']:g}")
    print(f"{'phase':<22} {'calls':>6} {'wall s':>9} {'CPU s':>9} {'wall/cand':>10}")
    for phase, v in s["phases"].items():
        print(f"{phase:<22} {v['calls']:>6} {v['wall_s']:>9.3f} {v['cpu_s']:>9.3f} "
              f"{v['wall_s'] / n * 1000:>8.1f}ms")
    tiny, tiny_cpu = s["tiny_training_s"], s["tiny_training_cpu_s"]
    cpu_text = f", {tiny_cpu:.1f} CPU s" if tiny_cpu else ""
    print(f"tiny training of deltanet: {tiny:.1f} s wall{cpu_text} "
          f"({'measured' if s['tiny_measured'] else 'given'})")
    share_cpu = (f"; its CPU against the training's CPU {s['busy_share_cpu']:.3%}"
                 if s["busy_share_cpu"] is not None else "")
    print(f"bookkeeping per candidate, idle polls excluded: "
          f"{s['busy_per_candidate_wall_s'] * 1000:.1f} ms wall, "
          f"{s['busy_per_candidate_cpu_s'] * 1000:.1f} ms CPU ({s['busy_share']:.3%} of a tiny "
          f"training's wall time{share_cpu})")
    print(f"idle loop iteration: {s['idle_iteration_wall_s'] * 1000:.1f} ms wall every "
          f"{s['poll_s']:g} s ({s['idle_share']:.3%} duty; CPU {s['idle_share_cpu']:.3%})")
    goal = "met" if s["overhead_share"] < GOAL_OVERHEAD else "MISSED"
    merge = [w for w in s["merge_calls_wall_s"] if w > 1e-3] or [0.0, 0.0]  # calls with lessons
    print(f"overhead: {s['overhead_share']:.3%} of a tiny training (goal < {GOAL_OVERHEAD:.0%}: "
          f"{goal})")
    print(f"apart: gates {s['gates_per_candidate_wall_s']:.1f} s per gated candidate "
          f"({s['gates_share']:.1%}; a sandbox subprocess, overlapping trainings); lesson merge "
          f"(MiniLM) {s['merge_wall_s']:.1f} s wall, {s['merge_cpu_s']:.1f} s CPU in all (the "
          f"call that loads the model {max(merge):.1f} s, the others median "
          f"{statistics.median(sorted(merge)[:-1]):.2f} s); submitit's sleep between local tasks "
          f"{s['throttle_per_candidate_wall_s'] * 1000:.0f} ms per candidate "
          f"({s['throttle_share']:.2%})")


def print_scale(rows: list[dict[str, Any]], poll_s: float) -> None:
    print(f"idle loop iteration against archive size (poll_s {poll_s:g}):")
    print(f"{'archive':>8} {'events':>7} {'wall':>10} {'CPU':>9} {'duty':>7}")
    for r in rows:
        print(f"{r['archive']:>8} {r['events']:>7} {r['idle_iteration_wall_s'] * 1000:>8.1f}ms "
              f"{r['idle_iteration_cpu_s'] * 1000:>7.1f}ms {r['duty']:>7.2%}")
    last = rows[-1]
    goal = "met" if last["duty"] < GOAL_OVERHEAD else "MISSED"
    print(f"at {last['archive']} candidates the idle share alone is {last['duty']:.2%} "
          f"(goal < {GOAL_OVERHEAD:.0%}: {goal})")


def print_workers(rows: list[dict[str, Any]]) -> None:
    print(f"{'workers':>7} {'jobs':>5} {'job s':>6} {'wall s':>8} {'cand/h':>8} "
          f"{'concurrent':>10} {'speed-up':>8}   time not sleeping: before / between / after")
    for r in rows:
        print(f"{r['workers']:>7} {r['candidates']:>5} {r['job_s']:>6g} {r['wall_s']:>8.1f} "
              f"{r['candidates_per_hour']:>8.1f} {r['max_concurrent']:>10} {r['speedup']:>7.2f}x"
              f"   {r['to_first_start_s']:.1f} / {r['between_s']:.1f} / "
              f"{r['after_last_end_s']:.1f} s")
    goal = "met" if rows[-1]["speedup"] >= GOAL_SPEEDUP else "MISSED"
    print(f"speed-up {rows[0]['workers']} -> {rows[-1]['workers']} workers: "
          f"{rows[-1]['speedup']:.2f}x (goal >= {GOAL_SPEEDUP}x: {goal})")


if __name__ == "__main__":
    # Jobs unpickle SleepJob by module name: import this file as `driver` and let the local
    # executor's processes find it too.
    sys.path.insert(0, str(HERE))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.exit(this_module().main())
