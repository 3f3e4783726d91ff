"""Helpers for the kernel tests: fla-style closeness check and input builders for every op."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def err_ratio(ref: torch.Tensor, got: torch.Tensor) -> float:
    """RMS of the difference relative to the RMS of the reference (fla's measure)."""
    ref, got = ref.detach().float(), got.detach().float()
    err = (ref - got).square().mean().sqrt().item()
    base = ref.square().mean().sqrt().item()
    return err / (base + 1e-8)


def assert_close(
    name: str, ref: torch.Tensor, got: torch.Tensor, ratio: float, atol: float = 1e-6
) -> None:
    """Passes when the largest difference is at most `atol`, or the relative RMS error is below
    `ratio`; the message gives both, like fla's tests."""
    assert ref.shape == got.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    diff = (ref.detach().float() - got.detach().float()).abs().max().item() if ref.numel() else 0.0
    if diff <= atol:
        return
    rate = err_ratio(ref, got)
    assert rate < ratio, f"{name}: max diff {diff:.3g}, error ratio {rate:.3g} (limit {ratio})"


H, K, V = 2, 16, 8


def _leaf(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype).detach().requires_grad_()


def _attn_inputs(B, T, dtype, with_state, seed, *, normalize_k=False, beta=False, g=None,
                 g_scale=1.0, K=K, V=V):
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    q, k, v = randn(B, T, H, K), randn(B, T, H, K), randn(B, T, H, V)
    if normalize_k:
        k = F.normalize(k, dim=-1)
    out = {"q": _leaf(q, dtype), "k": _leaf(k, dtype), "v": _leaf(v, dtype)}
    if g == "head":
        out["g"] = _leaf(F.logsigmoid(randn(B, T, H) * 2) * g_scale, dtype)
    elif g == "key":
        out["g"] = _leaf(F.logsigmoid(randn(B, T, H, K) * 2) * g_scale, dtype)
    if beta:
        out["beta"] = _leaf(torch.sigmoid(randn(B, T, H)), dtype)
    if with_state:
        out["initial_state"] = _leaf(randn(B, H, K, V), torch.float32)
    return out


def make_linear_attn(B, T, dtype=torch.float32, with_state=False, seed=0, **kw):
    return _attn_inputs(B, T, dtype, with_state, seed, **kw)


def make_delta_rule(B, T, dtype=torch.float32, with_state=False, seed=0, **kw):
    return _attn_inputs(B, T, dtype, with_state, seed, normalize_k=True, beta=True, **kw)


def make_gated_delta_rule(B, T, dtype=torch.float32, with_state=False, seed=0, **kw):
    return _attn_inputs(B, T, dtype, with_state, seed, normalize_k=True, beta=True, g="head", **kw)


def make_gla(B, T, dtype=torch.float32, with_state=False, seed=0, **kw):
    return _attn_inputs(B, T, dtype, with_state, seed, g="key", **kw)


def make_short_conv(B, T, dtype=torch.float32, with_state=False, seed=0, D=12, W=4, K=None, V=None):
    # K, V: accepted and ignored, so that callers can size every op alike
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    out = {
        "x": _leaf(randn(B, T, D), dtype),
        "weight": _leaf(randn(D, W) / W, dtype),
        "bias": _leaf(randn(D), dtype),
    }
    if with_state:
        out["initial_state"] = _leaf(randn(B, D, W - 1), dtype)
    return out


# op name -> builder of its inputs: (B, T, dtype, with_state, seed, **options) -> {name: leaf}
MAKERS = {
    "linear_attn": make_linear_attn,
    "delta_rule": make_delta_rule,
    "gated_delta_rule": make_gated_delta_rule,
    "gla": make_gla,
    "short_conv": make_short_conv,
}


def under_autocast(fn: Callable, device_type: str = "cpu",
                   dtype: torch.dtype = torch.bfloat16) -> Callable:
    """`fn` with its forward run under torch.autocast (the backward then follows the dtypes that
    autocast chose, as in training)."""

    def run(**kwargs):
        with torch.autocast(device_type, dtype=dtype):
            return fn(**kwargs)

    return run


def run_with_grads(fn: Callable, inputs: dict[str, torch.Tensor], seed: int = 1, **kwargs):
    """Runs `fn` with a final state, back-propagates fixed random cotangents through the output
    and the final state, and returns (output, final state, {input name: gradient})."""
    for x in inputs.values():
        x.grad = None
    o, state = fn(**inputs, output_final_state=True, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    cotangent = lambda x: torch.randn(x.shape, generator=gen).to(x.device)  # noqa: E731
    loss = (o.float() * cotangent(o)).sum() + (state.float() * cotangent(state)).sum()
    loss.backward()
    grads = {name: x.grad.clone() for name, x in inputs.items()}
    return o.detach(), state.detach(), grads
