"""The public kernel functions: each call picks an implementation (a backend) and runs it.

Backends:
- "naive": the float32 token-by-token references (kernels/<op>/naive.py); slow, for checking.
- "chunk": the chunked PyTorch forms (kernels/<op>/chunk.py); any device, the CPU default.
- "fla":   flash-linear-attention's Triton chunk kernels (evolve/kernels/fla_ops.py); CUDA only.
By default a call on CUDA tensors uses fla when it imports and its kernel can serve the call
(fla_ops.unsupported lists the known failures), and "chunk" otherwise, with a warning once per
reason. The environment variable EVOLVE_KERNEL_BACKEND=naive|chunk|fla forces one (read at
every call, so a test or a job can set it late); "auto" or unset means the default.
"""

import importlib.util
import os
import warnings

import torch

from . import fla_ops
from .delta_rule.chunk import chunk_delta_rule
from .delta_rule.naive import naive_delta_rule
from .gated_delta_rule.chunk import chunk_gated_delta_rule
from .gated_delta_rule.naive import naive_gated_delta_rule
from .gated_delta_product.chunk import chunk_gated_delta_product
from .gated_delta_product.naive import naive_gated_delta_product
from .generalized_delta_rule.chunk import chunk_generalized_delta_rule
from .generalized_delta_rule.naive import naive_generalized_delta_rule
from .gla.chunk import chunk_gla
from .gla.naive import naive_gla
from .kda.chunk import chunk_kda
from .kda.naive import naive_kda
from .linear_attn.chunk import chunk_linear_attn
from .linear_attn.naive import naive_linear_attn
from .short_conv.chunk import chunk_short_conv
from .simple_gla.chunk import chunk_simple_gla
from .simple_gla.naive import naive_simple_gla
from .short_conv.naive import check_activation, naive_short_conv

ENV_VAR = "EVOLVE_KERNEL_BACKEND"
BACKENDS = ("naive", "chunk", "fla")
OPS = ("linear_attn", "delta_rule", "gated_delta_rule", "gla", "short_conv", "kda",
       "gated_delta_product", "generalized_delta_rule", "simple_gla")
"""The public kernel functions of this module, one per op folder of kernels/."""

# None: not tried yet; "": fla imported; otherwise the import error, shown when fla is forced
_fla_import_error: str | None = None
# reasons for not using fla that were already warned about (once each per process)
_warned: set[str] = set()


def available_backends() -> list[str]:
    """The backends usable in this process. "fla" is listed when fla and triton are installed and
    CUDA is available; this looks the packages up without importing them."""
    found = ["naive", "chunk"]
    if (
        torch.cuda.is_available()
        and importlib.util.find_spec("fla") is not None
        and importlib.util.find_spec("triton") is not None
    ):
        found.append("fla")
    return found


def _fla_imports() -> bool:
    global _fla_import_error
    if _fla_import_error is None:
        try:
            import fla.modules.causal_conv1d  # noqa: F401
            import fla.ops  # noqa: F401
            _fla_import_error = ""
        except Exception as exc:  # any failure (missing triton, bad CUDA setup) means "no fla"
            _fla_import_error = f"{type(exc).__name__}: {exc}"
    return _fla_import_error == ""


def forced_backend() -> str | None:
    """The backend named by EVOLVE_KERNEL_BACKEND, or None for the default choice."""
    raw = os.environ.get(ENV_VAR, "")
    value = raw.strip().lower()
    if value in ("", "auto"):
        return None
    if value not in BACKENDS:
        raise ValueError(
            f"{ENV_VAR}={raw!r} is not a kernel backend; valid values: "
            f"{', '.join(BACKENDS)} (or auto / unset for the default)"
        )
    return value


_used: dict[str, dict[str, str]] = {}
"""op -> {backend: why}, for every call since the last `reset_used_backends()`."""


def used_backends() -> dict[str, dict[str, str]]:
    """Which backend each op used since the last reset, and why (a training's result file
    names them, so a GPU run says whether it used fla)."""
    return {op: dict(found) for op, found in sorted(_used.items())}


def reset_used_backends() -> None:
    _used.clear()


