"""The researcher, engineer, analyzer and summarizer against a scripted loopback server."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from evolve.gates.check import CheckConfig
from evolve.agents.analyzer import analysis_schema, analyze
from evolve.agents.client import LLMClient, grammar_friendly
from evolve.agents.engineer import repair
from evolve.agents.prompts import build, curve_summary, template
from evolve.agents.researcher import propose
from evolve.agents.summarizer import fit_lines, summarize
from evolve.model.render import render
from evolve.model.space import BASELINE_SPECS, MixerSpec
from evolve.gates.static import imports_gate, parse_gate
from fake_llm import FakeLLM

PARENT_SPEC = BASELINE_SPECS["deltanet"]
PARENT = {"id": "c000003", "spec": PARENT_SPEC.to_dict(), "code": render(PARENT_SPEC),
          "metrics": {"val_bpb": 2.1, "mqar_acc": 0.4}, "motivation": "the DeltaNet baseline"}
GOOD_EDITS = json.dumps({"motivation": "A scalar forget gate lets the state drop stale "
                                       "associations, which should help recall.",
                         "edits": [{"field": "decay", "value": "scalar"}]})


def static_ok(code: str) -> bool:
    verdict, tree = parse_gate(code.encode(), Path("mixer.py"), CheckConfig())
    return verdict.passed and imports_gate(tree, Path("mixer.py"), CheckConfig()).passed


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


def client_for(fake: FakeLLM, **overrides) -> LLMClient:
    return LLMClient(fake.config(**{"structured_output": "llama_cpp", **overrides}))


def test_spec_proposal_applies_and_renders(fake):
    fake.script = [("answer", GOOD_EDITS)]
    result = propose(client_for(fake), PARENT, mode="spec",
                     lessons=[{"id": "s01", "title": "Gating", "insight": "decay helps"}])
    assert result.ok and result.attempts == 1
    assert result.spec == PARENT_SPEC.replace(decay="scalar")
    assert result.edits == [{"field": "decay", "value": "scalar"}]
    assert "decay" in result.changes[0] and static_ok(result.code)
    schema = fake.requests[0]["response_format"]["schema"]
    items = schema["properties"]["edits"]["items"]["anyOf"]
    decay = next(i for i in items if i["properties"]["field"]["const"] == "decay")
    assert "none" not in decay["properties"]["value"]["enum"]  # the parent's value is excluded
    proposal = result.proposal_json()
    assert proposal["proposer"] == "llm-spec" and proposal["model"] == "fake-model"
    assert proposal["prompt_hash"] and proposal["parents"] == ["c000003"]
    assert "Gating" in fake.requests[0]["messages"][1]["content"]


def test_copy_of_parent_is_rejected_then_asked_again(fake):
    copy = json.dumps({"motivation": "keep everything as it is, it works well enough",
                       "edits": [{"field": "beta", "value": "sigmoid"}]})
    fake.script = [("answer", copy), ("answer", GOOD_EDITS)]
    result = propose(client_for(fake, structured_output="none"), PARENT, mode="spec")
    assert result.ok and result.attempts == 2
    assert result.records[0]["outcome"]["ok"] is False
    assert "already" in result.records[0]["outcome"]["error"]
    assert "rejected" in fake.requests[1]["messages"][1]["content"]


@pytest.mark.parametrize("answers, error", [
    (["I think we should add gating to the model."], "prose only"),
    (['{"motivation": "add a forget gate to the state", "edits": [{"field": "de'],
     "truncated JSON"),
    ([""], "empty answer"),
    (['{"motivation": "x", "edits": [{"field": "decay", "value": "scalar"}]}'], "no motivation"),
    (['{"motivation": "invent a new field for better recall", "edits": '
      '[{"field": "magic", "value": 1}]}'], "unknown field"),
])
def test_bad_spec_answers_are_recorded_failures(fake, answers, error):
    fake.default = ("answer", answers[0])
    result = propose(client_for(fake, attempts=2), PARENT, mode="spec")
    assert not result.ok and error in result.error and result.attempts == 2
    assert len(result.records) == 2
    assert all(r["outcome"]["ok"] is False and r["raw"] == answers[0] for r in result.records)


def test_motivation_copied_from_the_prompt_is_rejected(fake):
    echo = json.dumps({"motivation": "Which mechanism your edits add or remove and how you "
                                     "expect loss or recall to change",
                       "edits": [{"field": "decay", "value": "scalar"}]})
    fake.script = [("answer", echo), ("answer", GOOD_EDITS)]
    result = propose(client_for(fake), PARENT, mode="spec")
    assert result.ok and result.attempts == 2 and "forget gate" in result.motivation
    assert "copies the prompt" in result.records[0]["outcome"]["error"]


def test_already_tried_design_is_rejected(fake):
    child = PARENT_SPEC.replace(decay="scalar")
    fake.default = ("answer", GOOD_EDITS)
    result = propose(client_for(fake, attempts=1), PARENT, mode="spec",
                     tried={child.digest(): "c000009"})
    assert not result.ok and "c000009" in result.error


def test_server_down_is_a_failed_proposal():
    from evolve.agents.llm_config import LLMConfig

    config = LLMConfig(base_url="http://127.0.0.1:9/v1", api_key="k", model="m",
                       max_retries=0, attempts=1, timeout_s=1)
    result = propose(LLMClient(config), PARENT, mode="spec")
    assert not result.ok and "connection error" in result.error and len(result.records) == 1


def code_answer(spec: MixerSpec, motivation: str = "Motivation: add a scalar forget gate so "
                "the state can drop stale keys.") -> str:
    return f"{motivation}\n\n```python\n{render(spec)}```\n"


def test_code_proposal(fake):
    fake.script = [("answer", code_answer(PARENT_SPEC.replace(decay="scalar")))]
    result = propose(client_for(fake), PARENT, mode="code")
    assert result.ok and "forget gate" in result.motivation and static_ok(result.code)
    assert "evolve.kernels" in fake.requests[0]["messages"][1]["content"]
    assert "response_format" not in fake.requests[0]


@pytest.mark.parametrize("answer, error", [
    ("Motivation: a copy with a comment.\n```python\n# tweaked\n" + PARENT["code"] + "```",
     "copy of the parent"),
    ("Motivation: port it to C++ for speed.\n```cpp\n#include <torch/torch.h>\nint main() {}\n```",
     "wrong language"),
    ("Motivation: gate it.\n```python\nclass Mixer(nn.Module):\n    def forward(self, x):\n"
     "        return x[",
     "truncated code"),
    ("We could try a gated variant of the parent, which should help recall.", "prose without code"),
    ("```python\n" + render(BASELINE_SPECS["gla"]) + "```", "no motivation"),
])
def test_bad_code_answers(fake, answer, error):
    fake.default = ("answer", answer)
    result = propose(client_for(fake, attempts=1), PARENT, mode="code")
    assert not result.ok and error in result.error
    assert result.records[0]["raw"] == answer


def test_huge_code_answer_is_a_recorded_failure(fake, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake.default = ("huge", 10_000_000)
    result = propose(client_for(fake, attempts=1, max_response_bytes=2_000_000), PARENT,
                     mode="code")
    assert not result.ok and result.records[0]["truncated"]
    assert list(tmp_path.iterdir()) == []  # nothing the model wrote became a file


PLANTED = render(BASELINE_SPECS["gla"]).replace('"b t h d -> b t (h d)"))',
                                                '"b t h d -> b t (h d)"))[..., :-1]')


def test_engineer_fixes_with_check(fake):
    fixed = render(BASELINE_SPECS["gla"])
    fake.script = [("answer", f"Fix: the output lost a channel; removed the slice.\n"
                              f"```python\n{fixed}```")]
    seen = []

    def check(code: str) -> tuple[bool, str, str]:
        seen.append(code)
        return ("[..., :-1]" not in code, "interface", "output shape [1, 67, 63] != [1, 67, 64]")

    assert PLANTED != fixed
    result = repair(client_for(fake), PLANTED, gate="interface",
                    message="output shape [1, 67, 63] != [1, 67, 64]", check=check)
    assert result.ok and result.verified and result.code == fixed and result.attempts == 1
    assert "slice" in result.fix and seen == [fixed]
    assert "[1, 67, 63]" in fake.requests[0]["messages"][1]["content"]


def test_engineer_gives_up_after_bounded_rounds(fake):
    fake.default = ("answer", f"Fix: nothing.\n```python\n{PLANTED}```")
    result = repair(client_for(fake, repair_attempts=2), PLANTED, gate="interface",
                    message="bad shape", traceback="Traceback ...\nValueError: shape")
    assert not result.ok and result.attempts == 2 and len(result.records) == 2
    assert "unchanged" in result.error and result.code == PLANTED
    assert [h["attempt"] for h in result.history] == [1, 2]
    assert "Earlier repair rounds" in fake.requests[1]["messages"][1]["content"]


def test_engineer_still_failing_check_feeds_new_error_back(fake):
    tries = [render(BASELINE_SPECS["gla"].replace(out_gate=gate)) for gate in ("sigmoid", "none")]
    fake.script = [("answer", f"Fix: tried.\n```python\n{code}```") for code in tries]
    result = repair(client_for(fake, repair_attempts=2), PLANTED, gate="interface",
                    message="bad shape", check=lambda code: (False, "smoke", "NaN in the output"))
    assert not result.ok and "NaN" in result.error and result.code == tries[1]
    assert "NaN in the output" in fake.requests[1]["messages"][1]["content"]


ANALYSIS = {"analysis": "The candidate added a scalar decay to DeltaNet and lowered bits per "
                        "byte from 2.1 to 1.95 while recall stayed flat.",
            "lessons": [{"title": "Decay helps DeltaNet", "trigger": "a delta-rule mixer "
                         "without a forget gate", "insight": "A scalar decay lowered loss.",
                         "guidance": "Add a scalar decay to delta-rule mixers.",
                         "evidence": "c000004 1.95 vs c000003 2.1 bpb", "relation": "supports",
                         "about": "s05"},
                        {"title": "", "trigger": "", "insight": "", "guidance": "",
                         "evidence": "", "relation": "new", "about": "none"}]}


def test_analyzer_returns_schema_valid_lessons(fake):
    fake.script = [("answer", json.dumps(ANALYSIS))]
    candidate = {"id": "c000004", "spec": PARENT_SPEC.replace(decay="scalar").to_dict(),
                 "metrics": {"val_bpb": 1.95, "mqar_acc": 0.41},
                 "curve": [{"track": "lm", "step": s, "loss": 5 - s / 100, "tokens_per_s": 900}
                           for s in range(0, 200, 10)]}
    result = analyze(client_for(fake), candidate, parent=PARENT,
                     baselines=[{"id": "gla", "metrics": {"val_bpb": 2.0}}],
                     entries=[{"id": "s05", "title": "Gated DeltaNet", "insight": "gates"}],
                     run="r1")
    assert result.ok and len(result.lessons) == 1  # the empty lesson is dropped
    lesson = result.lessons[0]
    assert lesson["relation"] == "supports" and lesson["about"] == "s05"
    assert lesson["source"] == "run r1: c000004 vs parent c000003"
    prompt = fake.requests[0]["messages"][1]["content"]
    assert "c000003 (parent)" in prompt and "gla (baseline)" in prompt and "lm loss" in prompt
    schema = fake.requests[0]["response_format"]["schema"]
    assert schema == grammar_friendly(analysis_schema(["s05"], 3))
    assert result.analysis_json()["lessons"] == result.lessons


def test_analyzer_rejects_unusable_answers(fake):
    bad = {"analysis": "fine", "lessons": []}
    fake.script = [("answer", json.dumps(bad)), ("answer", "no json"),
                   ("answer", json.dumps({**ANALYSIS, "lessons": [
                       {**ANALYSIS["lessons"][0], "about": "s99", "relation": "contradicts"}]}))]
    result = analyze(client_for(fake, attempts=3), {"id": "c000004"}, run="r1")
    assert result.ok and result.attempts == 3
    assert result.lessons[0]["about"] == "none" and result.lessons[0]["relation"] == "new"
    assert [r["outcome"]["ok"] for r in result.records] == [False, False, True]


def test_summarizer(fake):
    client = client_for(fake, context_chars=3000)
    short = summarize(client, "short", budget=100)
    assert short.text == "short" and not short.compressed and not fake.requests
    fake.default = ("answer", "c000001 beat gla by 0.1 bpb with a scalar decay.")
    long = "\n".join(f"c{i:06d}: tried idea {i} with figures {i * 0.01:.2f}" for i in range(300))
    result = summarize(client, long, budget=500)
    assert result.ok and len(result.text) <= 500 and len(fake.requests) >= 2
    fake.default = ("status", 500)
    failed = summarize(client_for(fake, max_retries=0), long, budget=500)
    assert not failed.ok and len(failed.text) <= 500 and "HTTP 500" in failed.error


def test_fit_lines_keeps_newest():
    lines = [f"line {i}" for i in range(100)]
    text = fit_lines(lines, 60)
    assert len(text) <= 60 + 40 and text.endswith("line 99") and "older entries" in text
    assert fit_lines([], 10) == "(none yet)"


def test_templates_build_and_name_their_placeholders():
    for name in ("researcher_spec", "researcher_code", "engineer", "analyzer", "summarizer"):
        sections = template(name)
        assert set(sections) == {"system", "user"}
        names = {m.group("named") or m.group("braced") for part in sections.values()
                 for m in part.pattern.finditer(part.template)
                 if m.group("named") or m.group("braced")}
        messages = build(name, **dict.fromkeys(names, "VALUE"))
        assert all("$" not in m["content"] for m in messages)
    with pytest.raises(ValueError, match="valid: analyzer"):
        template("nonexistent")
    with pytest.raises(ValueError, match=r"needs a value for \$text"):
        build("summarizer", topic="x", budget=1)


def test_prompt_shrinks_to_the_budget(fake):
    fake.default = ("answer", GOOD_EDITS)
    for budget, expect in ((20_000, "additive state"), (6000, "How the state is written"),
                           (2000, '"linear", "delta"')):
        propose(client_for(fake, context_chars=budget), PARENT, mode="spec")
        system = fake.requests[-1]["messages"][0]["content"]
        assert expect in system, budget
    assert len(fake.requests[-1]["messages"][0]["content"]) < 2000


def test_curve_summary():
    text = curve_summary([{"track": "lm", "step": s, "loss": 10 - s, "tokens_per_s": 5}
                          for s in range(9)])
    assert "lm loss by step: 0: 10, 2: 8, 4: 6, 6: 4, 8: 2 (min 2)" in text
    assert "5 tokens/s" in text
    assert ast.parse(render(PARENT_SPEC))


def test_a_draft_sent_back_for_novelty_is_revised_with_the_nearest_design_named(fake, tmp_path):
    """The driver's novelty return through the model proposer: the same parent, the nearest
    design as an inspiration, and the reason in the prompt; the answer becomes the new draft."""
    import random

    from conftest import run_config_dict
    from evolve.search.llm_roles import Agents, LLMProposer
    from evolve.search.proposers import ArchiveEntry, Draft
    import yaml

    from evolve.search.run_config import load_run_config

    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run_config_dict(tmp_path / "state")))
    cfg = load_run_config(tmp_path / "run.yaml")
    nearest = {**PARENT, "id": "c000007", "motivation": "DeltaNet with a scalar decay"}
    describe = {"c000003": PARENT, "c000007": nearest}.__getitem__
    proposer = LLMProposer(Agents(client_for(fake), source="test"), cfg, random.Random(0),
                           describe=describe)
    fake.script = [("answer", GOOD_EDITS)]
    first = Draft(code=render(PARENT_SPEC), motivation="almost the same idea", proposer="x",
                  parents=["c000003"], spec=PARENT_SPEC)
    archive = [ArchiveEntry(id="c000007", spec=PARENT_SPEC.replace(value_ratio=2), fitness=0.1)]
    draft = proposer.revise(first, archive[0], "the idea is too close to c000007", archive, 2)
    prompt = json.dumps(fake.requests[0]["messages"])
    assert "sent back" in prompt and "c000007" in prompt and "DeltaNet with a scalar" in prompt
    assert draft is not None and draft.parents == ["c000003"]
    assert draft.spec == PARENT_SPEC.replace(decay="scalar")
