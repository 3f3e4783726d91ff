"""Causal softmax attention (Vaswani et al., 2017): the quadratic reference, not a candidate.

The backbone has no position encoding (recurrent mixers need none), so this mixer adds learned
absolute position embeddings to its input. They start small (std 0.02): at std 1 the model
stayed at chance on associative recall.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from evolve.kernels.modules import ShortConvolution


class Mixer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.hidden_size, cfg.num_heads
        self.num_heads = h
        self.pos = nn.Parameter(torch.randn(cfg.max_seq_len, d) * 0.02)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.convs = nn.ModuleList(
            [ShortConvolution(d, cfg.conv_size) for _ in range(3)] if cfg.conv_size else []
        )
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [B, T, D]
        t = x.shape[1]
        x = x + self.pos[:t].to(x.dtype)
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.convs:
            q, k, v = (conv(u) for conv, u in zip(self.convs, (q, k, v)))
        q, k, v = (rearrange(u, "b t (h d) -> b h t d", h=self.num_heads) for u in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, T, V]
        return self.o_proj(rearrange(o, "b h t d -> b t (h d)"))
