from .chunk import chunk_simple_gla
from .naive import naive_simple_gla

__all__ = ["chunk_simple_gla", "naive_simple_gla"]
