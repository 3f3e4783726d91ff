"""Causal depthwise short convolution as a sum of shifted products (the fast CPU form).

y_t = act(bias + sum_s weight[:, W - 1 - s] * x_{t - s}) for the shifts s = 0 .. W - 1, computed
in the [B, T, D] layout the callers use, with a hand-written backward that fuses the SiLU's.

`conv1d_short_conv` is the previous form (one grouped F.conv1d over a transposed, padded copy),
kept as a reference: the shifted-product form gives the same results within float32 rounding and
was about 2x faster forward + backward at the tiny preset's shapes on one CPU thread
(tools/bench/train_step.py), because it needs no [B, D, T] transposes and copies, its output is
contiguous for the head reshape that follows, and the SiLU's backward reads a same-layout tensor.
"""

import torch
import torch.nn.functional as F

from .naive import check_activation


class _ShiftedShortConv(torch.autograd.Function):
    """y = act(bias + sum_s weight[:, W-1-s] * shift_s(x)) on float32 [B, T, D] inputs.

    h0 ([B, W - 1, D] time-major view of the initial state, oldest first, or None) supplies the
    inputs before x_0. Saves x, the transposed weight and, with SiLU, the pre-activation.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, h0, silu):  # type: ignore[override]
        T = x.shape[1]
        W = weight.shape[1]
        wt = weight.t().contiguous()  # [W, D]: contiguous rows broadcast fast over [B, T, D]
        y = x * wt[W - 1]
        for s in range(1, W):
            if s < T:
                y[:, s:].addcmul_(x[:, : T - s], wt[W - 1 - s])
            if h0 is not None:  # outputs t < s read the cached input h0[W - 1 + t - s]
                n = min(s, T)
                y[:, :n].addcmul_(h0[:, W - 1 - s : W - 1 - s + n], wt[W - 1 - s])
        if bias is not None:
            y.add_(bias)
        ctx.save_for_backward(x, wt, h0, y if silu else None)
        ctx.silu = silu
        return F.silu(y) if silu else y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, wt, h0, pre = ctx.saved_tensors
        T, D = x.shape[1], x.shape[2]
        W = wt.shape[0]
        if ctx.silu:
            dy = torch.ops.aten.silu_backward(dy, pre)
        need_x, need_w, need_b, need_h = ctx.needs_input_grad[:4]
        dx = dw = db = dh = None
        if need_x:
            dx = dy * wt[W - 1]
            for s in range(1, min(W, T)):
                dx[:, : T - s].addcmul_(dy[:, s:], wt[W - 1 - s])
        if need_w:
            dwt = x.new_zeros(W, D)
            for s in range(W):
                if s < T:
                    dwt[W - 1 - s] += (dy[:, s:] * x[:, : T - s]).sum((0, 1))
                if h0 is not None and s > 0:
                    n = min(s, T)
                    dwt[W - 1 - s] += (dy[:, :n] * h0[:, W - 1 - s : W - 1 - s + n]).sum((0, 1))
            dw = dwt.t()
        if need_b:
            db = dy.sum((0, 1))
        if need_h:
            dh = torch.zeros_like(h0)
            for s in range(1, W):
                n = min(s, T)
                dh[:, W - 1 - s : W - 1 - s + n].addcmul_(dy[:, :n], wt[W - 1 - s])
        return dx, dw, db, dh, None


def chunk_short_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `naive_short_conv`; computes in float32, returns y in x's dtype."""
    check_activation(activation)
    B, T, D = x.shape
    W = weight.shape[1]
    dtype = x.dtype
    xf = x.float()
    h0 = None if initial_state is None else initial_state.float().transpose(1, 2)  # [B, W-1, D]
    y = _ShiftedShortConv.apply(
        xf, weight.float(), None if bias is None else bias.float(), h0, activation == "silu"
    )
    final = None
    if output_final_state:  # the last W - 1 inputs, cached ones included when T < W - 1
        hist = xf.new_zeros(B, W - 1, D) if h0 is None else h0
        final = torch.cat([hist, xf], dim=1)[:, T:].transpose(1, 2).to(dtype)
    return y.to(dtype), final


def conv1d_short_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The previous chunk form, kept as a reference (tests, tools/bench/train_step.py): one
    grouped F.conv1d over [B, D, W - 1 + T], the W - 1 cached inputs (zeros without a cache)
    prepended, the final state read off the end of the same padded sequence."""
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
