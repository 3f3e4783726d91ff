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


# fla's names, with fla's signatures, for layers written against fla.modules / fla.layers.utils /
# fla.ops (evolve.model.fla_adapter rewrites their imports to these). They run on the dispatcher,
# so such a layer gets fla's kernels on CUDA and the chunked forms on CPU, like any mixer.

def l2norm(x: torch.Tensor, eps: float = 1e-6,
           output_dtype: torch.dtype | None = None) -> torch.Tensor:
    """fla.modules.l2norm.l2norm: unit length over the last dimension."""
    y = l2_norm(x, eps)
    return y if output_dtype is None else y.to(output_dtype)


class FlaRMSNorm(nn.Module):
    """fla.modules.RMSNorm: (hidden_size, elementwise_affine, bias, eps); forward(x, residual,
    prenorm) returns the normed x, or (normed, x + residual) when prenorm."""

    def __init__(self, hidden_size: int, elementwise_affine: bool = True, bias: bool = False,
                 eps: float = 1e-5, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.hidden_size, self.eps = hidden_size, eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype)) \
            if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(hidden_size, device=device, dtype=dtype)) \
            if elementwise_affine and bias else None

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()
        if self.bias is not None:
            y = y + self.bias.float()
        return y

    def _residual(self, x: torch.Tensor, residual: torch.Tensor | None,
                  residual_in_fp32: bool) -> torch.Tensor:
        if residual is None:
            return x
        return x.float() + residual.float() if residual_in_fp32 else x + residual

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                prenorm: bool = False, residual_in_fp32: bool = False):
        x = self._residual(x, residual, residual_in_fp32)
        y = self._norm(x).to(x.dtype)
        return (y, x) if prenorm else y


