"""The model's independent control (`search.proposer: independent`, `independent_of: llm`): the
researcher prompted with the base baseline alone, against a real loopback chat server.

Every prompt names the base as the parent and shows no other design and no lesson, even in a
run whose archive and cognition base have both; its drafts carry their own proposer name; a
slot the model cannot fill is the independent mutator's draft, labelled.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import run_config_dict
from evolve.agents.client import LLMClient
from evolve.config.loading import ConfigError
from evolve.model.render import describe, render
from evolve.model.space import BASELINE_SPECS
from evolve.search.driver import Driver
from evolve.search.independent import IndependentLLMProposer
from evolve.search.llm_roles import Agents, NoModel
from evolve.search.proposers import ArchiveEntry
from evolve.search.run_config import load_run_config
from fake_llm import FakeLLM
from study_tools import load_study_tool

BASE = BASELINE_SPECS["deltanet"]
NAME = "llm-spec-independent"


def edits(field: str, value: Any, why: str = "the state keeps old associations differently"
          ) -> str:
    """A researcher's answer in spec mode."""
    return json.dumps({"motivation": f"Changing {field}: {why}, which should help recall.",
                       "edits": [{"field": field, "value": value}]})


def researcher_prompts(requests: list[dict[str, Any]]) -> list[str]:
    """The user messages of the researcher's requests (the analyzer's are left out)."""
    return [r["messages"][-1]["content"] for r in requests
            if "designs token mixers" in r["messages"][0]["content"]]


def section(prompt: str, header: str) -> str:
    """The text of a prompt section: from its header to the next blank line."""
    found = re.search(re.escape(header) + r"[^\n]*\n(.*?)(\n\n|$)", prompt, re.S)
    assert found, f"no {header!r} section in:\n{prompt}"
    return found.group(1).strip()


def assert_independent(prompt: str, base_id: str) -> None:
    assert f"PARENT {base_id}:" in prompt
    assert section(prompt, "OTHER DESIGNS IN THIS RUN:") == "(none yet)"
    assert section(prompt, "WHAT EARLIER WORK TAUGHT") == "(none yet)"
    assert set(re.findall(r"c\d{6}", prompt)) == {base_id}, prompt


@pytest.fixture
def fake():
    with FakeLLM() as server:
        yield server


