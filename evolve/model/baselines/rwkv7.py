"""RWKV-7 "Goose" (Peng et al., 2025, "RWKV-7 Goose with Expressive Dynamic State Evolution"):
the generalized delta rule.

S <- diag(w_t) S - kk_t (kk_t * a_t)^T S + k_t v_t^T (in fla's [K, V] state layout): a vector
decay w_t = exp(-e^{-1/2} sigmoid(low-rank(x_t))) in [0.55, 1], a unit removal key
kk = l2(k * k_k) scaled per channel by the in-context learning rate a_t = sigmoid(w_a x_t), and
a write key k (1 + (a - 1) k_a) distinct from it. Simplified against RWKV-7: q, k, v from
projections with a short convolution instead of token shift, no value residual across layers,
no bonus term; unit q and k as the space's delta rules have. Output RMS-normalised per head and
gated by sigmoid(w_g x).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from evolve.kernels import generalized_delta_rule
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
        self.b_proj = nn.Linear(d, d, bias=False)  # in-context learning rate, per channel
        self.k_k = nn.Parameter(torch.full((d,), 0.85))  # RWKV-7's initial values
        self.k_a = nn.Parameter(torch.ones(d))
        self.gk_proj = nn.Sequential(nn.Linear(d, GATE_RANK, bias=False),
                                     nn.Linear(GATE_RANK, d, bias=True))
        self.g_proj = nn.Linear(d, d, bias=False)
        self.convs = nn.ModuleList(
            [ShortConvolution(d, cfg.conv_size) for _ in range(3)] if cfg.conv_size else []
        )
        self.o_norm = RMSNorm(d // h)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [B, T, D]
        h = self.num_heads
        heads = lambda t: rearrange(t, "b t (h d) -> b t h d", h=h)  # noqa: E731
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.convs:
            q, k, v = (conv(t) for conv, t in zip(self.convs, (q, k, v)))
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q, k, v = heads(q), heads(k), heads(v)
        q, k = l2_norm(q), l2_norm(k)
        a = heads(self.b_proj(x).sigmoid())  # [B, T, H, K]: in-context learning rate
        g = heads(-math.exp(-0.5) * self.gk_proj(x).float().sigmoid())  # log-decay [B, T, H, K]
        k_k, k_a = (rearrange(p, "(h d) -> h d", h=h) for p in (self.k_k, self.k_a))
        kk = l2_norm(k * k_k)  # the removal key
        k = k * (1 + (a - 1) * k_a)  # the write key
        o, _ = generalized_delta_rule(q, k, v, -kk, kk * a, g)  # [B, T, H, V]
        gate = heads(self.g_proj(x))
        o = self.o_norm(o) * gate.sigmoid()
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
