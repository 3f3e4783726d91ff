"""Linear-attention primitives for token mixers, installed as `evolve.kernels`.

    from evolve.kernels import delta_rule
    o, state = delta_rule(q, k, v, beta, output_final_state=True)  # q, k, v: [B, T, H, *]

Each op lives in its own folder with a float32 token-by-token reference (`naive.py`) and a
chunked PyTorch form (`chunk.py`); the functions here pick the implementation per call (see
`dispatch.py`: fla's kernels on CUDA, the chunked forms elsewhere, EVOLVE_KERNEL_BACKEND to force
one). Importing this package never imports fla or triton.

The op folders live in the repository's top-level `kernels/<op>/` (installed as
`evolve.kernels.<op>` by setup.cfg's package_dir); the dispatcher and the building blocks live
here. That folder has no `__init__.py` on purpose: it must not shadow the `kernels` distribution
on PyPI (transformers imports it) when Python runs from the repository root.
"""

from pathlib import Path as _Path

# From a source checkout without an install (PYTHONPATH=<checkout>, e.g. on a bare GPU node),
# find the op folders beside the package. Installed copies hold them here already; the
# setup.cfg test keeps this from ever adding site-packages' own `kernels` distribution.
_checkout = _Path(__file__).resolve().parents[2]
if (_checkout / "setup.cfg").is_file() and (_checkout / "kernels" / "delta_rule").is_dir():
    __path__.append(str(_checkout / "kernels"))

from .dispatch import (
    BACKENDS,
    OPS,
    ENV_VAR,
    available_backends,
    delta_rule,
    gated_delta_product,
    gated_delta_rule,
    generalized_delta_rule,
    gla,
    kda,
    linear_attn,
    short_conv,
    simple_gla,
)

__all__ = [
    "BACKENDS",
    "OPS",
    "ENV_VAR",
    "available_backends",
    "delta_rule",
    "gated_delta_product",
    "gated_delta_rule",
    "generalized_delta_rule",
    "gla",
    "kda",
    "linear_attn",
    "short_conv",
    "simple_gla",
]