def proposer_for(fake: FakeLLM, tmp_path: Path, mode: str = "spec"
                 ) -> tuple[IndependentLLMProposer, list[str], list[ArchiveEntry]]:
    """The proposer in a run whose archive holds the base, another baseline and a better
    proposal; `described` lists every candidate it asked to see."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(
        tmp_path / "state", search={"proposer": "independent", "independent_of": "llm"},
        llm={"mode": mode})))
    cfg = load_run_config(path)
    better = BASE.replace(decay="scalar")
    archive = [ArchiveEntry(id="c000000", spec=BASE, fitness=0.0, name="deltanet"),
               ArchiveEntry(id="c000001", spec=BASELINE_SPECS["linear_attention"],
                            fitness=-0.3, name="linear_attention"),
               ArchiveEntry(id="c000002", spec=better, fitness=0.4, parents=["c000000"],
                            generation=1, motivation="a scalar forget gate")]
    described: list[str] = []

    def view(cid: str) -> dict[str, Any]:
        described.append(cid)
        spec = next(e.spec for e in archive if e.id == cid)
        return {"id": cid, "spec": spec, "code": render(spec), "description": describe(spec),
                "motivation": f"candidate {cid}", "metrics": {"bpb": 2.0}, "status": "ok"}

    agents = Agents(LLMClient(fake.config(structured_output="llama_cpp", attempts=2)),
                    source="test")
    proposer = IndependentLLMProposer(agents, cfg, random.Random(0), describe=view)
    return proposer, described, archive


def test_drafts_are_children_of_the_base_alone_with_their_own_name(fake, tmp_path):
    proposer, described, archive = proposer_for(fake, tmp_path)
    fake.script = [("answer", edits("decay", "scalar")), ("answer", edits("out_gate", "silu"))]
    drafts = proposer.propose(archive, 2, generation=3)
    assert [d.proposer for d in drafts] == [NAME, NAME]
    assert all(d.parents == ["c000000"] and "llm_error" not in d.extra for d in drafts)
    assert [d.spec for d in drafts] == [BASE.replace(decay="scalar"),
                                        BASE.replace(out_gate="silu")]
    assert drafts[0].extra["lessons_used"] == [] and drafts[0].records
    # It never sees the archive: c000002's design is offered again (the driver drops it as
    # a duplicate), and no other candidate is ever shown to the model.
    assert set(described) == {"c000000"}
    prompts = researcher_prompts(fake.requests)
    assert len(prompts) == 2
    for prompt in prompts:
        assert_independent(prompt, "c000000")


def test_in_code_mode_the_base_file_is_the_parent(fake, tmp_path):
    proposer, described, archive = proposer_for(fake, tmp_path, mode="code")
    child = render(BASE.replace(out_gate="silu"))
    fake.script = [("answer", "Motivation: an output gate lets each token choose what it "
                              f"reads from the state.\n```python\n{child}```")]
    (draft,) = proposer.propose(archive, 1, generation=2)
    assert draft.proposer == "llm-code-independent" and draft.parents == ["c000000"]
    assert draft.code.strip() == child.strip() and "llm_error" not in draft.extra
    (prompt,) = researcher_prompts(fake.requests)
    assert_independent(prompt, "c000000")
    assert render(BASE).splitlines()[0] in prompt and set(described) == {"c000000"}


def test_an_unusable_answer_falls_back_to_the_independent_mutator(fake, tmp_path):
    proposer, described, archive = proposer_for(fake, tmp_path)
    fake.default = ("answer", "I would rather not say.")
    (draft,) = proposer.propose(archive, 1, generation=2)
    assert draft.proposer == "independent" and draft.parents == ["c000000"]
    assert draft.extra["llm_error"] and draft.extra["llm_attempts"] == 2
    assert len(draft.records) == 2 and draft.spec is not None and draft.spec != BASE
    assert draft.spec.digest() in proposer.independent.drafted


def test_it_remembers_its_own_drafts_and_never_offers_one_twice(fake, tmp_path):
    proposer, described, archive = proposer_for(fake, tmp_path)
    fake.default = ("answer", edits("decay", "scalar"))
    (first,) = proposer.propose(archive, 1, generation=2)
    (second,) = proposer.propose(archive, 1, generation=3)
    assert first.proposer == NAME and first.spec == BASE.replace(decay="scalar")
    assert second.proposer == "independent" and second.spec != first.spec
    assert "earlier proposal of this control" in second.extra["llm_error"]


def test_a_near_duplicate_is_answered_with_a_fresh_draft_from_the_base(fake, tmp_path):
    """The driver's novelty return: the nearest archived design is never shown."""
    proposer, described, archive = proposer_for(fake, tmp_path)
    fake.script = [("answer", edits("decay", "scalar")), ("answer", edits("out_gate", "silu"))]
    (first,) = proposer.propose(archive, 1, generation=2)
    again = proposer.revise(first, archive[2], "the idea is too close to c000002", archive, 2)
    assert again is not None and again.proposer == NAME and again.parents == ["c000000"]
    assert again.spec == BASE.replace(out_gate="silu")
    assert set(described) == {"c000000"}
    for prompt in researcher_prompts(fake.requests):
        assert_independent(prompt, "c000000")
        assert "sent back" not in prompt


def test_a_bad_independent_of_names_the_key_and_the_choices(tmp_path):
    path = tmp_path / "run.yaml"
    data = run_config_dict(tmp_path / "state", search={"proposer": "independent"})
    path.write_text(yaml.safe_dump(data))
    assert load_run_config(path).search.independent_of == "mutator"
    data["search"]["independent_of"] = "rnd"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert "independent_of='rnd' is not valid; choose one of: mutator, llm" in str(err.value)


def test_the_search_study_runs_it_as_llm_independent() -> None:
    from evolve.search.run_config import default_run_config

    study = load_study_tool("search")
    assert "llm_independent" in study.METHODS
    base = default_run_config()
    cfg = study.run_config(base, "llm_independent", 1, 3, Path("out"))
    assert (cfg.name, cfg.search.proposer, cfg.search.independent_of) == \
        ("search-llm_independent-s1", "independent", "llm")
    assert cfg.llm.mode == base.llm.mode
    assert study.RUN_NAME.match(cfg.name)["method"] == "llm_independent"
    assert study.run_config(base, "independent", 1, 3, Path("out")).search.independent_of == \
        "mutator"


