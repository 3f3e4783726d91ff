"""The gates that run the candidate: interface, smoke, causality and params (cost: cost_gate.py).

They run only inside the sandboxed child of `evolve.gates.sandbox`, after its isolation is in place;
each takes a `Context` and returns a `Verdict`. Every call into candidate code goes through
`call`, which turns any exception into a message naming the candidate's line.
"""

from __future__ import annotations

import copy
import hashlib
import linecache
import sys
import traceback
import types
from typing import Any, Callable

import torch
import torch.nn as nn

from evolve.gates.check import Verdict
from evolve.model.contract import MixerConfig
from evolve.gates.static import CONTRACT, Context

DTYPE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FORWARD_SEED = 1234
CandidateError = (Exception, SystemExit, GeneratorExit)


def describe(exc: BaseException, ctx: Context) -> str:
    """`mixer.py:23 in forward: \\`code\\`: RuntimeError: ...` (the candidate's deepest frame)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(ctx.path)]
    text = f"{type(exc).__name__}: {str(exc).strip()[:1500]}"
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
        text += (f" (out of memory: the sandbox allows {ctx.cfg.memory_limit_mb} MiB; the "
                 f"gates use B <= 3, T <= {max(ctx.cfg.cost_lengths)}, "
                 f"D = {ctx.cfg.hidden_size})")
    if "Operation not permitted" in str(exc) and "evolve sandbox" not in str(exc):
        text += " (refused by the sandbox: a mixer touches no files, processes or sockets)"
    if not frames:
        return text
    f = frames[-1]
    return f"{ctx.path.name}:{f.lineno} in {f.name}: `{(f.line or '').strip()}`: {text}"


def call(ctx: Context, fn: Callable[..., Any], *args: Any) -> tuple[Any, str | None]:
    """fn(*args), or (None, message) if it raised."""
    try:
        return fn(*args), None
    except CandidateError as exc:
        return None, describe(exc, ctx)


def mixer_config(ctx: Context, max_seq_len: int) -> MixerConfig:
    cfg = ctx.cfg
    return MixerConfig(hidden_size=cfg.hidden_size, num_heads=cfg.num_heads,
                       conv_size=cfg.conv_size, chunk_size=cfg.chunk_size,
                       max_seq_len=max_seq_len, layer_idx=0, num_layers=2)


def make_mixer(ctx: Context, max_seq_len: int) -> tuple[nn.Module | None, str | None]:
    """A fresh float32 mixer, seeded, in train mode."""
    assert ctx.cls is not None
    torch.manual_seed(0)
    mixer, err = call(ctx, ctx.cls, mixer_config(ctx, max_seq_len))
    return mixer, (f"Mixer(cfg) failed: {err}" if err else None)


def seeded(ctx: Context, mixer: nn.Module, x: torch.Tensor) -> tuple[Any, str | None]:
    """mixer(x) with the RNG reset, so dropout draws the same masks on every call."""
    torch.manual_seed(FORWARD_SEED)
    return call(ctx, mixer, x)


def _fail(gate: str, message: str, **measured: Any) -> Verdict:
    return Verdict(gate=gate, passed=False, message=message, measured=measured)


def shape_text(t: torch.Tensor | tuple[int, ...]) -> str:
    return "[" + ", ".join(str(s) for s in (t.shape if isinstance(t, torch.Tensor) else t)) + "]"


def load_class(ctx: Context) -> tuple[type | None, str | None]:
    """Execute the file as a fresh module (source read before privileges were dropped)."""
    text = ctx.source.decode("utf-8")
    name = f"evolve_candidate_{hashlib.sha1(ctx.source).hexdigest()[:12]}"
    module = types.ModuleType(name)
    module.__file__ = str(ctx.path)
    # Tracebacks show the candidate's lines even where its folder is unreadable to this uid.
    linecache.cache[str(ctx.path)] = (len(text), None, text.splitlines(True), str(ctx.path))
    sys.modules[name] = module
    try:
        exec(compile(text, str(ctx.path), "exec"), module.__dict__)
    except CandidateError as exc:
        return None, f"the file does not import: {describe(exc, ctx)}"
    cls = module.__dict__.get("Mixer")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return None, f"`Mixer` is {type(cls).__name__}, not a subclass of torch.nn.Module; {CONTRACT}"
    return cls, None


def interface(ctx: Context) -> Verdict:
    """Loads, builds from MixerConfig, and maps [B, T, D] -> [B, T, D] in every dtype."""
    cls, err = load_class(ctx)
    if err:
        return _fail("interface", err)
    ctx.cls = cls
    cfg = ctx.cfg
    max_len = max([t for _, t in cfg.interface_shapes] + list(cfg.causality_lengths))
    mixer, err = make_mixer(ctx, max_len)
    if err:
        return _fail("interface", err)
    assert mixer is not None
    measured = {"mixer_params": sum(p.numel() for p in mixer.parameters()), "cases": 0}
    d = cfg.hidden_size
    for dtype_name in cfg.interface_dtypes:
        dtype = DTYPE[dtype_name]
        m, err = call(ctx, lambda: copy.deepcopy(mixer).to(dtype))
        if err:
            return _fail("interface", f"copying the mixer to {dtype_name} failed: {err}",
                         **measured)
        for batch, length in cfg.interface_shapes:
            x = torch.randn(batch, length, d, generator=torch.Generator().manual_seed(length))
            x = x.to(dtype)
            case = f"forward(x) with x {dtype_name} [{batch}, {length}, {d}] (B, T, D)"
            with torch.no_grad():
                y, err = seeded(ctx, m, x)
            if err:
                return _fail("interface", f"{case} raised: {err}", **measured)
            if not isinstance(y, torch.Tensor):
                hint = " (return only the output tensor, not a tuple)" \
                    if isinstance(y, tuple) else ""
                return _fail("interface", f"{case} returned a {type(y).__name__}, expected a "
                                          f"tensor [{batch}, {length}, {d}]{hint}", **measured)
            if tuple(y.shape) != (batch, length, d):
                hint = ""
                if y.dim() == 3 and y.shape[1] != length and y.shape[1] % cfg.chunk_size == 0:
                    hint = (f" (T={length} is not a multiple of chunk_size={cfg.chunk_size}: "
                            "drop the padding of the last partial chunk)")
                return _fail("interface", f"{case} returned shape {shape_text(y)}; expected "
                                          f"[{batch}, {length}, {d}]{hint}", **measured)
            if y.dtype != dtype:
                return _fail("interface", f"{case} returned dtype {str(y.dtype)[6:]}; the "
                                          f"output must keep the input's dtype {dtype_name} (cast "
                                          "back with .to(x.dtype))", **measured)
            measured["cases"] += 1
    return Verdict(gate="interface", passed=True, measured=measured)


def _nonfinite(y: torch.Tensor, what: str) -> str | None:
    bad = ~torch.isfinite(y)
    if not bad.any():
        return None
    first = [int(i) for i in bad.nonzero()[0]]
    return (f"{what} has {int(torch.isnan(y).sum())} NaN and {int(torch.isinf(y).sum())} inf "
            f"values of {y.numel()}; the first at index {first}")


def smoke(ctx: Context) -> Verdict:
    """Forward + backward in float32: finite output, a finite gradient for every parameter;
    forward in the other interface dtypes: finite output."""
    cfg = ctx.cfg
    batch, length = cfg.interface_shapes[-1]
    mixer, err = make_mixer(ctx, max(t for _, t in cfg.interface_shapes))
    if err:
        return _fail("smoke", err)
    assert mixer is not None
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(batch, length, cfg.hidden_size, generator=gen).requires_grad_()
    case = f"x float32 [{batch}, {length}, {cfg.hidden_size}]"
    y, err = seeded(ctx, mixer, x)
    if err:
        return _fail("smoke", f"forward on {case} raised: {err}")
    problem = _nonfinite(y.detach(), f"the output for {case}")
    if problem:
        return _fail("smoke", problem + ": look for division by a quantity that can be zero, "
                     "exp without a max subtracted, log/sqrt of values that can be <= 0")
    weights = torch.randn(y.shape, generator=gen)
    _, err = call(ctx, lambda: (y * weights).sum().backward())
    if err:
        return _fail("smoke", f"backward raised: {err}")
    params = [(n, p) for n, p in mixer.named_parameters() if p.requires_grad]
    missing = [f"{n} {shape_text(p)}" for n, p in params if p.grad is None]
    if missing:
        return _fail("smoke", f"parameters that receive no gradient: {', '.join(missing)}. They "
                              "are unused in forward, or reach the output only through "
                              ".detach(), torch.no_grad() or integer ops: use or remove them",
                     parameters=len(params), without_grad=len(missing))
    for name, p in params:
        problem = _nonfinite(p.grad, f"the gradient of {name} {shape_text(p)}")
        if problem:
            return _fail("smoke", problem + " (the forward was finite: look for sqrt/log/pow "
                         "at 0, or division by a quantity that can be zero)")
    problem = _nonfinite(x.grad, "the gradient with respect to the input") \
        if x.grad is not None else None
    if problem:
        return _fail("smoke", problem)
    for dtype_name in cfg.interface_dtypes:
        if dtype_name == "float32":
            continue
        # A mixer that keeps non-leaf tensors as attributes (e.g. cached after a forward)
        # cannot be copied: a verdict naming that, not a crash of the sandbox child.
        low, err = call(ctx, lambda: copy.deepcopy(mixer).to(DTYPE[dtype_name]))
        if err:
            return _fail("smoke", f"copying the trained mixer to {dtype_name} failed: {err} "
                         "(keep no tensors computed in forward as attributes of the module)")
        with torch.no_grad():
            y_low, err = seeded(ctx, low, x.detach().to(DTYPE[dtype_name]))
        if err:
            return _fail("smoke", f"forward in {dtype_name} raised: {err}")
        problem = _nonfinite(y_low.float(), f"the {dtype_name} output (finite in float32)")
        if problem:
            return _fail("smoke", problem + f": a step loses range or precision in {dtype_name}; "
                         "compute that step in float32 and cast back")
    return Verdict(gate="smoke", passed=True, measured={
        "parameters": len(params), "output_rms": float(y.detach().pow(2).mean().sqrt())})


def ranges(positions: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0..2, 5, 7..8'."""
    out: list[str] = []
    for p in positions:
        if out and int(out[-1].split("..")[-1]) == p - 1:
            out[-1] = f"{out[-1].split('..')[0]}..{p}"
        else:
            out.append(str(p))
    return ", ".join(out[:12]) + (" ..." if len(out) > 12 else "")


