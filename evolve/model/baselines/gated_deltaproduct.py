"""Gated DeltaProduct (Siems et al., 2025, "DeltaProduct: Improving State-Tracking in Linear
RNNs via Householder Products"), with n_h = 2.

Per token, a scalar decay a_t = exp(g_t) per head (Mamba-2's parameterisation, as Gated
DeltaNet), then two delta steps, each with its own key, value and strength:
S <- S + beta_{t,j} k_{t,j} (v_{t,j} - S^T k_{t,j}), j = 1, 2, a product of two generalised
Householder transitions I - beta k k^T. beta = 2 sigmoid(w x) lies in (0, 2), so a transition
may have a negative eigenvalue (the paper's state-tracking setting). Output RMS-normalised per
head and gated by silu(w_g x).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from evolve.kernels import gated_delta_product
from evolve.kernels.modules import GatedRMSNorm, ShortConvolution, l2_norm

NUM_HOUSEHOLDER = 2


class Mixer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h, n = cfg.hidden_size, cfg.num_heads, NUM_HOUSEHOLDER
        self.num_heads = h
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, n * d, bias=False)  # one key and value per step
        self.v_proj = nn.Linear(d, n * d, bias=False)
        self.b_proj = nn.Linear(d, n * h, bias=False)
        self.a_proj = nn.Linear(d, h, bias=False)
        self.g_proj = nn.Linear(d, d, bias=False)
        # Mamba-2 style decay: A in [1, 16], dt in [1e-3, 1e-1] at initialisation.
        self.A_log = nn.Parameter(torch.empty(h).uniform_(1, 16).log())
        dt = torch.exp(torch.empty(h).uniform_(math.log(1e-3), math.log(1e-1)))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.convs = nn.ModuleList(
            [ShortConvolution(w, cfg.conv_size) for w in (d, n * d, n * d)] if cfg.conv_size
            else []
        )
        self.o_norm = GatedRMSNorm(d // h)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [B, T, D]
        h, n = self.num_heads, NUM_HOUSEHOLDER
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.convs:
            q, k, v = (conv(t) for conv, t in zip(self.convs, (q, k, v)))
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q = rearrange(q, "b t (h d) -> b t h d", h=h)
        # step j of token t at position t * n + j: [B, T * n, H, *]
        k, v = (rearrange(t, "b t (n h d) -> b (t n) h d", n=n, h=h) for t in (k, v))
        q, k = l2_norm(q), l2_norm(k)
        beta = rearrange(2 * self.b_proj(x).sigmoid(), "b t (n h) -> b (t n) h", n=n)
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias)
        o, _ = gated_delta_product(q, k, v, g, beta, num_householder=n)  # [B, T, H, V]
        gate = rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=h)
        o = self.o_norm(o, gate)
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
