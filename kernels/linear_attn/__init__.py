from .chunk import chunk_linear_attn
from .naive import naive_linear_attn

__all__ = ["chunk_linear_attn", "naive_linear_attn"]
