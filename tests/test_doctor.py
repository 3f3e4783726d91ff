"""`evolve doctor` for real: the command's JSON, a model server on loopback that answers, refuses
or is gone, and the lock probe on this filesystem."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evolve.cli.doctor import LEVELS, check_llm, check_locks, main_doctor
from evolve.state.store import Store

REPO = Path(__file__).resolve().parents[1]
NAMES = ["python", "torch", "kernels", "gpu", "deepspeed", "distributed", "budget", "shadowing",
         "seccomp", "slurm_names", "slurm", "sacct", "llm", "locks", "data", "olmo_eval",
         "llama_cpp"]
KEY = "sk-doctor-test-key-0123456789"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def new_run(root: Path, endpoint: dict | None) -> Path:
    store = Store.create(root / "run", {"test": "doctor"})
    if endpoint is not None:
        store.write_endpoint(endpoint)
    return store.root


class Models(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self.send_response(401)
            self.end_headers()
            return
        body = json.dumps({"object": "list", "data": [{"id": "smollm2-360m"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def test_command_json_fails_on_an_endpoint_that_is_gone(tmp_path: Path) -> None:
    port = closed_port()
    run = new_run(tmp_path, {"host": "127.0.0.1", "port": port, "key": KEY, "model": "m"})
    proc = subprocess.run([sys.executable, "-m", "evolve.cli.main", "doctor", "--run", str(run),
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout)
    assert [c["name"] for c in report["checks"]] == NAMES
    for c in report["checks"]:
        assert set(c) == {"name", "status", "detail"} and c["status"] in LEVELS and c["detail"]
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["llm"]["status"] == "FAIL"
    assert f"127.0.0.1:{port}" in by_name["llm"]["detail"]
    assert by_name["python"]["status"] == "OK" and by_name["locks"]["status"] == "OK"
    assert report["ok"] is False and proc.returncode == 1, proc.stderr
    assert KEY not in proc.stdout + proc.stderr  # the API key is never printed


def test_llm_check_against_a_server_on_loopback(tmp_path: Path, server: int) -> None:
    run = new_run(tmp_path, {"host": "127.0.0.1", "port": server, "key": KEY, "model": "m"})
    ok = check_llm(run)
    assert ok.status == "OK" and "smollm2-360m" in ok.detail, ok
    Store.open(run).write_endpoint({"host": "127.0.0.1", "port": server, "key": "wrong"})
    refused = check_llm(run)
    assert refused.status == "FAIL" and "401" in refused.detail and "refused" in refused.detail
    assert "wrong" not in refused.detail


def test_llm_check_without_an_endpoint(tmp_path: Path) -> None:
    assert check_llm(None).status == "OK"
    missing = check_llm(new_run(tmp_path, None))
    assert missing.status == "WARN" and "endpoint.json" in missing.detail
    broken = new_run(tmp_path / "b", {"model": "no host or port"})
    unusable = check_llm(broken)
    assert unusable.status == "FAIL" and "needs 'url', or 'host' and 'port'" in unusable.detail


def test_lock_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    result = check_locks(tmp_path)
    assert result.status == "OK" and "flock" in result.detail, result
    assert list(tmp_path.iterdir()) == []
    later = check_locks(tmp_path / "state" / "not-yet")
    assert later.status == "OK" and "not created yet" in later.detail
    assert list(tmp_path.iterdir()) == []


def test_plain_output_has_one_line_per_check(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = main_doctor(["--state", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[1] for ln in lines] == NAMES
    assert all(ln.split()[0] in LEVELS for ln in lines)
    assert code == (1 if any(ln.startswith("FAIL") for ln in lines) else 0)


def test_kernels_check_names_the_backend_of_every_op_on_this_node() -> None:
    import torch

    from evolve.cli.doctor import check_kernels

    check = check_kernels()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert check.detail.startswith(f"on {device}: ")
    for op in ("linear_attn", "delta_rule", "gated_delta_rule", "gla", "short_conv"):
        assert f"{op} " in check.detail
    if device == "cpu":  # fla's kernels need CUDA: every op runs its chunked form here
        from evolve.kernels.dispatch import OPS

        assert check.status == "OK" and check.detail.count(" chunk") == len(OPS)


# ---------------------------------------------------------------- each check made to fail

def doctor(*args: str, cwd: Path = REPO, **env: str) -> tuple[int, dict[str, dict]]:
    full = {k: v for k, v in os.environ.items() if k not in ("EVOLVE_SITE", "PYTHONSAFEPATH")}
    full.update(env)
    proc = subprocess.run([sys.executable, "-m", "evolve.cli.main", "doctor", "--json", *args],
                          cwd=cwd, env=full, capture_output=True, text=True, timeout=300)
    assert proc.stdout, proc.stderr
    return proc.returncode, {c["name"]: c for c in json.loads(proc.stdout)["checks"]}


def run_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


def test_gpu_check_fails_for_a_cuda_preset_on_a_node_without_cuda(tmp_path: Path) -> None:
    import torch

    from evolve.cli.doctor_cluster import check_gpu
    from evolve.train.presets import explore, tiny

    if torch.cuda.is_available():
        pytest.skip("this node has CUDA: the explore preset can train here")
    check = check_gpu(explore(), "explore")
    assert check.status == "FAIL" and "no CUDA device" in check.detail
    assert "launch.partition" in check.detail
    cfg = tiny()
    cfg.runtime.precision = "bf16"  # bf16 on CPU (autocast): the matmul runs for real
    ok = check_gpu(cfg, "tiny")
    assert ok.status == "OK" and "bf16 matmul works on cpu" in ok.detail


def test_kernels_check_fails_on_a_backend_that_does_not_exist() -> None:
    code, checks = doctor("--only", "kernels", EVOLVE_KERNEL_BACKEND="tritonn")
    assert code == 1 and checks["kernels"]["status"] == "FAIL"
    assert "'tritonn'" in checks["kernels"]["detail"] and "naive, chunk, fla" in \
        checks["kernels"]["detail"]


def test_deepspeed_check_fails_on_a_broken_install(tmp_path: Path) -> None:
    # A real broken package first on the path: a build whose import raises.
    broken = tmp_path / "site" / "deepspeed"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('libaio missing: ops not built')\n")
    config = run_file(tmp_path, "preset: tiny\ntrain: {runtime: {engine: deepspeed}}\n")
    code, checks = doctor("--only", "deepspeed", "--config", config,
                          PYTHONPATH=str(tmp_path / "site"))
    assert code == 1 and checks["deepspeed"]["status"] == "FAIL"
    assert "libaio missing" in checks["deepspeed"]["detail"]
    assert "engine: torch" in checks["deepspeed"]["detail"]
    empty = tmp_path / "bin"
    empty.mkdir()
    code, checks = doctor("--only", "deepspeed", "--config", config, PATH=str(empty))
    assert checks["deepspeed"]["status"] == "WARN", checks  # no compiler for its CPU op
    assert "ninja and c++ not on PATH" in checks["deepspeed"]["detail"]


def test_distributed_check_initialises_gloo_and_fails_nccl_without_a_gpu() -> None:
    import torch

    from evolve.cli.doctor_cluster import check_distributed

    assert check_distributed("gloo").status == "OK"
    if torch.cuda.is_available():
        pytest.skip("this node has CUDA: nccl can initialise")
    nccl = check_distributed("nccl")
    assert nccl.status == "FAIL" and "GPU node" in nccl.detail


def test_budget_check_fails_when_the_corpus_is_read_too_often(tmp_path: Path) -> None:
    config = run_file(tmp_path, "preset: tiny\ntrain: {lm: {max_steps: 100000}}\n")
    code, checks = doctor("--only", "budget", "--config", config)
    assert code == 1 and checks["budget"]["status"] == "FAIL"
    assert "corpus 'shakespeare'" in checks["budget"]["detail"]
    assert "train.data.corpus" in checks["budget"]["detail"]


def test_shadowing_check_finds_a_folder_hiding_an_installed_package(tmp_path: Path) -> None:
    from evolve.cli.doctor_cluster import check_shadowing

    # word2number: installed (lm-eval needs it), never imported by evolve itself; a folder of
    # that name hiding pyyaml instead breaks the doctor itself, as it would break a run.
    (tmp_path / "word2number").mkdir()
    (tmp_path / "word2number" / "__init__.py").write_text("")
    (tmp_path / "notes").mkdir()
    code, checks = doctor("--only", "shadowing", cwd=tmp_path)
    assert code == 1 and checks["shadowing"]["status"] == "FAIL"
    detail = checks["shadowing"]["detail"]
    assert "hiding the installed word2number" in detail and "PYTHONSAFEPATH=1" in detail
    assert "notes" in detail
    code, checks = doctor("--only", "shadowing", cwd=tmp_path, PYTHONSAFEPATH="1")
    assert code == 0 and checks["shadowing"]["status"] == "OK"
    assert check_shadowing(REPO).status in ("OK", "WARN")  # this repository hides nothing


def test_slurm_check_without_slurm_commands(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    code, checks = doctor("--only", "slurm,sacct", PATH=str(empty))
    assert checks["slurm"]["status"] == "WARN" and "sinfo and sbatch" in checks["slurm"]["detail"]
    assert checks["sacct"]["status"] == "WARN"


def test_slurm_check_fails_when_the_controller_is_unreachable(tmp_path: Path) -> None:
    if shutil.which("sinfo") is None:
        pytest.skip("sinfo is not installed")
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=nowhere\nSlurmctldHost=localhost\nSlurmctldPort="
                    f"{closed_port()}\nNodeName=n1 CPUs=1 State=UNKNOWN\n"
                    "PartitionName=p Nodes=n1\n")
    code, checks = doctor("--only", "slurm", SLURM_CONF=str(conf))
    assert code == 1 and checks["slurm"]["status"] == "FAIL"
    assert "slurmctld reachable" in checks["slurm"]["detail"]


def test_only_names_the_valid_checks() -> None:
    proc = subprocess.run([sys.executable, "-m", "evolve.cli.main", "doctor", "--only", "gpuu"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "gpuu: no such check; valid: python" in proc.stderr
