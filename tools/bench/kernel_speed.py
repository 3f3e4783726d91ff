"""Benchmark of evolve.kernels: forward + backward time of each op, in one run.

Compares, at T=1024, B=4, H=4, K=V=32 by default:
- our token-by-token reference (naive) against our chunked form (chunk), with the speed-up;
- our chunked form against fla's plain-PyTorch references (its chunk-in-torch functions and its
  recurrences) where flash-linear-attention imports;
- on CUDA (--device cuda), also the dispatcher's default there (fla's Triton kernels).

Run from the repository root:
    .venv/bin/python tools/bench/kernel_speed.py               # CPU, writes bench-out/kernels.json
    .venv/bin/python tools/bench/kernel_speed.py --repeats 5 --out /tmp/k.json --ops delta_rule gla
    python tools/bench/kernel_speed.py --device cuda --T 4096          # on a GPU machine

Each timing is the minimum and the median of --repeats runs after one warm-up run; the naive
references run --naive-repeats times without warm-up (they take seconds each). The speed-up
column divides minima, the steadier figure on a CPU shared with other work.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import evolve.kernels as kernels
from evolve.state.fsio import atomic_write_json
from evolve.kernels import OPS, dispatch


@dataclass
class Row:
    op: str
    impl: str
    ms: float | None  # median
    min_ms: float | None = None
    speedup_vs_naive: float | None = None
    note: str = ""


def make_inputs(
    op: str, B: int, T: int, H: int, K: int, V: int, device: str
) -> dict[str, torch.Tensor]:
    """Leaf tensors (requiring grad) for one op, with realistic ranges: L2-normalised keys for
    the delta rules, beta in (0, 1), log-decays as GLA and Gated DeltaNet produce them."""
    g = torch.Generator().manual_seed(0)
    randn = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    if op == "short_conv":
        D, W = H * K, 4
        xs = {"x": randn(B, T, D), "weight": randn(D, W) / W, "bias": randn(D)}
    else:
        xs = {"q": randn(B, T, H, K), "k": randn(B, T, H, K), "v": randn(B, T, H, V)}
        if op in ("delta_rule", "gated_delta_rule"):
            xs["k"] = F.normalize(xs["k"], dim=-1)
            xs["beta"] = torch.sigmoid(randn(B, T, H))
        if op == "gated_delta_rule":
            xs["g"] = F.logsigmoid(randn(B, T, H))
        if op == "gla":
            xs["g"] = F.logsigmoid(randn(B, T, H, K)) / 16
        xs.update(_modern_inputs(op, xs, randn))
    return {n: x.to(device).requires_grad_() for n, x in xs.items()}


def _modern_inputs(op: str, xs: dict[str, torch.Tensor], randn: Callable
                   ) -> dict[str, torch.Tensor]:
    """The inputs of the issue-16 ops beyond q, k, v: simple GLA's per-head log-decay, KDA's
    per-channel log-decay (Kimi Linear's range) and beta, Gated DeltaProduct's two steps per
    token with beta in (0, 2), RWKV-7's removal key, in-context learning rate and decay in
    [-e^{-1/2}, 0]."""
    B, T, H, K = xs["q"].shape
    V = xs["v"].shape[-1]
    if op == "simple_gla":
        return {"g": F.logsigmoid(randn(B, T, H))}
    if op == "kda":
        return {"k": F.normalize(xs["k"], dim=-1), "g": F.logsigmoid(randn(B, T, H, K)) / 16,
                "beta": torch.sigmoid(randn(B, T, H))}
    if op == "gated_delta_product":
        n = 2
        return {"k": F.normalize(randn(B, T * n, H, K), dim=-1), "v": randn(B, T * n, H, V),
                "g": F.logsigmoid(randn(B, T, H)), "beta": 2 * torch.sigmoid(randn(B, T * n, H))}
    if op == "generalized_delta_rule":
        kk = F.normalize(randn(B, T, H, K), dim=-1)
        return {"a": -kk, "b": kk * torch.sigmoid(randn(B, T, H, K)),
                "gk": -math.exp(-0.5) * torch.sigmoid(randn(B, T, H, K))}
    return {}


def time_fwd_bwd(fn: Callable[[], torch.Tensor], repeats: int, warmup: int) -> tuple[float, float]:
    """(median, min) milliseconds of fn() (returning the output) plus a backward pass through it.
    The minimum is the steadier figure on a CPU shared with other work."""

    def once() -> float:
        sync()
        start = time.perf_counter()
        out = fn()
        out.float().sum().backward()
        sync()
        return (time.perf_counter() - start) * 1e3

    for _ in range(warmup):
        once()
    times = [once() for _ in range(repeats)]
    return statistics.median(times), min(times)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ours(op: str, backend: str, xs: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor]:
    fn = getattr(kernels, op)

    def run() -> torch.Tensor:
        os.environ[dispatch.ENV_VAR] = backend
        try:
            return fn(**xs)[0]
        finally:
            os.environ.pop(dispatch.ENV_VAR, None)

    return run


def fla_references(op: str, xs: dict[str, torch.Tensor]) -> dict[str, Callable[[], torch.Tensor]]:
    """fla's plain-PyTorch functions for `op` (empty when fla does not import). Their layouts and
    argument orders differ from ours; see tests/test_kernels.py for the checked mapping."""
    try:
        import fla.ops.delta_rule.naive as fdelta
        import fla.ops.gated_delta_rule.naive as fgated
        import fla.ops.gla.naive as fgla
        import fla.ops.linear_attn.naive as flinear
    except Exception:
        return {}
    if op == "linear_attn":
        q, k, v = xs["q"], xs["k"], xs["v"]
        refs = {"fla naive_recurrent": lambda: flinear.naive_recurrent_linear_attn(q, k, v)[0]}
        if q.shape[1] % 64 == 0:
            refs["fla naive_chunk"] = lambda: flinear.naive_chunk_linear_attn(q, k, v)
        return refs
    if op == "delta_rule":
        q, k, v = (xs[n].transpose(1, 2) for n in ("q", "k", "v"))  # fla wants [B, H, T, D]
        beta = xs["beta"].transpose(1, 2)
        refs = {"fla recurrence": lambda: fdelta.delta_rule_recurrence(q, k, v, beta)[0]}
        if q.shape[2] % 32 == 0:
            refs["fla chunkwise (C=32)"] = lambda: fdelta.delta_rule_chunkwise(q, k, v, beta)[0]
        return refs
    if op == "gated_delta_rule":
        q, k, v, g, beta = (xs[n] for n in ("q", "k", "v", "g", "beta"))
        return {  # note the argument orders: beta before g in the recurrence, after in the chunk
            "fla naive_recurrent": lambda: fgated.naive_recurrent_gated_delta_rule(
                q, k, v, beta, g)[0],
            "fla naive_chunk (C=64)": lambda: fgated.naive_chunk_gated_delta_rule(
                q, k, v, g, beta)[0],
        }
    if op == "gla":
        q, k, v, g = (xs[n] for n in ("q", "k", "v", "g"))
        return {"fla naive_recurrent": lambda: fgla.naive_recurrent_gla(q, k, v, g)[0]}
    return _modern_fla_references(op, xs)


def _modern_fla_references(op: str, xs: dict[str, torch.Tensor]
                           ) -> dict[str, Callable[[], torch.Tensor]]:
    """fla's plain-PyTorch functions for the issue-16 ops (see tests/test_modern_kernels.py)."""
    try:
        import fla.ops.gated_delta_product.naive as fgdp
        import fla.ops.generalized_delta_rule.dplr.naive as fdplr
        import fla.ops.kda.naive as fkda
    except Exception:
        return {}
    if op == "kda":
        refs = {"fla naive_recurrent": lambda: fkda.naive_recurrent_kda(**xs)[0]}
        if xs["q"].shape[1] % 64 == 0:
            refs["fla naive_chunk (C=64)"] = lambda: fkda.naive_chunk_kda(**xs)[0]
        return refs
    if op == "gated_delta_product":
        return {"fla naive_recurrent": lambda: fgdp.naive_recurrent_gated_delta_product(
            **xs, scale=xs["q"].shape[-1] ** -0.5, num_householder=2)[0]}
    if op == "generalized_delta_rule":
        args = [xs[n].transpose(1, 2) for n in ("q", "k", "v", "a", "b", "gk")]
        refs = {"fla dplr_recurrence": lambda: fdplr.dplr_recurrence(*args)[0]}
        if xs["q"].shape[1] % 32 == 0:
            refs["fla dplr_chunkwise (C=32)"] = lambda: fdplr.dplr_chunkwise(*args)[0]
        return refs
    return {}


def bench_op(op: str, args: argparse.Namespace) -> list[Row]:
    xs = make_inputs(op, args.B, args.T, args.H, args.K, args.V, args.device)
    rows: list[Row] = []

    def add(impl: str, fn: Callable[[], torch.Tensor], repeats: int, warmup: int) -> float | None:
        try:
            ms, min_ms = time_fwd_bwd(fn, repeats, warmup)
            rows.append(Row(op, impl, round(ms, 2), round(min_ms, 2)))
            return min_ms
        except Exception as exc:  # a reference that cannot run here is reported, not fatal
            rows.append(Row(op, impl, None, note=f"{type(exc).__name__}: {str(exc)[:80]}"))
            return None
        finally:
            for x in xs.values():
                x.grad = None

    naive_ms = add("naive", ours(op, "naive", xs), args.naive_repeats, 0)
    add("chunk", ours(op, "chunk", xs), args.repeats, 1)
    if args.device == "cuda" and "fla" in kernels.available_backends():
        add("fla (triton)", ours(op, "fla", xs), args.repeats, 2)
    if not args.no_fla_refs:
        for name, fn in fla_references(op, xs).items():
            slow = "recurren" in name
            add(name, fn, args.naive_repeats if slow else args.repeats, 0 if slow else 1)
    for row in rows:
        if naive_ms and row.min_ms:
            row.speedup_vs_naive = round(naive_ms / row.min_ms, 1)
    return rows


def tiny_step_rates(repeats: int) -> list[dict]:
    """Training tokens/s of one step of the tiny preset's lm model, for each baseline."""
    from evolve.train.engines import lm_loss
    from evolve.model.contract import BASELINE_NAMES, load_mixer_class
    from evolve.model.lm import LanguageModel
    from evolve.train.presets import tiny

    track = tiny().lm
    assert track is not None
    out = []
    for name in BASELINE_NAMES:
        torch.manual_seed(0)
        model = LanguageModel(track.model, load_mixer_class(name))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(0, track.model.vocab_size, (track.batch_size, track.seq_len + 1))

        times = []
        for i in range(repeats + 1):  # the first step warms up
            start = time.perf_counter()
            loss = lm_loss(model(x[:, :-1]), x[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append((time.perf_counter() - start) * 1e3)
        min_ms = min(times[1:])
        tokens = track.batch_size * track.seq_len
        out.append({"mixer": name, "step_ms": min_ms, "tokens_per_s": tokens / (min_ms / 1e3)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--B", type=int, default=4)
    parser.add_argument("--H", type=int, default=4)
    parser.add_argument("--K", type=int, default=32)
    parser.add_argument("--V", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--naive-repeats", type=int, default=1)
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 is steadier on a "
                        "CPU shared with other jobs, where idle-spinning threads slow each other")
    parser.add_argument("--no-fla-refs", action="store_true", help="skip fla's PyTorch references")
    parser.add_argument("--no-tiny-steps", action="store_true",
                        help="skip the tokens/s of a tiny training step per baseline")
    parser.add_argument("--out", type=Path, default=Path("bench-out/kernels.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = [row for op in args.ops for row in bench_op(op, args)]
    if args.device == "cuda":
        device = torch.cuda.get_device_name()
    else:
        device = f"cpu ({torch.get_num_threads()} threads)"
    print(f"forward+backward, B={args.B} T={args.T} H={args.H} K={args.K} V={args.V}, {device}, "
          f"torch {torch.__version__}")
    print("speed-up = naive's min / this row's min")
    print(f"{'op':<24}{'impl':<26}{'min ms':>10}{'median':>10}{'speed-up':>10}  note")
    for r in rows:
        ms = "-" if r.ms is None else f"{r.ms:.1f}"
        min_ms = "-" if r.min_ms is None else f"{r.min_ms:.1f}"
        ratio = "" if r.speedup_vs_naive is None else f"{r.speedup_vs_naive:.1f}x"
        print(f"{r.op:<24}{r.impl:<26}{min_ms:>10}{ms:>10}{ratio:>10}  {r.note}")

    steps = [] if args.no_tiny_steps else tiny_step_rates(args.repeats)
    if steps:
        print("\ntiny preset lm step (B=8, T=256, d=128, 2 layers, 450k params), min of repeats")
        print(f"{'mixer':<18}{'step ms':>10}{'tokens/s':>12}")
        for r in steps:
            print(f"{r['mixer']:<18}{r['step_ms']:>10.1f}{r['tokens_per_s']:>12,.0f}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "tiny_steps": steps,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "device": device,
        "torch": torch.__version__,
        "rows": [asdict(r) for r in rows],
    }
    atomic_write_json(args.out, result)  # a reader never sees half a file
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
