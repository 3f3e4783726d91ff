"""Gated Linear Attention (Yang et al., 2024, "Gated Linear Attention Transformers with
Hardware-Efficient Training").

A linear-attention state with a data-dependent decay per key channel: S <- diag(a_t) S + k_t v_t^T,
log a_t = logsigmoid(low-rank(x_t)) / 16 (the normaliser keeps the decay near 1 at init).
Output RMS-normalised per head and gated by silu(w_g x).
"""

import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from evolve.kernels import gla
from evolve.kernels.modules import GatedRMSNorm, ShortConvolution

GATE_LOGIT_NORMALIZER = 16
GATE_RANK = 16


class Mixer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.hidden_size, cfg.num_heads
        self.num_heads = h
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.gk_proj = nn.Sequential(nn.Linear(d, GATE_RANK, bias=False),
                                     nn.Linear(GATE_RANK, d, bias=True))
        self.g_proj = nn.Linear(d, d, bias=False)
        self.convs = nn.ModuleList(
            [ShortConvolution(d, cfg.conv_size) for _ in range(3)] if cfg.conv_size else []
        )
        self.o_norm = GatedRMSNorm(d // h)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [B, T, D]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.convs:
            q, k, v = (conv(t) for conv, t in zip(self.convs, (q, k, v)))
        q, k, v = (rearrange(t, "b t (h d) -> b t h d", h=self.num_heads) for t in (q, k, v))
        g = F.logsigmoid(self.gk_proj(x).float()) / GATE_LOGIT_NORMALIZER
        g = rearrange(g, "b t (h d) -> b t h d", h=self.num_heads)  # [B, T, H, K]
        o, _ = gla(q, k, v, g)
        gate = rearrange(self.g_proj(x), "b t (h d) -> b t h d", h=self.num_heads)
        o = self.o_norm(o, gate)
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
