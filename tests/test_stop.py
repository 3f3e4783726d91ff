"""`evolve stop RUN --jobs` on a real run with local trainings: the driver submits nothing more,
every training saves its checkpoint and ends within the grace period (no process of the run is
left), and a resumed run continues each training from its checkpoint. On the way: a submission
holds no more live trainings than the run allows, and `evolve status` lists them with pids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import run_config_dict
from evolve.launch.job_state import run_processes


def evolve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli.main", *args], capture_output=True,
                          text=True, timeout=600)


def start_driver(cfg_file: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evolve.cli.main", "run", str(cfg_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def processes_naming(path: Path) -> list[int]:
    """Every live process whose command line names `path` (trainings, controllers)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if entry.isdigit() and str(path) in cmd:
            pids.append(int(entry))
    return pids


def rows(run: Path, cid: str) -> list[dict]:
    path = run / "candidates" / cid / "train" / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(what: str, test, timeout_s: float = 300.0) -> None:  # noqa: ANN001
    deadline = time.time() + timeout_s
    while not test():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def stop_jobs(run: Path, driver: subprocess.Popen) -> None:
    out = evolve("stop", str(run), "--jobs", "--grace", "90")
    assert out.returncode == 0, out.stdout + out.stderr
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err[-3000:]
    assert f"STOP file {run / 'STOP'}" in err
    assert run_processes(run / "jobs") == [] and processes_naming(run) == []


@pytest.mark.slow
def test_stop_jobs_checkpoints_every_training_and_a_resumed_run_continues_them(
        tmp_path: Path) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg = run_config_dict(tmp_path / "state", steps=2000, checkpoint_every=5000,
                          search={"max_candidates": 2, "max_in_flight": 4})
    cfg_file.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "state" / "mini"
    driver = start_driver(cfg_file)
    try:
        wait_for("two trainings to log a step", lambda: all(
            any("loss" in r for r in rows(run, c)) for c in ("c000000", "c000001")))
        # Four candidates are ready, array_parallelism is 2: two processes, not four.
        trainings = [p for p in run_processes(run / "jobs") if p.role == "training"]
        assert len(trainings) == 2, trainings
        status = json.loads(evolve("status", str(run), "--json").stdout)
        assert sorted(t["pid"] for t in status["local_trainings"]) == \
            sorted(p.pid for p in trainings)
        assert {t["candidate"] for t in status["local_trainings"]} == {"c000000", "c000001"}
        stopped_at = time.time()
        stop_jobs(run, driver)
    finally:
        if driver.poll() is None:
            driver.kill()
    events = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["t"] > stopped_at and e["event"] in
                ("created", "submit_begin", "submitted")]
    checkpoints = {}
    for cid in ("c000000", "c000001"):
        logged = max(r["step"] for r in rows(run, cid) if "loss" in r)
        ckpt = torch.load(run / "candidates" / cid / "train" / "lm" / "engine.pt",
                          weights_only=False)
        assert ckpt["extra"]["step"] >= logged, (cid, ckpt["extra"], logged)
        checkpoints[cid] = ckpt["extra"]["step"]

    (run / "STOP").unlink()
    driver = start_driver(cfg_file)
    try:
        wait_for("both trainings to resume", lambda: all(
            any(r.get("event") == "resume" for r in rows(run, c)) for c in checkpoints))
        for cid, step in checkpoints.items():
            resume = next(r for r in rows(run, cid) if r.get("event") == "resume")
            assert resume["step"] == step, (cid, resume, step)
        stop_jobs(run, driver)
    finally:
        if driver.poll() is None:
            driver.kill()
    events = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    for cid in checkpoints:
        mine = [e for e in events if e.get("candidate") == cid]
        lost = [e for e in mine if e["event"] == "lost"]
        assert lost and "stopped by SIGTERM with its checkpoint kept" in lost[0]["error"]
        assert [e["event"] for e in mine].count("submitted") == 2


def test_a_local_submission_starts_no_more_trainings_than_the_free_slots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jobs_for_tests as jt
    from evolve.launch.launcher import Launcher

    monkeypatch.setenv("PYTHONPATH", jt.TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    store, cids = jt.new_run(tmp_path / "run", 5)
    launcher = Launcher(store, jt.launch_config("local", array_parallelism=2))
    job = jt.CountingJob(steps=2, step_s=0.2)
    try:
        # max_in_flight 4, but two slots: two processes, the other three stay submittable.
        assert list(launcher.submit(cids, job, {}, max_alive=4)) == cids[:2]
        assert len([p for p in run_processes(store.jobs_dir) if p.role == "controller"]) == 2
        assert launcher.submit(cids[2:], job, {}, max_alive=4) == {}
        launcher.wait(timeout_s=120, poll_s=0.3)
        assert list(launcher.submit(cids[2:], job, {}, max_alive=1)) == cids[2:3]
        launcher.wait(timeout_s=120, poll_s=0.3)
    finally:
        jt.cleanup(store)
    state = store.replay()
    assert [c.status for c in state.candidates.values()] == ["done"] * 3 + ["checked"] * 2


@pytest.mark.slow
@pytest.mark.slurm
def test_stop_jobs_on_slurm_journals_the_cancelled_trainings_and_a_resumed_run_continues_them(
        tmp_path: Path) -> None:
    """The same on the local Slurm cluster: the trainings are cancelled (after TERM, which lets
    each save a checkpoint), journaled `lost` once the driver has let go, and a resumed run
    submits them again; each resumes from its checkpoint."""
    import shutil

    if shutil.which("sbatch") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but sbatch is missing: run tools/slurm-local.sh start")
        pytest.skip("no Slurm here (tools/slurm-local.sh start)")
    cfg_file = tmp_path / "run.yaml"
    cfg = run_config_dict(tmp_path / "state", steps=2000, checkpoint_every=5000,
                          search={"max_candidates": 2, "max_in_flight": 2},
                          launch={"executor": "slurm", "cpus_per_task": 1, "mem_gb": 2,
                                  "python": sys.executable, "poll_s": 1.0})
    cfg_file.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "state" / "mini"
    driver = start_driver(cfg_file)
    try:
        wait_for("two Slurm trainings to log a step", lambda: all(
            any("loss" in r for r in rows(run, c)) for c in ("c000000", "c000001")), 600)
        out = evolve("stop", str(run), "--jobs", "--grace", "60")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Slurm job(s) cancelled" in out.stdout
        driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    events = [json.loads(line) for line in (run / "journal.jsonl").read_text().splitlines()]
    lost = {e["candidate"] for e in events if e["event"] == "lost"
            and "evolve stop --jobs" in e.get("error", "")}
    assert lost == {"c000000", "c000001"}, [e for e in events if e["event"] == "lost"]
    (run / "STOP").unlink()
    driver = start_driver(cfg_file)
    try:
        wait_for("both trainings to resume", lambda: all(
            any(r.get("event") == "resume" for r in rows(run, c)) for c in lost), 600)
        out = evolve("stop", str(run), "--jobs", "--grace", "60")
        assert out.returncode == 0, out.stdout + out.stderr
        driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
