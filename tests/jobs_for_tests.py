"""Real jobs and a real driver process for the launch tests (not mocks).

`CountingJob` is a small checkpointable training: each step does real work (hashing), sleeps,
appends one line to train/metrics.jsonl and saves its step to train/checkpoint.json; a restarted
job resumes from the checkpoint. The metrics file therefore shows whether a step ran twice.

Run as a script it is a driver-like process over a run folder, for the kill-and-restart tests::

    python tests/jobs_for_tests.py drive RUN_DIR EXECUTOR [--resume] [--crash-after-sbatch]

Jobs import this module by name, so PYTHONPATH must contain the tests folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sys
import time
from typing import Any, Iterator

import submitit

from evolve.store import CandidatePaths, atomic_write_json, read_json

NUM_CANDIDATES = 4


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back the preemption signals, so that one arriving now is handled after the block."""
    sigs = {signal.SIGUSR2, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def work(digest: str, step: int, rounds: int = 20_000) -> str:
    """A few milliseconds of real CPU work whose result depends on every earlier step."""
    h = (digest + str(step)).encode()
    for _ in range(rounds):
        h = hashlib.sha256(h).digest()
    return h.hex()


class CountingJob(submitit.helpers.Checkpointable):
    """Counts to `steps`, checkpointing after every step; fails at step `fail_at` if given."""

    def __init__(self, steps: int = 8, step_s: float = 0.25, fail_at: int | None = None) -> None:
        self.steps = steps
        self.step_s = step_s
        self.fail_at = fail_at

    def __call__(self, candidate_dir: str, train_cfg: dict[str, Any]) -> dict[str, Any]:
        paths = CandidatePaths.of(candidate_dir)
        paths.train.mkdir(parents=True, exist_ok=True)
        ckpt = paths.train / "checkpoint.json"
        state = read_json(ckpt, {"step": 0, "digest": ""})
        step, digest = state["step"], state["digest"]
        job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID", "")
        print(f"starting at step {step} of {self.steps} in {candidate_dir}", flush=True)
        while step < self.steps:
            digest = work(digest, step)
            time.sleep(self.step_s)
            if self.fail_at is not None and step == self.fail_at:
                raise RuntimeError(f"deliberate failure at step {step} of {paths.id}")
            # The step's metrics line and its checkpoint are written together, with the
            # preemption signal held back, so a requeue never loses or repeats a step.
            with signals_deferred():
                line = {"step": step, "digest": digest[:12], "pid": os.getpid(), "job": job,
                        "t": round(time.time(), 3)}
                with open(paths.metrics, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                step += 1
                atomic_write_json(ckpt, {"step": step, "digest": digest})
        result = {"steps": step, "digest": digest, "cfg": train_cfg}
        atomic_write_json(paths.result, result)
        return result


def metrics(candidate_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lines of a candidate's train/metrics.jsonl."""
    path = CandidatePaths.of(candidate_dir).metrics
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def drive(argv: list[str]) -> int:
    """A driver-like process: submit one generation and poll forever, or resume and collect."""
    import argparse

    from evolve.launch import LaunchConfig, Launcher
    from evolve.store import Store

    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("executor")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--crash-after-sbatch", action="store_true")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--step-s", type=float, default=0.3)
    args = p.parse_args(argv)
    store = Store.create(args.run, {"test": "drive", "executor": args.executor})
    cfg = LaunchConfig(executor=args.executor, timeout_min=5, signal_delay_s=30, poll_s=0.5,
                       lost_after_s=30, result_grace_s=5, cpus_per_task=1)
    launcher = Launcher(store, cfg)
    if args.resume:
        ids = launcher.resume()
        print("RESUMED " + json.dumps(ids), flush=True)
        final = launcher.wait(timeout_s=120, poll_s=0.5)
        print("FINAL " + json.dumps(final), flush=True)
        return 0
    cids = [store.new_candidate(generation=0) for _ in range(NUM_CANDIDATES)]
    for cid in cids:
        store.record("checked", cid, passed=True)
    if args.crash_after_sbatch:
        # Die the way `kill -9` would, after the scheduler accepted the array and before a
        # single job id reached job.json or the journal.
        def die(*a: Any, **k: Any) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        launcher._record_submitted = die  # type: ignore[method-assign]
    ids = launcher.submit(cids, CountingJob(steps=args.steps, step_s=args.step_s),
                          {"lr": 0.1}, generation=0)
    print("SUBMITTED " + json.dumps(ids), flush=True)
    while True:  # until killed
        launcher.poll()
        time.sleep(0.5)


if __name__ == "__main__":
    import jobs_for_tests  # by name, so that pickles refer to this module and not to __main__

    if sys.argv[1:2] != ["drive"]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(jobs_for_tests.drive(sys.argv[2:]))
