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

from evolve.state.store import CandidatePaths, atomic_write_json, read_json

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

    from evolve.launch.launcher import LaunchConfig, Launcher
    from evolve.state.store import Store

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


# Scenarios shared by tests/test_launch.py (local executor) and tests/test_slurm.py (Slurm).
# Each takes a fresh folder and the executor name and asserts on files, journal and metrics.

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def launch_config(executor: str, **kw: Any) -> Any:
    from evolve.launch.launcher import LaunchConfig

    base = dict(executor=executor, timeout_min=5, signal_delay_s=30, poll_s=0.5, lost_after_s=20,
                result_grace_s=5, cpus_per_task=1, array_parallelism=4)
    base.update(kw)
    return LaunchConfig(**base)


def new_run(root: Any, n: int) -> tuple[Any, list[str]]:
    from evolve.state.store import Store

    store = Store.create(root, {"test": True})
    cids = [store.new_candidate(generation=0) for _ in range(n)]
    for cid in cids:
        store.record("checked", cid, passed=True)
    return store, cids


def events(store: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in store.events() if e["event"] == name]


def wait_for(cond: Any, timeout_s: float, what: str) -> None:
    end = time.time() + timeout_s
    while not cond():
        if time.time() > end:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


def cleanup(store: Any) -> None:
    """Cancel whatever jobs of this run still live (a failed test must not leave jobs behind)."""
    from evolve.launch.job_state import local_job_info

    ids = {e["job_id"]: e.get("executor") for e in events(store, "submitted")}
    for job_id, executor in ids.items():
        if executor == "slurm":
            subprocess_run(["scancel", job_id])
        elif executor == "local":
            folder = None
            for sub in store.replay().submissions.values():
                if job_id in sub.job_ids.values():
                    folder = store.root / sub.folder
            if folder is not None and local_job_info(job_id, folder).active:
                os.kill(int(job_id), signal.SIGINT)


def subprocess_run(cmd: list[str]) -> str:
    import subprocess

    return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout


def scenario_generation(root: Any, executor: str, steps: int = 6) -> Any:
    """Four candidates as one array: every result arrives, every metric step exactly once."""
    from evolve.launch.launcher import Launcher

    store, cids = new_run(root, NUM_CANDIDATES)
    launcher = Launcher(store, launch_config(executor))
    try:
        ids = launcher.submit(cids, CountingJob(steps=steps, step_s=0.2), {"lr": 0.5}, generation=0)
        assert len(set(ids.values())) == NUM_CANDIDATES
        final = launcher.wait(timeout_s=120, poll_s=0.3)
    finally:
        cleanup(store)
    assert final == {c: "done" for c in cids}
    assert len(events(store, "submit_begin")) == 1
    for cid in cids:
        paths = store.candidate(cid)
        assert read_json(paths.result)["steps"] == steps
        assert read_json(paths.result)["cfg"] == {"lr": 0.5}
        assert [m["step"] for m in metrics(paths.dir)] == list(range(steps))
        job = read_json(paths.job)
        assert job["job_id"] == ids[cid] and job["outcome"] == "done"
    assert {s.status for s in store.replay().candidates.values()} == {"done"}
    return store, ids


def scenario_requeue(root: Any, executor: str, steps: int = 8) -> Any:
    """USR2 mid-training: the job checkpoints, is requeued and finishes; no step runs twice."""
    from evolve.launch.launcher import Launcher

    store, cids = new_run(root, 1)
    cid = cids[0]
    launcher = Launcher(store, launch_config(executor))
    try:
        launcher.submit(cids, CountingJob(steps=steps, step_s=0.3), {}, generation=0)
        wait_for(lambda: len(metrics(store.candidate(cid).dir)) >= 2, 60, "two training steps")
        launcher.interrupt(cid)
        final = launcher.wait(timeout_s=120, poll_s=0.3)
    finally:
        cleanup(store)
    assert final == {cid: "done"}
    lines = metrics(store.candidate(cid).dir)
    assert [m["step"] for m in lines] == list(range(steps)), "a step was lost or repeated"
    pids = [m["pid"] for m in lines]
    assert len(set(pids)) == 2 and pids[0] != pids[-1], "the job was not restarted"
    assert len({m["job"] for m in lines}) == 1, "the requeued job kept its id"
    done = events(store, "done")[0]
    assert done["requeues"] == 1
    return store


