from .chunk import chunk_gated_delta_product
from .naive import naive_gated_delta_product

__all__ = ["chunk_gated_delta_product", "naive_gated_delta_product"]
