"""The sub-quadratic cost gate: fit cost ~ T^a at growing T and require a below the bound.

Three figures per length T (batch 1, width cfg.hidden_size), each for one forward+backward:
- CPU time (`time.process_time`, minimum over repeats; one torch thread): what training pays,
  but noisy on a shared machine, so a failure on time alone is measured again before it counts;
- bytes of the tensors autograd saves for backward (`saved_tensors_hooks`, each storage once,
  parameters excluded): deterministic, and the activation memory that grows with T in training;
- FLOPs of matrix products, convolutions and attention kernels, counted at the ATen level by a
  dispatch mode (`_FlopCounter`): deterministic; catches a loop over all earlier positions
  whose time hides under Python overhead. Elementwise work is not counted (time catches it).
  torch's own FlopCounterMode would do, but it imports torch._dynamo (3 s, 800 modules).
The exponent is the least-squares slope of log(figure) on log(T) over the largest lengths.
The deterministic figures come first: a mixer they show to be quadratic fails untimed.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from evolve.checks import Verdict
from evolve.runtime_gates import shape_text, call, make_mixer
from evolve.static_gates import Context

QUADRATIC_HINT = ("A [T, T] tensor (q @ k.transpose(-1, -2), a full mask, a pairwise decay "
                  "matrix) or a loop over all earlier positions is quadratic; use a recurrent or "
                  "chunked form (evolve.kernels: linear_attn, delta_rule, gated_delta_rule, gla)")


def fit_exponent(lengths: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) on log(length); None if a value is not positive."""
    if len(lengths) < 2 or min(values) <= 0:
        return None
    xs = [math.log(t) for t in lengths]
    ys = [math.log(v) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


class _SavedBytes:
    """Sums the storages autograd saves for backward, each once, parameters excluded."""

    def __init__(self, exclude: set[int]) -> None:
        self.seen = set(exclude)
        self.total = 0
        self.largest: tuple[int, str] = (0, "")

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
                self.largest = (size, f"{str(t.dtype)[6:]} {shape_text(t)}")
        return t


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
    """Saved bytes and FLOPs of one forward+backward (deterministic)."""
    params = {p.untyped_storage().data_ptr() for p in mixer.parameters()}
    saved = _SavedBytes(params | {x.untyped_storage().data_ptr()})
    counter = _FlopCounter()

    def counted() -> None:
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t), counter:
            _step(mixer, x)

    _, err = call(ctx, counted)
    if err:
        return None, f"forward+backward at T={x.shape[1]} raised: {err}"
    return {"length": x.shape[1], "saved_bytes": saved.total, "flops": counter.flops,
            "largest_saved": f"{saved.largest[1]} ({saved.largest[0] / 2**20:.1f} MiB)"}, None


def _time(ctx: Context, mixer: torch.nn.Module, x: torch.Tensor,
          repeats: int) -> tuple[float, str | None]:
    """Least CPU time of `repeats` forward+backward passes."""
    best = math.inf
    for _ in range(repeats):
        start = time.process_time()
        _, err = call(ctx, _step, mixer, x)
        if err:
            return best, f"forward+backward at T={x.shape[1]} raised: {err}"
        best = min(best, time.process_time() - start)
    return best, None


def _input(ctx: Context, length: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(length)
    return torch.randn(1, length, ctx.cfg.hidden_size, generator=gen).requires_grad_()


def _fit(points: list[dict[str, Any]], key: str, n: int) -> float | None:
    tail = points[-n:]
    return fit_exponent([p["length"] for p in tail], [p[key] for p in tail])


NAMES = {"time_s": "CPU time", "saved_bytes": "saved activations", "flops": "FLOPs"}


def cost(ctx: Context) -> Verdict:
    """Deterministic figures at every length first (a quadratic mixer fails without being
    timed), then CPU time; each exponent must stay at or below cfg.cost_exponent_bound."""
    cfg = ctx.cfg
    lengths = list(cfg.cost_lengths)
    n, bound = cfg.cost_fit_points, cfg.cost_exponent_bound
    mixer, err = make_mixer(ctx, max(lengths))
    if err:
        return Verdict(gate="cost", passed=False, message=err)
    assert mixer is not None
    points: list[dict[str, Any]] = []
    measured: dict[str, Any] = {"bound": bound, "fit_lengths": lengths[-n:], "points": points}

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
    for key in ("saved_bytes", "flops"):
        measured[f"{'memory' if key == 'saved_bytes' else 'flops'}_exponent"] = \
            _round(_fit(points, key, n))
    over = [k for k in ("saved_bytes", "flops") if (_fit(points, k, n) or 0) > bound]
    if over:
        return verdict(_too_costly(points, over, bound, lengths[-n]))
    for point in points:
        point["time_s"], err = _time(ctx, mixer, _input(ctx, point["length"]), cfg.cost_repeats)
        if err:
            return verdict(err)
        if point["time_s"] > cfg.cost_max_step_s:
            return verdict(_too_slow(points, point["length"], point["time_s"],
                                     cfg.cost_max_step_s, cfg.hidden_size))
    measured["remeasured"] = False
    if (_fit(points, "time_s", n) or 0) > bound:
        # Only time says quadratic: another process may have taken the CPU. Measure again
        # with more repeats and keep the faster time of each length.
        measured["remeasured"] = True
        for point in points[-n:]:
            again, err = _time(ctx, mixer, _input(ctx, point["length"]), 2 * cfg.cost_repeats)
            if err:
                return verdict(err)
            point["time_s"] = min(point["time_s"], again)
    measured["time_exponent"] = _round(_fit(points, "time_s", n))
    if (_fit(points, "time_s", n) or 0) > bound:
        return verdict(_too_costly(points, ["time_s"], bound, lengths[-n]))
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


def _too_costly(points: list[dict[str, Any]], over: list[str], bound: float, first: int) -> str:
    n = sum(1 for p in points if p["length"] >= first)
    grows = ", ".join(f"{NAMES[k]} as T^{_fit(points, k, n):.2f}" for k in over)
    return (f"cost grows faster than T^{bound}: {grows} (fit over T={first}.."
            f"{points[-1]['length']}). {_table(points)} {QUADRATIC_HINT}")


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
