"""Linear-attention primitives for token mixers, installed as `evolve.kernels`.

    from evolve.kernels import delta_rule
    o, state = delta_rule(q, k, v, beta, output_final_state=True)  # q, k, v: [B, T, H, *]

Each op lives in its own folder with a float32 token-by-token reference (`naive.py`) and a
chunked PyTorch form (`chunk.py`); the functions here pick the implementation per call (see
`dispatch.py`: fla's kernels on CUDA, the chunked forms elsewhere, EVOLVE_KERNEL_BACKEND to force
one). Importing this package never imports fla or triton.
"""

from .dispatch import (
    BACKENDS,
    ENV_VAR,
    available_backends,
    delta_rule,
    gated_delta_rule,
    gla,
    linear_attn,
    short_conv,
)

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "available_backends",
    "delta_rule",
    "gated_delta_rule",
    "gla",
    "linear_attn",
    "short_conv",
]
