"""The fixed backbone language model with a pluggable token mixer.

    model = LanguageModel(ModelConfig(vocab_size=256, hidden_size=128, num_layers=2), mixer_cls)
    logits = model(tokens)            # tokens [B, T] long -> logits [B, T, V]

Pre-norm blocks: x + Mixer(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); final RMSNorm, LM head.
Everything but the mixer is the same for every candidate, so scores compare mixers alone.
`size_to_target` picks the MLP width so that models with different mixers have matched size.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from evolve.kernels.modules import RMSNorm
from evolve.model.config import ModelConfig
from evolve.model.contract import build_mixer

__all__ = ["LanguageModel", "ModelConfig", "count_params", "mixer_params", "size_to_target"]


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two matmuls on the weight's row halves rather than one and .chunk(2, -1): the halves
        # come out contiguous, so silu(gate) * up and its backward run on dense tensors and the
        # backward needs no cat of the two gradients (~10% of the MLP's time at the tiny preset).
        # Same parameter (and checkpoint layout) as a single gate_up projection.
        w = self.gate_up.weight
        hidden = w.shape[0] // 2
        gate, up = F.linear(x, w[:hidden]), F.linear(x, w[hidden:])
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, mixer: nn.Module, intermediate: int):
        super().__init__()
        self.mixer_norm = RMSNorm(cfg.hidden_size)
        self.mixer = mixer
        self.mlp_norm = RMSNorm(cfg.hidden_size)
        self.mlp = SwiGLU(cfg.hidden_size, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.mixer_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig, mixer_cls: type, source: str = "mixer"):
        super().__init__()
        if cfg.target_params is not None and cfg.intermediate_size is None:
            cfg = size_to_target(cfg, mixer_cls, source)
        self.cfg = cfg
        intermediate = cfg.intermediate_size or cfg.default_intermediate()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(
            Block(cfg, build_mixer(mixer_cls, cfg.mixer_config(i), source), intermediate)
            for i in range(cfg.num_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self._init_backbone()
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def _init_backbone(self) -> None:
        # Mixers own their initialisation; only the backbone's weights are reset here, so a
        # candidate's deliberate init (decay ranges, position tables) survives.
        std = self.cfg.init_std
        nn.init.normal_(self.embed.weight, std=std)
        nn.init.normal_(self.head.weight, std=std)
        for block in self.blocks:
            nn.init.normal_(block.mlp.gate_up.weight, std=std)
            # Scaled residual-branch init (GPT-2) keeps the residual stream's variance flat.
            nn.init.normal_(block.mlp.down.weight, std=std / math.sqrt(2 * self.cfg.num_layers))

    activation_checkpointing = False
    """Recompute each block in backward instead of keeping its activations (set by the trainer
    from runtime.activation_checkpointing)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)  # [B, T, D]
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(self.norm(x))  # [B, T, V]


def count_params(module: nn.Module) -> int:
    """Distinct trainable parameters (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def mixer_params(cfg: ModelConfig, mixer_cls: type, source: str = "mixer") -> int:
    """Parameters of all the mixers of a model, built on the meta device (no memory, no time)."""
    with torch.device("meta"):
        return sum(count_params(build_mixer(mixer_cls, cfg.mixer_config(i), source))
                   for i in range(cfg.num_layers))


def size_to_target(cfg: ModelConfig, mixer_cls: type, source: str = "mixer") -> ModelConfig:
    """Choose the SwiGLU width so the model has about `cfg.target_params` parameters."""
    assert cfg.target_params is not None
    d, layers = cfg.hidden_size, cfg.num_layers
    fixed = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2) + d * (2 * layers + 1)
    budget = cfg.target_params - fixed - mixer_params(cfg, mixer_cls, source)
    per_unit = 3 * d * layers  # one unit of SwiGLU width costs gate + up + down
    width = budget // per_unit
    if width < 8:
        raise ValueError(
            f"target_params={cfg.target_params} leaves no room for the MLP: the mixer alone "
            f"has {mixer_params(cfg, mixer_cls, source)} parameters and embeddings/norms "
            f"{fixed}; raise target_params or shrink the mixer"
        )
    return replace(cfg, intermediate_size=int(width))
