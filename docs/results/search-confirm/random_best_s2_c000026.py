"""mixer 85b916fa26c3a5b5: rendered by evolve.model.render.

delta rule, softmax features, l2 q/k, fixed decay, sigmoid2 beta, short conv (width 2) on v,
sigmoid output gate, local window 128 (gate), k/v widths x0.5/x1.

MixerSpec (JSON):
{
  "update_rule": "delta",
  "feature_map": "softmax",
  "qk_norm": "l2",
  "conv_size": 2,
  "conv_targets": "v",
  "no_conv_act": "silu",
  "decay": "fixed",
  "decay_param": "mamba2",
  "gate_normalizer": 16,
  "num_householder": 1,
  "removal_key": "write_key",
  "beta": "sigmoid2",
  "out_norm": "none",
  "out_gate": "sigmoid",
  "local_path": "window",
  "local_window": 128,
  "fusion": "gate",
  "key_ratio": 0.5,
  "value_ratio": 1.0,
  "position": "none"
}
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from evolve.kernels import gated_delta_rule
from evolve.kernels.modules import ShortConvolution, l2_norm

LOCAL_WINDOW = 128


def window_attention(q, k, v, window):
    """Causal softmax attention over the last `window` tokens; q, k, v: [B, T, H, *]."""
    t = q.shape[1]
    pad = -t % window
    q, k, v = (rearrange(F.pad(u, (0, 0, 0, 0, 0, pad)), "b (n w) h d -> b h n w d", w=window)
               for u in (q, k, v))
    k = torch.cat([F.pad(k, (0, 0, 0, 0, 1, 0))[:, :, :-1], k], dim=3)  # [B, H, N, 2W, K]
    v = torch.cat([F.pad(v, (0, 0, 0, 0, 1, 0))[:, :, :-1], v], dim=3)  # [B, H, N, 2W, V]
    s = torch.einsum("bhnqd,bhnkd->bhnqk", q, k) * q.shape[-1] ** -0.5  # [B, H, N, W, 2W]
    i = torch.arange(window, device=q.device)[:, None]
    j = torch.arange(2 * window, device=q.device)[None, :] - window
    block = torch.arange(s.shape[2], device=q.device)[:, None, None]
    keep = (j <= i) & (j > i - window) & (block * window + j >= 0)  # [N, W, 2W]
    s = s.masked_fill(~keep, float("-inf"))
    o = torch.einsum("bhnqk,bhnkd->bhnqd", s.softmax(-1), v)
    return rearrange(o, "b h n w d -> b (n w) h d")[:, :t]


class Mixer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.hidden_size, cfg.num_heads
        self.num_heads = h
        self.q_proj = nn.Linear(d, d // 2, bias=False)
        self.k_proj = nn.Linear(d, d // 2, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.b_proj = nn.Linear(d, h, bias=False)
        self.g_proj = nn.Linear(d, d, bias=False)
        self.register_buffer("log_decay", torch.log1p(-torch.exp2(-5.0 - torch.arange(h, dtype=torch.float32))), persistent=False)
        self.convs = nn.ModuleList([ShortConvolution(d, 2) for _ in range(1)])
        self.f_proj = nn.Linear(d, h, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [B, T, D]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        v = self.convs[0](v)
        q, k = F.silu(q), F.silu(k)
        q, k, v = (rearrange(u, "b t (h d) -> b t h d", h=self.num_heads) for u in (q, k, v))
        o_local = window_attention(q, k, v, LOCAL_WINDOW)  # [B, T, H, V]
        q, k = q.softmax(-1), k.softmax(-1)
        q, k = l2_norm(q), l2_norm(k)
        beta = 2 * self.b_proj(x).sigmoid()  # in (0, 2): negative eigenvalues
        g = self.log_decay.expand(*x.shape[:2], -1)  # [B, T, H]
        o, _ = gated_delta_rule(q, k, v, g, beta)  # [B, T, H, V]
        o = o + self.f_proj(x).sigmoid().unsqueeze(-1) * o_local
        gate = rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=self.num_heads)
        o = o * gate.sigmoid()
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