def _break_zero_init(mixer: nn.Module) -> None:
    # A zero-initialised projection makes the output, and any leak, invisible; small noise on
    # all-zero parameters brings the structure back without changing the architecture.
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in mixer.parameters():
            if p.is_floating_point() and not p.any():
                p.add_(0.02 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


LEAK_HINT = ("the mixer sees future tokens. Look for operations along the time axis that are not "
             "causal: a mask that is not lower-triangular (or is missing), cumsum of a flipped "
             "sequence, convolution padding on both sides, mean/std/softmax/normalisation over T, "
             "torch.roll or flip along T, indexing a later position")


def causality(ctx: Context) -> Verdict:
    """Outputs at positions <= t depend on no input at positions > t, nor on other sequences of
    the batch, nor on earlier calls; checked by perturbation and by the gradient."""
    cfg = ctx.cfg
    mixer, err = make_mixer(ctx, max(cfg.causality_lengths))
    if err:
        return _fail("causality", err)
    assert mixer is not None
    _break_zero_init(mixer)
    worst = 0.0
    depends = False
    for length in cfg.causality_lengths:
        for mode in ("train", "eval"):
            mixer.train(mode == "train")
            where = f"T={length}, {mode} mode"
            finding, leak, dep = _causal_at(ctx, mixer, length, where)
            worst, depends = max(worst, leak), depends or dep
            if finding:
                return _fail("causality", finding, max_leak=leak, length=length, mode=mode)
    if not depends:
        return _fail("causality", "the output does not depend on the input at any tested "
                                  "position (every gradient is zero), so causality cannot be "
                                  "checked; a mixer must mix its input", max_leak=worst)
    return Verdict(gate="causality", passed=True, measured={
        "max_leak": worst, "lengths": list(cfg.causality_lengths),
        "tolerance": cfg.causality_tolerance})


def _causal_at(ctx: Context, mixer: nn.Module, length: int,
               where: str) -> tuple[str | None, float, bool]:
    """(message or None, largest relative leak, whether the output depends on the input)."""
    cfg = ctx.cfg
    tol = cfg.causality_tolerance
    gen = torch.Generator().manual_seed(length)
    x = torch.randn(2, length, cfg.hidden_size, generator=gen)
    positions = sorted({p for p in (0, 1, cfg.chunk_size - 1, cfg.chunk_size, length // 2,
                                    length - 2) if 0 <= p <= length - 2})
    y, err = seeded(ctx, mixer, x)
    if err:
        return f"forward at {where} raised: {err}", 0.0, False
    y = y.detach()
    scale = max(float(y.pow(2).mean().sqrt()), 1e-12)
    again, err = seeded(ctx, mixer, x)
    if err:
        return f"a second forward at {where} raised: {err}", 0.0, False
    drift = float((again - y).abs().max()) / scale
    if drift > tol:
        return (f"two calls on the same input differ by {drift:.2e} (relative) at {where}: "
                "forward keeps state between calls (a buffer or attribute it updates) or draws "
                "randomness beyond dropout; a call must depend on its input only"), drift, True
    worst = 0.0
    for t in positions:
        x2 = x.clone()
        x2[:, t + 1:] = torch.randn(x2[:, t + 1:].shape, generator=gen)
        y2, err = seeded(ctx, mixer, x2)
        if err:
            return f"forward at {where} raised: {err}", worst, False
        change = (y2.detach()[:, :t + 1] - y[:, :t + 1]).abs().amax(dim=(0, 2)) / scale
        worst = max(worst, float(change.max()))
        leaked = [int(p) for p in (change > tol).nonzero().flatten()]
        if leaked:
            return (f"output positions {ranges(leaked)} change (by up to {float(change.max()):.2e}"
                    f" relative to the output RMS {scale:.2e}; tolerance {tol:.0e}) when only "
                    f"the inputs after position t={t} change ({where}): {LEAK_HINT}"), worst, True
    x3 = x.clone()
    x3[1] = torch.randn(x3[1].shape, generator=gen)
    y3, err = seeded(ctx, mixer, x3)
    if err:
        return f"forward at {where} raised: {err}", worst, False
    cross = float((y3.detach()[0] - y[0]).abs().max()) / scale
    if cross > tol:
        return (f"the output of sequence 0 changes by {cross:.2e} (relative) when only sequence 1 "
                f"of the batch changes ({where}): the mixer mixes across the batch (a norm, mean "
                "or sum over dim 0); sequences must not see each other"), max(worst, cross), True
    return _gradient_check(ctx, mixer, x, positions, where, worst)


def _gradient_check(ctx: Context, mixer: nn.Module, x: torch.Tensor, positions: list[int],
                    where: str, worst: float) -> tuple[str | None, float, bool]:
    tol = ctx.cfg.causality_tolerance
    xg = x.clone().requires_grad_()
    y, err = seeded(ctx, mixer, xg)
    if err:
        return f"forward at {where} raised: {err}", worst, False
    depends = False
    gen = torch.Generator().manual_seed(11)
    for t in positions:
        weights = torch.randn(y[:, t].shape, generator=gen)
        grads, err = call(ctx, lambda: torch.autograd.grad((y[:, t] * weights).sum(), xg,
                                                           retain_graph=True,
                                                           allow_unused=True)[0])
        if err:
            return f"backward at {where} raised: {err}", worst, depends
        if grads is None:
            continue
        past = float(grads[:, :t + 1].abs().max())
        depends = depends or past > 0
        future = grads[:, t + 1:].abs().amax(dim=(0, 2)) / max(past, 1e-12)
        worst = max(worst, float(future.max()))
        leaked = [t + 1 + int(p) for p in (future > tol).nonzero().flatten()]
        if leaked:
            return (f"the gradient of output position t={t} reaches inputs at positions "
                    f"{ranges(leaked)} (up to {float(future.max()):.2e} of the largest gradient "
                    f"at positions <= t; {where}), though the perturbation test saw no change in "
                    "value: a straight-through construction (a - a.detach()), a custom backward "
                    f"that is not causal, or a leak too small to see in value: {LEAK_HINT}"), \
                worst, depends
    return None, worst, depends


def params(ctx: Context) -> Verdict:
    """The backbone with this mixer, MLP sized to target_params, is within tolerance of it, and
    the mixers take at most max_mixer_fraction of it."""
    from evolve.model.lm import LanguageModel, count_params, size_to_target

    assert ctx.cls is not None
    model, cfg = ctx.model, ctx.cfg
    target = model.target_params
    assert target is not None
    counts, top, err = _layer_counts(ctx)
    if err:
        return _fail("params", err)
    mixer_total = sum(counts)
    measured: dict[str, Any] = {"mixer_params": mixer_total, "target_params": target,
                                "mixer_params_per_layer": counts[0],
                                "largest": top, "hidden_size": model.hidden_size,
                                "num_layers": model.num_layers}
    detail = (f"the mixers take {mixer_total:,} parameters ({counts[0]:,} per layer at "
              f"hidden_size={model.hidden_size}, {model.num_layers} layers; largest: "
              f"{', '.join(top)})")

    class StandIn(nn.Module):  # the candidate's parameter count per layer, cheap to build
        def __init__(self, mcfg: MixerConfig) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.empty(counts[mcfg.layer_idx]))

    try:
        sized = size_to_target(model, StandIn)
    except ValueError as exc:
        return _fail("params", f"{detail}; the whole model may have {target:,}: {exc}",
                     **measured)
    # On the CPU, not the meta device: initialising meta tensors imports torch._dynamo (3 s).
    total = count_params(LanguageModel(sized, StandIn))
    measured.update(total_params=total, intermediate_size=sized.intermediate_size,
                    mixer_fraction=round(mixer_total / target, 4))
    if abs(total - target) > cfg.param_tolerance * target:
        return _fail("params", f"the model has {total:,} parameters, {abs(total - target):,} "
                               f"away from the target {target:,} (tolerance "
                               f"{cfg.param_tolerance:.0%}); {detail}", **measured)
    if mixer_total > cfg.max_mixer_fraction * target:
        return _fail("params", f"{detail}: {mixer_total / target:.0%} of the {target:,} "
                               f"budget, above the limit of {cfg.max_mixer_fraction:.0%}; shrink "
                               "the projections or share them across heads", **measured)
    return Verdict(gate="params", passed=True, measured=measured)


