"""Chunked gated linear attention (GLA) with a per-key-channel decay.

Inside a chunk, the score of query t against key s <= t is sum_k q_tk k_sk exp(b_tk - b_sk), with
b the cumulative log-decay. The textbook factorisation (q * exp(b)) @ (k * exp(-b))^T overflows for
strong decays, so, as in fla's kernels, the chunk is cut into sub-chunks of `sub_chunk_size`:
- a query in sub-chunk i against keys in earlier sub-chunks goes through a matmul with the
  reference point r_i = b at the last token before sub-chunk i: both factors
  exp(b_t - r_i) and exp(r_i - b_s) have non-positive exponents;
- a query against keys of its own sub-chunk uses the exact decay, materialised as a
  [c, c, K] tensor of exp(non-positive) values.
Between chunks the state is carried by one element-wise update per chunk.
"""

import torch
from einops import rearrange

from ..utils import as_float, default_scale, float32_region, matmul_add, pad_time, to_chunks


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 8,
    sub_chunk_size: int = 4,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `naive_gla`; computes in float32, returns o in v's dtype. Under autocast
    the decays and the state (each chunk's k^T v and the recurrence) stay in float32 and only the
    output path runs in the autocast dtype (see utils.py).

    `chunk_size` must be a multiple of `sub_chunk_size`. The defaults (8, 4) were the fastest
    forward + backward on one CPU thread at the tiny preset's shapes (T=256 and T=64, K=V=32),
    about 25% faster than the previous (32, 8), and no slower at T=1024.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = v.dtype
    scale = default_scale(scale, K)
    C, c = chunk_size, sub_chunk_size
    if C % c:
        raise ValueError(f"chunk_gla: chunk_size={C} is not a multiple of sub_chunk_size={c}")
    m = C // c
    q, k, v, g, S = as_float(q, k, v, g, initial_state)
    # one contiguous [B, H, N, C, D] copy each: every matmul below would otherwise copy the
    # permuted view again, in the forward and in the backward
    q, k, v, g = (to_chunks(x, C) for x in (q, k, v, g))
    q = q * scale
    device = q.device

    b = g.cumsum(-2)  # [B, H, N, C, K]
    qs, ks, vs, bs = (rearrange(x, "... (m c) d -> ... m c d", c=c) for x in (q, k, v, b))

    # own sub-chunk: exact decay; the upper triangle is filled before exp so that no inf
    # appears (it would turn into NaN gradients). Element-wise rather than an einsum, which
    # would lower to one tiny matmul per (query, key) pair on CPU. The fill is in place on the
    # fresh difference (masked_fill would copy it first).
    above = torch.ones(c, c, dtype=torch.bool, device=device).triu(1)[..., None]  # [c, c, 1]
    D = (bs[..., :, None, :] - bs[..., None, :, :]).masked_fill_(above, float("-inf"))
    attn_diag = (qs[..., :, None, :] * ks[..., None, :, :] * D.exp()).sum(-1)  # [B,H,N,m,c,c]
    # the diagonal blocks times their own values, without a block-diagonal [C, C] matrix
    o = rearrange(attn_diag @ vs, "... m c d -> ... (m c) d")  # [B, H, N, C, V]

    if m > 1:
        # earlier sub-chunks of the same chunk, for the query sub-chunks i = 1 .. m-1
        ref = bs[..., :-1, -1:, :]  # [B, H, N, m-1, 1, K]: b just before sub-chunk i
        q_ref = qs[..., 1:, :, :] * (bs[..., 1:, :, :] - ref).exp()  # [B, H, N, m-1, c, K]
        starts = torch.arange(1, m, device=device) * c  # first token of sub-chunks 1 .. m-1
        after = torch.arange(C, device=device)[None, :] >= starts[:, None]  # [m-1, C]
        k_exp = (ref - b[..., None, :, :]).masked_fill_(after[..., None], float("-inf"))
        k_ref = k[..., None, :, :] * k_exp.exp()  # [B, H, N, m-1, C, K]
        attn_off = rearrange(q_ref @ k_ref.transpose(-1, -2), "... i t s -> ... (i t) s")
        # rows of sub-chunks 1 .. m-1 get attn_off @ v added
        o = torch.cat([o[..., :c, :], matmul_add(o[..., c:, :], attn_off, v)], dim=-2)

    b_last = b[..., -1:, :]  # [B, H, N, 1, K]
    chunk_decay = b_last.exp().transpose(-1, -2)  # [B, H, N, K, 1]: the chunk's total decay
    with float32_region(q):
        # each chunk's contribution to the state at its end
        kv = (k * (b_last - b).exp()).transpose(-1, -2) @ v  # [B, H, N, K, V]
        if S is None:
            S = q.new_zeros(B, H, K, V)
        states = []
        # unbind rather than index: per-chunk indexing would zero-fill a full-size gradient
        # per chunk
        for kv_n, d_n in zip(kv.unbind(2), chunk_decay.unbind(2)):
            states.append(S)
            S = S * d_n + kv_n
        S_in = torch.stack(states, dim=2)  # [B, H, N, K, V]

    o = matmul_add(o, q * b.exp(), S_in)  # o + (q exp(b)) S_in
    o = rearrange(o, "b h n c d -> b (n c) h d")[:, :T]
    return o.to(dtype), (S if output_final_state else None)
