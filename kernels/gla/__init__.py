from .chunk import chunk_gla
from .naive import naive_gla

__all__ = ["chunk_gla", "naive_gla"]
