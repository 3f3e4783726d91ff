"""Chunked delta rule in the WY / UT-transform form (Yang et al., 2024, "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length").

Within a chunk of C tokens starting from state S, the delta rule's pseudo-values
u_t = beta_t (v_t - S_{t-1}^T k_t) satisfy the unit lower-triangular system
    (I + tril(diag(beta) K K^T, -1)) U = diag(beta) V - diag(beta) K S,
so with T = (I + tril(diag(beta) K K^T, -1))^{-1}:  U = T beta V - (T beta K) S.
T depends on the chunk's keys only, so one batched triangular solve handles every chunk at once;
the sequential part is one small matmul per chunk.
"""

import torch
from einops import rearrange

from ..utils import (as_float, causal_mask, default_scale, float32_region, matmul_add, pad_time,
                     solve_unit_lower, to_chunks)


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `naive_delta_rule`; computes in float32, returns o in v's dtype.

    Under autocast the WY solve and the state recurrence stay in float32 and only the output
    path (q k^T, q S, attn u) runs in the autocast dtype (see utils.py).

    `chunk_size` 32 (was 64): forward + backward on one CPU thread, 10-25% faster at T=256
    (B=8) and T=1024 (B=4), H=4, K=V=32 (issue 16's profile; docs/BASELINES.md).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = v.dtype
    scale = default_scale(scale, K)
    C = chunk_size
    q, k, v, beta, S = as_float(q, k, v, beta, initial_state)
    # one contiguous [B, H, N, C, D] copy each: every matmul below would otherwise copy the
    # permuted view again, in the forward and in the backward
    q, k, v = (to_chunks(x, C) for x in (q, k, v))
    beta = rearrange(pad_time(beta, C), "b (n c) h -> b h n c", c=C)[..., None]  # [B, H, N, C, 1]
    q = q * scale

    with float32_region(q):
        # [beta K | beta V] in one tensor: the right-hand sides of the solve, and beta K for A
        kv_beta = torch.cat([k, v], dim=-1) * beta  # [B, H, N, C, K + V]
        # A = beta K K^T; the solve reads only its strict lower triangle: I + tril(A, -1)
        A = kv_beta[..., :K] @ k.transpose(-1, -2)  # [B, H, N, C, C]
        wu = solve_unit_lower(A, kv_beta)
        w, u = wu[..., :K], wu[..., K:]  # [B, H, N, C, K], [B, H, N, C, V]

        if S is None:
            S = q.new_zeros(B, H, K, V)
        states, u_new = [], []
        # unbind rather than index: the backward of one indexing op per chunk would allocate
        # and zero-fill a full-size gradient each time (that dominated the runtime)
        for u_n, w_n, k_n in zip(u.unbind(2), w.unbind(2), k.unbind(2)):
            states.append(S)
            u_n = u_n - w_n @ S  # [B, H, C, V]
            u_new.append(u_n)
            S = S + k_n.transpose(-1, -2) @ u_n
        S_in = torch.stack(states, dim=2)  # [B, H, N, K, V]
        u_new = torch.stack(u_new, dim=2)  # [B, H, N, C, V]

    attn = (q @ k.transpose(-1, -2)) * causal_mask(C, q)  # [B, H, N, C, C]
    o = matmul_add(q @ S_in, attn, u_new)  # q S_in + attn u_new
    o = rearrange(o, "b h n c d -> b (n c) h d")[:, :T]
    return o.to(dtype), (S if output_final_state else None)
