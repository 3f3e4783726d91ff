"""The kernels of the modern mixers (issue 16): simple GLA (Mamba-2's state update), Kimi Delta
Attention (kda), Gated DeltaProduct (gated_delta_product) and the generalized delta rule of
RWKV-7 (generalized_delta_rule).

Each chunked form against its token-by-token reference (outputs, final states, every gradient)
in float32 and in bfloat16 (bf16 inputs and CPU autocast), against fla's own reference
functions, and through the dispatcher."""

from __future__ import annotations

import importlib
import os

import pytest
import torch
import torch.nn.functional as F

import evolve.kernels as kernels
from kernel_utils import _attn_inputs, _leaf, assert_close, run_with_grads, under_autocast

H = 2


def make_kda(B, T, dtype=torch.float32, with_state=False, seed=0, g_scale=1.0, K=16, V=8):
    out = _attn_inputs(B, T, dtype, with_state, seed, normalize_k=True, beta=True, K=K, V=V)
    gen = torch.Generator().manual_seed(seed + 1000)
    out["g"] = _leaf(F.logsigmoid(torch.randn(B, T, H, K, generator=gen) * 2) * g_scale, dtype)
    return out


def make_gated_delta_product(B, T, dtype=torch.float32, with_state=False, seed=0, n=2,
                             gated=True, K=16, V=8):
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    out = {
        "q": _leaf(randn(B, T, H, K), dtype),
        "k": _leaf(F.normalize(randn(B, T * n, H, K), dim=-1), dtype),
        "v": _leaf(randn(B, T * n, H, V), dtype),
        # in (0, 2): the transitions I - beta k k^T have negative eigenvalues when beta > 1
        "beta": _leaf(2 * torch.sigmoid(randn(B, T * n, H)), dtype),
    }
    if gated:
        out["g"] = _leaf(F.logsigmoid(randn(B, T, H) * 2), dtype)
    if with_state:
        out["initial_state"] = _leaf(randn(B, H, K, V), torch.float32)
    return out


def make_generalized_delta_rule(B, T, dtype=torch.float32, with_state=False, seed=0,
                                g_scale=1.0, K=16, V=8):
    """RWKV-7's parameterisation: a = -kk, b = kk * iclr with kk a unit removal key."""
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    kk = F.normalize(randn(B, T, H, K), dim=-1)
    out = {
        "q": _leaf(randn(B, T, H, K), dtype),
        "k": _leaf(randn(B, T, H, K) * 0.5, dtype),
        "v": _leaf(randn(B, T, H, V), dtype),
        "a": _leaf(-kk, dtype),
        "b": _leaf(kk * torch.sigmoid(randn(B, T, H, K)), dtype),
        "gk": _leaf(F.logsigmoid(randn(B, T, H, K) * 2) * g_scale, dtype),
    }
    if with_state:
        out["initial_state"] = _leaf(randn(B, H, K, V), torch.float32)
    return out


def make_simple_gla(B, T, dtype=torch.float32, with_state=False, seed=0, g_scale=1.0, K=16,
                    V=8):
    return _attn_inputs(B, T, dtype, with_state, seed, g="head", g_scale=g_scale, K=K, V=V)


MAKERS = {
    "simple_gla": make_simple_gla,
    "kda": make_kda,
    "gated_delta_product": make_gated_delta_product,
    "generalized_delta_rule": make_generalized_delta_rule,
}
OPS = list(MAKERS)


def impls(op: str):
    module = importlib.import_module(f"evolve.kernels.{op}")
    return getattr(module, f"naive_{op}"), getattr(module, f"chunk_{op}")


def compare(op, inputs, ratio, atol, ref_inputs=None, mode="plain", **kwargs):
    naive, chunk = impls(op)
    o_ref, s_ref, g_ref = run_with_grads(naive, ref_inputs or inputs)
    fn = under_autocast(chunk) if mode == "autocast" else chunk
    o, s, g = run_with_grads(fn, inputs, **kwargs)
    assert o.dtype == inputs["v"].dtype and s.dtype == torch.float32
    assert_close(f"{op} o", o_ref, o, ratio, atol)
    assert_close(f"{op} state", s_ref, s, ratio, atol)
    for name in inputs:
        assert g[name].dtype == inputs[name].dtype
        assert_close(f"{op} d{name}", g_ref[name], g[name], ratio, atol)


