"""A cluster user's first day, following the README's "On a Slurm cluster" literally: the run
file `evolve init` writes, what `evolve config validate` refuses, the site file under the run
file, resuming with changed launch keys, a stale endpoint.json, `evolve status` with no run
named, what git ignores. Real files, the real CLI in subprocesses, real HTTP on loopback."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from evolve.config.loading import ConfigError
from evolve.search.run_config import load_run_config
from evolve.state.store import ConfigMismatchError, Store
from evolve.train.presets import explore

REPO = Path(__file__).resolve().parents[1]


def evolve(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
           timeout: int = 120) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "EVOLVE_SITE"}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "evolve.cli.main", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


SITE = """python: /shared/evolve/.venv/bin/python
launch:
  executor: slurm
  partition: gpu
  account: mylab
  gpus_per_task: 1
  setup: ["module load cuda/12.4"]
"""


def test_init_writes_the_preset_as_published(tmp_path: Path) -> None:
    proc = evolve("init", str(tmp_path / "my-run.yaml"), "--preset", "explore",
                  "--launch", "slurm")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "my-run.yaml").read_text()
    data = yaml.safe_load(text)
    assert "train" not in data and data["preset"] == "explore" and data["name"] == "my-run"
    assert data["launch"] == {"executor": "slurm", "gpus_per_task": 1}
    assert text.count("\n#") >= 10  # commented for the user who edits it
    shown = yaml.safe_load(evolve("config", "show", str(tmp_path / "my-run.yaml")).stdout)
    preset = explore()
    assert preset.lm is not None and preset.mqar is not None
    assert shown["train"]["lm"]["max_steps"] == preset.lm.max_steps == 15000
    assert shown["train"]["lm"]["batch_size"] == preset.lm.batch_size
    assert shown["train"]["mqar"]["max_steps"] == preset.mqar.max_steps
    assert shown["train"]["eval"]["bpb_windows"] == preset.eval.bpb_windows
    assert shown["train"]["eval"]["lm_eval_limit"] == preset.eval.lm_eval_limit
    again = evolve("init", str(tmp_path / "my-run.yaml"))
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    tiny = evolve("init", str(tmp_path / "cpu.yaml"), "--preset", "tiny", "--launch", "slurm")
    assert tiny.returncode == 0 and "gpus_per_task: 0" in (tmp_path / "cpu.yaml").read_text()
    bad = evolve("init", str(tmp_path / "x.yaml"), "--preset", "huge")
    assert bad.returncode == 2 and "valid presets: tiny, explore, verify" in bad.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_readme_cluster_recipe_uses_init() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## On a Slurm cluster", 1)[1].split("\n## ", 1)[0]
    assert "evolve init my-run.yaml --preset explore --launch slurm" in section
    assert "demo.yaml" not in section


@pytest.mark.parametrize("text, message", [
    ("preset: explore\nlaunch: {executor: slurm}\n",
     "trains on CUDA (train.runtime.device: cuda) but launch.gpus_per_task is 0"),
    ("preset: tiny\nsearch: {promote: {top: 2, preset: explore}}\nlaunch: {executor: slurm}\n",
     "give the promotion its own launch keys"),
    ("preset: tiny\nsearch: {promote: {top: 2, launch: {gpus: 1}}}\n",
     "unknown key 'search.promote.launch.gpus'"),
    ("preset: explore\nlaunch: slurm\n", ":2: 'launch' is 'slurm' (str); it must be a mapping"),
])
def test_validate_refuses_what_cannot_run(tmp_path: Path, text: str, message: str) -> None:
    run = write(tmp_path / "run.yaml", text)
    for env in ({}, {"EVOLVE_SITE": str(write(tmp_path / "site.yaml", SITE.replace(
            "  gpus_per_task: 1\n", "")))}):
        proc = evolve("config", "validate", str(run), env=env)
        assert proc.returncode == 2 and message in proc.stderr, (env, proc.stderr)
        assert str(run) in proc.stderr and "Traceback" not in proc.stderr


def test_validate_accepts_promotion_with_its_launch_and_deepspeed_on_cpu(tmp_path: Path) -> None:
    run = write(tmp_path / "run.yaml", "preset: tiny\nlaunch: {executor: slurm}\nsearch:\n"
                "  promote: {top: 2, preset: explore, launch: {partition: gpu, "
                "gpus_per_task: 1}}\ntrain: {runtime: {engine: deepspeed, precision: bf16}}\n")
    assert load_run_config(run).search.promote.launch["gpus_per_task"] == 1
    from evolve.search.site_launch import promote_launch

    launch = promote_launch(load_run_config(run))
    assert launch.partition == "gpu" and launch.gpus_per_task == 1 and launch.executor == "slurm"


def test_site_file_is_under_the_run_file_and_overrides_are_named(tmp_path: Path) -> None:
    site = write(tmp_path / "site.yaml", SITE)
    init = evolve("init", str(tmp_path / "my-run.yaml"), env={"EVOLVE_SITE": str(site)})
    assert init.returncode == 0, init.stderr
    shown = evolve("config", "show", str(tmp_path / "my-run.yaml"),
                   env={"EVOLVE_SITE": str(site)})
    launch = yaml.safe_load(shown.stdout)["launch"]
    assert (launch["partition"], launch["account"]) == ("gpu", "mylab")
    assert launch["setup"] == ["module load cuda/12.4"] and shown.stderr == ""
    demo = write(tmp_path / "demo.yaml", (REPO / "evolve/configs/demo.yaml").read_text())
    noted = evolve("config", "validate", str(demo), env={"EVOLVE_SITE": str(site)})
    assert noted.returncode == 0
    assert re.search(r"demo\.yaml:\d+: launch\.executor='local' overrides the site file's "
                     r"'slurm'", noted.stderr), noted.stderr
    # Without $EVOLVE_SITE a slurm/site.yaml in the submit folder is named, not silently unread.
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "site.yaml").write_text(SITE)
    unset = evolve("config", "validate", "my-run.yaml", cwd=tmp_path)
    assert "EVOLVE_SITE is not set" in unset.stderr and unset.returncode == 0
    broken = write(tmp_path / "broken-site.yaml", "launch:\n  partiton: gpu\n")
    refused = evolve("config", "validate", str(demo), env={"EVOLVE_SITE": str(broken)})
    assert refused.returncode == 2
    assert f"{broken}:2: unknown key 'launch.partiton'" in refused.stderr, refused.stderr


def _config(partition: str, **train: object) -> dict:
    return {"name": "r", "launch": {"executor": "slurm", "partition": partition,
                                    "account": "a", "tasks_per_node": 1},
            "train": {"lm": {"max_steps": 10, **train}}}


def test_resume_takes_new_launch_keys_journaled_but_not_new_training(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", _config("wrong"))
    again = Store.create(tmp_path / "run", _config("gpu"))
    assert again.config()["launch"]["partition"] == "gpu"
    events = [json.loads(line) for line in again.journal_path.read_text().splitlines()]
    moved = [e for e in events if e.get("event") == "launch_changed"]
    assert moved and moved[0]["changes"] == {"launch.partition": ["wrong", "gpu"]}
    with pytest.raises(ConfigMismatchError, match="train.lm.max_steps"):
        Store.create(tmp_path / "run", _config("gpu", max_steps=20))
    world = _config("gpu")
    world["launch"]["tasks_per_node"] = 4
    with pytest.raises(ConfigMismatchError, match="launch.tasks_per_node"):
        Store.create(tmp_path / "run", world)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_stale_endpoint_file_is_not_trusted(tmp_path: Path) -> None:
    from evolve.search.llm_roles import Agents

    run = write(tmp_path / "run.yaml", "name: r\nroot: " + str(tmp_path) +
                "\nsearch: {proposer: auto, serve_local: false}\n")
    cfg = load_run_config(run)
    store = Store.create(tmp_path / "r", {"name": "r"})
    store.write_endpoint({"host": "127.0.0.1", "port": _closed_port(), "key": "k",
                          "model": "a-model-that-was-served-yesterday"})
    start = time.monotonic()
    assert Agents.start(cfg, store) is None  # the mutator proposes, at once
    assert time.monotonic() - start < 10


def test_status_without_a_run_shows_the_latest_run(tmp_path: Path) -> None:
    for name in ("older", "newer"):
        Store.create(tmp_path / "state" / name, {"name": name})
        time.sleep(0.05)
    proc = evolve("status", cwd=tmp_path)
    assert "newer" in proc.stdout + proc.stderr and "state/demo" not in proc.stdout + proc.stderr
    assert "most recently active of 2 runs" in proc.stderr


def test_git_ignores_the_site_file_and_the_driver_logs() -> None:
    names = ["slurm/site.yaml", "evolve-driver-123.out", "evolve-llm-7.out"]
    proc = subprocess.run(["git", "check-ignore", *names], cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert proc.stdout.split() == names


def test_missing_config_error_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config(tmp_path / "nope.yaml")


# ---------------------------------------------------------------- on the local Slurm cluster

def _slurm_up() -> None:
    import shutil

    if shutil.which("sbatch") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but sbatch is not on PATH: "
                        "run `bash tools/slurm-local.sh start`")
        pytest.skip("no Slurm here; start one with `bash tools/slurm-local.sh start`")
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                            timeout=30).stdout.split()
    if not any(s.rstrip("*") in ("idle", "mixed", "allocated") for s in states):
        pytest.fail(f"Slurm has no usable node (sinfo: {states}): tools/slurm-local.sh start")


def _site(tmp_path: Path, account: str = "evolve") -> Path:
    return write(tmp_path / "site.yaml", f"""python: {sys.executable}
