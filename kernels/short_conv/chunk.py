"""Causal depthwise short convolution as one grouped conv1d (the fast CPU form)."""

import torch
import torch.nn.functional as F

from .naive import check_activation


def chunk_short_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `naive_short_conv`; computes in float32, returns y in x's dtype.

    Prepending the W - 1 cached inputs (zeros without a cache) makes the convolution causal and
    lets the final state be read off the end of the same padded sequence.
    """
    check_activation(activation)
    B, T, D = x.shape
    W = weight.shape[1]
    dtype = x.dtype
    xt = x.float().transpose(1, 2)  # [B, D, T]
    h0 = xt.new_zeros(B, D, W - 1) if initial_state is None else initial_state.float()
    xp = torch.cat([h0, xt], dim=-1)  # [B, D, W - 1 + T]
    y = F.conv1d(xp, weight.float()[:, None, :], None if bias is None else bias.float(), groups=D)
    if activation == "silu":
        y = F.silu(y)
    y = y.transpose(1, 2).to(dtype)  # [B, T, D]
    final = xp[..., xp.shape[-1] - (W - 1):].to(dtype) if output_final_state else None
    return y, final
