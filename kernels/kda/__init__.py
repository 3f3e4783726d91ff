from .chunk import chunk_kda
from .naive import naive_kda

__all__ = ["chunk_kda", "naive_kda"]
