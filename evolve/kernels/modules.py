"""Small building blocks that mixer files may use: `from evolve.kernels.modules import ...`.

They live in evolve.kernels because a candidate may import only torch, einops, math and
evolve.kernels; sharing them keeps baselines and generated mixers short and comparable.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def l2_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Normalise the last dimension to unit length (in float32 for bf16 inputs)."""
    xf = x.float()
    return (xf * torch.rsqrt((xf * xf).sum(-1, keepdim=True) + eps)).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension with a learned gain."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class GatedRMSNorm(RMSNorm):
    """RMSNorm(x) * silu(gate): the output norm + gate of GLA / Gated DeltaNet."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x) * F.silu(gate)


class ShortConvolution(nn.Module):
    """Causal depthwise convolution over time (width `kernel_size`), SiLU by default.

    x: [B, T, D] -> [B, T, D]; output t sees inputs t-kernel_size+1 .. t only.
    """

    def __init__(self, dim: int, kernel_size: int = 4, activation: str | None = "silu",
                 bias: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.activation = activation
        self.weight = nn.Parameter(torch.empty(dim, kernel_size))
        # Same fan-in initialisation as nn.Conv1d with groups=dim.
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from evolve.kernels import short_conv

        y, _ = short_conv(x, self.weight, self.bias, activation=self.activation)
        return y
