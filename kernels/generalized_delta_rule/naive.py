"""Token-by-token reference for the generalized delta rule: a diagonal-plus-low-rank (DPLR)
transition, as in RWKV-7 (fla: `generalized_delta_rule/dplr`)."""

import torch

from ..utils import as_float, default_scale


def naive_generalized_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor | None,
    gk: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """S_t = diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T;  o_t = scale * S_t^T q_t.

    The low-rank term reads the state before this token's decay, as fla's DPLR kernels do.
    RWKV-7 uses a = -kk (its unit removal key) and b = kk * iclr (the in-context learning
    rate), distinct from the write key k. b=None means b = -k (removal along the write key).

    Args:
        q, k, a, b: [B, T, H, K]; v: [B, T, H, V]; gk: [B, T, H, K] log-decay (<= 0).
        scale: multiplies q; default K ** -0.5.
        initial_state: [B, H, K, V] or None (zeros).
    Returns:
        o: [B, T, H, V] in v's dtype; final state [B, H, K, V] float32, or None.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = v.dtype
    scale = default_scale(scale, K)
    q, k, v, a, b, gk, S = as_float(q, k, v, a, b, gk, initial_state)
    b = -k if b is None else b
    if S is None:
        S = q.new_zeros(B, H, K, V)
    o = []
    for t in range(T):
        read = torch.einsum("bhk,bhkv->bhv", a[:, t], S)  # a_t^T S_{t-1}: [B, H, V]
        S = (S * gk[:, t, :, :, None].exp() + b[:, t, :, :, None] * read[:, :, None, :]
             + k[:, t, :, :, None] * v[:, t, :, None, :])
        o.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(o, dim=1)  # [B, T, H, V]
    return o.to(dtype), (S if output_final_state else None)
