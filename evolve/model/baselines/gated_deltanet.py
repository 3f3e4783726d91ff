"""Gated DeltaNet (Yang, Kautz & Hatamizadeh, 2025, "Gated Delta Networks").

The delta rule with a data-dependent scalar decay per head: S <- a_t S + beta_t k_t (v_t - a_t
S^T k_t), a_t = exp(g_t), g_t = -exp(A) * softplus(w_a x_t + dt_bias) as in Mamba-2. Output is
RMS-normalised per head and gated by silu(w_g x).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from evolve.kernels import gated_delta_rule
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
        self.a_proj = nn.Linear(d, h, bias=False)
        self.g_proj = nn.Linear(d, d, bias=False)
        # Mamba-2 style decay: A in [1, 16], dt in [1e-3, 1e-1] at initialisation.
        self.A_log = nn.Parameter(torch.empty(h).uniform_(1, 16).log())
        dt = torch.exp(torch.empty(h).uniform_(math.log(1e-3), math.log(1e-1)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.convs = nn.ModuleList(
            [ShortConvolution(d, cfg.conv_size) for _ in range(3)] if cfg.conv_size else []
        )
        self.o_norm = GatedRMSNorm(d // h)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [B, T, D]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.convs:
            q, k, v = (conv(t) for conv, t in zip(self.convs, (q, k, v)))
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q, k, v = (rearrange(t, "b t (h d) -> b t h d", h=self.num_heads) for t in (q, k, v))
        q, k = l2_norm(q), l2_norm(k)
        beta = self.b_proj(x).sigmoid()  # [B, T, H]
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias)
        o, _ = gated_delta_rule(q, k, v, g, beta)  # [B, T, H, V]
        gate = rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=self.num_heads)
        o = self.o_norm(o, gate)
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
