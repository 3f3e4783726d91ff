"""The launch scenarios on a real Slurm cluster (bash tools/slurm-local.sh start), plus what only
Slurm has: lost jobs, refused submissions, GPU-hours from sacct, and the sbatch scripts as jobs.

Skipped only where sbatch is absent and CI is unset; in CI a missing Slurm is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import jobs_for_tests as jt
from evolve.launch.launcher import Launcher, SubmissionError, sbatch_script
from evolve.launch.job_state import array_master, slurm_job_infos
from evolve.state.store import read_json

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]


def _sh(*cmd: str) -> str:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster() -> None:
    if shutil.which("sbatch") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but sbatch is not on PATH: run `bash tools/slurm-local.sh start`")
        pytest.skip("no Slurm here (sbatch not on PATH); start one with `bash tools/slurm-local.sh start`")
    states = _sh("sinfo", "-h", "-o", "%T").split()
    if not any(s.rstrip("*") in ("idle", "mixed", "allocated", "completing") for s in states):
        pytest.fail(f"Slurm does not answer or has no usable node (sinfo: {states}); "
                    "run `bash tools/slurm-local.sh start`")


@pytest.fixture(autouse=True)
def importable_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    # sbatch exports this environment to the jobs, which unpickle jobs_for_tests.CountingJob.
    monkeypatch.setenv("PYTHONPATH", jt.TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))


def has_gpus() -> bool:
    return "gpu" in _sh("sinfo", "-h", "-o", "%G")


def test_generation_of_four_as_one_array(tmp_path: Path) -> None:
    store, ids = jt.scenario_generation(tmp_path / "run", "slurm")
    masters = {array_master(j) for j in ids.values()}
    assert len(masters) == 1, f"one array expected, got {ids}"
    assert sorted(j.split("_")[1] for j in ids.values()) == ["0", "1", "2", "3"]
    # The script submitit gave sbatch is the one sbatch_script() shows for this config.
    folder = store.root / "jobs" / "s000000"
    submitted = (folder / f"{masters.pop()}_submission.sh").read_text()
    expected = sbatch_script(jt.launch_config("slurm"), folder, 4,
                             job_name=f"evolve-run-{store.uid}-s000000")
    assert submitted == expected
    assert "#SBATCH --array=0-3%4" in submitted


def test_interrupted_task_requeues_without_repeating_steps(tmp_path: Path) -> None:
    store = jt.scenario_requeue(tmp_path / "run", "slurm")
    job_id = jt.events(store, "done")[0]["job_id"]
    assert slurm_job_infos([job_id])[job_id].runs == 2  # sacct saw the requeue


def test_killed_driver_reattaches_to_the_same_jobs(tmp_path: Path) -> None:
    store, ids = jt.scenario_driver_killed(tmp_path, "slurm")
    name = jt.events(store, "submit_begin")[0]["job_name"]
    arrays = set(_sh("sacct", "-n", "-X", "-P", "-o", "JobID", "--name", name).split())
    assert {array_master(a) for a in arrays} == {array_master(j) for j in ids.values()}
    assert len({array_master(a) for a in arrays}) == 1, f"sbatch ran more than once: {arrays}"


def test_driver_killed_right_after_sbatch_recovers_ids(tmp_path: Path) -> None:
    store, ids = jt.scenario_driver_killed(tmp_path, "slurm", crash_after_sbatch=True)
    name = jt.events(store, "submit_begin")[0]["job_name"]
    arrays = set(_sh("sacct", "-n", "-X", "-P", "-o", "JobID", "--name", name).split())
    assert len({array_master(a) for a in arrays}) == 1, f"sbatch ran more than once: {arrays}"


def test_failing_task_leaves_traceback_and_log_tail(tmp_path: Path) -> None:
    store = jt.scenario_failure(tmp_path / "run", "slurm")
    err = read_json(store.candidate("c000000").error)
    assert "log.err" in err["logs"][0]
    # error.json keeps what the scheduler said when the result was read, and sacct may record
    # the end of the job seconds later on a loaded machine: wait for the job to end, then a
    # task that raised must have ended FAILED (submitit re-raises, the task exits non-zero).
    job_id = err["job_id"]
    jt.wait_for(lambda: not slurm_job_infos([job_id])[job_id].active, 120,
                f"sacct to record the end of job {job_id}")
    assert slurm_job_infos([job_id])[job_id].state == "FAILED"
    assert read_json(store.candidate("c000000").job)["state"] == "FAILED"


def test_job_unknown_to_slurm_is_lost_then_resubmitted(tmp_path: Path) -> None:
    store, (cid,) = jt.new_run(tmp_path / "run", 1)
    gone = "67000000_0"  # beyond any id this cluster has handed out
    store.record("submit_begin", submission="s000000", executor="slurm", folder="jobs/s000000",
                 candidates=[cid])
    store.write_json(store.candidate(cid).job, {
        "candidate": cid, "executor": "slurm", "job_id": gone, "submission": "s000000",
        "folder": "jobs/s000000", "submitted": time.time() - 3600, "attempt": 1,
        "state": "SUBMITTED", "history": []})
    store.record("submitted", cid, submission="s000000", job_id=gone, executor="slurm", attempt=1)
    launcher = Launcher(store, jt.launch_config("slurm"))
    assert launcher.resume() == {cid: gone}
    assert launcher.poll() == {cid: "lost"}
    assert store.replay().candidates[cid].status == "lost"
    assert read_json(store.candidate(cid).job)["state"] == "LOST"
    try:
        launcher.submit([cid], jt.CountingJob(steps=2, step_s=0.1), {})
        assert launcher.wait(timeout_s=120, poll_s=0.3) == {cid: "done"}
    finally:
        jt.cleanup(store)
    st = store.replay().candidates[cid]
    assert st.attempts == 2 and st.job_ids[0] == gone and st.job_ids[1] != gone
    assert read_json(store.candidate(cid).job)["history"][0]["state"] == "LOST"


@pytest.mark.parametrize("bad,message", [({"partition": "nope"}, "partition"),
                                         ({"account": "nope"}, "account")])
def test_refused_submission_is_recorded(tmp_path: Path, bad: dict, message: str) -> None:
    store, cids = jt.new_run(tmp_path / "run", 2)
    with pytest.raises(SubmissionError, match=f"(?i)invalid {message}"):
        Launcher(store, jt.launch_config("slurm", **bad)).submit(cids, jt.CountingJob(), {})
    failed = jt.events(store, "submit_failed")
    assert len(failed) == 1 and failed[0]["candidates"] == cids and message in failed[0]["error"]
    state = store.replay()
    assert {state.candidates[c].status for c in cids} == {"submit_failed"}
    assert state.open_submissions() == [] and not store.candidate(cids[0]).job.exists()
    # The candidates can go again once the config is fixed.
    launcher = Launcher(store, jt.launch_config("slurm"))
    try:
        launcher.submit(cids, jt.CountingJob(steps=1, step_s=0.0), {})
        assert launcher.wait(timeout_s=120, poll_s=0.3) == {c: "done" for c in cids}
    finally:
        jt.cleanup(store)


def test_gpu_hours_come_from_sacct(tmp_path: Path) -> None:
    if not has_gpus():
        pytest.skip("this cluster's nodes have no GPUs (tools/slurm-local.sh gives them 4)")
    store, (cid,) = jt.new_run(tmp_path / "run", 1)
    launcher = Launcher(store, jt.launch_config("slurm", gpus_per_task=2))
    try:
        job_id = launcher.submit([cid], jt.CountingJob(steps=6, step_s=0.5), {})[cid]
        assert launcher.wait(timeout_s=120, poll_s=0.3) == {cid: "done"}
    finally:
        jt.cleanup(store)
    time.sleep(1.5)  # let sacct record the end
    info = slurm_job_infos([job_id])[job_id]
    done = jt.events(store, "done")[0]
    assert done["gpu_hours"] > 0
    assert abs(done["gpu_hours"] - 2 * info.elapsed_s / 3600) <= 2 * 2 / 3600  # within 2 s
    assert read_json(store.candidate(cid).job)["gpu_hours"] == done["gpu_hours"]


LAGGING_SACCT = """#!/bin/bash
# Test double for a fault the real cluster shows only under load: slurmdbd has not yet recorded
# a job that already finished. Answers nothing until the job's result exists plus %(lag)s calls,
# then hands over to the real sacct.
n=$(cat "%(count)s" 2>/dev/null || echo 0)
if ls %(results)s >/dev/null 2>&1; then echo $((n + 1)) > "%(count)s"; fi
if [ "$n" -lt %(lag)s ]; then exit 0; fi
exec "%(real)s" "$@"
"""


def test_gpu_hours_wait_for_a_lagging_sacct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A result that appears before sacct knows the job is held until the accounting arrives."""
    if not has_gpus():
        pytest.skip("this cluster's nodes have no GPUs (tools/slurm-local.sh gives them 4)")
    store, (cid,) = jt.new_run(tmp_path / "run", 1)
    fake = tmp_path / "bin" / "sacct"
    fake.parent.mkdir()
    fake.write_text(LAGGING_SACCT % {"count": tmp_path / "calls", "lag": 3, "real": shutil.which("sacct"),
                                     "results": f"{store.jobs_dir}/*/*_result.pkl"})
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    launcher = Launcher(store, jt.launch_config("slurm", gpus_per_task=2, result_grace_s=60))
    try:
        job_id = launcher.submit([cid], jt.CountingJob(steps=4, step_s=0.5), {})[cid]
        assert launcher.wait(timeout_s=120, poll_s=0.3) == {cid: "done"}
    finally:
        jt.cleanup(store)
    assert int((tmp_path / "calls").read_text()) >= 3  # the lag was seen, and waited out
    info = slurm_job_infos([job_id])[job_id]
    done = jt.events(store, "done")[0]
    assert info.elapsed_s > 0 and abs(done["gpu_hours"] - 2 * info.elapsed_s / 3600) <= 2 * 2 / 3600


