"""The sub-quadratic cost gate: fit cost ~ T^a at growing T and require a below the bound.

Usage: `cost(ctx)` inside the sandboxed child (runtime_gates.GATE_FUNCS); `cost(ctx, timer)`
with a stand-in `Timer` in tests. Figures per length T (batch 1, width cfg.hidden_size), each
for one forward+backward:
- bytes of the tensors autograd saves for backward (`saved_tensors_hooks`, each storage once,
  parameters and the input excluded): the activation memory that grows with T in training;
- the shape of each saved tensor: one with two dimensions of length T (and a storage of at
  least T^2 elements) is quadratic memory, however much linear memory is saved beside it;
- FLOPs of matrix products, convolutions and attention kernels, counted at the ATen level by a
  dispatch mode (`_FlopCounter`): catches a loop over all earlier positions whose time hides
  under Python overhead. Elementwise work is not counted. torch's own FlopCounterMode would
  do, but it imports torch._dynamo (3 s, 800 modules);
- CPU time (`time.process_time`, minimum over repeats, each repeat at least MIN_TIMED_S of
  passes; one torch thread).
The exponent is the least-squares slope of log(figure) on log(T) over the largest lengths.

The rule. Saved memory, FLOPs and saved shapes are deterministic and grow with T by
construction, so they decide: an exponent above cfg.cost_exponent_bound, or a saved [.., T,
.., T, ..] tensor at every fitted length, fails the mixer before it is timed. Time is only a
secondary signal, for quadratic elementwise work that saves nothing quadratic (a Python loop
over earlier positions): it fails a mixer only when its exponent reaches
max(TIME_EXPONENT_BOUND, bound) = 1.8 in two independent measurements that agree (the second
with twice the repeats, largest length first). Why: on a real machine time is not a cost
model. Once the tensors saved for backward outgrow the L2/L3 caches, every pass runs from DRAM
and time jumps by 2-4x between two lengths: mixers linear in memory and FLOPs measured
CPU time T^1.5 over T=1024..4096 (95 ms at 2048, 357 ms at 4096), and a process beside the
check that evicts the caches moves that jump. A true quadratic approaches T^2 at every step.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from evolve.gates.check import Verdict
from evolve.gates.runtime import shape_text, call, make_mixer
from evolve.gates.static import Context

QUADRATIC_HINT = ("A [T, T] tensor (q @ k.transpose(-1, -2), a full mask, a pairwise decay "
                  "matrix) or a loop over all earlier positions is quadratic; use a recurrent or "
                  "chunked form (evolve.kernels: linear_attn, delta_rule, gated_delta_rule, gla)")
TIME_EXPONENT_BOUND = 1.8
"""Time fails a mixer only at this exponent or more (or the bound, if that is larger)."""

MIN_TIMED_S = 0.05
"""Least CPU time of one timing: under RLIMIT_CPU (the sandbox sets it) Linux counts a
process's CPU time in scheduler ticks (4 ms at HZ=250), as coarse as one pass at T=1024."""

Timer = Callable[[Callable[[], None], int], float]
"""timer(step, length) runs step() (one forward+backward at T=length) at least once and
returns the seconds of one pass; the length lets a test's stand-in play cache effects."""


def cpu_time(step: Callable[[], None], length: int) -> float:
    """CPU seconds per pass of step(), run again until MIN_TIMED_S have passed. CPU time keeps
    other processes' scheduling out, not their cache evictions."""
    start, passes = time.process_time(), 0
    while True:
        step()
        passes += 1
        elapsed = time.process_time() - start
        if elapsed >= MIN_TIMED_S:
            return elapsed / passes


def fit_exponent(lengths: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) on log(length); None if a value is not positive."""
    if len(lengths) < 2 or min(values) <= 0:
        return None
    xs = [math.log(t) for t in lengths]
    ys = [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


class _SavedBytes:
    """Sums the storages autograd saves for backward, each once, parameters excluded, and
    notes the largest saved tensor with two dimensions of length T."""

    def __init__(self, exclude: set[int], length: int) -> None:
        self.seen = set(exclude)
        self.length = length
        self.total = 0
        self.largest: tuple[int, str] = (0, "")
        self.square: tuple[int, str] = (0, "")

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without a plain storage
            key, size = id(t), t.numel() * t.element_size()
        if key not in self.seen:
            self.seen.add(key)
            self.total += size
            if size > self.largest[0]:
                self.largest = (size, _describe(t, size))
        # An expanded (stride 0) [T, T] view of a small storage is not quadratic memory.
        if (sum(1 for s in t.shape if s == self.length) >= 2 and size > self.square[0]
                and size >= self.length ** 2 * t.element_size()):
            self.square = (size, _describe(t, size))
        return t


def _describe(t: torch.Tensor, size: int) -> str:
    return f"{str(t.dtype)[6:]} {shape_text(t)} ({size / 2**20:.1f} MiB)"


def _matmul_flops(a: torch.Tensor, b: torch.Tensor) -> int:
    # [..., m, k] @ [..., k, n]: a multiply and an add per term
    return 2 * a.shape[:-1].numel() * a.shape[-1] * b.shape[-1]


class _FlopCounter(TorchDispatchMode):
    """Counts FLOPs of mm/bmm/addmm/baddbmm, convolutions and fused attention, forward and back."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # TorchDispatchMode wraps __torch_dispatch__ in torch._disable_dynamo, which imports
        # torch._dynamo on the first call; nothing here is ever compiled.
        return False

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in ("mm", "bmm"):
            self.flops += _matmul_flops(args[0], args[1])
        elif name in ("addmm", "baddbmm"):
            self.flops += _matmul_flops(args[1], args[2])
        elif name == "convolution":
            weight = args[1]
            self.flops += 2 * out.numel() * weight.shape[1:].numel()
        elif name == "convolution_backward":
            weight = args[2]
            self.flops += 4 * args[0].numel() * weight.shape[1:].numel()
        elif "scaled_dot_product" in name and "attention" in name:
            q, k, v = args[0], args[1], args[2]  # backward ops take grad_out first
            if "backward" in name:
                q, k, v = args[1], args[2], args[3]
            forward = 2 * q.shape[:-1].numel() * k.shape[-2] * (q.shape[-1] + v.shape[-1])
            self.flops += 2 * forward if "backward" in name else forward
        return out