@pytest.mark.parametrize("with_state", [False, True], ids=["no-h0", "h0"])
@pytest.mark.parametrize("B, T", [(1, 63), (3, 20)])
@pytest.mark.parametrize("op", OPS)
def test_chunk_matches_naive_float32(op, B, T, with_state):
    compare(op, MAKERS[op](B, T, torch.float32, with_state, seed=T + B), ratio=1e-5, atol=1e-5)


# bf16 inputs, and float32 inputs under CPU autocast, against the float32 reference on the
# unrounded inputs (fla's error measure); limits as tests/test_kernels.py's BF16_RATIO.
@pytest.mark.parametrize("mode, ratio", [("bf16", 0.01), ("autocast", 0.015)])
@pytest.mark.parametrize("op", OPS)
def test_chunk_in_bfloat16_matches_float32_naive(op, mode, ratio):
    ref_inputs = MAKERS[op](2, 63, torch.float32, with_state=True, seed=5)
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    inputs = MAKERS[op](2, 63, dtype, with_state=True, seed=5)
    compare(op, inputs, ratio=ratio, atol=0.0, ref_inputs=ref_inputs, mode=mode)


@pytest.mark.parametrize("op, kwargs", [
    ("kda", {"chunk_size": 32, "sub_chunk_size": 8}),
    ("generalized_delta_rule", {"chunk_size": 32}),
    ("generalized_delta_rule", {"chunk_size": 8, "sub_chunk_size": 8}),  # no sub-chunks
    ("gated_delta_product", {"chunk_size": 16}),
])
def test_other_chunk_sizes(op, kwargs):
    compare(op, MAKERS[op](2, 50, torch.float32, True, seed=3), 1e-5, 1e-5, **kwargs)


def test_chunk_size_must_be_a_multiple_of_the_sub_chunk():
    inputs = MAKERS["kda"](1, 10, torch.float32)
    with pytest.raises(ValueError, match="chunk_size=12 is not a multiple of sub_chunk_size=8"):
        impls("kda")[1](**inputs, chunk_size=12, sub_chunk_size=8)


def test_gated_delta_product_without_gate_and_three_steps():
    inputs = MAKERS["gated_delta_product"](2, 21, torch.float32, True, seed=2, n=3, gated=False)
    inputs["g"] = None
    naive, chunk = impls("gated_delta_product")
    kw = {"num_householder": 3, "output_final_state": True}
    o_ref, s_ref = naive(**inputs, **kw)
    o, s = chunk(**inputs, **kw)
    assert_close("o", o_ref, o, 1e-5, 1e-5)
    assert_close("state", s_ref, s, 1e-5, 1e-5)


def test_one_householder_step_is_the_gated_delta_rule():
    inputs = {n: x.detach() for n, x in MAKERS["gated_delta_product"](2, 30, seed=1, n=1).items()}
    o, s = kernels.gated_delta_product(**inputs, num_householder=1, output_final_state=True)
    o_ref, s_ref = kernels.gated_delta_rule(**inputs, output_final_state=True)
    assert_close("o", o_ref, o, 1e-6)
    assert_close("state", s_ref, s, 1e-6)


@pytest.mark.parametrize("safe_span", [-1.0, 1e9], ids=["sub-chunks", "factorised"])
@pytest.mark.parametrize("op", ["kda", "generalized_delta_rule"])
def test_both_score_paths_match_naive(monkeypatch, op, safe_span):
    # the chunk's decay span picks the path; force each one in turn
    from evolve.kernels.generalized_delta_rule import chunk as gdr_chunk

    monkeypatch.setattr(gdr_chunk, "SAFE_SPAN", safe_span)
    compare(op, MAKERS[op](2, 45, torch.float32, True, seed=8), ratio=1e-5, atol=1e-5)


