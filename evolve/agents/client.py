"""The one client for every model server evolve talks to (llama.cpp, vLLM: the OpenAI API).

    client = LLMClient(LLMConfig(endpoint_file="state/run/llm/endpoint.json"))
    call = client.chat("researcher", messages, schema=proposal_schema(parent))
    if call.ok:
        found = extract_json(call.text)
    record_call(candidate_dir, call.record)     # -> candidate_dir/llm/researcher-1.json
    client.usage()                             # tokens, calls and failures per role

A call never raises for the server's faults: connection errors, timeouts, 429s and 5xx are
retried with exponential backoff, and whatever finally happened is in `call.error` and in
`call.record` (prompt, raw answer, model, sampling settings, seed, every attempt). The body is
read with a byte cap, so a 10 MB answer is cut and flagged, not loaded whole.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from evolve.state.fsio import atomic_write_json
from evolve.agents.llm_config import Endpoint, LLMConfig

ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_CONTENT = re.compile(r'"content"\s*:\s*"')
_STRING_BODY = re.compile(r'(?:[^"\\]|\\.)*', re.S)


@dataclass(kw_only=True)
class Call:
    """One chat completion as it happened."""

    role: str
    ok: bool
    """True when the server answered (the text may still be unusable: the role decides)."""
    text: str = ""
    """The answer (cut to max_response_chars when `truncated`)."""
    truncated: bool = False
    finish_reason: str | None = None
    error: str = ""
    """Why there is no answer (after all retries), or empty."""
    record: dict[str, Any] = field(default_factory=dict)
    """Everything to store with the candidate: see `LLMClient.chat`."""


class LLMClient:
    """Chat completions with retries, a concurrency limit and per-role token accounting."""

    def __init__(self, config: LLMConfig, *, endpoint: Endpoint | None = None) -> None:
        self.config = config
        self.endpoint = endpoint or config.endpoint()
        # Retries are ours (recorded per attempt), so the SDK's own are off.
        self._sdk = openai.OpenAI(base_url=self.endpoint.base_url, api_key=self.endpoint.api_key,
                                  timeout=config.timeout_s, max_retries=0)
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._lock = threading.Lock()
        self._usage: dict[str, dict[str, float]] = {}
        self._counter = itertools.count()
        self._model = self.endpoint.model

    @property
    def model(self) -> str:
        """The model name sent with requests (asked of the server once when not configured)."""
        if self._model is None:
            try:
                models = self._sdk.models.list().data
            except openai.OpenAIError as exc:
                raise ConnectionError(f"llm: cannot list the models of {self.endpoint.base_url}: "
                                      f"{type(exc).__name__}: {exc}") from None
            if not models:
                raise ConnectionError(f"llm: {self.endpoint.base_url} serves no model")
            self._model = models[0].id
        return self._model

    def chat(self, role: str, messages: list[dict[str, str]], *,
             schema: dict[str, Any] | None = None, temperature: float | None = None,
             max_tokens: int | None = None, seed: int | None = None) -> Call:
        """Ask the model; `schema` constrains the answer to JSON where the server supports it.

        The record holds: role, model, base_url, messages, sampling (temperature, top_p,
        max_tokens, seed), structured_output and the schema, every attempt (error, status,
        seconds), the raw answer, finish_reason, usage, truncation flags and the outcome.
        """
        if not ROLE_NAME.match(role):
            raise ValueError(f"role {role!r} must match {ROLE_NAME.pattern}")
        cfg = self.config
        if seed is None and cfg.seed is not None:
            seed = cfg.seed + next(self._counter)
        sampling = {"temperature": cfg.temperature if temperature is None else temperature,
                    "top_p": cfg.top_p, "max_tokens": max_tokens or cfg.max_tokens, "seed": seed}
        kwargs: dict[str, Any] = {k: v for k, v in sampling.items() if v is not None}
        kwargs.update(self._structured(schema))
        record: dict[str, Any] = {
            "role": role, "t": round(time.time(), 3), "model": None,
            "base_url": self.endpoint.base_url, "server": self.endpoint.server,
            "messages": messages, "sampling": sampling,
            "structured_output": self.endpoint.structured_output if schema else None,
            "schema": schema, "attempts": [], "raw": "", "raw_chars": 0, "truncated": False,
            "finish_reason": None, "usage": {}, "ok": False, "error": ""}
        started = time.monotonic()
        with self._slots:
            call = self._attempts(role, messages, kwargs, record)
        record["elapsed_s"] = round(time.monotonic() - started, 3)
        self._account(role, call, record)
        return call

    def _structured(self, schema: dict[str, Any] | None) -> dict[str, Any]:
        how = self.endpoint.structured_output
        if schema is None or how == "none":
            return {}
        if how == "llama_cpp":
            return {"response_format": {"type": "json_object", "schema": grammar_friendly(schema)}}
        if how == "vllm":
            return {"extra_body": {"guided_json": schema}}
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": schema, "strict": True}}}

    def _attempts(self, role: str, messages: list[dict[str, str]], kwargs: dict[str, Any],
                  record: dict[str, Any]) -> Call:
        cfg = self.config
        error = ""
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                delay = min(cfg.backoff_max_s, cfg.backoff_s * 2 ** (attempt - 1))
                time.sleep(delay * random.uniform(0.75, 1.25))
            t0 = time.monotonic()
            entry: dict[str, Any] = {"attempt": attempt + 1}
            record["attempts"].append(entry)
            try:
                record["model"] = model = self.model
                body, cut = self._post(messages, model, kwargs)
            except openai.APIStatusError as exc:
                status = exc.status_code
                error = f"HTTP {status} from {self.endpoint.base_url}: {_short(exc.message)}"
                entry.update(status=status, error=error)
                if status not in (408, 409, 429) and status < 500:
                    break  # a bad request or a bad key: asking again will not help
            except (openai.APIConnectionError, ConnectionError) as exc:
                kind = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"
                error = f"{kind} error talking to {self.endpoint.base_url}: {_short(str(exc))}"
                entry.update(error=error)
            except (ValueError, openai.OpenAIError) as exc:
                error = f"unreadable response from {self.endpoint.base_url}: {_short(str(exc))}"
                entry.update(error=error)
            else:
                entry["seconds"] = round(time.monotonic() - t0, 3)
                return self._answer(role, body, cut, record)
            entry["seconds"] = round(time.monotonic() - t0, 3)
        record["error"] = error
        return Call(role=role, ok=False, error=error, record=record)

    def _post(self, messages: list[dict[str, str]], model: str, kwargs: dict[str, Any]
              ) -> tuple[bytes, bool]:
        """The response body (at most max_response_bytes) and whether it was cut."""
        cfg = self.config
        deadline = time.monotonic() + 2 * cfg.timeout_s  # a server that trickles bytes
        chunks: list[bytes] = []
        size = 0
        with self._sdk.chat.completions.with_streaming_response.create(
                model=model, messages=messages, **kwargs) as response:
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= cfg.max_response_bytes:
                    return b"".join(chunks)[:cfg.max_response_bytes], True
                if time.monotonic() > deadline:
                    raise ConnectionError(f"the answer took over {2 * cfg.timeout_s:g}s to "
                                          f"arrive ({size:,} bytes so far)")
        return b"".join(chunks), False

    def _answer(self, role: str, body: bytes, cut: bool, record: dict[str, Any]) -> Call:
        cfg = self.config
        text, finish, usage = "", None, {}
        if cut:
            text = _salvage_content(body)
            error = (f"the response body exceeded {cfg.max_response_bytes:,} bytes; "
                     "reading stopped there")
        else:
            error = ""
            try:
                data = json.loads(body)
                choice = data["choices"][0]
                text = choice["message"].get("content") or ""
                finish = choice.get("finish_reason")
                usage = data.get("usage") or {}
                record["model"] = data.get("model") or record["model"]
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                error = f"the response is not a chat completion ({type(exc).__name__}: " \
                        f"{_short(str(exc))}): {_short(body.decode('utf-8', 'replace'))}"
        truncated = cut or len(text) > cfg.max_response_chars
        record.update(raw_chars=len(text), raw=text[:cfg.max_response_chars],
                      truncated=truncated, finish_reason=finish, usage=usage,
                      ok=not error, error=error)
        text = text[:cfg.max_response_chars]
        return Call(role=role, ok=not error, text=text, truncated=truncated,
                    finish_reason=finish, error=error, record=record)

    def _account(self, role: str, call: Call, record: dict[str, Any]) -> None:
        usage = record.get("usage") or {}
        with self._lock:
            row = self._usage.setdefault(role, {"calls": 0, "failures": 0, "prompt_tokens": 0,
                                                "completion_tokens": 0, "seconds": 0.0})
            row["calls"] += 1
            row["failures"] += 0 if call.ok else 1
            for key in ("prompt_tokens", "completion_tokens"):
                value = usage.get(key)
                row[key] += int(value) if isinstance(value, (int, float)) else 0
            row["seconds"] += record.get("elapsed_s", 0.0)

    def usage(self) -> dict[str, dict[str, float]]:
        """Per role: calls, failures, prompt_tokens, completion_tokens, seconds."""
        with self._lock:
            return {role: dict(row) for role, row in self._usage.items()}

    def close(self) -> None:
        self._sdk.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def grammar_friendly(schema: Any) -> Any:
    """`schema` without string length bounds beyond a few characters, for llama.cpp.

    llama.cpp turns maxLength n into n nested optional rules: past a few hundred it refuses the
    grammar (and llama-cpp-python 0.3.36 then drops the connection), and below that sampling
    slows to about a token per second. The roles check lengths after parsing instead.
    """
    if isinstance(schema, dict):
        out = {k: grammar_friendly(v) for k, v in schema.items() if k != "maxLength"}
        if isinstance(out.get("minLength"), int):
            out["minLength"] = min(out["minLength"], 8)
        return out
    if isinstance(schema, list):
        return [grammar_friendly(v) for v in schema]
    return schema


def mark_outcome(call_or_record: Call | dict[str, Any], *, ok: bool, error: str = "",
                 **details: Any) -> dict[str, Any]:
    """Note in a call's record what the role made of the answer (parsed? applied? why not?)."""
    record = call_or_record.record if isinstance(call_or_record, Call) else call_or_record
    record["outcome"] = {"ok": ok, "error": error, **details}
    return record