def _step(mixer: torch.nn.Module, x: torch.Tensor) -> None:
    y = mixer(x)
    y.float().square().mean().backward()


def _count(ctx: Context, mixer: torch.nn.Module, x: torch.Tensor) -> tuple[dict[str, Any] | None,
                                                                          str | None]:
    """Saved bytes, saved shapes and FLOPs of one forward+backward (deterministic)."""
    params = {p.untyped_storage().data_ptr() for p in mixer.parameters()}
    saved = _SavedBytes(params | {x.untyped_storage().data_ptr()}, x.shape[1])
    counter = _FlopCounter()

    def counted() -> None:
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), counter:
            _step(mixer, x)

    _, err = call(ctx, counted)
    if err:
        return None, f"forward+backward at T={x.shape[1]} raised: {err}"
    return {"length": x.shape[1], "saved_bytes": saved.total, "flops": counter.flops,
            "largest_saved": saved.largest[1], "square_saved": saved.square[1] or None}, None


def _time(ctx: Context, mixer: torch.nn.Module, x: torch.Tensor, repeats: int,
          timer: Timer) -> tuple[float, str | None]:
    """Least time of `repeats` forward+backward passes."""
    best = math.inf
    for _ in range(repeats):
        seconds, err = call(ctx, timer, lambda: _step(mixer, x), x.shape[1])
        if err:
            return best, f"forward+backward at T={x.shape[1]} raised: {err}"
        best = min(best, seconds)
    return best, None