def planned_backends(device: str, head_dim: int = 32, num_heads: int = 2
                     ) -> dict[str, tuple[str, str]]:
    """op -> (backend, why) that a training step on `device` would use now (heads of
    `head_dim`, gradients on), without running a kernel or warning: what `evolve doctor` and
    tools/bench/gpu_check.py report."""
    heads = torch.zeros(1, 64, num_heads, head_dim, device=device)  # [B, T, H, K]
    width = torch.zeros(1, 64, num_heads * head_dim, device=device)  # [B, T, D]
    with torch.enable_grad():
        return {op: _select(op, width if op == "short_conv" else heads,
                            None if op == "short_conv" else heads) for op in OPS}


def select_backend(op: str, x: torch.Tensor, v: torch.Tensor | None = None) -> str:
    """The backend a call of `op` on tensors like `x` (and values `v`) uses now."""
    backend, why = _select(op, x, v)
    # A fallback from fla on CUDA is worth one warning per reason (forcing chunk is not).
    if backend == "chunk" and x.is_cuda and forced_backend() is None and why not in _warned:
        _warned.add(why)
        warnings.warn(f"evolve.kernels.{op}: {why}; using the chunked PyTorch form",
                      stacklevel=3)
    _used.setdefault(op, {}).setdefault(backend, why)
    return backend


def _select(op: str, x: torch.Tensor, v: torch.Tensor | None) -> tuple[str, str]:
    forced = forced_backend()
    if forced is not None and forced != "fla":
        return forced, f"{ENV_VAR}={forced}"
    if forced == "fla" and not x.is_cuda:
        raise RuntimeError(
            f"{ENV_VAR}=fla needs CUDA tensors (got {x.device}); fla's chunk kernels do not "
            "run on CPU: use chunk or naive there"
        )
    if not x.is_cuda:
        return "chunk", f"{x.device.type} tensors"
    if not _fla_imports():
        reason = f"fla does not import ({_fla_import_error})"
    else:
        needs_grad = torch.is_grad_enabled()
        reason = fla_ops.unsupported(op, x, x if v is None else v, needs_grad)
    if reason is None:
        return "fla", "CUDA tensors and fla imports"
    if forced == "fla":
        raise RuntimeError(f"{ENV_VAR}=fla, but {reason}")
    return "chunk", reason


def _check_qkv(op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or q.shape != k.shape:
        raise ValueError(
            f"{op}: q and k must both be [B, T, H, K]; got q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"{op}: v must be [B, T, H, V] with q's B, T, H; got v {tuple(v.shape)}"
                         f" for q {tuple(q.shape)}")


def _check_shape(
    op: str, name: str, x: torch.Tensor | None, shape: tuple[int, ...], text: str
) -> None:
    if x is not None and tuple(x.shape) != shape:
        raise ValueError(f"{op}: {name} must be {text} = {shape}; got {tuple(x.shape)}")


def _check_state(
    op: str, initial_state: torch.Tensor | None, q: torch.Tensor, v: torch.Tensor
) -> None:
    B, _, H, K = q.shape
    _check_shape(op, "initial_state", initial_state, (B, H, K, v.shape[-1]), "[B, H, K, V]")


def linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False):
    """Causal linear attention without normalisation (feature maps are the caller's):
    S_t = S_{t-1} + k_t v_t^T;  o_t = scale * S_t^T q_t.

    q, k: [B, T, H, K]; v: [B, T, H, V]; scale default K ** -0.5; initial_state [B, H, K, V].
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] float32 or None).
    """
    _check_qkv("linear_attn", q, k, v)
    _check_state("linear_attn", initial_state, q, v)
    impl = {"naive": naive_linear_attn, "chunk": chunk_linear_attn, "fla": fla_ops.linear_attn}
    return impl[select_backend("linear_attn", q, v)](
        q, k, v, scale=scale, initial_state=initial_state, output_final_state=output_final_state
    )


def delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False):
    """The delta rule (DeltaNet): u_t = beta_t (v_t - S_{t-1}^T k_t); S_t = S_{t-1} + k_t u_t^T;
    o_t = scale * S_t^T q_t.

    q, k: [B, T, H, K] (k L2-normalised by the caller); v: [B, T, H, V]; beta: [B, T, H].
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] float32 or None).
    """
    _check_qkv("delta_rule", q, k, v)
    _check_shape("delta_rule", "beta", beta, tuple(q.shape[:3]), "[B, T, H]")
    _check_state("delta_rule", initial_state, q, v)
    impl = {"naive": naive_delta_rule, "chunk": chunk_delta_rule, "fla": fla_ops.delta_rule}
    return impl[select_backend("delta_rule", q, v)](
        q, k, v, beta, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state,
    )


def gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """The gated delta rule (Gated DeltaNet): the delta rule on the decayed state exp(g_t) S_{t-1}.

    q, k: [B, T, H, K] (k L2-normalised by the caller); v: [B, T, H, V];
    g: [B, T, H] log-decay (<= 0); beta: [B, T, H].
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] float32 or None).
    """
    _check_qkv("gated_delta_rule", q, k, v)
    _check_shape("gated_delta_rule", "g", g, tuple(q.shape[:3]), "[B, T, H]")
    _check_shape("gated_delta_rule", "beta", beta, tuple(q.shape[:3]), "[B, T, H]")
    _check_state("gated_delta_rule", initial_state, q, v)
    impl = {
        "naive": naive_gated_delta_rule,
        "chunk": chunk_gated_delta_rule,
        "fla": fla_ops.gated_delta_rule,
    }
    return impl[select_backend("gated_delta_rule", q, v)](
        q, k, v, g, beta, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state,
    )


def gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False):
    """Gated linear attention: S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T; o_t = scale * S_t^T q_t.

    q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H, K] log-decay (<= 0) per key channel.
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] float32 or None).
    """
    _check_qkv("gla", q, k, v)
    _check_shape("gla", "g", g, tuple(q.shape), "[B, T, H, K]")
    _check_state("gla", initial_state, q, v)
    impl = {"naive": naive_gla, "chunk": chunk_gla, "fla": fla_ops.gla}
    return impl[select_backend("gla", q, v)](
        q, k, v, g, scale=scale, initial_state=initial_state, output_final_state=output_final_state
    )


def simple_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False):
    """Simple GLA, one decay per head (Mamba-2's state update): S_t = exp(g_t) S_{t-1} +
    k_t v_t^T; o_t = scale * S_t^T q_t.

    q, k: [B, T, H, K]; v: [B, T, H, V]; g: [B, T, H] log-decay (<= 0).
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] float32 or None).
    """
    _check_qkv("simple_gla", q, k, v)
    _check_shape("simple_gla", "g", g, tuple(q.shape[:3]), "[B, T, H]")
    _check_state("simple_gla", initial_state, q, v)
    impl = {"naive": naive_simple_gla, "chunk": chunk_simple_gla, "fla": fla_ops.simple_gla}
    return impl[select_backend("simple_gla", q, v)](
        q, k, v, g, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state,
    )