FAKE_DRIVER = """#!/bin/bash
# Stands in for `python -m evolve.cli.main run CONFIG`: the first start runs until USR1, then stops
# cleanly; the second start finds the run finished.
echo "start $* restart=${SLURM_RESTART_COUNT:-0}" >> "%(calls)s"
if [ "$(grep -c ^start "%(calls)s")" = 1 ]; then
  trap 'echo "stop USR1" >> "%(calls)s"; kill $sleeper; exit 0' USR1
  sleep 300 & sleeper=$!
  wait $sleeper
  exit 3
fi
echo finished >> "%(calls)s"
"""


def test_driver_sbatch_requeues_itself_on_the_time_signal(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_DRIVER % {"calls": calls})
    fake.chmod(0o755)
    site = tmp_path / "site.yaml"
    site.write_text("driver_partition: debug\ndriver_time: '00:10:00'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(EVOLVE_SITE=str(site), EVOLVE_PYTHON=str(fake))
    out = subprocess.run(["bash", str(REPO / "slurm" / "driver.sbatch"), "my-run.yaml"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Submitted batch job" in out.stdout, out.stderr
    job = out.stdout.split()[-1]
    try:
        jt.wait_for(lambda: calls.exists() and "start" in calls.read_text(), 60, "the driver to start")
        # What Slurm does at time limit minus 180 s (--signal=B:USR1@180):
        subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True, timeout=30)
        jt.wait_for(lambda: "finished" in calls.read_text(), 90, "the requeued driver to finish")
        jt.wait_for(lambda: slurm_job_infos([job])[job].state == "COMPLETED", 30, "the job to end")
    finally:
        subprocess.run(["scancel", job], timeout=30)
    lines = calls.read_text().splitlines()
    assert lines == ["start -m evolve.cli.main run my-run.yaml restart=0", "stop USR1",
                     "start -m evolve.cli.main run my-run.yaml restart=1", "finished"]
    assert slurm_job_infos([job])[job].runs == 2
    log = (tmp_path / f"evolve-driver-{job}.out").read_text()
    assert "requeueing job" in log and "got SIGUSR1" in log


def test_llm_server_job_announces_and_cleans_up(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    if not has_gpus():
        pytest.skip("llm.sbatch asks for a GPU and this cluster's nodes have none")
    from test_slurm_scripts import check_endpoint, fake_vllm_python

    from evolve.launch.launcher import submit_llm_server, wait_for_endpoint
    from evolve.state.store import Store

    store = Store.create(tmp_path / "run", {"t": 1})
    # sbatch passes this environment on: the job serves with the stand-in for vLLM.
    monkeypatch.setenv("EVOLVE_VLLM_PYTHON", str(fake_vllm_python(tmp_path)))
    monkeypatch.setenv("EVOLVE_SITE", str(tmp_path / "no-site.yaml"))
    monkeypatch.chdir(tmp_path)
    job = submit_llm_server(store, "tiny-model",
                            sbatch_args=["--time=10", "--mem=1G", "--cpus-per-task=1"])
    try:
        info = wait_for_endpoint(store, job_id=job, timeout_s=60, poll_s=0.5)
        check_endpoint(store, info, "tiny-model")
        assert info["job_id"] == job and info["server"] == "vllm"
        assert jt.events(store, "llm_submitted")[0]["job_id"] == job
    finally:
        subprocess.run(["scancel", job], timeout=30)
    jt.wait_for(lambda: not store.endpoint_path.exists(), 30, "endpoint.json to be removed")
    with pytest.raises(SubmissionError, match="(?i)invalid partition"):
        submit_llm_server(store, "tiny-model", sbatch_args=["--partition=nope"])
    assert "partition" in jt.events(store, "llm_submit_failed")[0]["error"]


@pytest.mark.slow
def interrupt_after_five_steps(launcher: Launcher, cid: str, losses: Any, within_s: float) -> None:
    """Once the training logged five steps, send it USR2 (as Slurm before its time limit);
    it must checkpoint, requeue and finish."""
    deadline = time.time() + within_s
    while len(losses()) < 5:
        status = launcher.poll().get(cid)
        assert status in (None, "running"), (status, read_json(
            launcher.store.candidate(cid).error, None))
        assert time.time() < deadline, f"no five training steps within {within_s} s"
        time.sleep(0.2)
    launcher.interrupt(cid)
    assert launcher.wait(timeout_s=400, poll_s=1.0) == {cid: "done"}


def test_real_train_job_requeues_and_resumes_on_slurm(tmp_path: Path) -> None:
    """evolve.train.job.TrainJob at a tiny size through the launcher: USR2, requeue, no repeats."""
    pytest.importorskip("torch")
    from dataclasses import replace

    from evolve.config.loading import to_dict
    from evolve.train.presets import tiny
    from evolve.train.job import TrainJob

    cfg = tiny().only_tracks(["lm"])
    assert cfg.lm is not None
    steps = 16
    cfg = replace(cfg, lm=replace(cfg.lm, max_steps=steps, log_every=1, checkpoint_every=5,
                                  optim=replace(cfg.lm.optim, warmup_steps=2)),
                  eval=replace(cfg.eval, bpb_windows=4, lm_eval_tasks=()))
    store, (cid,) = jt.new_run(tmp_path / "run", 1)
    paths = store.candidate(cid)
    paths.mixer.write_text((REPO / "evolve" / "model" / "baselines" / "deltanet.py").read_text())
    launcher = Launcher(store, jt.launch_config("slurm", cpus_per_task=2))
    losses = lambda: [r for r in jt.metrics(paths.dir) if "loss" in r]  # noqa: E731
    try:
        launcher.submit([cid], TrainJob(), to_dict(cfg))
        interrupt_after_five_steps(launcher, cid, losses, within_s=240)
    finally:
        jt.cleanup(store)
    result = read_json(paths.result)
    assert result["status"] == "ok", result.get("traceback")
    assert [r["step"] for r in losses()] == list(range(1, steps + 1))
    assert any(r.get("event") == "resume" for r in jt.metrics(paths.dir))
    assert jt.events(store, "done")[0]["requeues"] == 1


@pytest.mark.slow
def test_two_rank_deepspeed_training_requeues_and_repeats_no_step(tmp_path: Path) -> None:
    """Two Slurm tasks (DeepSpeed over gloo on CPU) train one candidate; USR2 to both mid-training:
    they agree on a step, save one collective checkpoint, the job requeues, and the metrics
    written by rank 0 show every step once."""
    from dataclasses import replace

    from evolve.config.loading import to_dict
    from evolve.train.config import RuntimeConfig
    from evolve.train.job import TrainJob
    from evolve.train.presets import tiny

    cfg = tiny().only_tracks(["mqar"])
    assert cfg.mqar is not None
    steps = 40
    cfg = replace(cfg, mqar=replace(cfg.mqar, batch_size=8, max_steps=steps, log_every=1,
                                    checkpoint_every=100,
                                    optim=replace(cfg.mqar.optim, warmup_steps=2)),
                  mqar_task=replace(cfg.mqar_task, num_eval_examples=32, eval_num_kv_pairs=(8,)),
                  runtime=RuntimeConfig(device="cpu", engine="deepspeed", num_threads=1))
    store, (cid,) = jt.new_run(tmp_path / "run", 1)
    paths = store.candidate(cid)
    paths.mixer.write_text((REPO / "evolve" / "model" / "baselines" / "deltanet.py").read_text())
    launcher = Launcher(store, jt.launch_config("slurm", tasks_per_node=2, timeout_min=10))
    losses = lambda: [r for r in jt.metrics(paths.dir) if "loss" in r]  # noqa: E731
    try:
        launcher.submit([cid], TrainJob(), to_dict(cfg))
        interrupt_after_five_steps(launcher, cid, losses, within_s=300)
    finally:
        jt.cleanup(store)
    result = read_json(paths.result)
    assert result["status"] == "ok", result.get("traceback")
    assert result["world_size"] == 2
    assert [r["step"] for r in losses()] == list(range(1, steps + 1))
    assert any(r.get("event") == "resume" for r in jt.metrics(paths.dir))
    assert jt.events(store, "done")[0]["requeues"] == 1