def _layer_counts(ctx: Context) -> tuple[list[int], list[str], str | None]:
    """Parameters of the mixer of each layer, built on the CPU at the model config's width."""
    from evolve.model.lm import count_params

    assert ctx.cls is not None
    counts: list[int] = []
    top: list[str] = []
    for i in range(ctx.model.num_layers):
        mcfg = ctx.model.mixer_config(i)
        torch.manual_seed(0)
        mixer, err = call(ctx, ctx.cls, mcfg)
        if err:
            return [], [], (f"Mixer(cfg) failed at hidden_size={mcfg.hidden_size}, "
                            f"num_heads={mcfg.num_heads}, layer_idx={i}: {err}")
        counts.append(count_params(mixer))
        if i == 0:
            named = sorted(mixer.named_parameters(), key=lambda np: -np[1].numel())
            top = [f"{n} {shape_text(p)}" for n, p in named[:3]]
            if counts[0] * ctx.model.num_layers > ctx.model.target_params:  # type: ignore
                # Far over budget already: building the other layers would only cost memory.
                counts *= ctx.model.num_layers
                break
        del mixer
    return counts, top, None


def _cost(ctx: Context) -> Verdict:
    from evolve.gates.cost import cost

    return cost(ctx)


GATE_FUNCS: dict[str, Callable[[Context], Verdict]] = {
    "interface": interface, "smoke": smoke, "causality": causality, "cost": _cost,
    "params": params}
