"""Token-by-token reference for Gated DeltaProduct (Siems et al., 2025, "DeltaProduct:
Improving State-Tracking in Linear RNNs via Householder Products")."""

import torch

from ..utils import as_float, default_scale


def naive_gated_delta_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    num_householder: int = 2,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per token t: S <- exp(g_t) S, then for j = 1 .. n (n = num_householder) one delta step
    with key k_{t,j}, value v_{t,j} and strength beta_{t,j}:
        S <- S + beta_{t,j} k_{t,j} (v_{t,j} - S^T k_{t,j})^T,
    a transition (I - beta k k^T) per step, with negative eigenvalues when beta is in (1, 2);
    then o_t = scale * S^T q_t.

    Args:
        q: [B, T, H, K]; k: [B, T * n, H, K] (L2-normalised, step j of token t at t * n + j);
        v: [B, T * n, H, V]; beta: [B, T * n, H]; g: [B, T, H] log-decay (<= 0) or None.
        scale: multiplies q; default K ** -0.5.
        initial_state: [B, H, K, V] or None (zeros).
    Returns:
        o: [B, T, H, V] in v's dtype; final state [B, H, K, V] float32, or None.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    n = num_householder
    dtype = v.dtype
    scale = default_scale(scale, K)
    q, k, v, g, beta, S = as_float(q, k, v, g, beta, initial_state)
    if S is None:
        S = q.new_zeros(B, H, K, V)
    o = []
    for t in range(T):
        if g is not None:
            S = S * g[:, t, :, None, None].exp()
        for j in range(t * n, t * n + n):
            k_j = k[:, j]  # [B, H, K]
            u = beta[:, j, :, None] * (v[:, j] - torch.einsum("bhk,bhkv->bhv", k_j, S))
            S = S + k_j[..., None] * u[..., None, :]
        o.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(o, dim=1)  # [B, T, H, V]
    return o.to(dtype), (S if output_final_state else None)
