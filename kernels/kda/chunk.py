"""Chunked Kimi Delta Attention, as a case of the generalized delta rule (its chunked form).

The delta rule on the decayed state S' = diag(exp(g_t)) S_{t-1}:
    S_t = S' - beta_t k_t k_t^T S' + beta_t k_t v_t^T
        = diag(exp(g_t)) S_{t-1} + (-beta_t k_t) ((exp(g_t) k_t)^T S_{t-1}) + (beta_t k_t) v_t^T,
a diagonal-plus-low-rank step with a = exp(g) k, b = -beta k and write key beta k (b = -k_write:
the generalized form's b=None, which computes half its score matrices). Every decay factor the
generalized form builds from these is exp of a non-positive number.
"""

import torch

from ..generalized_delta_rule.chunk import chunk_generalized_delta_rule
from ..utils import as_float


def chunk_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 16,
    sub_chunk_size: int = 4,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `naive_kda`; computes in float32, returns o in v's dtype."""
    dtype = v.dtype
    k, g, beta = as_float(k, g, beta)
    k_beta = k * beta[..., None]
    o, S = chunk_generalized_delta_rule(
        q, k_beta, v.float(), k * g.exp(), None, g, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, chunk_size=chunk_size,
        sub_chunk_size=sub_chunk_size,
    )
    return o.to(dtype), S