setup: export PYTHONSAFEPATH=1
driver_partition: debug
driver_account: {account}
driver_time: "00:20:00"
driver_mem: 2G
launch:
  executor: slurm
  partition: debug
  account: {account}
  cpus_per_task: 1
  mem_gb: 2
  timeout_min: 15
  poll_s: 1
  lost_after_s: 60
  result_grace_s: 10
""")


def _cpu_run_file(tmp_path: Path, site: Path) -> Path:
    """A run file as `evolve init` writes it, scaled to CPU: 2 tasks per training, DeepSpeed,
    bf16 on CPU, trainings of a few steps."""
    run = tmp_path / "rehearsal.yaml"
    proc = evolve("init", str(run), "--preset", "tiny", "--launch", "slurm", cwd=tmp_path,
                  env={"EVOLVE_SITE": str(site)})
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(run.read_text())
    data["root"] = str(tmp_path / "state")
    data["train"] = {
        "lm": {"max_steps": 6, "checkpoint_every": 100, "log_every": 2},
        "mqar": {"max_steps": 6, "checkpoint_every": 100, "log_every": 2},
        "eval": {"lm_eval_tasks": [], "bpb_windows": 4},
        "mqar_task": {"num_eval_examples": 32},
        "runtime": {"device": "cpu", "engine": "deepspeed", "precision": "bf16",
                    "num_threads": 1}}
    data["search"] = {"proposer": "mutator", "analyzer": "rules", "max_candidates": 1,
                      "generation_size": 1, "max_in_flight": 2, "baselines": ["deltanet"],
                      "baseline_seeds": 1, "poll_s": 1}
    data["fitness"] = {"reference": "deltanet", "mqar_pairs": 8}
    data["launch"]["tasks_per_node"] = 2
    run.write_text(yaml.safe_dump(data))
    return run


def _sbatch_and_wait(tmp_path: Path, site: Path, run: Path, limit_s: float) -> tuple[str, str]:
    """Submit slurm/driver.sbatch as the README says; (sacct State, ExitCode) once it ends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(EVOLVE_SITE=str(site))
    out = subprocess.run(["sbatch", "--parsable", "--partition=debug", "--account=evolve",
                          "--time=00:20:00", "--mem=2G", str(REPO / "slurm" / "driver.sbatch"),
                          run.name], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    end = time.monotonic() + limit_s
    state = ""
    try:
        while time.monotonic() < end:
            row = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State,ExitCode"],
                                 capture_output=True, text=True, timeout=30).stdout.split()
            state, _, code = (row[0] if row else "").partition("|")
            if state and state not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"):
                return state, code
            time.sleep(3)
    finally:
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
    pytest.fail(f"driver job {job} still {state} after {limit_s:.0f}s; log: "
                f"{(tmp_path / f'evolve-driver-{job}.out').read_text()[-3000:]}")


