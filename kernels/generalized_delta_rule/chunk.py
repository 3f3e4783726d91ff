"""Chunked generalized delta rule (diagonal-plus-low-rank transition, RWKV-7) in the WY form.

Inside a chunk starting from state S_0, with bc_t the cumulative log-decay (per key channel,
inclusive of t) and bp_t = bc_{t-1} (exclusive), the state reads x_t = S_{t-1}^T a_t satisfy
    x_t = (a_t exp(bp_t))^T S_0 + sum_{s<t} [(a_t . k_s)_bp,s v_s + (a_t . b_s)_bp,s x_s],
where (x . y)_bp,s = sum_k x_k y_k exp(bp_t,k - bc_s,k). So with A_ab, A_ak those decayed
products (strictly lower triangular):  (I - A_ab) X = A_ak V + (a exp(bp)) S_0, one unit
lower-triangular solve per chunk for X = U + W S_0 (the WY / UT form, as for the delta rule).
The output is o = (q exp(bc)) S_0 + A_qk V + A_qb X, with decays exp(bc_t - bc_s), s <= t.

The decayed products are plain matmuls through the chunk's start when the chunk's decay is
moderate (`factorised_scores`, SAFE_SPAN), and otherwise are formed from factors
exp(non-positive) only (`decayed_scores`), so strong decays underflow to zero and never overflow.
"""

import torch
import torch.nn.functional as F
from einops import rearrange

from ..utils import (as_float, causal_mask, default_scale, float32_region, matmul_add,
                     solve_unit_lower, to_chunks)


def decayed_scores(queries: list[tuple[torch.Tensor, torch.Tensor, bool]], by: torch.Tensor,
                   ys: list[torch.Tensor], sub_chunk_size: int) -> list[list[torch.Tensor]]:
    """Per chunk, for each (x, ex, strict) of `queries` and each y of `ys`, the [C, C] matrix
    [sum_k x_tk y_sk exp(ex_tk - by_sk)]_{t, s} for s < t (`strict`) or s <= t, zero above;
    x, ex, by, y: [..., C, K] with ex_t <= by_s wherever s is kept.

    As fla's kernels (and chunk_gla) do, the chunk is cut into sub-chunks of c tokens:
    - query sub-chunk i against keys of earlier sub-chunks is one matmul through the reference
      point r_i = by at the last token before sub-chunk i, both factors exp(ex_t - r_i) and
      exp(r_i - by_s) having non-positive exponents (the key side is shared by all queries);
    - a sub-chunk against its own keys uses the exact decay, a [c, c, K] tensor of
      exp(non-positive) values (the excluded triangle is -inf before exp: no inf, no NaN
      gradient), element-wise rather than an einsum of tiny matmuls.
    """
    C, c = by.shape[-2], sub_chunk_size
    m = C // c
    sub = lambda u: rearrange(u, "... (m c) k -> ... m c k", c=c)  # noqa: E731
    bys, ys_sub = sub(by), [sub(y) for y in ys]
    # the diagonal blocks placed in a [C, C] matrix: block (i, j) kept only for i == j
    eye = torch.eye(m, dtype=by.dtype, device=by.device)[:, None, :, None]  # [m, 1, m, 1]
    if m > 1:
        ref = bys[..., :-1, -1:, :]  # [..., m-1, 1, K]: by just before sub-chunks 1 .. m-1
        starts = torch.arange(1, m, device=by.device) * c
        after = torch.arange(C, device=by.device)[None, :] >= starts[:, None]  # [m-1, C]
        y_decay = (ref - by[..., None, :, :]).masked_fill_(after[..., None], float("-inf")).exp()
        y_refs = [(y[..., None, :, :] * y_decay).transpose(-1, -2) for y in ys]  # [.., m-1, K, C]
    out = []
    for x, ex, strict in queries:
        xs_, exs = sub(x), sub(ex)
        drop = torch.ones(c, c, dtype=torch.bool, device=x.device).triu(0 if strict else 1)
        D = (exs[..., :, None, :] - bys[..., None, :, :]).masked_fill_(drop[..., None],
                                                                       float("-inf"))
        xE = xs_[..., :, None, :] * D.exp()  # [..., m, c, c, K]
        if m > 1:
            x_ref = xs_[..., 1:, :, :] * (exs[..., 1:, :, :] - ref).exp()  # [..., m-1, c, K]
        row = []
        for j, y_sub in enumerate(ys_sub):
            diag = (xE * y_sub[..., None, :, :]).sum(-1)  # [..., m, c, c]
            scores = rearrange(diag[..., :, :, None, :] * eye, "... i t j s -> ... (i t) (j s)")
            if m > 1:
                off = rearrange(x_ref @ y_refs[j], "... i t s -> ... (i t) s")  # [.., C - c, C]
                scores = scores + F.pad(off, (0, 0, c, 0))
            row.append(scores)
        out.append(row)
    return out


# Largest total log-decay of a chunk (over channels) for which the scores are factorised through
# the chunk's start: the key side then grows to at most exp(SAFE_SPAN) ~ 2e17, far from float32's
# overflow; RWKV-7's decay (>= -0.61 per token) stays under it for chunks of 64 tokens.
SAFE_SPAN = 40.0


