from .chunk import chunk_short_conv, conv1d_short_conv
from .naive import naive_short_conv

__all__ = ["chunk_short_conv", "conv1d_short_conv", "naive_short_conv"]
