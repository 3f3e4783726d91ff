"""evolve.kernels: every chunked form against its token-by-token reference (outputs, final
states, all gradients) in float32 and in bfloat16 (inputs and autocast), the model under bf16,
fla's reference functions, and the backend dispatcher."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import evolve.kernels as kernels
from evolve.kernels import dispatch
from evolve.model.contract import BASELINE_NAMES, load_mixer_class
from evolve.model.lm import LanguageModel, ModelConfig
from kernel_utils import MAKERS, assert_close, err_ratio, run_with_grads, under_autocast

OPS = list(MAKERS)


def impls(op: str):
    module = importlib.import_module(f"evolve.kernels.{op}")
    return getattr(module, f"naive_{op}"), getattr(module, f"chunk_{op}")


def compare(op, inputs, ratio, atol, **chunk_kwargs):
    naive, chunk = impls(op)
    o_ref, s_ref, g_ref = run_with_grads(naive, inputs)
    o, s, g = run_with_grads(chunk, inputs, **chunk_kwargs)
    assert o.dtype == o_ref.dtype == inputs.get("v", inputs.get("x")).dtype
    assert_close(f"{op} o", o_ref, o, ratio, atol)
    assert_close(f"{op} state", s_ref, s, ratio, atol)
    for name in inputs:
        assert_close(f"{op} d{name}", g_ref[name], g[name], ratio, atol)


@pytest.mark.parametrize("with_state", [False, True], ids=["no-h0", "h0"])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("T", [63, 129])
@pytest.mark.parametrize("op", OPS)
def test_chunk_matches_naive_float32(op, T, B, with_state):
    inputs = MAKERS[op](B, T, torch.float32, with_state, seed=T + B)
    compare(op, inputs, ratio=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", OPS)
def test_chunk_matches_naive_bfloat16(op):
    inputs = MAKERS[op](3, 63, torch.bfloat16, with_state=True, seed=7)
    compare(op, inputs, ratio=2e-2, atol=1e-2)


# bfloat16 against the float32 reference run on the unrounded float32 inputs, with fla's error
# measure: the ratio is the whole cost of bf16, input rounding plus the kernel's arithmetic.
# "bf16": bf16 inputs (DeepSpeed's bf16, and every evaluation after it); "autocast": float32
# inputs under torch.autocast (the torch engine's bf16); "bf16-autocast": both, as the model's
# projections hand bf16 tensors to the kernels under autocast.
# One bf16 rounding moves a value by a relative RMS of about 2^-9 / sqrt(3) ~ 0.0011 and each
# output or gradient here goes through 3 to 6 of them (q, k, v, beta or g, the result; under
# autocast also the operands of the output path's matmuls). Measured over T in (63, 129) and
# seeds 0-3: at most 0.0049 with bf16 inputs and 0.0064 under autocast (delta_rule's dk and
# dbeta). The limits are about twice that.
BF16_RATIO = {"bf16": 0.01, "autocast": 0.015, "bf16-autocast": 0.015}


def compare_bf16(op: str, T: int, mode: str, device: str = "cpu") -> None:
    naive, chunk = impls(op)
    to = lambda xs: {n: x.detach().to(device).requires_grad_() for n, x in xs.items()}  # noqa: E731
    ref_inputs = to(MAKERS[op](2, T, torch.float32, with_state=True, seed=T))
    # the same draws rounded to bf16 (attention states stay float32: that is their contract)
    dtype = torch.float32 if mode == "autocast" else torch.bfloat16
    inputs = to(MAKERS[op](2, T, dtype, with_state=True, seed=T))
    o_ref, s_ref, g_ref = run_with_grads(naive, ref_inputs)
    fn = chunk if mode == "bf16" else under_autocast(chunk, device)
    o, s, g = run_with_grads(fn, inputs)
    x = inputs.get("v", inputs.get("x"))
    assert o.dtype == x.dtype, "the output keeps v's (x's) dtype"
    assert s.dtype == (x.dtype if op == "short_conv" else torch.float32)
    ratio = BF16_RATIO[mode]
    assert_close(f"{op} o", o_ref, o, ratio)
    # autocast leaves the state path in float32: on float32 inputs as exact as without it
    assert_close(f"{op} state", s_ref, s, 1e-5 if mode == "autocast" else ratio)
    for name in inputs:
        assert g[name].dtype == inputs[name].dtype
        assert_close(f"{op} d{name}", g_ref[name], g[name], ratio)


@pytest.mark.parametrize("mode", list(BF16_RATIO))
@pytest.mark.parametrize("T", [63, 129])
@pytest.mark.parametrize("op", OPS)
def test_chunk_in_bfloat16_matches_float32_naive(op, T, mode):
    compare_bf16(op, T, mode)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", list(BF16_RATIO))
@pytest.mark.parametrize("op", OPS)
def test_chunk_in_bfloat16_matches_float32_naive_on_cuda(op, mode):
    compare_bf16(op, 129, mode, device="cuda")


def test_solve_unit_lower_takes_bfloat16_and_autocast():
    # solve_triangular has no bf16 kernel on CPU and refuses mixed dtypes (issue 14)
    from evolve.kernels.utils import solve_unit_lower

    gen = torch.Generator().manual_seed(0)
    A, rhs = torch.randn(2, 8, 8, generator=gen), torch.randn(2, 8, 3, generator=gen)
    ref = solve_unit_lower(A, rhs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = solve_unit_lower(A.bfloat16(), rhs)
    assert got.dtype == torch.float32
    assert_close("x", ref, got, 0.05)


# The whole model in bf16 as the two engines run it: under CPU autocast (the torch engine) and
# with its weights cast to bf16 (DeepSpeed's bf16 mode, which also evaluates that way), forward
# and backward against the same model in float32. Measured: loss within 1.4e-4 (relative), each
# parameter's gradient within an error ratio of 0.081 (a short-conv weight: its gradient sums
# dy * x over every token, so rounding does not average out).


def check_model_bf16(name: str, mode: str, device: str = "cpu") -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, hidden_size=64, num_layers=2, num_heads=2, max_seq_len=128)
    model = LanguageModel(cfg, load_mixer_class(name)).to(device)
    tokens = torch.randint(0, 64, (2, 67), generator=torch.Generator().manual_seed(1))
    tokens = tokens.to(device)

    def loss_and_grads(m, autocast):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            logits = m(tokens[:, :-1])  # T = 66: not a multiple of any chunk size
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        return logits.dtype, loss.item(), {n: p.grad for n, p in m.named_parameters()}

    _, loss_ref, g_ref = loss_and_grads(model, autocast=False)
    model.zero_grad(set_to_none=True)
    if mode == "bf16-weights":
        model = model.to(torch.bfloat16)
    dtype, loss, grads = loss_and_grads(model, autocast=mode == "autocast")
    assert dtype == torch.bfloat16
    assert abs(loss - loss_ref) < 1e-3 * loss_ref, (loss, loss_ref)
    for pname, g in grads.items():
        assert g is not None and torch.isfinite(g).all(), pname
        assert g.dtype == (torch.float32 if mode == "autocast" else torch.bfloat16), pname
        assert err_ratio(g_ref[pname], g) < 0.2, (pname, err_ratio(g_ref[pname], g))


@pytest.mark.parametrize("mode", ["autocast", "bf16-weights"])
@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_model_forward_backward_in_bfloat16(name, mode):
    check_model_bf16(name, mode)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["autocast", "bf16-weights"])
@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_model_forward_backward_in_bfloat16_on_cuda_chunk_forms(monkeypatch, name, mode):
    # the chunked forms, which serve CUDA calls that fla's kernels cannot (fla_ops.unsupported)
    monkeypatch.setenv("EVOLVE_KERNEL_BACKEND", "chunk")
    check_model_bf16(name, mode, device="cuda")


@pytest.mark.parametrize(
    "op, kwargs",
    [
        ("linear_attn", {"chunk_size": 16}),
        ("delta_rule", {"chunk_size": 16}),
        ("gated_delta_rule", {"chunk_size": 16}),
        ("gla", {"chunk_size": 16, "sub_chunk_size": 4}),
        ("gla", {"chunk_size": 8, "sub_chunk_size": 8}),
        ("gla", {"chunk_size": 32, "sub_chunk_size": 8}),  # the previous default
    ],
)
def test_other_chunk_sizes(op, kwargs):
    inputs = MAKERS[op](2, 50, torch.float32, with_state=True, seed=3)
    compare(op, inputs, ratio=1e-5, atol=1e-5, **kwargs)


@pytest.mark.parametrize("op", ["gated_delta_rule", "gla"])
def test_strong_decay_is_stable(op):
    # log-decays down to about -60 per token: a factorisation through exp(-cumsum) overflows
    inputs = MAKERS[op](2, 100, torch.float32, with_state=True, seed=5, g_scale=30.0)
    # dg sums many terms of opposite sign here, so its rounding error is a little larger
    compare(op, inputs, ratio=1e-4, atol=1e-5)


def test_short_conv_state_when_shorter_than_window():
    # T < W - 1: the final state still holds the last W - 1 inputs, part of them from the cache
    inputs = MAKERS["short_conv"](2, 2, torch.float32, with_state=True, seed=1, W=5)
    compare("short_conv", inputs, ratio=1e-6, atol=1e-6)
    _, state = impls("short_conv")[1](**inputs, output_final_state=True)
    torch.testing.assert_close(state[..., :2], inputs["initial_state"][..., 2:])
    torch.testing.assert_close(state[..., 2:], inputs["x"].transpose(1, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_state", [False, True], ids=["no-h0", "h0"])
@pytest.mark.parametrize("activation", ["silu", None])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("T, W", [(37, 4), (2, 4), (1, 5), (6, 1), (9, 2)])
def test_short_conv_matches_previous_conv1d_form(T, W, bias, activation, with_state, dtype):
    # the shifted-product form with its own backward against the grouped conv1d form it
    # replaced: outputs, final states and every gradient
    from evolve.kernels.short_conv import chunk_short_conv, conv1d_short_conv

    inputs = MAKERS["short_conv"](2, T, dtype, with_state=with_state, seed=T + W, W=W)
    if not bias:
        del inputs["bias"]
    o_ref, s_ref, g_ref = run_with_grads(conv1d_short_conv, inputs, activation=activation)
    o, s, g = run_with_grads(chunk_short_conv, inputs, activation=activation)
    ratio, atol = (1e-6, 1e-6) if dtype == torch.float32 else (1e-2, 1e-2)
    assert o.dtype == s.dtype == dtype
    assert_close("y", o_ref, o, ratio, atol)
    assert_close("state", s_ref, s, ratio, atol)
    for name in inputs:
        assert_close(f"d{name}", g_ref[name], g[name], ratio, atol)


@pytest.mark.parametrize("T, with_state", [(7, True), (2, True), (7, False)])
def test_short_conv_backward_gradcheck(T, with_state):
    # the hand-written backward of the shifted-product form, in float64, silu and bias included
    from evolve.kernels.short_conv.chunk import _ShiftedShortConv

    gen = torch.Generator().manual_seed(T)
    randn = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    x, w, b = randn(2, T, 3), randn(3, 4), randn(3)
    h0 = randn(2, 3, 3).transpose(1, 2) if with_state else None  # [B, W - 1, D] view
    args = [t.requires_grad_() if t is not None else None for t in (x, w, b, h0)]
    for silu in (True, False):
        assert torch.autograd.gradcheck(
            lambda *a: _ShiftedShortConv.apply(*a, silu), tuple(args), eps=1e-6, atol=1e-8)


def test_short_conv_grad_only_where_needed():
    # inputs that need no gradient get none (the backward skips their work)
    x = torch.randn(2, 9, 5, requires_grad=True)
    w = torch.randn(5, 4)
    y, _ = kernels.short_conv(x, w)
    y.sum().backward()
    assert x.grad is not None and w.grad is None


def test_triangular_solve_reads_only_the_strict_lower_triangle():
    # the delta rules pass beta K K^T unmasked to solve_triangular(upper=False,
    # unitriangular=True): it must ignore the diagonal and the upper triangle, and give them
    # no gradient, exactly as if the matrix were I + tril(A, -1)
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(3, 6, 6, generator=gen, requires_grad=True)
    rhs = torch.randn(3, 6, 5, generator=gen)
    unit = A.tril(-1) + torch.eye(6)
    x_full = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)
    x_unit = torch.linalg.solve_triangular(unit, rhs, upper=False, unitriangular=True)
    torch.testing.assert_close(x_full, x_unit, rtol=0, atol=0)
    (g_full,) = torch.autograd.grad(x_full.square().sum(), A)
    (g_unit,) = torch.autograd.grad(x_unit.square().sum(), A)
    torch.testing.assert_close(g_full, g_unit, rtol=0, atol=0)
    assert (g_full.triu() == 0).all()


def test_chunk_helpers():
    from evolve.kernels.utils import causal_mask, matmul_add, to_chunks

    x = torch.randn(2, 10, 3, 4)
    chunks = to_chunks(x, 4)  # padded to 12 tokens: [B, H, N, C, D]
    assert chunks.shape == (2, 3, 3, 4, 4) and chunks.is_contiguous()
    torch.testing.assert_close(chunks[:, 1, 2, :2], x[:, 8:, 1])
    assert (chunks[:, :, 2, 2:] == 0).all()
    a, b, acc = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 4, 6), torch.randn(2, 3, 5, 6)
    torch.testing.assert_close(matmul_add(acc, a, b), acc + a @ b)
    torch.testing.assert_close(causal_mask(3, a), torch.ones(3, 3).tril())


def test_state_carries_across_calls():
    # two halves with the state handed over equal one call over the whole sequence
    inputs = MAKERS["gated_delta_rule"](2, 90, torch.float32, with_state=False, seed=2)
    whole, s_whole = kernels.gated_delta_rule(**inputs, output_final_state=True)
    first = {n: x[:, :40] for n, x in inputs.items()}
    second = {n: x[:, 40:] for n, x in inputs.items()}
    o1, s1 = kernels.gated_delta_rule(**first, output_final_state=True)
    o2, s2 = kernels.gated_delta_rule(**second, initial_state=s1, output_final_state=True)
    assert_close("o", whole, torch.cat([o1, o2], dim=1), 1e-5)
    assert_close("state", s_whole, s2, 1e-5)


def test_no_final_state_unless_asked():
    inputs = MAKERS["delta_rule"](1, 10, torch.float32, with_state=False, seed=0)
    o, state = kernels.delta_rule(**inputs)
    assert state is None and o.shape == inputs["v"].shape


def test_scale_is_applied():
    inputs = MAKERS["linear_attn"](1, 20, torch.float32, with_state=False, seed=0)
    o_default, _ = kernels.linear_attn(**inputs)
    o_one, _ = kernels.linear_attn(**inputs, scale=1.0)
    assert_close("scale", o_default * inputs["q"].shape[-1] ** 0.5, o_one, 1e-6)


def _spy(monkeypatch, name):
    calls = []
    real = getattr(dispatch, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(dispatch, name, spy)
    return calls


@pytest.mark.parametrize(
    "value, used",
    [("naive", "naive"), ("chunk", "chunk"), (" Chunk ", "chunk"), ("auto", "chunk"),
     ("", "chunk")],
)
def test_backend_env_var_picks_implementation(monkeypatch, value, used):
    monkeypatch.setenv("EVOLVE_KERNEL_BACKEND", value)
    calls = _spy(monkeypatch, f"{used}_delta_rule")
    inputs = MAKERS["delta_rule"](1, 5, torch.float32, with_state=False, seed=0)
    kernels.delta_rule(**inputs)
    assert calls == [f"{used}_delta_rule"]


def test_default_backend_on_cpu_is_chunk(monkeypatch):
    monkeypatch.delenv("EVOLVE_KERNEL_BACKEND", raising=False)
    for op in OPS:
        calls = _spy(monkeypatch, f"chunk_{op}")
        inputs = MAKERS[op](1, 5, torch.float32, with_state=True, seed=0)
        getattr(kernels, op)(**{n: x.detach() for n, x in inputs.items()})
        assert calls == [f"chunk_{op}"]


def test_bad_backend_value_lists_valid_ones(monkeypatch):
    monkeypatch.setenv("EVOLVE_KERNEL_BACKEND", "tritonn")
    inputs = MAKERS["gla"](1, 5, torch.float32, with_state=False, seed=0)
    with pytest.raises(ValueError, match="'tritonn'.*naive, chunk, fla"):
        kernels.gla(**inputs)


def test_fla_backend_refuses_cpu_tensors(monkeypatch):
    monkeypatch.setenv("EVOLVE_KERNEL_BACKEND", "fla")
    inputs = MAKERS["linear_attn"](1, 5, torch.float32, with_state=False, seed=0)
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        kernels.linear_attn(**inputs)


@pytest.mark.parametrize("K, V, blocked", [(16, 8, True), (8, 16, True), (16, 16, False)])
def test_fla_gla_needs_head_dims_of_16(K, V, blocked):
    from evolve.kernels import fla_ops

    q, v = torch.zeros(1, 4, 2, K), torch.zeros(1, 4, 2, V)
    assert (fla_ops.unsupported("gla", q, v, needs_grad=True) is not None) == blocked


@pytest.mark.fla
def test_fla_gated_backward_blocked_on_hopper_with_old_triton(monkeypatch):
    if os.environ.get("CI"):
        import fla.utils as fla_utils  # in CI a broken fla fails, never skips
    else:
        fla_utils = pytest.importorskip("fla.utils")
    from evolve.kernels import fla_ops

    q = torch.zeros(1, 4, 2, 16)
    monkeypatch.setattr(fla_utils, "IS_NVIDIA_HOPPER", True)
    monkeypatch.setattr(fla_utils, "TRITON_ABOVE_3_4_0", True)
    monkeypatch.setattr(fla_utils, "TRITON_ABOVE_3_7_1", False)
    if importlib.util.find_spec("tilelang") is None:
        assert "#640" in fla_ops.unsupported("gated_delta_rule", q, q, needs_grad=True)
    assert fla_ops.unsupported("gated_delta_rule", q, q, needs_grad=False) is None
    monkeypatch.setattr(fla_utils, "TRITON_ABOVE_3_7_1", True)
    assert fla_ops.unsupported("gated_delta_rule", q, q, needs_grad=True) is None


def test_available_backends():
    found = kernels.available_backends()
    assert found[:2] == ["naive", "chunk"]
    assert ("fla" in found) == torch.cuda.is_available() and set(found) <= set(kernels.BACKENDS)


def test_shape_errors_name_the_argument():
    inputs = MAKERS["gated_delta_rule"](2, 7, torch.float32, with_state=False, seed=0)
    with pytest.raises(ValueError, match="g must be \\[B, T, H\\]"):
        kernels.gated_delta_rule(**{**inputs, "g": inputs["g"][..., None]})
    with pytest.raises(ValueError, match="initial_state must be \\[B, H, K, V\\]"):
        kernels.gated_delta_rule(**inputs, initial_state=torch.zeros(2, 2, 16, 16))
    conv = MAKERS["short_conv"](1, 7, torch.float32, with_state=False, seed=0)
    with pytest.raises(ValueError, match="activation='relu'"):
        kernels.short_conv(**conv, activation="relu")


def test_import_does_not_import_fla_or_triton():
    code = (
        "import sys, evolve.kernels as k; k.available_backends(); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fla', 'triton')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# fla's own reference functions, as an independent check of our conventions.
# They compute in float32 on CPU (fla's package import needs triton, not a GPU).


@pytest.fixture(scope="module")
def fla_naive():
    try:
        import fla.ops.delta_rule.naive as delta
        import fla.ops.gated_delta_rule.naive as gated
        import fla.ops.gla.naive as gla_
        import fla.ops.linear_attn.naive as linear
    except Exception as exc:  # fla or triton missing or broken: nothing to compare with
        if os.environ.get("CI"):
            pytest.fail(f"fla does not import but CI is set: the fla reference tests must run "
                        f"in CI (install.sh installs the fla extra): {exc}")
        pytest.skip(f"fla does not import: {exc}")
    return {"delta": delta, "gated": gated, "gla": gla_, "linear": linear}


def _heads_first(*xs):
    return [x.transpose(1, 2).contiguous() for x in xs]


@pytest.mark.fla
@pytest.mark.parametrize("op", ["linear_attn", "delta_rule", "gated_delta_rule", "gla"])
def test_against_fla_recurrent_reference(fla_naive, op):
    inputs = {n: x.detach() for n, x in MAKERS[op](2, 63, torch.float32, True, seed=11).items()}
    q, k, v, h0 = inputs["q"], inputs["k"], inputs["v"], inputs["initial_state"]
    ours = getattr(kernels, op)(**inputs, output_final_state=True)
    if op == "linear_attn":
        ref = fla_naive["linear"].naive_recurrent_linear_attn(
            q, k, v, initial_state=h0, output_final_state=True)
    elif op == "delta_rule":
        # [B, H, T, D] layout and a fixed scale of K ** -0.5
        o, s = fla_naive["delta"].delta_rule_recurrence(
            *_heads_first(q, k, v), inputs["beta"].transpose(1, 2), initial_state=h0.clone())
        ref = (o.transpose(1, 2), s)
    elif op == "gated_delta_rule":
        # note the argument order: beta before g
        ref = fla_naive["gated"].naive_recurrent_gated_delta_rule(
            q, k, v, inputs["beta"], inputs["g"], initial_state=h0, output_final_state=True)
    else:
        ref = fla_naive["gla"].naive_recurrent_gla(
            q, k, v, inputs["g"], initial_state=h0, output_final_state=True)
    assert_close(f"{op} o", ref[0], ours[0], 1e-5)
    assert_close(f"{op} state", ref[1], ours[1], 1e-5)


@pytest.mark.fla
def test_against_fla_chunk_references(fla_naive):
    inputs = MAKERS["gated_delta_rule"](2, 64, torch.float32, True, seed=4)
    inputs = {n: x.detach() for n, x in inputs.items()}
    q, k, v, g, beta, h0 = (inputs[n] for n in ("q", "k", "v", "g", "beta", "initial_state"))
    o, s = kernels.gated_delta_rule(q, k, v, g, beta, initial_state=h0, output_final_state=True)
    o_ref, s_ref = fla_naive["gated"].naive_chunk_gated_delta_rule(
        q, k, v, g, beta, chunk_size=16, initial_state=h0, output_final_state=True)
    assert_close("gdn o", o_ref, o, 1e-5)
    assert_close("gdn state", s_ref, s, 1e-5)
    # delta_rule_chunkwise: [B, H, T, D], T a multiple of its chunk, no initial state
    o, s = kernels.delta_rule(q, k, v, beta, output_final_state=True)
    o_ref, s_ref = fla_naive["delta"].delta_rule_chunkwise(
        *_heads_first(q, k, v), beta.transpose(1, 2))
    assert_close("delta o", o_ref.transpose(1, 2), o, 1e-5)
    assert_close("delta state", s_ref, s, 1e-5)


# On a CUDA machine with fla installed: the dispatcher's fla path against the references.


@pytest.mark.fla
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("op", OPS)
def test_fla_backend_matches_naive_on_cuda(monkeypatch, op, dtype):
    monkeypatch.setenv("EVOLVE_KERNEL_BACKEND", "fla")
    from evolve.kernels import fla_ops

    naive, _ = impls(op)
    # fla's kernels use tl.dot, which needs head dims >= 16
    inputs = MAKERS[op](2, 129, dtype, with_state=True, seed=9, K=32, V=16)
    inputs = {n: x.detach().cuda().requires_grad_() for n, x in inputs.items()}
    if op != "short_conv":
        reason = fla_ops.unsupported(op, inputs["q"], inputs["v"], needs_grad=True)
        if reason:
            pytest.skip(reason)
    o_ref, s_ref, g_ref = run_with_grads(naive, inputs)
    o, s, g = run_with_grads(getattr(kernels, op), inputs)
    # fla runs the delta rule in bfloat16 even for float32 inputs
    ratio = 5e-3 if dtype == torch.float32 and op != "delta_rule" else 3e-2
    assert o.dtype == o_ref.dtype and s.shape == s_ref.shape
    assert_close(f"{op} o", o_ref, o, ratio, 1e-3)
    assert_close(f"{op} state", s_ref, s, ratio, 1e-3)
    for name in inputs:
        assert_close(f"{op} d{name}", g_ref[name], g[name], ratio, 1e-3)