def factorised_scores(queries: list[tuple[torch.Tensor, torch.Tensor, bool]], by: torch.Tensor,
                      ys: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """`decayed_scores` for chunks whose decay spans at most SAFE_SPAN: exp(ex_t - by_s) =
    exp(ex_t) exp(-by_s) (by is the cumulative log-decay from the chunk's start, so exp(ex_t)
    <= 1 and exp(-by_s) <= exp(SAFE_SPAN)), one plain matmul per matrix."""
    C = by.shape[-2]
    y_grow = [(y * (-by).exp()).transpose(-1, -2) for y in ys]  # [..., K, C]
    out = []
    for x, ex, strict in queries:
        mask = causal_mask(C, x, diagonal=-1 if strict else 0)
        x_decay = x * ex.exp()
        out.append([(x_decay @ y) * mask for y in y_grow])
    return out


def chunk_generalized_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor | None,
    gk: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 16,
    sub_chunk_size: int = 4,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `naive_generalized_delta_rule`; computes in float32, returns o in v's
    dtype. Under autocast everything but the last products of the output runs in float32
    (the decayed score matrices feed the solve and the state).

    b=None means b = -k, the removal along the write key (KDA): half the score matrices.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = v.dtype
    scale = default_scale(scale, K)
    C = chunk_size
    if C % sub_chunk_size:
        raise ValueError(f"chunk_size={C} is not a multiple of sub_chunk_size={sub_chunk_size}")
    tied = b is None
    q, k, v, a, b, gk, S = as_float(q, k, v, a, b, gk, initial_state)
    # one contiguous [B, H, N, C, D] copy each (zero padding leaves the state unchanged)
    q, k, v, a, gk = (to_chunks(x, C) for x in (q, k, v, a, gk))
    b = None if tied else to_chunks(b, C)
    q = q * scale

    with float32_region(q):
        bc = gk.cumsum(-2)  # [B, H, N, C, K]: cumulative log-decay, inclusive
        bp = bc - gk  # exclusive: the decay a_t's read of S_{t-1} has seen
        # [B, H, N, C, C] each: a against k and b for s < t, q against them for s <= t
        queries, keys = [(a, bp, True), (q, bc, False)], [k] if tied else [k, b]
        if -bc[..., -1, :].min().item() <= SAFE_SPAN:
            (A_ak, *A_ab), (A_qk, *A_qb) = factorised_scores(queries, bc, keys)
        else:  # strong decays: sub-chunks keep every exponent non-positive
            (A_ak, *A_ab), (A_qk, *A_qb) = decayed_scores(queries, bc, keys, sub_chunk_size)
        # (I - A_ab) X = A_ak V + (a exp(bp)) S_0; with b = -k, A_ab = -A_ak
        wu = solve_unit_lower(A_ak if tied else -A_ab[0],
                              torch.cat([a * bp.exp(), A_ak @ v], dim=-1))
        w, u = wu[..., :K], wu[..., K:]  # X = u + w S_0: [B, H, N, C, K], [B, H, N, C, V]
        bc_last = bc[..., -1:, :]  # [B, H, N, 1, K]
        to_end = (bc_last - bc).exp()  # decay from each token to the chunk's end
        # the writes k v^T of each chunk, decayed to its end, for every chunk at once
        k_end = k * to_end
        kv = k_end.transpose(-1, -2) @ v  # [B, H, N, K, V]
        b_end = (-k_end if tied else b * to_end).transpose(-1, -2)  # [B, H, N, K, C]
        chunk_decay = bc_last.exp().transpose(-1, -2)  # [B, H, N, K, 1]

        if S is None:
            S = q.new_zeros(B, H, K, V)
        states, xs = [], []
        # unbind rather than index: per-chunk indexing would zero-fill a full-size gradient
        for u_n, w_n, kv_n, b_n, d_n in zip(u.unbind(2), w.unbind(2), kv.unbind(2),
                                            b_end.unbind(2), chunk_decay.unbind(2)):
            states.append(S)
            x_n = matmul_add(u_n, w_n, S)  # [B, H, C, V]: the state reads a_t^T S_{t-1}
            xs.append(x_n)
            S = matmul_add(S * d_n + kv_n, b_n, x_n)
        S_in = torch.stack(states, dim=2)  # [B, H, N, K, V]
        X = torch.stack(xs, dim=2)  # [B, H, N, C, V]

    if tied:  # A_qk V + A_qb X with A_qb = -A_qk
        o = matmul_add(A_qk @ (v - X), q * bc.exp(), S_in)
    else:
        attn = torch.cat([A_qk, A_qb[0]], dim=-1)  # [B, H, N, C, 2C]
        o = matmul_add(attn @ torch.cat([v, X], dim=-2), q * bc.exp(), S_in)
    o = rearrange(o, "b h n c d -> b (n c) h d")[:, :T]
    return o.to(dtype), (S if output_final_state else None)
