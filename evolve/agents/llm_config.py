"""Settings of the LLM client, and where the model server is (`Endpoint`).

    cfg = LLMConfig(endpoint_file="state/run/llm/endpoint.json", mode="spec")
    endpoint = cfg.endpoint()      # base URL, key, model, server kind, from the file or the fields

`endpoint.json` is written by `evolve llm serve` (llama.cpp) and by slurm/llm.sbatch (vLLM):
{"host", "port", "model", "key", "url"?, "server"?}. It holds the API key, so it has mode 0600;
a key never appears in a record, a log line or an error message.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

MODES = ("spec", "code")
STRUCTURED_OUTPUTS = ("auto", "llama_cpp", "vllm", "json_schema", "none")
SERVER_KINDS = ("llama_cpp", "vllm", "openai")
KEY_ENV = "EVOLVE_LLM_API_KEY"


@dataclass(kw_only=True)
class LLMConfig:
    """How evolve talks to its OpenAI-compatible model server."""

    base_url: str | None = None
    """Server base URL, e.g. http://127.0.0.1:8080/v1; None: take it from endpoint_file."""
    endpoint_file: str | None = None
    """endpoint.json of `evolve llm serve` or slurm/llm.sbatch (host, port, model, key); read
    when base_url is None, and for the key and model when those are None."""
    model: str | None = None
    """Model name sent with each request; None: the endpoint file's, else the server's first."""
    api_key: str | None = None
    """API key; None: the endpoint file's key, else the EVOLVE_LLM_API_KEY variable."""
    mode: str = "spec"
    """What the researcher writes: 'spec' (edits of a JSON spec, schema-constrained: small
    models) or 'code' (the whole mixer file: strong models)."""
    structured_output: str = "auto"
    """How a JSON schema is sent: 'llama_cpp' (response_format json_object + schema), 'vllm'
    (extra_body guided_json), 'json_schema' (OpenAI's response_format json_schema), 'none'
    (prompt only; the tolerant parser copes); 'auto': the endpoint file's server kind, else
    json_schema."""
    temperature: float = 0.7
    """Sampling temperature of proposals (the analyzer and summarizer use at most 0.3)."""
    top_p: float = 0.95
    """Nucleus sampling threshold."""
    max_tokens: int = 1024
    """Most tokens an answer may have (the engineer and code-mode researcher get 4x)."""
    seed: int | None = 0
    """Sampling seed sent with each request (call i of a run adds i); None: unseeded."""
    timeout_s: float = 180.0
    """Seconds one request may wait for the server (connect, or between bytes of the answer)."""
    max_retries: int = 3
    """Retries of a request after a connection error, a timeout, a 429 or a 5xx."""
    backoff_s: float = 1.0
    """First wait before a retry; doubled each time (with jitter), capped by backoff_max_s."""
    backoff_max_s: float = 30.0
    """Longest wait between retries."""
    concurrency: int = 4
    """Requests in flight at once from one client (threads beyond it wait)."""
    max_response_bytes: int = 4_000_000
    """Largest response body read; a longer one is cut, salvaged and flagged as truncated."""
    max_response_chars: int = 200_000
    """Longest answer text kept (in records too); a longer one is cut and flagged."""
    context_chars: int = 12_000
    """Prompt budget in characters: longer histories are compressed to fit (about 4 characters
    per token: keep it well under the server's context window)."""
    attempts: int = 3
    """Times a role asks again after an unusable answer (prose, broken JSON, a copy)."""
    repair_attempts: int = 2
    """Rounds the engineer gets to fix a failing candidate."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"llm.mode={self.mode!r} is not valid; choose one of: "
                             f"{', '.join(MODES)}")
        if self.structured_output not in STRUCTURED_OUTPUTS:
            raise ValueError(f"llm.structured_output={self.structured_output!r} is not valid; "
                             f"choose one of: {', '.join(STRUCTURED_OUTPUTS)}")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"llm.base_url={self.base_url!r} must start with http:// or https://")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"llm.temperature={self.temperature!r} must be in [0, 2]")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"llm.top_p={self.top_p!r} must be in (0, 1]")
        for name in ("max_tokens", "concurrency", "max_response_bytes", "max_response_chars",
                     "context_chars", "attempts", "repair_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"llm.{name}={getattr(self, name)!r} must be >= 1")
        if self.max_retries < 0:
            raise ValueError(f"llm.max_retries={self.max_retries!r} must be >= 0")
        for name in ("timeout_s", "backoff_s", "backoff_max_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"llm.{name}={getattr(self, name)!r} must be > 0 seconds")

    def endpoint(self) -> Endpoint:
        """Where to send requests: the fields, completed from endpoint_file where None."""
        info = read_endpoint_file(self.endpoint_file) if self.endpoint_file else {}
        base_url = self.base_url or info.get("base_url")
        if base_url is None:
            raise ValueError("llm: no server configured: set llm.base_url, or llm.endpoint_file to "
                             "an endpoint.json written by `evolve llm serve` or slurm/llm.sbatch")
        key = self.api_key or info.get("key") or os.environ.get(KEY_ENV)
        if not key:
            where = f" ({self.endpoint_file} has no 'key')" if self.endpoint_file else ""
            raise ValueError(f"llm: no API key{where}: set llm.api_key or ${KEY_ENV}")
        server = info.get("server", "openai")
        structured = self.structured_output
        if structured == "auto":
            structured = {"llama_cpp": "llama_cpp"}.get(server, "json_schema")
        return Endpoint(base_url=base_url.rstrip("/"), api_key=key,
                        model=self.model or info.get("model"), server=server,
                        structured_output=structured)


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """A resolved server address; `repr` hides the key."""

    base_url: str
    """Base URL ending in /v1."""
    api_key: str
    """The bearer key (never recorded)."""
    model: str | None
    """Model name, or None to ask the server's /v1/models."""
    server: str
    """'llama_cpp', 'vllm' or 'openai' (unknown)."""
    structured_output: str
    """How schemas are sent to this server (never 'auto')."""

    def __repr__(self) -> str:
        return (f"Endpoint(base_url={self.base_url!r}, model={self.model!r}, "
                f"server={self.server!r}, structured_output={self.structured_output!r})")


