"""Token-by-token reference for Kimi Delta Attention (KDA): the delta rule with a decay per
key channel (Kimi Linear, 2025)."""

import torch

from ..utils import as_float, default_scale


def naive_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """S' = diag(exp(g_t)) S_{t-1};  u_t = beta_t (v_t - S'^T k_t);  S_t = S' + k_t u_t^T;
    o_t = scale * S_t^T q_t.

    Args:
        q, k: [B, T, H, K] (k L2-normalised by the caller); v: [B, T, H, V].
        g: [B, T, H, K] log-decay (<= 0) per key channel; beta: [B, T, H].
        scale: multiplies q; default K ** -0.5.
        initial_state: [B, H, K, V] or None (zeros).
    Returns:
        o: [B, T, H, V] in v's dtype; final state [B, H, K, V] float32, or None.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = v.dtype
    scale = default_scale(scale, K)
    q, k, v, g, beta, S = as_float(q, k, v, g, beta, initial_state)
    if S is None:
        S = q.new_zeros(B, H, K, V)
    o = []
    for t in range(T):
        S = S * g[:, t, :, :, None].exp()
        k_t = k[:, t]  # [B, H, K]
        u = beta[:, t, :, None] * (v[:, t] - torch.einsum("bhk,bhkv->bhv", k_t, S))  # [B, H, V]
        S = S + k_t[..., None] * u[..., None, :]
        o.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(o, dim=1)  # [B, T, H, V]
    return o.to(dtype), (S if output_final_state else None)
