"""Token-by-token reference for simple GLA: linear attention with one decay per head and token
(the state update of Mamba-2 and RetNet; fla's simple_gla)."""

import torch

from ..utils import as_float, default_scale


def naive_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """S_t = exp(g_t) S_{t-1} + k_t v_t^T;  o_t = scale * S_t^T q_t.

    Args:
        q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H] log-decay (<= 0) per head.
        scale: multiplies q; default K ** -0.5.
        initial_state: [B, H, K, V] or None (zeros).
    Returns:
        o: [B, T, H, V] in v's dtype; final state [B, H, K, V] float32, or None.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = v.dtype
    scale = default_scale(scale, K)
    q, k, v, g, S = as_float(q, k, v, g, initial_state)
    if S is None:
        S = q.new_zeros(B, H, K, V)
    o = []
    for t in range(T):
        S = S * g[:, t, :, None, None].exp() + k[:, t, :, :, None] * v[:, t, :, None, :]
        o.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(o, dim=1)  # [B, T, H, V]
    return o.to(dtype), (S if output_final_state else None)
