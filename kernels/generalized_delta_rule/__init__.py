from .chunk import chunk_generalized_delta_rule
from .naive import naive_generalized_delta_rule

__all__ = ["chunk_generalized_delta_rule", "naive_generalized_delta_rule"]