@pytest.mark.slurm
@pytest.mark.slow
def test_dress_rehearsal_driver_job_ends_in_a_leaderboard_and_a_report(tmp_path: Path) -> None:
    _slurm_up()
    site = _site(tmp_path)
    run = _cpu_run_file(tmp_path, site)
    state, code = _sbatch_and_wait(tmp_path, site, run, limit_s=900)
    log = "\n".join(p.read_text() for p in tmp_path.glob("evolve-driver-*.out"))
    assert (state, code) == ("COMPLETED", "0:0"), log[-4000:]
    assert "leaderboard" in log or "rank" in log, log[-3000:]
    assert "report: " in log
    run_dir = tmp_path / "state" / "rehearsal"
    results = [json.loads(p.read_text()) for p in run_dir.glob("candidates/*/result.json")]
    assert len(results) >= 2 and all(r["status"] == "ok" for r in results), results
    assert all(r.get("world_size") == 2 for r in results)
    assert {(r["config"]["runtime"]["engine"], r["config"]["runtime"]["precision"],
             r["config"]["runtime"]["device"]) for r in results} == {("deepspeed", "bf16", "cpu")}
    assert list((run_dir / "report").glob("*.html")), sorted(os.listdir(run_dir))


@pytest.mark.slurm
def test_driver_whose_submissions_are_refused_ends_failed(tmp_path: Path) -> None:
    _slurm_up()
    site = _site(tmp_path)
    run = _cpu_run_file(tmp_path, site)
    data = yaml.safe_load(run.read_text())
    data["launch"]["account"] = "no-such-account"
    run.write_text(yaml.safe_dump(data))
    state, code = _sbatch_and_wait(tmp_path, site, run, limit_s=300)
    log = "\n".join(p.read_text() for p in tmp_path.glob("evolve-driver-*.out"))
    assert state == "FAILED" and code != "0:0", (state, code, log[-3000:])
    assert "submission refused" in log


