"""Linear attention (Katharopoulos et al., 2020, "Transformers are RNNs").

Softmax replaced by a positive feature map phi(x) = elu(x) + 1: the state S <- S + phi(k_t) v_t^T
only accumulates, never forgets or overwrites. The output is RMS-normalised per head instead of
divided by phi(q)^T sum phi(k), which is more stable in training (as in fla's LinearAttention).
"""

import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from evolve.kernels import linear_attn
from evolve.kernels.modules import RMSNorm, ShortConvolution


class Mixer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg.hidden_size, cfg.num_heads
        self.num_heads = h
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.convs = nn.ModuleList(
            [ShortConvolution(d, cfg.conv_size) for _ in range(3)] if cfg.conv_size else []
        )
        self.o_norm = RMSNorm(d // h)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [B, T, D]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.convs:
            q, k, v = (conv(t) for conv, t in zip(self.convs, (q, k, v)))
        q, k, v = (rearrange(t, "b t (h d) -> b t h d", h=self.num_heads) for t in (q, k, v))
        q, k = F.elu(q) + 1, F.elu(k) + 1
        o, _ = linear_attn(q, k, v)  # [B, T, H, V]
        o = self.o_norm(o)
        return self.o_proj(rearrange(o, "b t h d -> b t (h d)"))