def test_without_a_model_it_is_the_llm_proposer_error(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(
        tmp_path / "state", search={"proposer": "independent", "independent_of": "llm",
                                    "serve_local": False})))
    with pytest.raises(NoModel, match="search.proposer=independent with independent_of=llm "
                                      "but no model server answers.*serve_local is false"):
        Driver(load_run_config(path)).run()


IDEAS = [("decay", "scalar", "a forget gate lets the state drop stale associations"),
         ("out_gate", "silu", "an output gate lets each token choose what it reads"),
         ("position", "learned", "learned positions give the recurrence a sense of order"),
         ("feature_map", "elu_plus_one", "positive features keep the state well conditioned"),
         ("value_ratio", 2.0, "wider values give each key room for more content"),
         ("beta", "sigmoid2", "a write strength above one corrects old values faster")]
LESSON = json.dumps({
    "analysis": "The child trained as long as the delta rule baseline and its loss moved little "
                "at this tiny budget; the comparison is noisy.",
    "lessons": [{"title": "Delta rule children need longer training to separate",
                 "trigger": "a child of the delta rule with l2 q/k and a short conv",
                 "insight": "At two steps the delta rule, sigmoid beta and rmsnorm output "
                            "children are within noise of their parent.",
                 "guidance": "Judge delta rule edits at a larger budget.",
                 "evidence": "bits per byte within 0.1 of the parent", "relation": "new",
                 "about": "none"}]})


def model(request: dict[str, Any], ideas: Any) -> str:
    """The fake model: the next idea for the researcher, a lesson for the analyzer."""
    if "analyses experiments" in request["messages"][0]["content"]:
        return LESSON
    idea = next(ideas, None)
    return edits(*idea) if idea else "no more ideas"


@pytest.mark.slow
def test_a_run_prompts_with_the_base_alone_after_lessons_are_merged(fake, tmp_path):
    """Two generations on the debug executor, the model proposing and analysing: the second
    generation is proposed after the first was trained, analysed and its lessons merged (ones
    the base's own description retrieves), and its prompts still show none of them."""
    ideas = iter(IDEAS)
    fake.default = ("answer", lambda request: model(request, ideas))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(
        tmp_path / "state", steps=2, checkpoint_every=2, launch={"executor": "debug"},
        search={"proposer": "independent", "independent_of": "llm", "max_candidates": 4,
                "generation_size": 2, "max_in_flight": 2},
        cognition={"backend": "bm25"},
        llm={"base_url": fake.base_url, "api_key": fake.key, "model": fake.model,
             "backoff_s": 0.01, "attempts": 1})))
    driver = Driver(load_run_config(path), reuse_results=False)
    assert driver.run() == 0 and driver.stop_reason == "complete"
    view, events = driver.view, list(driver.store.events())
    (base_id,) = [c.id for c in view.candidates("baseline")
                  if view.proposal(c.id)["name"] == "deltanet"]
    assert next(e for e in events if e["event"] == "driver_start")["proposer"] == NAME
    proposals = {c.id: view.proposal(c.id) for c in view.candidates("proposal")}
    assert len(proposals) == 4
    assert {p["proposer"] for p in proposals.values()} == {NAME}
    assert all(p["parents"] == [base_id] and p["lessons_used"] == [] for p in proposals.values())
    # The second generation came after lessons were merged, ones the LLM proposer would have
    # retrieved for this parent.
    later = [cid for cid in proposals if view.state.candidates[cid].generation == 2]
    first_later = min(i for i, e in enumerate(events)
                      if e["event"] == "created" and e["candidate"] in later)
    merged = {o["id"] for e in events[:first_later] if e["event"] == "lessons_merged"
              for o in e["outcomes"]}
    base = driver.describe(base_id)
    hits = driver._cognition().search(f"{base['description']} {base['motivation']}")
    assert later and merged & {h.entry.id for h in hits}
    prompts = researcher_prompts(fake.requests)
    assert len(prompts) >= 4
    for prompt in prompts:
        assert_independent(prompt, base_id)
    for cid in later:  # the prompts stored with each candidate say the same
        for call in (driver.store.candidate(cid).dir / "llm").glob("researcher-*.json"):
            assert_independent(json.loads(call.read_text())["messages"][-1]["content"], base_id)
