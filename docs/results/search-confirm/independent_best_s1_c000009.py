"""mixer 6659be1b2a5ac658: rendered by evolve.model.render.

delta rule, relu features, l2 q/k, scalar decay (mamba2), sigmoid beta, short conv (width 4) on
qkv, rmsnorm output, silu output gate.

MixerSpec (JSON):
{
  "update_rule": "delta",
  "feature_map": "relu",
  "qk_norm": "l2",
  "conv_size": 4,
  "conv_targets": "qkv",
  "no_conv_act": "none",
  "decay": "scalar",
  "decay_param": "mamba2",
  "gate_normalizer": 16,
  "num_householder": 1,
  "removal_key": "separate",
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

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from evolve.kernels import generalized_delta_rule
from evolve.kernels.modules import GatedRMSNorm, ShortConvolution, l2_norm


class Mixer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.hidden_size, cfg.num_heads
        self.num_heads = h
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.b_proj = nn.Linear(d, d, bias=False)
        self.k_k = nn.Parameter(torch.full((d,), 0.85))
        self.k_a = nn.Parameter(torch.ones(d))
        self.a_proj = nn.Linear(d, h, bias=False)
        self.g_proj = nn.Linear(d, d, bias=False)
        # Mamba-2 style decay: A in [1, 16], dt in [1e-3, 1e-1] at initialisation.
        self.A_log = nn.Parameter(torch.empty(h).uniform_(1, 16).log())
        dt = torch.exp(torch.empty(h).uniform_(math.log(1e-3), math.log(1e-1)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.convs = nn.ModuleList([ShortConvolution(d, 4) for _ in range(3)])
        self.o_norm = GatedRMSNorm(d // h)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [B, T, D]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = (conv(u) for conv, u in zip(self.convs, (q, k, v)))
        q, k, v = (rearrange(u, "b t (h d) -> b t h d", h=self.num_heads) for u in (q, k, v))
        q, k = F.relu(q), F.relu(k)
        q, k = l2_norm(q), l2_norm(k)
        beta = rearrange(self.b_proj(x).sigmoid(), "b t (h d) -> b t h d", h=self.num_heads)  # [B, T, H, K]
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias)
        g = g.unsqueeze(-1).expand_as(q)  # one decay per head, on every channel
        k_k, k_a = (rearrange(p, "(h d) -> h d", h=self.num_heads) for p in (self.k_k, self.k_a))
        kk = l2_norm(k * k_k)  # [B, T, H, K]: the removal key
        k = k * (1 + (beta - 1) * k_a)  # the write key
        o, _ = generalized_delta_rule(q, k, v, -kk, kk * beta, g)  # [B, T, H, V]
        gate = rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=self.num_heads)
        o = self.o_norm(o, gate)
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
