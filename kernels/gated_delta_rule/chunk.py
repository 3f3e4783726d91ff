"""Chunked gated delta rule in the WY / UT-transform form (Yang et al., 2025, "Gated Delta
Networks").

With b_t the cumulative log-decay inside a chunk and gamma_t = exp(b_t), the pseudo-values
u_t = beta_t (v_t - (decayed state)^T k_t) of one chunk starting from state S satisfy
    (I + tril(diag(beta) K K^T * G, -1)) U = diag(beta) V - diag(beta gamma) K S,
where G[t, s] = exp(b_t - b_s) for s <= t. Every decay factor used is exp of a non-positive
number, so strong decays underflow to zero instead of overflowing.
"""

import torch
from einops import rearrange

from ..utils import (as_float, default_scale, float32_region, matmul_add, pad_time,
                     solve_unit_lower, to_chunks)


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `naive_gated_delta_rule`; computes in float32, returns o in v's dtype.

    Under autocast the decays, the WY solve and the state recurrence stay in float32 and only
    the output path (q k^T, attn u, q S) runs in the autocast dtype (see utils.py).

    `chunk_size` 32 (was 64): forward + backward on one CPU thread, 10-25% faster at T=256
    (B=8) and T=1024 (B=4), H=4, K=V=32 (issue 16's profile; docs/BASELINES.md).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = v.dtype
    scale = default_scale(scale, K)
    C = chunk_size
    q, k, v, g, beta, S = as_float(q, k, v, g, beta, initial_state)
    # one contiguous [B, H, N, C, D] copy each: every matmul below would otherwise copy the
    # permuted view again, in the forward and in the backward
    q, k, v = (to_chunks(x, C) for x in (q, k, v))
    beta, g = (rearrange(pad_time(x, C), "b (n c) h -> b h n c", c=C) for x in (beta, g))
    q = q * scale
    beta = beta[..., None]  # [B, H, N, C, 1]

    b = g.cumsum(-1)  # [B, H, N, C]
    # -inf above the diagonal before exp: exp(b_t - b_s) for s > t may overflow, and an inf
    # there would turn into NaN gradients even when masked afterwards. Adding a 0 / -inf bias
    # is one pass (masked_fill is a copy and a fill).
    upper_inf = torch.zeros(C, C, dtype=b.dtype, device=b.device).masked_fill_(
        torch.ones(C, C, dtype=torch.bool, device=b.device).triu(1), float("-inf"))
    G = (b[..., :, None] - b[..., None, :] + upper_inf).exp()  # [B, H, N, C, C], 0 above diag

    with float32_region(q):
        k_beta = k * beta
        # A = beta K K^T * G; the solve reads only its strict lower triangle: I + tril(A, -1)
        A = k_beta @ k.transpose(-1, -2) * G  # [B, H, N, C, C]
        gamma = b.exp()[..., None]  # [B, H, N, C, 1]
        wu = solve_unit_lower(A, torch.cat([k_beta * gamma, v * beta], dim=-1))
        w, u = wu[..., :K], wu[..., K:]  # [B, H, N, C, K], [B, H, N, C, V]
        # keys decayed to the chunk's end, and the whole chunk's decay, for the state update
        b_last = b[..., -1:]  # [B, H, N, 1]
        k_end = k * (b_last - b).exp()[..., None]  # [B, H, N, C, K]
        chunk_decay = b_last.exp()[..., None]  # [B, H, N, 1, 1]

        if S is None:
            S = q.new_zeros(B, H, K, V)
        states, u_new = [], []
        # unbind rather than index: per-chunk indexing would zero-fill a full-size gradient
        # per chunk
        for u_n, w_n, k_n, d_n in zip(u.unbind(2), w.unbind(2), k_end.unbind(2),
                                      chunk_decay.unbind(2)):
            states.append(S)
            u_n = u_n - w_n @ S  # [B, H, C, V]
            u_new.append(u_n)
            S = S * d_n + k_n.transpose(-1, -2) @ u_n
        S_in = torch.stack(states, dim=2)  # [B, H, N, K, V]
        u_new = torch.stack(u_new, dim=2)  # [B, H, N, C, V]

    attn = q @ k.transpose(-1, -2) * G  # G is zero above the diagonal
    o = matmul_add(attn @ u_new, q * gamma, S_in)  # attn u_new + (q gamma) S_in
    o = rearrange(o, "b h n c d -> b (n c) h d")[:, :T]
    return o.to(dtype), (S if output_final_state else None)