@pytest.mark.slurm
def test_doctor_and_names_of_partition_and_account(tmp_path: Path) -> None:
    _slurm_up()
    from evolve.cli.doctor_cluster import check_slurm_names
    from evolve.launch.executors import LaunchConfig

    ok = check_slurm_names(LaunchConfig(executor="slurm", partition="debug", account="evolve"))
    assert ok.status == "OK", ok
    bad = check_slurm_names(LaunchConfig(executor="slurm", partition="gpu-h100",
                                         account="mylab"))
    assert bad.status == "FAIL"
    assert "partition 'gpu-h100' is not one of this cluster's (debug)" in bad.detail
    assert "account 'mylab' is not associated with user" in bad.detail
    run = write(tmp_path / "run.yaml", "preset: tiny\nlaunch: {executor: slurm, partition: "
                "gpu-h100, account: evolve}\n")
    proc = evolve("config", "validate", str(run))
    assert proc.returncode == 2 and "partition 'gpu-h100' is not one of" in proc.stderr
    run.write_text("preset: tiny\nlaunch: {executor: slurm, partition: debug, account: evolve}\n")
    assert evolve("config", "validate", str(run)).returncode == 0


def test_a_model_server_that_comes_up_later_is_used_without_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import evolve.search.driver as driver_module
    from evolve.search.driver import Driver

    class Models(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = json.dumps({"object": "list", "data": [{"id": "later-model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    run = write(tmp_path / "run.yaml", f"name: r\nroot: {tmp_path}\n"
                "search: {proposer: auto, serve_local: false}\n")
    driver = Driver(load_run_config(run))
    monkeypatch.setattr(driver_module, "MODEL_RETRY_S", 0.0)
    with driver.store.driver_lock():
        driver._look_for_model()
        assert driver.agents is None  # nothing serves yet: the mutator proposes
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Models)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            driver.store.write_endpoint({"host": "127.0.0.1", "port": httpd.server_address[1],
                                         "key": "k"})
            driver._look_for_model()
        finally:
            httpd.shutdown()
            httpd.server_close()
    assert driver.agents is not None and "later-model" in driver.agents.source
    assert driver.proposer.name.startswith("llm-")
    assert any(e["event"] == "llm_ready" for e in driver.store.events())


def test_promoted_trainings_are_submitted_with_their_own_launch_keys(tmp_path: Path) -> None:
    import jobs_for_tests as jt

    from evolve.launch.launcher import Launcher
    from evolve.search.driver import Driver

    store, (cid,) = jt.new_run(tmp_path / "jobs", 1)
    Launcher(store, jt.launch_config("debug")).submit(
        [cid], jt.CountingJob(steps=1), {}, launch=jt.launch_config("debug", job_name="promoted"))
    begun = [e for e in store.events() if e["event"] == "submit_begin"]
    assert begun[0]["job_name"].startswith("promoted-")
    run = write(tmp_path / "run.yaml", f"name: r\nroot: {tmp_path}\nsearch:\n  promote: "
                "{top: 1, preset: explore, launch: {job_name: promoted, partition: gpu}}\n")
    driver = Driver(load_run_config(run))
    promoted = driver._launch("explore")
    assert (promoted.job_name, promoted.partition, promoted.executor) == \
        ("promoted", "gpu", "local")
    assert driver._launch("") is None and driver._launch("verify") is None
