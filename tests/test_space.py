"""The design space (MixerSpec, rules, schema) and the renderer, checked against the baselines."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import pytest

from evolve.model.contract import BASELINE_NAMES
from evolve.model.render import describe, render, spec_from_source
from evolve.model.space import (
    BASELINE_SPECS,
    FIELDS,
    OPTIONS,
    MixerSpec,
    SpecError,
    baseline_name,
    inert_fields,
    repair,
    spec_distance,
    spec_problems,
    spec_schema,
)

ALLOWED_IMPORTS = {"torch", "torch.nn", "torch.nn.functional", "einops", "math"}


def imported_modules(source: str) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            modules.append(node.module or "")
    return modules


def assert_allowed_imports(source: str) -> None:
    for module in imported_modules(source):
        assert module in ALLOWED_IMPORTS or module == "evolve.kernels" \
            or module.startswith("evolve.kernels."), module


def random_spec(rng: random.Random) -> MixerSpec:
    """A repaired uniform draw over every field (wider than the mutator's neighbourhoods)."""
    while True:
        values = {name: rng.choice(list(OPTIONS[name])) for name in FIELDS}
        fixed = repair(values)
        if fixed is not None:
            return MixerSpec(**fixed[0])


def test_baselines_are_points_of_the_space() -> None:
    assert tuple(BASELINE_SPECS) == BASELINE_NAMES
    assert len({s.digest() for s in BASELINE_SPECS.values()}) == len(BASELINE_SPECS)
    assert [n for n, s in BASELINE_SPECS.items() if s.is_quadratic] == ["softmax"]
    for name, spec in BASELINE_SPECS.items():
        assert baseline_name(spec) == name
        assert MixerSpec.from_json(spec.to_json()) == spec


def test_a_bad_choice_names_the_field_and_the_valid_choices() -> None:
    with pytest.raises(SpecError, match=r"beta='sigmoid3'.*\"sigmoid2\""):
        MixerSpec(beta="sigmoid3")
    with pytest.raises(SpecError, match=r"conv_size=5 .*null, 0, 2, 3, 4"):
        MixerSpec(conv_size=5)
    with pytest.raises(SpecError, match="conv_size=True"):
        MixerSpec(conv_size=True)  # bool is an int in Python, never a choice here
    with pytest.raises(SpecError, match="key_ratio='1'"):
        MixerSpec(key_ratio="1")
    with pytest.raises(SpecError, match=r"unknown spec field\(s\) 'betta'; valid fields: "
                                        r"update_rule, feature_map"):
        MixerSpec.from_dict({"betta": "sigmoid"})
    with pytest.raises(SpecError, match="not valid JSON"):
        MixerSpec.from_json("{update_rule: delta")


def test_json_numbers_match_their_choices() -> None:
    spec = MixerSpec.from_json('{"key_ratio": 1, "value_ratio": 2, "conv_size": 4.0}')
    assert (spec.key_ratio, spec.value_ratio, spec.conv_size) == (1.0, 2.0, 4)
    assert spec == MixerSpec(conv_size=4, value_ratio=2.0)


@pytest.mark.parametrize("values, field, advice", [
    # (the delta rule with decay='channel' alone is KDA, a point of the space since issue 16)
    ({"update_rule": "delta", "decay": "channel", "num_householder": 2}, "decay='channel'",
     "decay 'scalar'"),
    ({"update_rule": "delta", "removal_key": "separate", "beta": "none"}, "beta='none'",
     "beta 'sigmoid'"),
    ({"update_rule": "delta", "qk_norm": "none"}, "qk_norm='none'", "qk_norm='l2'"),
    ({"update_rule": "linear", "qk_norm": "none", "beta": "sigmoid2"}, "beta='sigmoid2'",
     "beta 'sigmoid'"),
    ({"update_rule": "softmax", "qk_norm": "none", "beta": "none", "decay": "scalar"},
     "decay='scalar'", "decay='none'"),
])
def test_combination_rules_say_why_and_what_to_use(values: dict, field: str, advice: str) -> None:
    problems = spec_problems(values)
    assert len(problems) == 1 and field in problems[0].message and advice in problems[0].message
    with pytest.raises(SpecError, match="invalid mixer spec") as info:
        MixerSpec(**values)
    assert field in str(info.value)
    fixed = repair(values)
    assert fixed is not None and not spec_problems(fixed[0])
    assert repair(values, keep=set(problems[0].fix)) is None  # the fix would undo a kept field


def test_settings_without_effect_are_canonicalised() -> None:
    plain = MixerSpec(decay="none")
    assert MixerSpec(decay="none", decay_param="logsigmoid", gate_normalizer=4) == plain
    assert MixerSpec(local_path="conv", local_window=16, fusion="gate") \
        == MixerSpec(local_path="conv", fusion="gate")
    assert MixerSpec(conv_size=0, conv_targets="qk").conv_targets == "qkv"
    assert MixerSpec(conv_size=4, no_conv_act="silu") == MixerSpec(conv_size=4)
    # with the run's conv size (possibly 0) the activation of unconvolved streams matters
    assert MixerSpec(no_conv_act="silu") != MixerSpec()
    assert {"decay_param", "gate_normalizer", "local_window", "fusion"} <= set(
        inert_fields(plain))
    assert MixerSpec(decay="none", decay_param="logsigmoid").digest() == plain.digest()


def test_spec_distance_counts_differing_fields() -> None:
    gdn, dn = BASELINE_SPECS["gated_deltanet"], BASELINE_SPECS["deltanet"]
    assert spec_distance(gdn, gdn) == 0
    assert spec_distance(gdn, dn) == 2  # decay and out_gate
    assert spec_distance(gdn, gdn.replace(beta="sigmoid2")) == 1


def test_schema_has_an_enum_for_every_field_and_admits_the_baselines() -> None:
    schema = spec_schema(allow_quadratic=True)
    assert schema["required"] == list(FIELDS) and schema["additionalProperties"] is False
    for name, prop in schema["properties"].items():
        assert prop["enum"] == list(OPTIONS[name]) and prop["description"]
        for value in prop["enum"]:
            assert json.loads(json.dumps(value)) == value
    for spec in BASELINE_SPECS.values():
        for name, value in spec.to_dict().items():
            assert value in schema["properties"][name]["enum"]
    assert "softmax" not in spec_schema()["properties"]["update_rule"]["enum"]
    assert "negative eigenvalues" in schema["properties"]["beta"]["description"]


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_rendered_baseline_states_its_spec_and_imports_only_allowed_modules(name: str) -> None:
    spec = BASELINE_SPECS[name]
    source = render(spec, title=name)
    assert source.startswith(f'"""{name}: rendered')
    assert spec_from_source(source) == spec
    assert_allowed_imports(source)
    compile(source, name, "exec")
    with pytest.raises(SpecError, match="no 'MixerSpec"):
        spec_from_source('"""A hand-written mixer."""\n')


def test_random_specs_render_to_parsable_self_describing_code() -> None:
    rng = random.Random(0)
    for _ in range(300):
        spec = random_spec(rng)
        source = render(spec)
        assert spec_from_source(source) == spec
        assert_allowed_imports(source)
        assert describe(spec)


def skip_without(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device (on one, evolve.kernels dispatches to fla's kernels)")


def _same_seed_pair(name: str, conv_size: int, tmp_path: Path):
    import torch

    from evolve.model.contract import MixerConfig, load_mixer_class

    path = tmp_path / f"{name}.py"
    path.write_text(render(BASELINE_SPECS[name], title=name))
    cfg = MixerConfig(hidden_size=64, num_heads=2, conv_size=conv_size, max_seq_len=64)
    torch.manual_seed(0)
    hand = load_mixer_class(name)(cfg)
    torch.manual_seed(0)
    rendered = load_mixer_class(path)(cfg)
    return hand, rendered


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("conv_size", [4, 0])
@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_rendered_baseline_is_equivalent_to_the_hand_written_one(
        name: str, conv_size: int, device: str, tmp_path: Path) -> None:
    import torch

    skip_without(device)
    hand, rendered = _same_seed_pair(name, conv_size, tmp_path)
    hand, rendered = hand.to(device), rendered.to(device)
    # Same parameter names, shapes and order, and the same initial values from the same seed.
    hand_state, rendered_state = hand.state_dict(), rendered.state_dict()
    assert list(hand_state) == list(rendered_state)
    for key, value in hand_state.items():
        torch.testing.assert_close(rendered_state[key], value, rtol=0, atol=0)
    # The hand-written weights load strictly, and give the same outputs and gradients.
    torch.manual_seed(1)
    for p in hand.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    rendered.load_state_dict(hand.state_dict(), strict=True)
    x = torch.randn(2, 37, 64, device=device)
    x_hand, x_rendered = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_hand, y_rendered = hand(x_hand), rendered(x_rendered)
    torch.testing.assert_close(y_rendered, y_hand)
    y_hand.square().sum().backward()
    y_rendered.square().sum().backward()
    # DeltaNet's fallback without conv is q.sigmoid() * q, the rendered one F.silu(q): equal
    # functions whose backward passes round differently (~1e-5 on these gradients).
    torch.testing.assert_close(x_rendered.grad, x_hand.grad, rtol=1e-4, atol=1e-4)


def test_window_attention_is_masked_causal_softmax_over_the_window() -> None:
    import torch

    spec = MixerSpec(update_rule="linear", qk_norm="none", beta="none", local_path="window",
                     local_window=16)
    namespace: dict = {}
    exec(compile(render(spec), "window", "exec"), namespace)
    window_attention = namespace["window_attention"]
    torch.manual_seed(0)
    for t in (1, 15, 16, 37):
        q, k, v = torch.randn(2, t, 3, 8), torch.randn(2, t, 3, 8), torch.randn(2, t, 3, 5)
        scores = torch.einsum("bthd,bshd->bhts", q, k) * 8 ** -0.5
        i, j = torch.arange(t)[:, None], torch.arange(t)[None]
        scores = scores.masked_fill(~((j <= i) & (j > i - 16)), float("-inf"))
        expected = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)
        torch.testing.assert_close(window_attention(q, k, v, 16), expected)


def test_random_rendered_mixers_are_causal(tmp_path: Path) -> None:
    import torch

    from evolve.model.contract import MixerConfig, load_mixer_class

    rng = random.Random(1)
    specs = [random_spec(rng) for _ in range(8)]
    specs.append(MixerSpec(update_rule="delta", decay="fixed", local_path="window",
                           local_window=16, fusion="gate"))
    for i, spec in enumerate(specs):
        path = tmp_path / f"m{i}.py"
        path.write_text(render(spec))
        torch.manual_seed(0)
        mixer = load_mixer_class(path)(MixerConfig(hidden_size=32, num_heads=2, max_seq_len=64))
        x = torch.randn(1, 40, 32)
        x2 = x.clone()
        x2[:, 25:] += torch.randn(1, 15, 32)
        with torch.no_grad():
            torch.testing.assert_close(mixer(x)[:, :25], mixer(x2)[:, :25], msg=spec.to_json)
