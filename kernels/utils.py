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
