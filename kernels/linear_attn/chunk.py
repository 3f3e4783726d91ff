"""Chunked causal linear attention: intra-chunk masked matmuls plus inter-chunk prefix sums."""

import torch
from einops import rearrange

from ..utils import as_float, causal_mask, default_scale, float32_region, matmul_add, to_chunks


def chunk_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `naive_linear_attn`; computes in float32, returns o in v's dtype.

    Without decay the state entering chunk n is a prefix sum of per-chunk k^T v, so no
    sequential loop is needed at all. Under autocast the states stay in float32 and only the
    output path (q k^T, q S, attn v) runs in the autocast dtype (see utils.py).
    """
    B, T, H, K = q.shape
    dtype = v.dtype
    scale = default_scale(scale, K)
    C = chunk_size
    q, k, v, h0 = as_float(q, k, v, initial_state)
    # one contiguous [B, H, N, C, D] copy each: every matmul below would otherwise copy the
    # permuted view again, in the forward and in the backward
    q, k, v = (to_chunks(x, C) for x in (q, k, v))
    q = q * scale

    with float32_region(q):
        kv = k.transpose(-1, -2) @ v  # [B, H, N, K, V]
    S = kv.cumsum(dim=2)  # state after each chunk
    if h0 is not None:
        S = S + h0[:, :, None]
    # state entering each chunk: the initial state, then the states after chunks 0..N-2
    first = h0[:, :, None] if h0 is not None else torch.zeros_like(kv[:, :, :1])
    S_in = torch.cat([first, S[:, :, :-1]], dim=2)  # [B, H, N, K, V]

    attn = (q @ k.transpose(-1, -2)) * causal_mask(C, q)  # [B, H, N, C, C]
    o = matmul_add(q @ S_in, attn, v)  # q S_in + attn v: [B, H, N, C, V]
    o = rearrange(o, "b h n c d -> b (n c) h d")[:, :T]
    return o.to(dtype), (S[:, :, -1] if output_final_state else None)
