"""Mamba-2's state update (Dao & Gu, 2024, "Transformers are SSMs"), as the design space
writes it.

An additive (linear-attention) state with a data-dependent scalar decay per head:
S <- a_t S + k_t v_t^T, a_t = exp(g_t), g_t = -exp(A) * softplus(w_a x_t + dt_bias); k and q
play Mamba-2's B and C, v its x. This is GLA with one gate per head (fla's simple_gla).
Simplified against the Mamba-2 block: no dt-scaled input (the space has no such choice) and
q, k, v from separate projections with a short convolution each. Output RMS-normalised per
head, gated by silu(w_g x).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from evolve.kernels import simple_gla
from evolve.kernels.modules import GatedRMSNorm, ShortConvolution


class Mixer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.hidden_size, cfg.num_heads
        self.num_heads = h
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.a_proj = nn.Linear(d, h, bias=False)
        self.g_proj = nn.Linear(d, d, bias=False)
        # Mamba-2's decay: A in [1, 16], dt in [1e-3, 1e-1] at initialisation.
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
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias)
        o, _ = simple_gla(q, k, v, g)  # g: [B, T, H], one decay per head; o: [B, T, H, V]
        gate = rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=self.num_heads)
        o = self.o_norm(o, gate)
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
