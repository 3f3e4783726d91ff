"""The model-free mutator and spec edits: new, valid, renderable children, deterministically."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_space import assert_allowed_imports, skip_without

from evolve.model.edits import (
    Edit,
    EditError,
    apply_edits,
    describe_changes,
    edits_schema,
    proposal_schema,
)
from evolve.model.render import render, spec_from_source
from evolve.model.space import BASELINE_SPECS, FIELDS, OPTIONS, MixerSpec
from evolve.search.mutator import MutatorConfig, propose

BASELINES = list(BASELINE_SPECS.values())


def schema_admits(schema: dict[str, Any], value: Any) -> bool:
    """The subset of JSON schema that edits_schema uses (type, enum, const, anyOf, items...)."""
    kind = schema.get("type")
    if kind == "array":
        if not isinstance(value, list) or not schema.get("minItems", 0) <= len(value) \
                <= schema.get("maxItems", len(value)):
            return False
        return all(schema_admits(schema["items"], item) for item in value)
    if kind == "object":
        if not isinstance(value, dict) or not set(schema["required"]) <= set(value):
            return False
        if schema.get("additionalProperties") is False and set(value) - set(schema["properties"]):
            return False
        return all(schema_admits(schema["properties"][k], v) for k, v in value.items())
    if "anyOf" in schema:
        return any(schema_admits(option, value) for option in schema["anyOf"])
    if schema.get("type") == "string":
        return isinstance(value, str) and schema.get("minLength", 0) <= len(value) \
            <= schema.get("maxLength", len(value))
    if "const" in schema:
        return value == schema["const"]
    if "enum" in schema:
        return any(value == e and type(value) is type(e) for e in schema["enum"])
    return True


def test_a_hundred_distinct_valid_children_of_the_baselines_in_under_a_second() -> None:
    start = time.perf_counter()
    children = propose(BASELINES, random.Random(0), 100)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"{elapsed:.3f} s for 100 children"
    digests = {c.spec.digest() for c in children}
    assert len(children) == 100 and len(digests) == 100
    assert not digests & {p.digest() for p in BASELINES}
    assert not any(c.spec.is_quadratic for c in children)
    assert {c.operator for c in children} == {"mutation", "crossover"}
    for child in children:
        assert MixerSpec.from_dict(child.spec.to_dict()) == child.spec
        assert child.motivation.startswith(("From ", "Crossover of ")) and child.parents


def test_the_mutator_needs_no_torch() -> None:
    code = ("import random, sys\n"
            "from evolve.model.space import BASELINE_SPECS\n"
            "from evolve.model.render import render\n"
            "from evolve.search.mutator import propose\n"
            "kids = propose(list(BASELINE_SPECS.values()), random.Random(0), 20)\n"
            "[render(k.spec) for k in kids]\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_children_are_deterministic_under_a_seed() -> None:
    def run(seed: int) -> list[tuple[str, str]]:
        children = propose(BASELINES, random.Random(seed), 30)
        return [(c.spec.digest(), c.motivation) for c in children]

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert [c.spec for c in propose(BASELINES, 3, 30)] == [c.spec for c in propose(
        BASELINES, random.Random(3), 30)]


def test_children_avoid_the_archive_and_each_parent() -> None:
    first = propose(BASELINES, random.Random(0), 50)
    archive = {c.spec.digest() for c in first}
    second = propose(BASELINES, random.Random(0), 50, archive=archive)
    assert len(second) == 50 and not archive & {c.spec.digest() for c in second}
    for parent in BASELINES:
        for child in propose([parent], random.Random(1), 10):
            assert child.spec != parent and child.operator == "mutation"


def test_children_of_softmax_attention_leave_it() -> None:
    children = propose([BASELINE_SPECS["softmax"]], random.Random(0), 20)
    assert len(children) == 20
    assert all(c.spec.update_rule in ("linear", "delta") for c in children)
    assert all("changed update_rule from softmax" in c.motivation for c in children)


def test_motivations_say_what_changed_and_why() -> None:
    config = MutatorConfig(max_edits=1, field_weights={f: 0.0 for f in FIELDS if f != "beta"})
    children = propose([BASELINE_SPECS["deltanet"]], random.Random(0), 3, config=config)
    motivations = {c.spec.beta: c.motivation for c in children}
    assert set(motivations) == {"none", "sigmoid2", "constant"}
    assert motivations["sigmoid2"].startswith(
        "From deltanet: changed beta from sigmoid to sigmoid2 (")
    assert "negative eigenvalues" in motivations["sigmoid2"]
    repaired = propose([BASELINE_SPECS["gla"]], random.Random(0), 40)
    assert any("to keep the spec valid, set qk_norm to l2" in c.motivation for c in repaired)
    crossed = [c for c in propose(BASELINES, random.Random(0), 40) if c.operator == "crossover"]
    assert crossed and all(len(c.parents) == 2 and c.parents[0] in c.motivation for c in crossed)
    named = propose(BASELINES[:2], random.Random(0), 5, parent_ids=["c000001", "c000002"])
    assert all(set(c.parents) <= {"c000001", "c000002"} for c in named)


def test_mutator_config_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown field.*betta.*valid fields: update_rule"):
        MutatorConfig(field_weights={"betta": 1.0})
    with pytest.raises(ValueError, match="min_edits"):
        MutatorConfig(min_edits=3, max_edits=1)
    with pytest.raises(ValueError, match="crossover_rate"):
        MutatorConfig(crossover_rate=2.0)
    with pytest.raises(ValueError, match="at least one parent"):
        propose([], random.Random(0), 1)


def test_two_hundred_children_render_to_allowed_self_describing_code() -> None:
    children = propose(BASELINES, random.Random(7), 200)
    assert len(children) == 200
    for child in children:
        source = render(child.spec)
        ast.parse(source)
        assert_allowed_imports(source)
        assert spec_from_source(source) == child.spec


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_sample_of_children_builds_and_runs(device: str, tmp_path: Path) -> None:
    import torch

    skip_without(device)
    from evolve.model.contract import MixerConfig, load_mixer_class

    children = propose(BASELINES, random.Random(11), 200)
    sample = random.Random(0).sample(children, 20)
    for i, child in enumerate(sample):
        path = tmp_path / f"child{i}.py"
        path.write_text(render(child.spec))
        torch.manual_seed(0)
        mixer = load_mixer_class(path)(MixerConfig(hidden_size=64, num_heads=2, max_seq_len=64))
        mixer = mixer.to(device)
        x = torch.randn(2, 37, 64, device=device, requires_grad=True)
        y = mixer(x)
        assert y.shape == (2, 37, 64) and torch.isfinite(y).all(), child.motivation
        y.square().mean().backward()
        assert torch.isfinite(x.grad).all(), child.motivation


@pytest.mark.parametrize("name", list(BASELINE_SPECS))
def test_edits_schema_excludes_the_parents_values(name: str) -> None:
    parent = BASELINE_SPECS[name]
    schema = edits_schema(parent)
    assert schema["minItems"] == 1
    fields = {item["properties"]["field"]["const"]: item["properties"]["value"]["enum"]
              for item in schema["items"]["anyOf"]}
    assert set(fields) == set(FIELDS)
    for field, values in fields.items():
        assert getattr(parent, field) not in values
        assert set(values) | {getattr(parent, field)} >= set(OPTIONS[field]) - {"softmax"}
    assert "softmax" not in fields["update_rule"]
    assert not schema_admits(schema, [])
    assert not schema_admits(schema, [{"field": "beta", "value": parent.beta}])
    edit = {"field": "position", "value": "none" if parent.position != "none" else "learned"}
    assert schema_admits(schema, [edit])
    proposal = proposal_schema(parent)
    assert list(proposal["properties"]) == ["motivation", "edits"]
    why = "Learned positions give the mixer absolute order information."
    assert schema_admits(proposal, {"motivation": why, "edits": [edit]})
    assert not schema_admits(proposal, {"motivation": "1", "edits": [edit]})
    assert not schema_admits(proposal, {"motivation": why, "edits": []})


def test_apply_edits_makes_the_child() -> None:
    parent = BASELINE_SPECS["deltanet"]
    child = apply_edits(parent, [{"field": "beta", "value": "sigmoid2"},
                                 Edit(field="decay", value="scalar")])
    assert child == parent.replace(beta="sigmoid2", decay="scalar")
    assert describe_changes(parent, child)[0].startswith("changed decay from none to scalar")
    assert apply_edits(parent, [{"field": "key_ratio", "value": 2}]).key_ratio == 2.0
    gla = BASELINE_SPECS["gla"]
    repaired = apply_edits(gla, [{"field": "update_rule", "value": "delta"}], repair=True)
    # the delta rule keeps GLA's per-channel decay (KDA, issue 16); only q/k need repair
    assert (repaired.update_rule, repaired.qk_norm, repaired.decay) == ("delta", "l2", "channel")


@pytest.mark.parametrize("edits, message", [
    ([], "non-empty list"),
    ({"field": "beta", "value": "sigmoid2"}, "non-empty list"),
    ("beta=sigmoid2", "non-empty list"),
    ([{"field": "beta"}], 'exactly the keys "field" and "value"'),
    ([{"field": "betta", "value": "none"}], "unknown field 'betta'; valid fields: update_rule"),
    ([{"field": "beta", "value": "sigmoid3"}], r"beta='sigmoid3' is not a valid choice"),
    ([{"field": "beta", "value": "sigmoid"}], "beta is already sigmoid in the parent; an edit "
                                              "must change it to one of: none, sigmoid2, constant"),
    ([{"field": "beta", "value": "none"}, {"field": "beta", "value": "constant"}],
     "edited twice"),
    ([{"field": "update_rule", "value": "softmax"}], "quadratic"),
    ([{"field": "qk_norm", "value": "rmsnorm"}], "qk_norm='rmsnorm' with update_rule='delta'"),
    ([{"field": "decay_param", "value": "logsigmoid"}], "change nothing: decay_param"),
])
def test_apply_edits_errors_are_clear(edits: Any, message: str) -> None:
    with pytest.raises(EditError, match=message):
        apply_edits(BASELINE_SPECS["deltanet"], edits)


def test_apply_edits_lists_every_bad_edit() -> None:
    with pytest.raises(EditError) as info:
        apply_edits(BASELINE_SPECS["gla"], [{"field": "beta", "value": "none"},
                                            {"field": "decay", "value": "hourly"}])
    assert "edit #1" in str(info.value) and "edit #2" in str(info.value)
    with pytest.raises(EditError, match="qk_norm='l2'"):  # repair may not undo an edit
        apply_edits(BASELINE_SPECS["deltanet"], [{"field": "qk_norm", "value": "none"}],
                    repair=True)
