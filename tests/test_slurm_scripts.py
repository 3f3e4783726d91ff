"""The sbatch scripts and the sbatch text submitit generates; these need no Slurm.

llm.sbatch runs for real here (EVOLVE_LLM_INLINE=1) with a stand-in for vLLM that serves the same
routes over HTTP on loopback, so the port, key, health wait, endpoint file and cleanup are real.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from evolve.launch.launcher import LaunchConfig, sbatch_script, slurm_parameters
from evolve.state.store import Store

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = [REPO / "slurm" / "driver.sbatch", REPO / "slurm" / "llm.sbatch",
           REPO / "tools" / "slurm-local.sh"]

FAKE_VLLM = '''
import http.server, os, sys
args = sys.argv[1:]
port, model = int(args[args.index("--port") + 1]), args[args.index("--model") + 1]
key = os.environ["VLLM_API_KEY"]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            return self._send(200, b"")
        if self.headers.get("Authorization") != f"Bearer {key}":
            return self._send(401, b'{"error": "Unauthorized"}')
        if self.path == "/v1/models":
            return self._send(200, ('{"data": [{"id": "%s"}]}' % model).encode())
        self._send(404, b"")

    def _send(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

http.server.HTTPServer(("0.0.0.0", port), Handler).serve_forever()
'''


def fake_vllm_python(tmp_path: Path) -> Path:
    """A `python` that runs the stand-in server for `-m vllm.entrypoints.openai.api_server`."""
    server = tmp_path / "fake_vllm.py"
    server.write_text(FAKE_VLLM)
    py = tmp_path / "vllm-python"
    py.write_text(f"""#!/bin/bash
if [ "$1" = -m ] && [ "$2" = vllm.entrypoints.openai.api_server ]; then
  shift 2
  exec {sys.executable} {server} "$@"
