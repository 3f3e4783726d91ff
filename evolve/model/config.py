"""The backbone's shape (torch-free, so the CLI and config loading stay light)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from evolve.model.contract import MixerConfig


@dataclass(kw_only=True)
class ModelConfig:
    """Shape of the backbone; the mixer gets the fields it needs through MixerConfig."""

    vocab_size: int = 256
    """Vocabulary size (256 for the byte-level tokenizer)."""
    hidden_size: int = 128
    """Model width D."""
    num_layers: int = 2
    """Number of blocks."""
    num_heads: int = 4
    """Heads per mixer."""
    conv_size: int = 4
    """Short causal convolution width offered to mixers (0: none)."""
    chunk_size: int = 64
    """Chunk length for chunked kernels."""
    max_seq_len: int = 2048
    """Longest training sequence."""
    intermediate_size: int | None = None
    """SwiGLU hidden width; None: 8/3 * hidden_size rounded up to a multiple of 8 (or sized by
    target_params)."""
    target_params: int | None = None
    """If set, the MLP width is chosen so that the whole model has about this many parameters,
    whatever the mixer costs (matched-size comparison)."""
    tie_embeddings: bool = True
    """Share the token embedding and the LM head."""
    init_std: float = 0.02
    """Standard deviation of the normal initialisation of linear and embedding weights."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_heads={self.num_heads}")

    def mixer_config(self, layer_idx: int) -> MixerConfig:
        return MixerConfig(hidden_size=self.hidden_size, num_heads=self.num_heads,
                           conv_size=self.conv_size, chunk_size=self.chunk_size,
                           max_seq_len=self.max_seq_len, layer_idx=layer_idx,
                           num_layers=self.num_layers)

    def default_intermediate(self) -> int:
        return 8 * math.ceil(8 * self.hidden_size / 3 / 8)
