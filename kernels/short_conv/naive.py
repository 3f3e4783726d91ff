"""Token-by-token reference for the causal depthwise short convolution."""

import torch
import torch.nn.functional as F

ACTIVATIONS = ("silu", None)


def check_activation(activation: str | None) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"short_conv: activation={activation!r} is not one of {ACTIVATIONS}")


def naive_short_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """y_t = act(bias + sum_w weight[:, w] * x_{t - W + 1 + w}): weight[:, -1] meets x_t.

    Args:
        x: [B, T, D]; weight: [D, W]; bias: [D] or None; activation: "silu" or None.
        initial_state: [B, D, W - 1], the W - 1 inputs before x_0 (oldest first), or None (zeros).
    Returns:
        y: [B, T, D] in x's dtype; final state [B, D, W - 1] in x's dtype (the last W - 1 inputs,
        initial state included when T < W - 1), or None.
    """
    check_activation(activation)
    B, T, D = x.shape
    W = weight.shape[1]
    dtype = x.dtype
    x, weight = x.float(), weight.float()
    window = x.new_zeros(B, D, W - 1) if initial_state is None else initial_state.float()
    y = []
    for t in range(T):
        window = torch.cat([window, x[:, t, :, None]], dim=-1)  # [B, D, W]
        y_t = (window * weight).sum(-1)  # [B, D]
        if bias is not None:
            y_t = y_t + bias.float()
        y.append(y_t)
        window = window[..., 1:]
    y = torch.stack(y, dim=1) if T > 0 else x.new_zeros(B, 0, D)  # [B, T, D]
    if activation == "silu":
        y = F.silu(y)
    return y.to(dtype), (window.to(dtype) if output_final_state else None)