fi
exec {sys.executable} "$@"
""")
    py.chmod(0o755)
    return py


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_driver_script_asks_for_a_signal_and_requeues() -> None:
    text = (REPO / "slurm" / "driver.sbatch").read_text()
    assert "#SBATCH --signal=B:USR1@" in text and "#SBATCH --requeue" in text
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text
    assert '-m evolve.cli.main run "$@"' in text  # CONFIG and any option, e.g. --force


def test_sbatch_text_for_a_config(tmp_path: Path) -> None:
    cfg = LaunchConfig(executor="slurm", partition="gpu", account="lab", qos="high",
                       constraint="a100", gpus_per_task=2, cpus_per_task=8, mem_gb=16,
                       timeout_min=120, signal_delay_s=90, array_parallelism=3,
                       sbatch_extra={"reservation": "r1", "exclusive": True},
                       setup=["module load cuda/12.4"], python="/opt/venv/bin/python")
    text = sbatch_script(cfg, tmp_path / "jobs" / "s000001", 5, job_name="evolve-run-s000001")
    lines = text.splitlines()
    for flag in ("--array=0-4%3", "--partition=gpu", "--account=lab", "--qos=high",
                 "--constraint=a100", "--gpus-per-node=2", "--cpus-per-task=8", "--mem=16384M",
                 "--time=120", "--signal=USR2@90", "--reservation=r1", "--job-name=evolve-run-s000001",
                 "--open-mode=append"):
        assert f"#SBATCH {flag}" in lines, f"{flag} missing from:\n{text}"
    assert "#SBATCH --exclusive" in lines
    assert "module load cuda/12.4" in lines
    assert lines.index("module load cuda/12.4") > max(i for i, ln in enumerate(lines)
                                                      if ln.startswith("#SBATCH"))
    command = [ln for ln in lines if "submitit.core._submit" in ln][0]
    assert command.startswith("srun ") and "/opt/venv/bin/python -u -m submitit.core._submit" in command
    assert f"--output {tmp_path}/jobs/s000001/%A_%a_%t_log.out" in command
    script = tmp_path / "job.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    # A single training is a plain job, not an array.
    assert "--array" not in sbatch_script(cfg, tmp_path, 1)
    assert "gpus" not in " ".join(slurm_parameters(LaunchConfig(), "x"))


def test_site_example_parses_and_its_launch_defaults_are_valid() -> None:
    site = yaml.safe_load((REPO / "slurm" / "site.example.yaml").read_text())
    cfg = LaunchConfig(**site["launch"])
    assert cfg.executor == "slurm" and cfg.gpus_per_task == 1
    for key, value in site.items():  # the scripts read these with sed: flat scalars only
        if key != "launch":
            assert isinstance(value, str), f"site key {key} must be a one-line string"


def test_driver_script_site_keys_are_read(tmp_path: Path) -> None:
    # Outside a job the script submits itself; a stand-in sbatch shows the options it got.
    site = tmp_path / "site.yaml"
    site.write_text('driver_partition: long   # a comment\ndriver_account: "lab"\n'
                    "launch:\n  partition: gpu\n")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text('#!/bin/bash\necho "sbatch $*"\n')
    (fake / "sbatch").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{fake}:{env['PATH']}", EVOLVE_SITE=str(site))
    out = subprocess.run(["bash", str(REPO / "slurm" / "driver.sbatch"), "cfg.yaml"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["sbatch", "--partition=long", "--account=lab",
                                  str(REPO / "slurm" / "driver.sbatch"), "cfg.yaml"]


def _stand_in_sbatch(tmp_path: Path, site_text: str) -> dict[str, str]:
    """An environment whose sbatch is a stand-in printing its arguments (no Slurm needed)."""
    site = tmp_path / "site.yaml"
    site.write_text(site_text)
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "sbatch").write_text('#!/bin/bash\necho "sbatch $*"\n')
    (fake / "sbatch").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{fake}:{env['PATH']}", EVOLVE_SITE=str(site))
    return env


def test_llm_script_memory_is_a_site_key(tmp_path: Path) -> None:
    env = _stand_in_sbatch(tmp_path, "llm_partition: gpu\nllm_mem: 24G\n")
    out = subprocess.run(["bash", str(REPO / "slurm" / "llm.sbatch"), "state/r", "m"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:3] == ["sbatch", "--partition=gpu", "--mem=24G"]


def test_driver_script_passes_every_argument_to_evolve_run(tmp_path: Path) -> None:
    # Inside a job (SLURM_JOB_ID set) the script runs the driver; a stand-in interpreter (a
    # test double for Python) prints what it was given, so `--force` must arrive.
    python = tmp_path / "python"
    python.write_text('#!/bin/bash\necho "python $*"\n')
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(SLURM_JOB_ID="1", SLURM_SUBMIT_DIR=str(tmp_path), EVOLVE_PYTHON=str(python),
               EVOLVE_SITE=str(tmp_path / "none.yaml"))
    out = subprocess.run(["bash", str(REPO / "slurm" / "driver.sbatch"), "my-run.yaml",
                          "--force"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "python -m evolve.cli.main run my-run.yaml --force" in out.stdout, out.stdout


def _get(url: str, key: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        return urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_for_endpoint(path: Path, timeout_s: float, proc: subprocess.Popen | None = None) -> dict:
    end = time.time() + timeout_s
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"llm.sbatch exited with {proc.returncode} before announcing")
        assert time.time() < end, f"{path} did not appear within {timeout_s}s"
        time.sleep(0.2)
    return json.loads(path.read_text())


def check_endpoint(store: Store, info: dict, model: str) -> None:
    assert stat.S_IMODE(store.endpoint_path.stat().st_mode) == 0o600
    assert set(info) >= {"host", "port", "model", "key", "job_id", "url"}
    assert info["model"] == model and len(info["key"]) >= 32
    base = f"http://127.0.0.1:{info['port']}"
    assert _get(f"{base}/health") == 200
    assert _get(f"{base}/v1/models", info["key"]) == 200
    assert _get(f"{base}/v1/models", "wrong") == 401
    assert store.read_endpoint() == info


def test_llm_script_serves_announces_and_cleans_up(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "run", {"t": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(EVOLVE_LLM_INLINE="1", EVOLVE_VLLM_PYTHON=str(fake_vllm_python(tmp_path)),
               EVOLVE_SITE=str(tmp_path / "no-site.yaml"))
    proc = subprocess.Popen(["bash", str(REPO / "slurm" / "llm.sbatch"), str(store.root),
                             "tiny-model"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        info = wait_for_endpoint(store.endpoint_path, 30, proc)
        check_endpoint(store, info, "tiny-model")
        assert info["job_id"].startswith("inline-")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not store.endpoint_path.exists(), proc.stdout.read() if proc.stdout else ""
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{info['port']}/health", timeout=2)
