"""Job arrays through submitit on this machine: the local executor (subprocesses) and debug.

The scenarios live in jobs_for_tests.py and run again on a real Slurm cluster in test_slurm.py.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

import jobs_for_tests as jt
from evolve.launch.launcher import Launcher, LaunchConfig, SubmissionError
from evolve.state.store import StateError, read_json


@pytest.fixture(autouse=True)
def importable_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Job processes unpickle jobs_for_tests.CountingJob, so they must be able to import it.
    monkeypatch.setenv("PYTHONPATH", jt.TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_generation_of_four_as_one_submission(tmp_path: Path) -> None:
    jt.scenario_generation(tmp_path / "run", "local")


def test_interrupted_task_requeues_without_repeating_steps(tmp_path: Path) -> None:
    jt.scenario_requeue(tmp_path / "run", "local")


def test_killed_driver_reattaches_to_the_same_jobs(tmp_path: Path) -> None:
    jt.scenario_driver_killed(tmp_path, "local")


def test_driver_killed_right_after_submitting_recovers_ids(tmp_path: Path) -> None:
    jt.scenario_driver_killed(tmp_path, "local", crash_after_sbatch=True)


def test_failing_task_leaves_traceback_and_log_tail(tmp_path: Path) -> None:
    jt.scenario_failure(tmp_path / "run", "local")


def test_local_parallelism_cap(tmp_path: Path) -> None:
    store, cids = jt.new_run(tmp_path / "run", 4)
    launcher = Launcher(store, jt.launch_config("local", array_parallelism=2))
    try:
        launcher.submit(cids, jt.CountingJob(steps=4, step_s=0.25), {})
        assert launcher.wait(timeout_s=120, poll_s=0.3) == {c: "done" for c in cids}
    finally:
        jt.cleanup(store)
    spans = []
    for cid in cids:
        ts = [m["t"] for m in jt.metrics(store.candidate(cid).dir)]
        # A step lasts at least its 0.25 s sleep, so the training began no later than this:
        # the estimate may shrink an overlap, never invent one.
        spans.append((ts[0] - 0.25, ts[-1]))
    most = max(sum(1 for a, b in spans if a <= t <= b) for t, _ in spans)
    assert most <= 2, f"{most} trainings ran at once with array_parallelism=2: {spans}"


def test_local_jobs_waiting_for_a_slot_start_oldest_first(tmp_path: Path) -> None:
    store, cids = jt.new_run(tmp_path / "run", 5)
    launcher = Launcher(store, jt.launch_config("local", array_parallelism=1))
    try:
        # The first holds the only slot while the others, submitted newest first, queue up.
        launcher.submit(cids[:1], jt.CountingJob(steps=8, step_s=0.5), {})
        deadline = time.time() + 60
        while not store.candidate(cids[0]).metrics.exists() and time.time() < deadline:
            time.sleep(0.1)
        launcher.submit(cids[:0:-1], jt.CountingJob(steps=2, step_s=0.1), {})
        assert launcher.wait(timeout_s=180, poll_s=0.3) == {c: "done" for c in cids}
    finally:
        jt.cleanup(store)
    first_step = {c: jt.metrics(store.candidate(c).dir)[0]["t"] for c in cids}
    assert sorted(cids, key=first_step.get) == cids, first_step


def test_debug_executor_runs_in_process(tmp_path: Path) -> None:
    store, cids = jt.new_run(tmp_path / "run", 2)
    launcher = Launcher(store, jt.launch_config("debug"))
    launcher.submit(cids[:1], jt.CountingJob(steps=3, step_s=0.0), {"x": 1})
    launcher.submit(cids[1:], jt.CountingJob(steps=3, step_s=0.0, fail_at=0), {})
    assert launcher.wait(timeout_s=30, poll_s=0.1) == {cids[0]: "done", cids[1]: "failed"}
    assert read_json(store.candidate(cids[0]).result)["steps"] == 3
    assert "deliberate failure" in read_json(store.candidate(cids[1]).error)["traceback"]
    # Debug jobs die with their driver: a new driver records a still-submitted one as lost.
    c3 = store.new_candidate()
    Launcher(store, jt.launch_config("debug")).submit([c3], jt.CountingJob(steps=1), {})
    assert Launcher(store, jt.launch_config("debug")).resume() == {}
    assert store.replay().candidates[c3].status == "lost"


def test_no_second_submission_of_a_live_candidate(tmp_path: Path) -> None:
    store, cids = jt.new_run(tmp_path / "run", 1)
    launcher = Launcher(store, jt.launch_config("local"))
    try:
        launcher.submit(cids, jt.CountingJob(steps=20, step_s=0.2), {})
        with pytest.raises(StateError, match="is submitted"):
            Launcher(store, jt.launch_config("local")).submit(cids, jt.CountingJob(), {})
        launcher.cancel(cids[0])
    finally:
        jt.cleanup(store)
    assert store.replay().candidates[cids[0]].status == "cancelled"
    assert len(jt.events(store, "submit_begin")) == 1


def test_missing_sbatch_is_a_clear_recorded_error(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    store, cids = jt.new_run(tmp_path / "run", 2)
    with pytest.raises(SubmissionError, match="'sbatch' is not on PATH"):
        Launcher(store, jt.launch_config("slurm")).submit(cids, jt.CountingJob(), {})
    failed = jt.events(store, "submit_failed")
    assert len(failed) == 1 and failed[0]["candidates"] == cids
    assert "sbatch" in failed[0]["error"]
    state = store.replay()
    assert {state.candidates[c].status for c in cids} == {"submit_failed"}
    assert state.open_submissions() == []
    assert not store.candidate(cids[0]).job.exists()


def test_launch_config_validation() -> None:
    with pytest.raises(ValueError, match="debug, local, slurm"):
        LaunchConfig(executor="kubernetes")
    with pytest.raises(ValueError, match="timeout_min"):
        LaunchConfig(timeout_min=0)
    with pytest.raises(ValueError, match="signal_delay_s"):
        LaunchConfig(timeout_min=1, signal_delay_s=90)
    with pytest.raises(ValueError, match="sbatch_extra"):
        LaunchConfig(sbatch_extra={"--reservation": "x"})


def test_a_job_killed_from_outside_trains_again_once_then_fails(tmp_path: Path) -> None:
    """A training SIGKILLed (a stopped machine, `kill -9`; the kernel's OOM killer looks the
    same) leaves no result and no error: the first time it is lost and trains again from its
    checkpoint, the second time it is a failure, so that a design that is killed every time
    (out of memory) does not loop."""
    from evolve.launch.job_state import local_task_processes
    from evolve.state.fsck import rebuild_events

    store, (cid,) = jt.new_run(tmp_path / "run", 1)
    launcher = Launcher(store, jt.launch_config("local"))

    def kill_at(steps: int) -> dict[str, str]:
        jt.wait_for(lambda: len(jt.metrics(store.candidate(cid).dir)) >= steps, 60,
                    f"{steps} training steps")
        job_id = store.replay().candidates[cid].job_id
        tasks = local_task_processes(int(job_id))
        assert tasks, f"no training process under job {job_id}"
        for pid in tasks:
            os.kill(pid, signal.SIGKILL)
        return launcher.wait(timeout_s=60, poll_s=0.3)

    try:
        launcher.submit([cid], jt.CountingJob(steps=40, step_s=0.3), {}, generation=0)
        assert kill_at(2) == {cid: "lost"}
        (lost,) = jt.events(store, "lost")
        assert lost["killed"] is True and "killed from outside" in lost["error"]
        # A journal rebuilt from the run's files (evolve fsck --fix) still counts the kill (the
        # rebuild follows a candidate's files from its proposal: this bare run has none).
        store.write_json(store.candidate(cid).proposal, {"kind": "baseline", "name": "counting"})
        rebuilt = [e for e in rebuild_events(store) if e["event"] == "lost"]
        assert [(e["candidate"], e.get("killed")) for e in rebuilt] == [(cid, True)]
        launcher.submit([cid], jt.CountingJob(steps=40, step_s=0.3), {}, generation=0)
        first_pid = jt.metrics(store.candidate(cid).dir)[0]["pid"]
        jt.wait_for(lambda: jt.metrics(store.candidate(cid).dir)[-1]["pid"] != first_pid, 60,
                    "the second job's first step")
        assert kill_at(len(jt.metrics(store.candidate(cid).dir)) + 1) == {cid: "failed"}
    finally:
        jt.cleanup(store)
    (failed,) = jt.events(store, "failed")
    assert "the second time" in failed["error"] and failed["candidate"] == cid
    lines = jt.metrics(store.candidate(cid).dir)
    first = [m["step"] for m in lines if m["pid"] == lines[0]["pid"]]
    second = [m["step"] for m in lines if m["pid"] != lines[0]["pid"]]
    assert first == list(range(len(first)))
    assert second == list(range(second[0], second[0] + len(second)))
    # From its checkpoint: a SIGKILL between a step's metrics line and its checkpoint (no
    # signal can be held back) makes that one step run again; nothing earlier is repeated.
    assert second[0] in (first[-1], first[-1] + 1)
    assert store.replay().candidates[cid].status == "failed"
