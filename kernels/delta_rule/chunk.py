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

from ..utils import as_float, default_scale, pad_time


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `naive_delta_rule`; computes in float32, returns o in v's dtype."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = v.dtype
    scale = default_scale(scale, K)
    C = chunk_size
    q, k, v, beta, S = as_float(q, k, v, beta, initial_state)
    q, k, v = (rearrange(pad_time(x, C), "b (n c) h d -> b h n c d", c=C) for x in (q, k, v))
    beta = rearrange(pad_time(beta, C), "b (n c) h -> b h n c", c=C)[..., None]  # [B, H, N, C, 1]
    q = q * scale

    k_beta = k * beta
    strict = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
    A = (k_beta @ k.transpose(-1, -2)).masked_fill(~strict, 0)  # [B, H, N, C, C]
    A = A + torch.eye(C, dtype=A.dtype, device=A.device)
    # one solve for both right-hand sides: [T beta K | T beta V]
    wu = torch.linalg.solve_triangular(
        A, torch.cat([k_beta, v * beta], dim=-1), upper=False, unitriangular=True
    )
    w, u = wu[..., :K], wu[..., K:]  # [B, H, N, C, K], [B, H, N, C, V]

    if S is None:
        S = q.new_zeros(B, H, K, V)
    states, u_new = [], []
    # unbind rather than index: the backward of one indexing op per chunk would allocate and
    # zero-fill a full-size gradient each time (that dominated the runtime)
    for u_n, w_n, k_n in zip(u.unbind(2), w.unbind(2), k.unbind(2)):
        states.append(S)
        u_n = u_n - w_n @ S  # [B, H, C, V]
        u_new.append(u_n)
        S = S + k_n.transpose(-1, -2) @ u_n
    S_in = torch.stack(states, dim=2)  # [B, H, N, K, V]
    u_new = torch.stack(u_new, dim=2)  # [B, H, N, C, V]

    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    attn = (q @ k.transpose(-1, -2)).masked_fill(~causal, 0)  # [B, H, N, C, C]
    o = q @ S_in + attn @ u_new
    o = rearrange(o, "b h n c d -> b (n c) h d")[:, :T]
    return o.to(dtype), (S if output_final_state else None)