@pytest.mark.parametrize("safe_span", [-1.0, 1e9], ids=["sub-chunks", "factorised"])
def test_b_none_is_removal_along_the_write_key(monkeypatch, safe_span):
    from evolve.kernels.generalized_delta_rule import chunk as gdr_chunk

    monkeypatch.setattr(gdr_chunk, "SAFE_SPAN", safe_span)
    inputs = make_generalized_delta_rule(2, 45, torch.float32, True, seed=6)
    del inputs["b"]
    naive, chunk = impls("generalized_delta_rule")
    o_ref, s_ref, g_ref = run_with_grads(lambda **kw: naive(b=-kw["k"], **kw), inputs)
    o, s, g = run_with_grads(lambda **kw: chunk(b=None, **kw), inputs)
    assert_close("o", o_ref, o, 1e-5, 1e-5)
    assert_close("state", s_ref, s, 1e-5, 1e-5)
    for name in inputs:
        assert_close(f"d{name}", g_ref[name], g[name], 1e-5, 1e-5)


@pytest.mark.parametrize("op", ["kda", "generalized_delta_rule", "simple_gla"])
def test_strong_decay_is_stable(op):
    # log-decays down to about -60 per token: a factorisation through exp(-cumsum) overflows
    inputs = MAKERS[op](2, 40, torch.float32, with_state=True, seed=5, g_scale=30.0)
    compare(op, inputs, ratio=1e-4, atol=1e-5)


def test_kda_state_carries_across_calls():
    inputs = {n: x.detach() for n, x in make_kda(2, 45, seed=2).items()}
    whole, s_whole = kernels.kda(**inputs, output_final_state=True)
    o1, s1 = kernels.kda(**{n: x[:, :20] for n, x in inputs.items()}, output_final_state=True)
    o2, s2 = kernels.kda(**{n: x[:, 20:] for n, x in inputs.items()}, initial_state=s1,
                         output_final_state=True)
    assert_close("o", whole, torch.cat([o1, o2], dim=1), 1e-5)
    assert_close("state", s_whole, s2, 1e-5)


def test_default_backend_on_cpu_is_chunk(monkeypatch):
    from evolve.kernels import dispatch

    monkeypatch.delenv("EVOLVE_KERNEL_BACKEND", raising=False)
    assert set(OPS) <= set(kernels.OPS)
    for op in OPS:
        calls = []
        real = getattr(dispatch, f"chunk_{op}")
        monkeypatch.setattr(dispatch, f"chunk_{op}",
                            lambda *a, _real=real, **kw: calls.append(op) or _real(*a, **kw))
        inputs = {n: x.detach() for n, x in MAKERS[op](1, 5, with_state=True).items()}
        getattr(kernels, op)(**inputs)
        assert calls == [op]


def test_shape_errors_name_the_argument():
    kda_in = {n: x.detach() for n, x in make_kda(2, 7).items()}
    with pytest.raises(ValueError, match=r"kda: g must be \[B, T, H, K\]"):
        kernels.kda(**{**kda_in, "g": kda_in["g"][..., 0]})
    gdp = {n: x.detach() for n, x in make_gated_delta_product(2, 7).items()}
    with pytest.raises(ValueError, match=r"k must be \[B, T \* 3, H, K\]"):
        kernels.gated_delta_product(**gdp, num_householder=3)
    with pytest.raises(ValueError, match="num_householder=0"):
        kernels.gated_delta_product(**gdp, num_householder=0)
    gdr = {n: x.detach() for n, x in make_generalized_delta_rule(2, 7).items()}
    with pytest.raises(ValueError, match=r"gk must be \[B, T, H, K\]"):
        kernels.generalized_delta_rule(**{**gdr, "gk": gdr["gk"][:, :3]})


# fla's own reference functions (plain PyTorch, run on CPU) as an independent check of our
# conventions. Under CI=1 an fla that does not import fails these tests instead of skipping.


@pytest.fixture(scope="module")
def fla_naive():
    try:
        import fla.ops.gated_delta_product.naive as gdp
        import fla.ops.generalized_delta_rule.dplr.naive as dplr
        import fla.ops.kda.naive as kda
        import fla.ops.simple_gla.naive as simple_gla
    except Exception as exc:  # fla or triton missing or broken
        if os.environ.get("CI"):
            pytest.fail(f"fla does not import but CI is set: the fla reference tests must run "
                        f"in CI (install.sh installs the fla extra): {exc}")
        pytest.skip(f"fla does not import: {exc}")
    return {"kda": kda, "gdp": gdp, "dplr": dplr, "simple_gla": simple_gla}


