"""Helpers shared by the chunked kernels: padding over time and float32 promotion.

Precision under torch.autocast: the kernels promote their inputs to float32, but autocast would
still run every matmul in bfloat16 and return bfloat16. Everything that feeds a state (the
chunk-to-chunk recurrence, each chunk's k^T v, the delta rules' WY solve and its matrix) is
therefore computed inside `float32_region`, as fla keeps its states, decays and the WY inverse
in float32; the output path (scores q k^T and their products with values and states) follows
autocast. Without autocast this changes nothing.
"""

import torch
import torch.nn.functional as F


def pad_time(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pads dim 1 (time) of `x` ([B, T, ...]) up to a multiple of `multiple`.

    Zero padding at the end is harmless for every recurrence here: a zero key (and zero beta)
    leaves the state unchanged, and a zero log-decay means no decay, so the final state after
    the padded steps equals the one after the real last token.
    """
    T = x.shape[1]
    pad = (-T) % multiple
    if pad == 0:
        return x
    # F.pad pads from the last dim backwards: zeros for every dim after time, then `pad` on time.
    return F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))


def as_float(*xs: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Promotes every tensor to float32 (None passes through)."""
    return tuple(None if x is None else x.float() for x in xs)


def float32_region(like: torch.Tensor) -> torch.autocast:
    """A context in which autocast is off on `like`'s device: matmuls inside run in their inputs'
    dtype (float32 in the kernels) and return it, even when the caller runs under autocast."""
    return torch.autocast(like.device.type, enabled=False)


def solve_unit_lower(A: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """X with (I + tril(A, -1)) X = rhs, batched over the leading dims, in float32.

    solve_triangular(upper=False, unitriangular=True) reads only A's strict lower triangle and
    gives the rest no gradient, so A needs no masking and no identity added. It has no bfloat16
    kernel on CPU and refuses mixed dtypes, hence the promotion, with autocast off.
    """
    with float32_region(A):
        return torch.linalg.solve_triangular(A.float(), rhs.float(), upper=False,
                                             unitriangular=True)


def default_scale(scale: float | None, head_dim: int) -> float:
    return head_dim ** -0.5 if scale is None else scale


def to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """[B, T, H, D] -> contiguous [B, H, N, C, D] (zero-padded to N * C tokens).

    Contiguous on purpose: a permuted view would be copied again by every matmul that reads it,
    in the forward and again in the backward.
    """
    x = pad_time(x, chunk_size)
    B, T, H, D = x.shape
    return x.reshape(B, T // chunk_size, chunk_size, H, D).permute(0, 3, 1, 2, 4).contiguous()


def matmul_add(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """acc + a @ b for batched matrices [..., M, K] @ [..., K, N] with the same batch dims, as
    one baddbmm (the sum is accumulated by the matmul instead of a separate pass)."""
    batch = acc.shape[:-2]
    out = torch.baddbmm(acc.reshape(-1, *acc.shape[-2:]), a.reshape(-1, *a.shape[-2:]),
                        b.reshape(-1, *b.shape[-2:]))
    return out.view(*batch, *out.shape[-2:])


def causal_mask(size: int, like: torch.Tensor, diagonal: int = 0) -> torch.Tensor:
    """[size, size] lower-triangular mask of ones (from `diagonal`) in `like`'s dtype and device.

    Masking a finite score matrix by multiplying with it is one plain element-wise pass forward
    and backward, about twice as fast on CPU as masked_fill or tril at the kernels' sizes.
    """
    return torch.ones(size, size, dtype=like.dtype, device=like.device).tril(diagonal)
