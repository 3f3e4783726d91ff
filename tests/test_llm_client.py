"""The LLM client against a real loopback HTTP server that misbehaves on purpose."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from evolve.agents.client import LLMClient, record_call
from evolve.agents.llm_config import LLMConfig
from evolve.agents.parse import extract_code, extract_json
from fake_llm import FakeLLM

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


def test_answer_and_record(fake, tmp_path):
    fake.script = [("answer", "hello")]
    call = LLMClient(fake.config(seed=5)).chat("researcher", MESSAGES)
    assert call.ok and call.text == "hello" and not call.truncated
    rec = call.record
    assert rec["model"] == "fake-model" and rec["messages"] == MESSAGES
    assert rec["sampling"]["seed"] == 5 and fake.requests[0]["seed"] == 5
    assert rec["raw"] == "hello" and rec["usage"]["completion_tokens"] == 7
    assert fake.key not in json.dumps(rec)  # the key is never recorded
    path = record_call(tmp_path, rec)
    assert path == tmp_path / "llm" / "researcher-1.json"
    assert json.loads(path.read_text())["raw"] == "hello"


def test_dropped_connection_then_answer(fake):
    fake.script = [("drop",), ("drop",), ("answer", "after drops")]
    call = LLMClient(fake.config(max_retries=3)).chat("researcher", MESSAGES)
    assert call.ok and call.text == "after drops"
    assert [("error" in a) for a in call.record["attempts"]] == [True, True, False]
    assert "connection error" in call.record["attempts"][0]["error"]


def test_500_then_200(fake):
    fake.script = [("status", 500), ("status", 503), ("answer", "fine")]
    call = LLMClient(fake.config(max_retries=2)).chat("analyzer", MESSAGES)
    assert call.ok and call.text == "fine"
    assert [a.get("status") for a in call.record["attempts"]] == [500, 503, None]


def test_500s_exhaust_retries(fake):
    fake.default = ("status", 500)
    client = LLMClient(fake.config(max_retries=2))
    call = client.chat("researcher", MESSAGES)
    assert not call.ok and "HTTP 500" in call.error
    assert len(call.record["attempts"]) == 3 and len(fake.requests) == 3
    assert client.usage()["researcher"]["failures"] == 1


def test_bad_key_is_not_retried(fake):
    config = fake.config(api_key="wrong", max_retries=3)
    call = LLMClient(config).chat("researcher", MESSAGES)
    assert not call.ok and "HTTP 401" in call.error
    assert len(call.record["attempts"]) == 1
    assert "wrong" not in json.dumps(call.record)


def test_stall_past_timeout_is_retried(fake):
    fake.script = [("stall", 3.0)]
    fake.default = ("answer", "prompt answer")
    start = time.monotonic()
    call = LLMClient(fake.config(timeout_s=0.5, max_retries=1)).chat("researcher", MESSAGES)
    assert call.ok and call.text == "prompt answer"
    assert "timeout" in call.record["attempts"][0]["error"]
    assert time.monotonic() - start < 2.5


def test_server_down_is_a_recorded_failure():
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", model="m",
                       max_retries=1, backoff_s=0.01, timeout_s=1)
    call = LLMClient(config).chat("researcher", MESSAGES)
    assert not call.ok and "connection error" in call.error
    assert len(call.record["attempts"]) == 2


def test_ten_megabyte_answer_is_cut_and_flagged(fake):
    fake.script = [("huge", 10_000_000)]
    config = fake.config(max_response_bytes=1_000_000, max_response_chars=50_000)
    call = LLMClient(config).chat("researcher", MESSAGES)
    assert call.truncated and call.record["truncated"]
    assert call.text == "x" * 50_000 and call.record["raw_chars"] > 900_000
    assert "exceeded" in call.error
    assert extract_code(call.text).error.startswith("prose without code")


def test_long_answer_within_body_limit_is_cut_to_max_chars(fake):
    fake.script = [("huge", 300_000)]
    call = LLMClient(fake.config(max_response_chars=1000)).chat("researcher", MESSAGES)
    assert call.ok and call.truncated and len(call.text) == 1000


def test_garbage_body_is_a_recorded_failure(fake):
    fake.script = [("raw", b"<html>not json</html>")]
    call = LLMClient(fake.config()).chat("researcher", MESSAGES)
    assert not call.ok and "not a chat completion" in call.error


@pytest.mark.parametrize("answer, expected", [
    ('{"a": 1}', {"a": 1}),
    ('Sure! Here it is:\n```json\n{"a": 2}\n```\nHope it helps.', {"a": 2}),
    ('I propose {"a": 3, "b": [1, 2]} because reasons.', {"a": 3, "b": [1, 2]}),
])
def test_json_in_prose_and_fences(fake, answer, expected):
    fake.script = [("answer", answer)]
    call = LLMClient(fake.config()).chat("researcher", MESSAGES)
    assert extract_json(call.text).value == expected


@pytest.mark.parametrize("answer, error", [
    ('{"motivation": "gate the state", "edits": [{"field": "beta"', "truncated JSON"),
    ("I would add a forget gate to the state.", "prose only"),
    ("", "empty answer"),
    ("{not json at all}", "do not parse"),
])
def test_bad_json_answers(fake, answer, error):
    fake.script = [("answer", answer)]
    call = LLMClient(fake.config()).chat("researcher", MESSAGES)
    assert call.ok and error in extract_json(call.text).error


@pytest.mark.parametrize("how, check", [
    ("llama_cpp", lambda b: b["response_format"] == {"type": "json_object", "schema": {
        "type": "object", "properties": {"x": {"enum": [1, 2]}, "s": {"minLength": 8}},
        "required": ["x"]}}),
    ("vllm", lambda b: b["guided_json"] == SCHEMA and "response_format" not in b),
    ("json_schema", lambda b: b["response_format"]["json_schema"]["schema"] == SCHEMA),
    ("none", lambda b: "response_format" not in b and "guided_json" not in b),
])
def test_structured_output_modes(fake, how, check):
    LLMClient(fake.config(structured_output=how)).chat("researcher", MESSAGES, schema=SCHEMA)
    assert check(fake.requests[0])


SCHEMA = {"type": "object", "required": ["x"],
          "properties": {"x": {"enum": [1, 2]}, "s": {"minLength": 40, "maxLength": 800}}}


def test_concurrency_limit_and_usage(fake):
    client = LLMClient(fake.config(concurrency=2))
    fake.script = [("stall", 0.2)] * 6
    threads = [threading.Thread(target=client.chat, args=("summarizer", MESSAGES))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fake.max_in_flight == 2
    usage = client.usage()["summarizer"]
    assert usage["calls"] == 6 and usage["prompt_tokens"] == 66 and usage["failures"] == 0


def test_seeds_differ_per_call(fake):
    client = LLMClient(fake.config(seed=10))
    client.chat("researcher", MESSAGES)
    client.chat("researcher", MESSAGES)
    assert [r["seed"] for r in fake.requests] == [10, 11]


def test_model_is_asked_of_the_server(fake):
    call = LLMClient(fake.config(model=None)).chat("researcher", MESSAGES)
    assert call.record["model"] == "fake-model" and fake.requests[0]["model"] == "fake-model"


def test_record_call_never_overwrites(tmp_path):
    paths: list = []
    lock = threading.Lock()

    def write(i: int) -> None:
        path = record_call(tmp_path, {"role": "engineer", "i": i})
        with lock:
            paths.append(path)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(p.name for p in paths)
    assert len(set(names)) == 12
    assert sorted(json.loads(p.read_text())["i"] for p in paths) == list(range(12))
    assert sorted(os.listdir(tmp_path / "llm")) == sorted(names)  # no hidden leftovers


@pytest.mark.parametrize("role", ["../../etc", "x/y", "", "Researcher"])
def test_record_role_never_becomes_a_path(tmp_path, role):
    with pytest.raises(ValueError, match="must match"):
        record_call(tmp_path, {"role": role})


def test_config_errors_name_value_and_choices(tmp_path):
    with pytest.raises(ValueError, match=r"mode='prose'.*spec, code"):
        LLMConfig(mode="prose")
    with pytest.raises(ValueError, match=r"structured_output='xml'.*llama_cpp"):
        LLMConfig(structured_output="xml")
    with pytest.raises(ValueError, match="no server configured"):
        LLMConfig().endpoint()
    missing = tmp_path / "endpoint.json"
    with pytest.raises(ValueError, match="does not exist"):
        LLMConfig(endpoint_file=str(missing)).endpoint()
    missing.write_text(json.dumps({"host": "n1", "port": 8000, "model": "m", "key": "secret-123",
                                   "job_id": "7"}))
    endpoint = LLMConfig(endpoint_file=str(missing)).endpoint()
    assert endpoint.base_url == "http://n1:8000/v1" and endpoint.server == "vllm"
    assert endpoint.structured_output == "json_schema" and "secret-123" not in repr(endpoint)