@pytest.mark.fla
def test_simple_gla_against_fla(fla_naive):
    inputs = {n: x.detach() for n, x in make_simple_gla(2, 64, with_state=True, seed=10).items()}
    o, s = kernels.simple_gla(**inputs, output_final_state=True)
    o_ref, s_ref = fla_naive["simple_gla"].naive_chunk_simple_gla(**inputs,
                                                                  output_final_state=True)
    assert_close("simple_gla o", o_ref, o, 1e-5)
    assert_close("simple_gla state", s_ref, s, 1e-5)


@pytest.mark.fla
def test_kda_against_fla(fla_naive):
    inputs = {n: x.detach() for n, x in make_kda(2, 64, with_state=True, seed=11).items()}
    o, s = kernels.kda(**inputs, output_final_state=True)
    for ref_fn in (fla_naive["kda"].naive_recurrent_kda, fla_naive["kda"].naive_chunk_kda):
        o_ref, s_ref = ref_fn(**inputs, output_final_state=True)
        assert_close("kda o", o_ref, o, 1e-5)
        assert_close("kda state", s_ref, s, 1e-5)


@pytest.mark.fla
def test_gated_delta_product_against_fla(fla_naive):
    inputs = {n: x.detach() for n, x in make_gated_delta_product(2, 33, with_state=True,
                                                                 seed=12).items()}
    o, s = kernels.gated_delta_product(**inputs, num_householder=2, output_final_state=True)
    o_ref, s_ref = fla_naive["gdp"].naive_recurrent_gated_delta_product(
        **{**inputs, "initial_state": inputs["initial_state"].clone()},
        scale=inputs["q"].shape[-1] ** -0.5, output_final_state=True, num_householder=2)
    assert_close("gdp o", o_ref, o, 1e-5)
    assert_close("gdp state", s_ref, s, 1e-5)


@pytest.mark.fla
def test_generalized_delta_rule_against_fla(fla_naive):
    inputs = {n: x.detach() for n, x in make_generalized_delta_rule(2, 64, with_state=True,
                                                                    seed=13).items()}
    o, s = kernels.generalized_delta_rule(**inputs, output_final_state=True)
    # fla's DPLR references take [B, H, T, D] and a fixed scale of K ** -0.5
    heads_first = [inputs[n].transpose(1, 2) for n in ("q", "k", "v", "a", "b", "gk")]
    for ref_fn in (fla_naive["dplr"].dplr_recurrence, fla_naive["dplr"].dplr_chunkwise):
        o_ref, s_ref = ref_fn(*heads_first, initial_state=inputs["initial_state"],
                              output_final_state=True)
        assert_close("gdr o", o_ref.transpose(1, 2), o, 1e-5)
        assert_close("gdr state", s_ref, s, 1e-5)


@pytest.mark.fla
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("op", OPS)
def test_fla_backend_matches_naive_on_cuda(monkeypatch, op, dtype):
    monkeypatch.setenv("EVOLVE_KERNEL_BACKEND", "fla")
    from evolve.kernels import fla_ops

    naive, _ = impls(op)
    inputs = MAKERS[op](2, 129, dtype, with_state=True, seed=9, K=32, V=16)
    inputs = {n: x.detach().cuda().requires_grad_() for n, x in inputs.items()}
    reason = fla_ops.unsupported(op, inputs["q"], inputs["v"], needs_grad=True)
    if reason:
        pytest.skip(reason)
    o_ref, s_ref, g_ref = run_with_grads(naive, inputs)
    o, s, g = run_with_grads(getattr(kernels, op), inputs)
    # fla runs gated_delta_product in bfloat16 even for float32 inputs
    ratio = 5e-3 if dtype == torch.float32 and op != "gated_delta_product" else 3e-2
    assert_close(f"{op} o", o_ref, o, ratio, 1e-3)
    assert_close(f"{op} state", s_ref, s, ratio, 1e-3)
    for name in inputs:
        assert_close(f"{op} d{name}", g_ref[name], g[name], ratio, 1e-3)
