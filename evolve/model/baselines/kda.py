"""Kimi Delta Attention (Kimi Team, 2025, "Kimi Linear: An Expressive, Efficient Attention
Architecture").

The delta rule with a data-dependent decay per key channel:
S' = diag(a_t) S, S <- S' + beta_t k_t (v_t - S'^T k_t), log a_t = -exp(A) * softplus(low-rank(x_t)
+ dt_bias) per channel (Mamba-2's parameterisation, one A per head). Output RMS-normalised per
head and gated by sigmoid(w_g x) (Kimi Linear uses a low-rank gate; here a full projection).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from evolve.kernels import kda
from evolve.kernels.modules import RMSNorm, ShortConvolution, l2_norm

GATE_RANK = 16


class Mixer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.hidden_size, cfg.num_heads
        self.num_heads = h
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.b_proj = nn.Linear(d, h, bias=False)
        self.gk_proj = nn.Sequential(nn.Linear(d, GATE_RANK, bias=False),
                                     nn.Linear(GATE_RANK, d, bias=False))
        self.g_proj = nn.Linear(d, d, bias=False)
        # Mamba-2 style decay: A in [1, 16] per head, dt in [1e-3, 1e-1] per key channel.
        self.A_log = nn.Parameter(torch.empty(h).uniform_(1, 16).log())
        dt = torch.exp(torch.empty(d).uniform_(math.log(1e-3), math.log(1e-1)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.convs = nn.ModuleList(
            [ShortConvolution(d, cfg.conv_size) for _ in range(3)] if cfg.conv_size else []
        )
        self.o_norm = RMSNorm(d // h)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [B, T, D]
        h = self.num_heads
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.convs:
            q, k, v = (conv(t) for conv, t in zip(self.convs, (q, k, v)))
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q, k, v = (rearrange(t, "b t (h d) -> b t h d", h=h) for t in (q, k, v))
        q, k = l2_norm(q), l2_norm(k)
        beta = self.b_proj(x).sigmoid()  # [B, T, H]
        g = F.softplus(self.gk_proj(x).float() + self.dt_bias)
        g = -self.A_log.float().exp()[:, None] * rearrange(g, "b t (h d) -> b t h d", h=h)
        o, _ = kda(q, k, v, g, beta)  # g: [B, T, H, K]; o: [B, T, H, V]
        gate = rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=h)
        o = self.o_norm(o) * gate.sigmoid()
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
