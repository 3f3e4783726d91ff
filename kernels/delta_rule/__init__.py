from .chunk import chunk_delta_rule
from .naive import naive_delta_rule

__all__ = ["chunk_delta_rule", "naive_delta_rule"]