def list_models(base_url: str, key: str | None, timeout_s: float = 5.0) -> list[str]:
    """GET {base_url}/models: the served model ids; ConnectionError naming the URL (and, for
    401/403, the refused key, never the key itself) when the server does not answer."""
    import urllib.error
    import urllib.request

    url = f"{base_url.rstrip('/')}/models"
    request = urllib.request.Request(url)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read(1 << 20))
    except urllib.error.HTTPError as exc:
        hint = " (the key in endpoint.json is refused)" if exc.code in (401, 403) else ""
        raise ConnectionError(f"GET {url}: HTTP {exc.code} {exc.reason}{hint}") from None
    except (OSError, ValueError) as exc:  # refused, timed out, unreachable, not JSON
        raise ConnectionError(f"GET {url}: {getattr(exc, 'reason', exc)}") from None
    data = body.get("data", []) if isinstance(body, dict) else []
    return [str(m.get("id")) for m in data if isinstance(m, dict)]


def read_endpoint_file(path: str | os.PathLike[str]) -> dict[str, object]:
    """endpoint.json as {"base_url", "key", "model", "server"}; ValueError naming the file."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"llm endpoint file {file} does not exist: start the server with "
                         "`evolve llm serve` or `sbatch slurm/llm.sbatch`") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"llm endpoint file {file} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"llm endpoint file {file} must hold a JSON object")
    url = data.get("url")
    if not url:
        if "host" not in data or "port" not in data:
            raise ValueError(f"llm endpoint file {file} needs 'url', or 'host' and 'port'; it "
                             f"has: {', '.join(sorted(data)) or 'nothing'}")
        url = f"http://{data['host']}:{int(data['port'])}/v1"
    server = str(data.get("server", "vllm" if "job_id" in data else "openai"))
    if server not in SERVER_KINDS:
        server = "openai"
    return {"base_url": str(url), "key": data.get("key"), "model": data.get("model"),
            "server": server}