def run_driver(run: Any, executor: str, *flags: str, log: Any) -> Any:
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = TESTS_DIR + os.pathsep + env.get("PYTHONPATH", "")
    # Output to a file: the local executor's job processes inherit the driver's stdout, and a
    # pipe would stay open after the driver is killed.
    out = open(log, "w")
    return subprocess.Popen([sys.executable, os.path.join(TESTS_DIR, "jobs_for_tests.py"), "drive",
                             str(run), executor, *flags], stdout=out, stderr=subprocess.STDOUT,
                            env=env)


def read_log_line(log: Any, prefix: str) -> dict[str, Any] | None:
    try:
        text = open(log).read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return json.loads(line[len(prefix) + 1:])  # type: ignore[no-any-return]
    return None


def scenario_driver_killed(root: Any, executor: str, *, crash_after_sbatch: bool = False) -> Any:
    """The driver dies by SIGKILL while its array runs (or right after sbatch, before any id was
    recorded); a restarted driver collects the same jobs and submits nothing again."""
    from evolve.state.store import Store

    run = os.path.join(str(root), "run")
    first_log, second_log = os.path.join(str(root), "d1.log"), os.path.join(str(root), "d2.log")
    flags = ["--crash-after-sbatch"] if crash_after_sbatch else []
    first = run_driver(run, executor, *flags, log=first_log)
    try:
        if crash_after_sbatch:
            assert first.wait(timeout=120) == -signal.SIGKILL, open(first_log).read()
            submitted = None
        else:
            wait_for(lambda: read_log_line(first_log, "SUBMITTED") is not None or
                     first.poll() is not None, 120, "the first driver to submit")
            submitted = read_log_line(first_log, "SUBMITTED")
            assert submitted is not None, open(first_log).read()
            time.sleep(1.0)  # jobs are running now
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        store = Store.open(run)
        second = run_driver(run, executor, "--resume", log=second_log)
        assert second.wait(timeout=180) == 0, open(second_log).read()
    finally:
        if first.poll() is None:
            first.kill()
        if Store.is_run(run):
            cleanup(Store.open(run))
    resumed = read_log_line(second_log, "RESUMED")
    final = read_log_line(second_log, "FINAL")
    assert resumed is not None and final is not None, open(second_log).read()
    if submitted is not None:
        assert resumed == submitted, "the restarted driver must watch the very same job ids"
    assert final == {c: "done" for c in resumed}
    assert len(events(store, "submit_begin")) == 1, "submitted a second time"
    subs = events(store, "submitted")
    assert len(subs) == NUM_CANDIDATES and len({e["job_id"] for e in subs}) == NUM_CANDIDATES
    assert sorted(e["job_id"] for e in subs) == sorted(resumed.values())
    if crash_after_sbatch:
        assert all(e.get("recovered") for e in subs)
    for cid in resumed:
        assert [m["step"] for m in metrics(store.candidate(cid).dir)] == list(range(10))
    return store, resumed


def scenario_failure(root: Any, executor: str) -> Any:
    """A task that raises leaves its traceback and log tail in the candidate folder."""
    from evolve.launch.launcher import Launcher

    store, cids = new_run(root, 2)
    launcher = Launcher(store, launch_config(executor))
    try:
        launcher.submit(cids[:1], CountingJob(steps=4, step_s=0.1, fail_at=1), {}, generation=0)
        launcher.submit(cids[1:], CountingJob(steps=2, step_s=0.1), {}, generation=0)
        final = launcher.wait(timeout_s=120, poll_s=0.3)
    finally:
        cleanup(store)
    assert final == {cids[0]: "failed", cids[1]: "done"}
    err = read_json(store.candidate(cids[0]).error)
    assert "RuntimeError: deliberate failure at step 1" in err["traceback"]
    assert "CountingJob" in err["traceback"] or "__call__" in err["traceback"]
    assert "starting at step 0" in err["stdout_tail"]
    assert err["stderr_tail"].strip(), "the log tail is empty"
    failed = events(store, "failed")[0]
    assert failed["candidate"] == cids[0] and "deliberate failure" in failed["error"]
    assert store.replay().candidates[cids[0]].status == "failed"
    assert not store.candidate(cids[1]).error.exists()
    return store


def imported_from(names: list[str]) -> dict[str, str]:
    """Import each module by name in this process and say which file each came from."""
    import importlib

    return {name: str(getattr(importlib.import_module(name), "__file__", None)) for name in names}


def visible_gpus(candidate_dir: str, hold_s: float = 2.0) -> str:
    """The GPUs this job may use (CUDA_VISIBLE_DEVICES), after holding its slot a while so that
    two such jobs overlap."""
    time.sleep(hold_s)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")