def kda(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
    """Kimi Delta Attention: the gated delta rule with a decay per key channel,
    S' = diag(exp(g_t)) S_{t-1}; u_t = beta_t (v_t - S'^T k_t); S_t = S' + k_t u_t^T.

    q, k: [B, T, H, K] (k L2-normalised by the caller); v: [B, T, H, V];
    g: [B, T, H, K] log-decay (<= 0); beta: [B, T, H].
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] float32 or None).
    """
    _check_qkv("kda", q, k, v)
    _check_shape("kda", "g", g, tuple(q.shape), "[B, T, H, K]")
    _check_shape("kda", "beta", beta, tuple(q.shape[:3]), "[B, T, H]")
    _check_state("kda", initial_state, q, v)
    impl = {"naive": naive_kda, "chunk": chunk_kda, "fla": fla_ops.kda}
    return impl[select_backend("kda", q, v)](
        q, k, v, g, beta, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state,
    )


def gated_delta_product(q, k, v, g, beta, num_householder=2, scale=None, initial_state=None,
                        output_final_state=False):
    """Gated DeltaProduct: per token, the decay exp(g_t), then `num_householder` delta-rule
    steps (Householder-like transitions I - beta k k^T), then the read-out o_t = S_t^T q_t.

    q: [B, T, H, K]; k: [B, T * n, H, K] (L2-normalised; step j of token t at t * n + j);
    v: [B, T * n, H, V]; beta: [B, T * n, H] (in (0, 2) for negative eigenvalues);
    g: [B, T, H] log-decay (<= 0) or None (no decay).
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] float32 or None).
    """
    n = num_householder
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"gated_delta_product: num_householder={n!r} must be an integer >= 1")
    B, T, H, K = q.shape if q.dim() == 4 else (None,) * 4
    steps = (B, None if T is None else T * n, H)
    _check_shape("gated_delta_product", "k", k, (*steps, K), f"[B, T * {n}, H, K]")
    if v.dim() != 4 or tuple(v.shape[:3]) != steps:
        raise ValueError(f"gated_delta_product: v must be [B, T * {n}, H, V] = {steps} + (V,); "
                         f"got {tuple(v.shape)}")
    _check_shape("gated_delta_product", "beta", beta, steps, f"[B, T * {n}, H]")
    _check_shape("gated_delta_product", "g", g, tuple(q.shape[:3]), "[B, T, H]")
    _check_state("gated_delta_product", initial_state, q, v)
    impl = {"naive": naive_gated_delta_product, "chunk": chunk_gated_delta_product,
            "fla": fla_ops.gated_delta_product}
    return impl[select_backend("gated_delta_product", q, v)](
        q, k, v, g, beta, num_householder=n, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state,
    )


def generalized_delta_rule(q, k, v, a, b, gk, scale=None, initial_state=None,
                           output_final_state=False):
    """The generalized delta rule (a diagonal-plus-low-rank transition, RWKV-7):
    S_t = diag(exp(gk_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T; o_t = scale * S_t^T q_t.

    q, k, a, b: [B, T, H, K]; v: [B, T, H, V]; gk: [B, T, H, K] log-decay (<= 0).
    RWKV-7: a = -kk (unit removal key), b = kk * iclr (in-context learning rate in (0, 1)).
    Returns (o [B, T, H, V] in v's dtype, final state [B, H, K, V] float32 or None).
    """
    _check_qkv("generalized_delta_rule", q, k, v)
    for name, x in (("a", a), ("b", b), ("gk", gk)):
        _check_shape("generalized_delta_rule", name, x, tuple(q.shape), "[B, T, H, K]")
    _check_state("generalized_delta_rule", initial_state, q, v)
    impl = {"naive": naive_generalized_delta_rule, "chunk": chunk_generalized_delta_rule,
            "fla": fla_ops.generalized_delta_rule}
    return impl[select_backend("generalized_delta_rule", q, v)](
        q, k, v, a, b, gk, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state,
    )


def short_conv(
    x, weight, bias=None, activation="silu", initial_state=None, output_final_state=False
):
    """Causal depthwise convolution over time: y_t = act(bias + sum_w weight[:, w] x_{t-W+1+w}).

    x: [B, T, D]; weight: [D, W] (weight[:, -1] meets x_t); bias: [D] or None;
    activation: "silu" or None; initial_state: [B, D, W - 1], the inputs before x_0, oldest first.
    Returns (y [B, T, D] in x's dtype, final state [B, D, W - 1] in x's dtype or None).
    """
    check_activation(activation)
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[-1]:
        raise ValueError(
            f"short_conv: x must be [B, T, D] and weight [D, W]; got x {tuple(x.shape)}, "
            f"weight {tuple(weight.shape)}"
        )
    B, _, D = x.shape
    W = weight.shape[1]
    _check_shape("short_conv", "bias", bias, (D,), "[D]")
    _check_shape("short_conv", "initial_state", initial_state, (B, D, W - 1), "[B, D, W - 1]")
    impl = {"naive": naive_short_conv, "chunk": chunk_short_conv, "fla": fla_ops.short_conv}
    return impl[select_backend("short_conv", x)](
        x, weight, bias=bias, activation=activation, initial_state=initial_state,
        output_final_state=output_final_state,
    )
