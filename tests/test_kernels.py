"""evolve.kernels: every chunked form against its token-by-token reference (outputs, final
states, all gradients), fla's reference functions, and the backend dispatcher."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import evolve.kernels as kernels
from evolve.kernels import dispatch
from kernel_utils import MAKERS, assert_close, run_with_grads

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
