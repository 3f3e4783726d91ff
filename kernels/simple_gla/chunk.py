"""Chunked simple GLA (one decay per head): the gated delta rule's chunk form without the solve.

With b_t the cumulative log-decay inside a chunk, o = ((q k^T) * G) V + (q exp(b)) S_in, where
G[t, s] = exp(b_t - b_s) for s <= t; every decay factor is exp of a non-positive number.
"""

import torch
from einops import rearrange

from ..utils import as_float, default_scale, float32_region, matmul_add, pad_time, to_chunks


def chunk_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `naive_simple_gla`; computes in float32, returns o in v's dtype. Under
    autocast the decays and the state stay in float32 (see utils.py)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = v.dtype
    scale = default_scale(scale, K)
    C = chunk_size
    q, k, v, g, S = as_float(q, k, v, g, initial_state)
    q, k, v = (to_chunks(x, C) for x in (q, k, v))  # [B, H, N, C, D]
    b = rearrange(pad_time(g, C), "b (n c) h -> b h n c", c=C).cumsum(-1)  # [B, H, N, C]
    q = q * scale
    # -inf above the diagonal before exp, so that no inf (and no NaN gradient) appears
    upper_inf = torch.zeros(C, C, dtype=b.dtype, device=b.device).masked_fill_(
        torch.ones(C, C, dtype=torch.bool, device=b.device).triu(1), float("-inf"))
    G = (b[..., :, None] - b[..., None, :] + upper_inf).exp()  # [B, H, N, C, C]

    with float32_region(q):
        b_last = b[..., -1:]  # [B, H, N, 1]
        kv = (k * (b_last - b).exp()[..., None]).transpose(-1, -2) @ v  # [B, H, N, K, V]
        chunk_decay = b_last.exp()[..., None]  # [B, H, N, 1, 1]
        if S is None:
            S = q.new_zeros(B, H, K, V)
        states = []
        # unbind rather than index: per-chunk indexing would zero-fill a full-size gradient
        for kv_n, d_n in zip(kv.unbind(2), chunk_decay.unbind(2)):
            states.append(S)
            S = S * d_n + kv_n
        S_in = torch.stack(states, dim=2)  # [B, H, N, K, V]

    attn = q @ k.transpose(-1, -2) * G  # G is zero above the diagonal
    o = matmul_add(attn @ v, q * b.exp()[..., None], S_in)
    o = rearrange(o, "b h n c d -> b (n c) h d")[:, :T]
    return o.to(dtype), (S if output_final_state else None)