class FusedRMSNormGated(FlaRMSNorm):
    """fla.modules.FusedRMSNormGated: RMSNorm(x) * act(g), act swish/silu or sigmoid."""

    def __init__(self, hidden_size: int, elementwise_affine: bool = True, eps: float = 1e-5,
                 activation: str = "swish", device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(hidden_size, elementwise_affine, False, eps, device, dtype)
        if activation not in ("swish", "silu", "sigmoid"):
            raise ValueError(f"FusedRMSNormGated: activation={activation!r}; valid: swish, silu, "
                             "sigmoid")
        self.activation = activation

    def forward(self, x: torch.Tensor, g: torch.Tensor,  # type: ignore[override]
                residual: torch.Tensor | None = None, prenorm: bool = False,
                residual_in_fp32: bool = False):
        x = self._residual(x, residual, residual_in_fp32)
        gate = torch.sigmoid(g.float()) if self.activation == "sigmoid" else F.silu(g.float())
        y = (self._norm(x) * gate).to(x.dtype)
        return (y, x) if prenorm else y


class FlaShortConvolution(nn.Conv1d):
    """fla.modules.ShortConvolution: a causal depthwise nn.Conv1d (weight [D, 1, W], as fla's, so
    its parameters and initialisation match); forward(x, ..., cache, output_final_state) returns
    (y, final_state), the state in the dispatcher's [B, D, W - 1] layout, not fla's [B, D, W]."""

    def __init__(self, hidden_size: int, kernel_size: int, bias: bool = False,
                 activation: str | None = "silu", **kwargs) -> None:  # backend, use_fast_conv1d
        super().__init__(hidden_size, hidden_size, kernel_size, padding=kernel_size - 1,
                         groups=hidden_size, bias=bias, device=kwargs.get("device"),
                         dtype=kwargs.get("dtype"))
        self.hidden_size = hidden_size
        self.activation = "silu" if activation == "swish" else activation

    def forward(self, x: torch.Tensor,  # type: ignore[override]
                residual: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, cache: torch.Tensor | None = None,
                output_final_state: bool = False, cu_seqlens: torch.Tensor | None = None,
                **kwargs):
        from evolve.kernels import short_conv

        if cu_seqlens is not None:
            raise ValueError("ShortConvolution: cu_seqlens (packed sequences) is not supported")
        if mask is not None:
            x = x * mask.unsqueeze(-1)
        if cache is not None and cache.shape[-1] == self.weight.shape[-1]:
            cache = cache[..., 1:]  # fla's [B, D, W] cache: its oldest entry is never used
        y, state = short_conv(x, self.weight[:, 0], self.bias, activation=self.activation,
                              initial_state=cache, output_final_state=output_final_state)
        return (y if residual is None else y + residual), state


def get_unpad_data(attention_mask: torch.Tensor):
    """fla.layers.utils.get_unpad_data: (indices of kept tokens, cu_seqlens, longest length)."""
    lengths = attention_mask.sum(-1, dtype=torch.int32)
    indices = torch.nonzero(attention_mask.flatten(), as_tuple=False).flatten()
    cu_seqlens = F.pad(torch.cumsum(lengths, 0, dtype=torch.int32), (1, 0))
    return indices, cu_seqlens, int(lengths.max())


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """fla.layers.utils.index_first_axis: x[indices] along the first axis."""
    return x[indices]


def pad_input(hidden_states: torch.Tensor, indices: torch.Tensor, batch_size: int,
              seq_len: int) -> torch.Tensor:
    """fla.layers.utils.pad_input: scatter [N, ...] tokens back to [B, T, ...] (zeros elsewhere)."""
    out = hidden_states.new_zeros(batch_size * seq_len, *hidden_states.shape[1:])
    out[indices] = hidden_states
    return out.view(batch_size, seq_len, *hidden_states.shape[1:])


def _fla_call(op, q, k, v, *extra, scale=None, initial_state=None, output_final_state=False,
              cu_seqlens=None, head_first=False, use_qk_l2norm_in_kernel=False, **ignored):
    """Run dispatcher op `op` with fla's keyword conventions ([B, T, H, K], or [B, H, T, K] with
    fla's old head_first=True; q and k L2-normalised first when use_qk_l2norm_in_kernel)."""
    if cu_seqlens is not None:
        raise ValueError(f"{op.__name__}: cu_seqlens (packed sequences) is not supported")
    if head_first:
        q, k, v, *extra = (t.transpose(1, 2) for t in (q, k, v, *extra))
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    o, state = op(q, k, v, *extra, scale=scale, initial_state=initial_state,
                  output_final_state=output_final_state)
    return (o.transpose(1, 2) if head_first else o), state


def fla_delta_rule(q, k, v, beta, **kw):
    """fla.ops.delta_rule.{chunk,fused_chunk,fused_recurrent}_delta_rule."""
    from evolve.kernels import delta_rule

    return _fla_call(delta_rule, q, k, v, beta, **kw)


def fla_gated_delta_rule(q, k, v, g, beta, **kw):
    """fla.ops.gated_delta_rule.{chunk,fused_recurrent}_gated_delta_rule (g: log-decay)."""
    from evolve.kernels import gated_delta_rule

    return _fla_call(gated_delta_rule, q, k, v, g, beta, **kw)


def fla_gla(q, k, v, g, **kw):
    """fla.ops.gla.{chunk,fused_chunk,fused_recurrent}_gla (g: [B, T, H, K] log-decay)."""
    from evolve.kernels import gla

    return _fla_call(gla, q, k, v, g, **kw)


def fla_simple_gla(q, k, v, g=None, **kw):
    """fla.ops.simple_gla.{chunk,fused_recurrent}_simple_gla: GLA with one decay per head."""
    if g is None:
        return fla_linear_attn(q, k, v, normalize=False, **kw)
    return fla_gla(q, k, v, g.unsqueeze(-1).expand_as(q), **kw)


def fla_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False,
                    normalize=True, **kw):
    """fla.ops.linear_attn.{chunk,fused_chunk,fused_recurrent}_linear_attn; with fla's default
    normalize=True each output is divided by scale * q_t . sum_{s<=t} k_s (initial states of the
    normalised form are not supported)."""
    from evolve.kernels import linear_attn

    if normalize and initial_state is not None:
        raise ValueError("linear_attn: an initial state with normalize=True is not supported")
    o, state = _fla_call(linear_attn, q, k, v, scale=scale, initial_state=initial_state,
                         output_final_state=output_final_state, **kw)
    if not normalize:
        return o, state
    head_first = kw.get("head_first", False)
    qt, kt = (t.transpose(1, 2) if head_first else t for t in (q, k))
    s = qt.shape[-1] ** -0.5 if scale is None else scale
    z = (qt.float() * s * kt.float().cumsum(1)).sum(-1, keepdim=True) + 1e-10  # [B, T, H, 1]
    z = z.transpose(1, 2) if head_first else z
    return (o.float() / z).to(o.dtype), state
