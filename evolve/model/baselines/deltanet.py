"""DeltaNet (Yang et al., 2024, "Parallelizing Linear Transformers with the Delta Rule").

The state S [K, V] per head is updated by the delta rule S <- S + beta_t k_t (v_t - S^T k_t),
which writes v_t under key k_t after erasing what the state held there; keys are L2-normalised
so that the update is a contraction. Short causal convolutions on q/k/v as in fla.
"""

import torch.nn as nn
from einops import rearrange

from evolve.kernels import delta_rule
from evolve.kernels.modules import RMSNorm, ShortConvolution, l2_norm


class Mixer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.hidden_size, cfg.num_heads
        self.num_heads = h
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.b_proj = nn.Linear(d, h, bias=False)
        self.convs = nn.ModuleList(
            [ShortConvolution(d, cfg.conv_size) for _ in range(3)] if cfg.conv_size else []
        )
        self.o_norm = RMSNorm(d // h)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [B, T, D]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.convs:
            q, k, v = (conv(t) for conv, t in zip(self.convs, (q, k, v)))
        else:
            q, k, v = q.sigmoid() * q, k.sigmoid() * k, v.sigmoid() * v
        q, k, v = (rearrange(t, "b t (h d) -> b t h d", h=self.num_heads) for t in (q, k, v))
        q, k = l2_norm(q), l2_norm(k)
        beta = self.b_proj(x).sigmoid()  # [B, T, H]
        o, _ = delta_rule(q, k, v, beta)  # [B, T, H, V]
        o = self.o_norm(o)
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