def _input(ctx: Context, length: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(length)
    return torch.randn(1, length, ctx.cfg.hidden_size, generator=gen).requires_grad_()


def _fit(points: list[dict[str, Any]], key: str, n: int) -> float | None:
    tail = points[-n:]
    return fit_exponent([p["length"] for p in tail], [p[key] for p in tail])


NAMES = {"time_s": "CPU time", "saved_bytes": "saved activations", "flops": "FLOPs"}


def cost(ctx: Context, timer: Timer = cpu_time) -> Verdict:
    """Deterministic figures at every length first (a quadratic mixer fails without being
    timed), then time, which fails only at a much larger exponent measured twice."""
    cfg = ctx.cfg
    lengths = list(cfg.cost_lengths)
    n, bound = cfg.cost_fit_points, cfg.cost_exponent_bound
    time_bound = max(TIME_EXPONENT_BOUND, bound)
    mixer, err = make_mixer(ctx, max(lengths))
    if err:
        return Verdict(gate="cost", passed=False, message=err)
    assert mixer is not None
    points: list[dict[str, Any]] = []
    measured: dict[str, Any] = {"bound": bound, "time_bound": time_bound,
                                "fit_lengths": lengths[-n:], "points": points}

    def verdict(message: str = "") -> Verdict:
        return Verdict(gate="cost", passed=not message, message=message, measured=measured)

    for length in lengths:
        if points:
            # Cost grows at least linearly: skip a pass that would surely exceed the limit.
            expected = points[-1]["count_s"] * length / points[-1]["length"]
            if expected > cfg.cost_max_step_s:
                return verdict(_too_slow(points, length, expected, cfg.cost_max_step_s,
                                         cfg.hidden_size))
        start = time.process_time()
        point, err = _count(ctx, mixer, _input(ctx, length))
        if err:
            if "out of memory" in err:
                return verdict(_out_of_memory(points, length, err, cfg.cost_fit_points, bound))
            return verdict(err)
        assert point is not None
        point["count_s"] = time.process_time() - start
        points.append(point)
    measured["memory_exponent"] = _round(_fit(points, "saved_bytes", n))
    measured["flops_exponent"] = _round(_fit(points, "flops", n))
    over = [k for k in ("saved_bytes", "flops") if (_fit(points, k, n) or 0) > bound]
    square = [p["square_saved"] for p in points[-n:]]
    measured["square_saved"] = square[-1] if all(square) else None
    if over or measured["square_saved"]:
        return verdict(_too_costly(points, over, bound, lengths[-n], measured["square_saved"]))
    return _timed(ctx, mixer, points, measured, timer, time_bound, verdict)


def _timed(ctx: Context, mixer: torch.nn.Module, points: list[dict[str, Any]],
           measured: dict[str, Any], timer: Timer, time_bound: float,
           verdict: Callable[..., Verdict]) -> Verdict:
    """Time at every length; a second, independent round when the first reaches time_bound."""
    cfg, n = ctx.cfg, ctx.cfg.cost_fit_points
    rounds: list[float | None] = []
    measured["time_exponents"] = rounds
    measured["remeasured"] = False
    for order, repeats in ((points, cfg.cost_repeats), (points[::-1], 2 * cfg.cost_repeats)):
        seconds: dict[int, float] = {}
        for point in order:
            seconds[point["length"]], err = _time(ctx, mixer, _input(ctx, point["length"]),
                                                  repeats, timer)
            if err:
                return verdict(err)
            point["time_s"] = min(point.get("time_s", math.inf), seconds[point["length"]])
            if point["time_s"] > cfg.cost_max_step_s:
                return verdict(_too_slow(points, point["length"], point["time_s"],
                                         cfg.cost_max_step_s, cfg.hidden_size))
        tail = points[-n:]
        exponent = fit_exponent([p["length"] for p in tail], [seconds[p["length"]] for p in tail])
        rounds.append(_round(exponent))
        if (exponent or 0) < time_bound:
            break
        # Only time says quadratic, and a cache cliff or another process can say so too:
        # it counts only if an independent second round agrees.
        measured["remeasured"] = True
    # The figure the verdict rests on: time fails only if every round reached the bound.
    measured["time_exponent"] = min(rounds) if None not in rounds else None
    if len(rounds) == 2 and (measured["time_exponent"] or 0) >= time_bound:
        return verdict(_too_slow_growth(points, rounds, measured, time_bound))
    return verdict()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _too_slow(points: list[dict[str, Any]], length: int, seconds: float, limit: float,
              width: int) -> str:
    return (f"one forward+backward at T={length} (batch 1, width {width}) takes {seconds:.1f} s "
            f"of CPU or more, above the limit of {limit:.0f} s: far too slow to train (a Python "
            f"loop over tokens?). {_table(points)}")


def _out_of_memory(points: list[dict[str, Any]], length: int, err: str, n: int,
                   bound: float) -> str:
    n = min(n, len(points))
    grows = ""
    if n >= 2:
        grows = " Up to then " + ", ".join(
            f"{NAMES[k]} grew as T^{_fit(points, k, n):.2f}" for k in ("saved_bytes", "flops")
            if _fit(points, k, n) is not None) + f" (bound {bound})."
    table = f" {_table(points)}" if points else ""
    return (f"forward+backward ran out of memory at T={length} (batch 1): {err}.{grows}{table} "
            f"{QUADRATIC_HINT}")


def _too_costly(points: list[dict[str, Any]], over: list[str], bound: float, first: int,
                square: str | None) -> str:
    n = sum(1 for p in points if p["length"] >= first)
    grows = [f"{NAMES[k]} as T^{_fit(points, k, n):.2f}" for k in over]
    if square:
        grows.append(f"saved memory as T^2: a tensor saved for backward has two dimensions "
                     f"of length T at every T from {first} ({square} at "
                     f"T={points[-1]['length']})")
    return (f"cost grows faster than T^{bound}: {', '.join(grows)} (fit over T={first}.."
            f"{points[-1]['length']}). {_table(points)} {QUADRATIC_HINT}")


def _too_slow_growth(points: list[dict[str, Any]], rounds: list[float | None],
                     measured: dict[str, Any], time_bound: float) -> str:
    fit = measured["fit_lengths"]
    memory, flops = (_power(measured[k]) for k in ("memory_exponent", "flops_exponent"))
    return (f"cost grows faster than T^{measured['bound']}: CPU time as {_power(rounds[0])} and "
            f"{_power(rounds[1])} in two independent measurements (fit over T={fit[0]}.."
            f"{fit[-1]}; time fails only at T^{time_bound} or more, since caches alone make it "
            f"super-linear), while saved activations grew as {memory} and FLOPs as {flops}: "
            f"quadratic work that FLOP counting does not see (elementwise over [T, T], or a "
            f"Python loop over earlier positions). {_table(points)} {QUADRATIC_HINT}")


def _power(exponent: float | None) -> str:
    return "-" if exponent is None else f"T^{exponent:.2f}"


def _table(points: list[dict[str, Any]]) -> str:
    if not points:
        return ""
    rows = []
    for p in points:
        timed = f"{1000 * p['time_s']:.1f} ms, " if "time_s" in p else ""
        rows.append(f"T={p['length']}: {timed}saved {p['saved_bytes'] / 2**20:.2f} MiB, "
                    f"{p['flops'] / 1e6:.1f} MFLOP")
    return (f"Measured (forward+backward, batch 1): {'; '.join(rows)}. Largest tensor saved for "
            f"backward at T={points[-1]['length']}: {points[-1]['largest_saved']}.")