def record_call(folder: str | Path, record: dict[str, Any]) -> Path:
    """Store `record` as folder/llm/<role>-<n>.json (n = 1, 2, ...: never overwrites).

    The file is written atomically under a hidden name and then hard-linked to the first free
    number, so concurrent writers never take the same name and readers never see a part.
    """
    role = str(record.get("role", ""))
    if not ROLE_NAME.match(role):
        raise ValueError(f"record role {role!r} must match {ROLE_NAME.pattern}")
    target_dir = Path(folder) / "llm"
    target_dir.mkdir(parents=True, exist_ok=True)
    hidden = target_dir / f".{role}.{threading.get_ident()}.{random.getrandbits(32):08x}.json"
    atomic_write_json(hidden, record)
    try:
        n = 1 + sum(1 for p in target_dir.glob(f"{role}-*.json"))
        while True:
            path = target_dir / f"{role}-{n}.json"
            try:
                path.hardlink_to(hidden)
                return path
            except FileExistsError:
                n += 1
    finally:
        hidden.unlink(missing_ok=True)


def _salvage_content(body: bytes) -> str:
    """The (partial) message content of a chat-completion body that was cut short."""
    text = body.decode("utf-8", "replace")
    match = _CONTENT.search(text)
    if not match:
        return text
    raw = _STRING_BODY.match(text, match.end()).group(0)  # up to the closing quote, if any
    for cut in range(7):  # drop an escape such as \u12 that the cut split in two
        try:
            return json.loads('"' + raw[:len(raw) - cut] + '"')
        except ValueError:
            continue
    return raw


def _short(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit] + "..."
