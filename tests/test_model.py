"""The backbone, the mixer contract and the baselines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evolve.model.contract import (BASELINE_NAMES, MixerConfig, MixerLoadError,
                                   load_mixer_class)
from evolve.model.lm import LanguageModel, ModelConfig, count_params


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_baseline_forward_backward_any_length(name: str) -> None:
    torch.manual_seed(0)
    cls = load_mixer_class(name)
    mixer = cls(MixerConfig(hidden_size=32, num_heads=2, max_seq_len=128))
    x = torch.randn(3, 37, 32, requires_grad=True)  # T not a multiple of any chunk size
    y = mixer(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for pname, p in mixer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_baseline_is_causal(name: str) -> None:
    torch.manual_seed(0)
    mixer = load_mixer_class(name)(MixerConfig(hidden_size=32, num_heads=2, max_seq_len=128))
    x = torch.randn(1, 50, 32)
    x2 = x.clone()
    x2[:, 30:] += torch.randn(1, 20, 32)
    with torch.no_grad():
        torch.testing.assert_close(mixer(x)[:, :30], mixer(x2)[:, :30])


def test_swiglu_matches_one_projection_form() -> None:
    # SwiGLU runs two matmuls on gate_up's row halves; the same as chunking one projection
    import torch.nn.functional as F

    from evolve.model.lm import SwiGLU

    torch.manual_seed(0)
    mlp = SwiGLU(16, 24)
    x = torch.randn(3, 7, 16, requires_grad=True)
    gate, up = mlp.gate_up(x).chunk(2, dim=-1)
    ref = mlp.down(F.silu(gate) * up)
    cot = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, [x, *mlp.parameters()], cot)
    out = mlp(x)
    grads = torch.autograd.grad(out, [x, *mlp.parameters()], cot)
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_l2_norm_unit_length_and_dtype() -> None:
    from evolve.kernels.modules import l2_norm

    x = torch.randn(2, 5, 3, 8)
    y = l2_norm(x)
    torch.testing.assert_close(y, x / (x.square().sum(-1, keepdim=True) + 1e-6).sqrt())
    assert l2_norm(x.bfloat16()).dtype == torch.bfloat16


def test_language_model_shapes_and_tied_head() -> None:
    cfg = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2)
    model = LanguageModel(cfg, load_mixer_class("deltanet"))
    logits = model(torch.randint(0, 64, (2, 19)))
    assert logits.shape == (2, 19, 64)
    assert model.head.weight is model.embed.weight


def test_target_params_matches_size_within_5_percent() -> None:
    target = 400_000
    sizes = {}
    for name in BASELINE_NAMES:
        cfg = ModelConfig(vocab_size=256, hidden_size=128, num_layers=2, num_heads=4,
                          max_seq_len=256, target_params=target)
        sizes[name] = count_params(LanguageModel(cfg, load_mixer_class(name)))
    for name, size in sizes.items():
        assert abs(size - target) / target < 0.05, (name, size)
    # The mixers really differ in cost, so the sizing did something.
    unsized = {name: count_params(LanguageModel(
        ModelConfig(vocab_size=256, hidden_size=128, num_layers=2, num_heads=4,
                    max_seq_len=256), load_mixer_class(name))) for name in BASELINE_NAMES}
    assert len(set(unsized.values())) > 1


def test_target_params_too_small_names_the_cause() -> None:
    cfg = ModelConfig(vocab_size=256, hidden_size=128, num_layers=2, num_heads=4,
                      target_params=10_000)
    with pytest.raises(ValueError, match="target_params=10000"):
        LanguageModel(cfg, load_mixer_class("deltanet"))


def test_unknown_mixer_lists_baselines() -> None:
    with pytest.raises(MixerLoadError, match="deltanet"):
        load_mixer_class("deltanett")


def test_mixer_file_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "syntax.py"
    bad.write_text("import torch\n\nclass Mixer(:\n    pass\n")
    with pytest.raises(MixerLoadError, match=r"syntax\.py:3"):
        load_mixer_class(bad)

    raising = tmp_path / "raises.py"
    raising.write_text("import torch\nx = 1\nraise RuntimeError('boom')\n")
    with pytest.raises(MixerLoadError, match=r"raises\.py:3.*boom"):
        load_mixer_class(raising)

    empty = tmp_path / "nomixer.py"
    empty.write_text("import torch\n")
    with pytest.raises(MixerLoadError, match="no class named 'Mixer'"):
        load_mixer_class(empty)

    with pytest.raises(MixerLoadError, match="not found"):
        load_mixer_class(tmp_path / "missing.py")


def test_two_versions_of_one_path_do_not_share_a_module(tmp_path: Path) -> None:
    path = tmp_path / "mixer.py"
    template = ("import torch.nn as nn\nclass Mixer(nn.Module):\n"
                "    SCALE = {}\n    def __init__(self, cfg):\n        super().__init__()\n"
                "    def forward(self, x):\n        return x * self.SCALE\n")
    path.write_text(template.format(1))
    first = load_mixer_class(path)
    path.write_text(template.format(2))
    second = load_mixer_class(path)
    assert (first.SCALE, second.SCALE) == (1, 2)


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    cfg = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, max_seq_len=32)
    tokens = torch.randint(0, 64, (2, 31), generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = LanguageModel(cfg, load_mixer_class("gated_deltanet"))
        model.activation_checkpointing = checkpointing
        model(tokens).float().square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for plain, recomputed in zip(*grads):
        torch.testing.assert_close(recomputed, plain, rtol=1e-5, atol=1e-7)
