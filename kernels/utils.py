"""Helpers shared by the chunked kernels: padding over time and float32 promotion."""

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
