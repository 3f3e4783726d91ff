from .chunk import chunk_gated_delta_rule
from .naive import naive_gated_delta_rule

__all__ = ["chunk_gated_delta_rule", "naive_gated_delta_rule"]
