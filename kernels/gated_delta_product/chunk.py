"""Chunked Gated DeltaProduct: the gated delta rule over the sequence of Householder steps.

Token t's n steps become n consecutive positions of a sequence n times as long: the decay g_t
goes on the first of them (zero log-decay on the rest) and the query on the last (a zero query
elsewhere, whose outputs are dropped), exactly as fla's reference `chunk_gated_delta_product_ref`
does. The chunked gated delta rule then does all the work.
"""

import torch
import torch.nn.functional as F
from einops import rearrange

from ..delta_rule.chunk import chunk_delta_rule
from ..gated_delta_rule.chunk import chunk_gated_delta_rule


def _spread(x: torch.Tensor, n: int, last: bool) -> torch.Tensor:
    """[B, T, H, ...] -> [B, T * n, H, ...] with x_t at position t * n (+ n - 1 if `last`)
    and zeros elsewhere."""
    tail = [0, 0] * (x.dim() - 2)
    x = F.pad(x[:, :, None], tail + ([n - 1, 0] if last else [0, n - 1]))  # [B, T, n, H, ...]
    return rearrange(x, "b t n ... -> b (t n) ...")


def chunk_gated_delta_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    num_householder: int = 2,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `naive_gated_delta_product`; computes in float32, returns o in v's
    dtype."""
    n = num_householder
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    q_n = _spread(q, n, last=True)  # [B, T * n, H, K]
    common = dict(scale=scale, initial_state=initial_state,
                  output_final_state=output_final_state, chunk_size=chunk_size)
    if g is None:
        o, S = chunk_delta_rule(q_n, k, v, beta, **common)
    else:
        o, S = chunk_gated_delta_rule(q_n, k, v, _spread(g, n, last=False), beta, **common)
    return o[:, n - 1::n], S
