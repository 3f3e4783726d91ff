"""mixer f02a0311f0a85b49: rendered by evolve.model.render.

delta rule, l2 q/k, sigmoid beta, short conv (width 4) on qkv, rmsnorm output, silu output gate.

MixerSpec (JSON):
{
  "update_rule": "delta",
  "feature_map": "identity",
  "qk_norm": "l2",
  "conv_size": 4,
  "conv_targets": "qkv",
  "no_conv_act": "none",
  "decay": "none",
  "decay_param": "mamba2",
  "gate_normalizer": 16,
  "num_householder": 1,
  "removal_key": "write_key",
  "beta": "sigmoid",
  "out_norm": "rmsnorm",
  "out_gate": "silu",
  "local_path": "none",
  "local_window": 64,
  "fusion": "sum",
  "key_ratio": 1.0,
  "value_ratio": 1.0,
  "position": "none"
}
"""

import torch.nn as nn
from einops import rearrange

from evolve.kernels import delta_rule
from evolve.kernels.modules import GatedRMSNorm, ShortConvolution, l2_norm


class Mixer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.hidden_size, cfg.num_heads
        self.num_heads = h
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.b_proj = nn.Linear(d, h, bias=False)
        self.g_proj = nn.Linear(d, d, bias=False)
        self.convs = nn.ModuleList([ShortConvolution(d, 4) for _ in range(3)])
        self.o_norm = GatedRMSNorm(d // h)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [B, T, D]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = (conv(u) for conv, u in zip(self.convs, (q, k, v)))
        q, k, v = (rearrange(u, "b t (h d) -> b t h d", h=self.num_heads) for u in (q, k, v))
        q, k = l2_norm(q), l2_norm(k)
        beta = self.b_proj(x).sigmoid()  # [B, T, H]
        o, _ = delta_rule(q, k, v, beta)  # [B, T, H, V]
        gate = rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=self.num_heads)
        o = self.o_norm(o, gate)
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
