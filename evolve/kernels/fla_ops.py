"""Adapters from our kernel API to flash-linear-attention's chunk kernels (CUDA only).

fla is imported inside each function, so importing evolve.kernels never imports fla or triton.
Conventions mapped here (checked against fla 0.6.0):
- all of fla's chunk kernels take [B, T, H, *] inputs (head_first is gone) and the same default
  scale K ** -0.5; its states are [B, H, K, V] like ours.
- `chunk_linear_attn` normalises by default: we pass normalize=False.
- `chunk_delta_rule` refuses float32 inputs, so float32 calls run in bfloat16 and the output is
  cast back; every fla kernel wants q, k and v in one dtype.
- `chunk_gated_delta_rule` takes g as log-decay, as we do; `chunk_gla` asserts a float32
  initial state. Decays are passed in float32, since fla accumulates them in float32 anyway.
- `chunk_simple_gla` takes g as a per-head log-decay [B, T, H] like ours.
- `chunk_kda` takes g as a per-channel log-decay [B, T, H, K] like ours (its in-kernel gate and
  l2norm stay off); `chunk_dplr_delta_rule` is our generalized delta rule with the same
  (q, k, v, a, b, gk) order; `chunk_gated_delta_product` takes num_householder after beta and
  refuses float32 inputs, so float32 calls run in bfloat16 as for the delta rule.
- `causal_conv1d` keeps a [B, D, W] cache of the last W inputs; ours is [B, D, W - 1] (the
  oldest entry of fla's cache never meets the kernel), so ours is zero-padded on the left going
  in and the oldest entry is dropped coming out.
Cases where fla's kernels fail are caught up front by `unsupported` (seen on an H200 with
Triton 3.6.0): the dispatcher then uses the chunked forms, or names the reason when fla is forced.
"""

import importlib.util

import torch
import torch.nn.functional as F


def unsupported(op: str, q: torch.Tensor, v: torch.Tensor, needs_grad: bool) -> str | None:
    """Why fla's kernel for `op` cannot serve this call, or None when it can."""
    K, V = q.shape[-1], v.shape[-1]
    if op == "gla" and min(K, V) < 16:
        # chunk_gla's backward multiplies [*, V] tiles with tl.dot, which needs sizes >= 16
        return f"fla's chunk_gla backward needs K and V >= 16 (got K={K}, V={V})"
    if op in ("gated_delta_rule", "gated_delta_product") and needs_grad:
        # gated_delta_product's backward is the gated delta rule's (fla imports it from there)
        from fla import utils

        if (
            utils.IS_NVIDIA_HOPPER
            and utils.TRITON_ABOVE_3_4_0
            and not utils.TRITON_ABOVE_3_7_1
            and importlib.util.find_spec("tilelang") is None
        ):
            # fla raises this in the backward pass (its issue #640), too late to switch then
            return (
                "fla refuses the gated delta rule's backward on Hopper GPUs with Triton >= 3.4.0 "
                "and < 3.7.1 (wrong results, fla issue #640): upgrade Triton to >= 3.7.1 or "
                "install tilelang"
            )
    return None


def _state_in(initial_state: torch.Tensor | None) -> torch.Tensor | None:
    return None if initial_state is None else initial_state.float()


def _state_out(final_state: torch.Tensor | None) -> torch.Tensor | None:
    return None if final_state is None else final_state.float()


def _same_dtype(dtype: torch.dtype, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(x.to(dtype) for x in xs)


def linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False):
    from fla.ops.linear_attn import chunk_linear_attn

    dtype = v.dtype
    q, k, v = _same_dtype(q.dtype, q, k, v)
    o, S = chunk_linear_attn(
        q, k, v, scale=scale, initial_state=_state_in(initial_state),
        output_final_state=output_final_state, normalize=False,
    )
    return o.to(dtype), _state_out(S)


def delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False):
    from fla.ops.delta_rule import chunk_delta_rule

    dtype = v.dtype
    compute = torch.bfloat16 if q.dtype == torch.float32 else q.dtype
    q, k, v, beta = _same_dtype(compute, q, k, v, beta)
    o, S = chunk_delta_rule(
        q, k, v, beta, scale=scale, initial_state=_state_in(initial_state),
        output_final_state=output_final_state,
    )
    return o.to(dtype), _state_out(S)


def gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    dtype = v.dtype
    q, k, v, beta = _same_dtype(q.dtype, q, k, v, beta)
    o, S = chunk_gated_delta_rule(
        q, k, v, g.float(), beta, scale=scale, initial_state=_state_in(initial_state),
        output_final_state=output_final_state,
    )
    return o.to(dtype), _state_out(S)


def gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False):
    from fla.ops.gla import chunk_gla

    dtype = v.dtype
    q, k, v = _same_dtype(q.dtype, q, k, v)
    o, S = chunk_gla(
        q, k, v, g.float(), scale=scale, initial_state=_state_in(initial_state),
        output_final_state=output_final_state,
    )
    return o.to(dtype), _state_out(S)


def simple_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False):
    from fla.ops.simple_gla import chunk_simple_gla

    dtype = v.dtype
    q, k, v = _same_dtype(q.dtype, q, k, v)
    o, S = chunk_simple_gla(
        q, k, v, g.float(), scale=scale, initial_state=_state_in(initial_state),
        output_final_state=output_final_state,
    )
    return o.to(dtype), _state_out(S)


def kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    from fla.ops.kda import chunk_kda

    dtype = v.dtype
    q, k, v, beta = _same_dtype(q.dtype, q, k, v, beta)
    o, S = chunk_kda(
        q, k, v, g.float(), beta, scale=scale, initial_state=_state_in(initial_state),
        output_final_state=output_final_state,
    )
    return o.to(dtype), _state_out(S)


def gated_delta_product(q, k, v, g, beta, num_householder=2, scale=None, initial_state=None,
                        output_final_state=False):
    from fla.ops.gated_delta_product import chunk_gated_delta_product

    dtype = v.dtype
    compute = torch.bfloat16 if q.dtype == torch.float32 else q.dtype
    q, k, v, beta = _same_dtype(compute, q, k, v, beta)
    o, S = chunk_gated_delta_product(
        q, k, v, None if g is None else g.float(), beta, num_householder, scale=scale,
        initial_state=_state_in(initial_state), output_final_state=output_final_state,
    )
    return o.to(dtype), _state_out(S)


def generalized_delta_rule(q, k, v, a, b, gk, scale=None, initial_state=None,
                           output_final_state=False):
    from fla.ops.generalized_delta_rule import chunk_dplr_delta_rule

    dtype = v.dtype
    q, k, v, a, b = _same_dtype(q.dtype, q, k, v, a, b)
    o, S = chunk_dplr_delta_rule(
        q, k, v, a, b, gk.float(), scale=scale, initial_state=_state_in(initial_state),
        output_final_state=output_final_state,
    )
    return o.to(dtype), _state_out(S)


def short_conv(
    x, weight, bias=None, activation="silu", initial_state=None, output_final_state=False
):
    from fla.modules.causal_conv1d import causal_conv1d

    h0 = None if initial_state is None else F.pad(initial_state.to(x.dtype), (1, 0))  # [B, D, W]
    y, state = causal_conv1d(
        x, weight=weight, bias=bias, initial_state=h0,
        output_final_state=output_final_state, activation=activation,
    )
    return y, (None if state is None else state[..., 1:])
