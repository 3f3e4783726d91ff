"""A real HTTP server on loopback that speaks the chat-completions API, with scripted faults.

    with FakeLLM() as fake:
        fake.script = [("drop",), ("status", 500), ("answer", "hello")]
        client = LLMClient(fake.config(max_retries=3, backoff_s=0.01))
        ...
        fake.requests      # the JSON bodies received, in order

Actions, taken in order, one per request (after the script runs out, `fake.default`):
("answer", text | callable(request) -> text), ("status", code), ("drop",) (close without a
response), ("stall", seconds) (sleep, then answer the next default), ("raw", bytes), and
("huge", n_bytes) (a valid completion whose content is n_bytes long).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from evolve.agents.llm_config import LLMConfig


class FakeLLM:
    def __init__(self, key: str = "test-key", model: str = "fake-model") -> None:
        self.key = key
        self.model = model
        self.script: list[tuple[Any, ...]] = []
        self.default: tuple[Any, ...] = ("answer", "ok")
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if not fake._authorized(self):
                    return
                fake._send(self, 200, {"object": "list", "data": [
                    {"id": fake.model, "object": "model", "owned_by": "test"}]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not fake._authorized(self):
                    return
                with fake._lock:
                    fake.requests.append(body)
                    action = fake.script.pop(0) if fake.script else fake.default
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    fake._act(self, action, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): expected in stall tests
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)

    def config(self, **overrides: Any) -> LLMConfig:
        settings: dict[str, Any] = {"base_url": self.base_url, "api_key": self.key,
                                    "model": self.model, "timeout_s": 5.0, "backoff_s": 0.01,
                                    "max_retries": 2}
        settings.update(overrides)
        return LLMConfig(**settings)

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        if handler.headers.get("Authorization") == f"Bearer {self.key}":
            return True
        self._send(handler, 401, {"error": {"message": "Invalid API key", "code": 401}})
        return False

    def _send(self, handler: BaseHTTPRequestHandler, status: int, obj: Any) -> None:
        self._send_bytes(handler, status, json.dumps(obj).encode())

    @staticmethod
    def _send_bytes(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def completion(self, text: str) -> dict[str, Any]:
        return {"id": "x", "object": "chat.completion", "created": int(time.time()),
                "model": self.model, "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant",
                                                              "content": text}}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}

    def _act(self, handler: BaseHTTPRequestHandler, action: tuple[Any, ...],
             body: dict[str, Any]) -> None:
        kind = action[0]
        if kind == "answer":
            text = action[1](body) if callable(action[1]) else action[1]
            self._send(handler, 200, self.completion(text))
        elif kind == "status":
            self._send(handler, action[1], {"error": {"message": f"scripted {action[1]}"}})
        elif kind == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
        elif kind == "stall":
            time.sleep(action[1])
            self._act(handler, self.default, body)
        elif kind == "raw":
            self._send_bytes(handler, 200, action[1])
        elif kind == "huge":
            self._send(handler, 200, self.completion("x" * action[1]))
        else:
            raise AssertionError(f"unknown action {action!r}")
