"""`evolve doctor` for real: the command's JSON, a model server on loopback that answers, refuses
or is gone, and the lock probe on this filesystem."""

from __future__ import annotations

import json
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
NAMES = ["python", "torch", "kernels", "slurm", "sacct", "llm", "locks", "data", "olmo_eval",
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
        assert check.status == "OK" and check.detail.count(" chunk") == 5
