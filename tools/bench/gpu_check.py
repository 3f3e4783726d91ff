"""GPU readiness in one run (under 5 minutes on one GPU): kernels on CUDA in bf16 against the
float32 references, our chunked forms against fla's chunk kernels (speed ratio), and DeepSpeed
steps of the `explore` preset with tokens/s and MFU.

    python tools/bench/gpu_check.py                      # all three parts
    python tools/bench/gpu_check.py --steps 50 --out bench-out/gpu_check.json
    python tools/bench/gpu_check.py --skip-train          # kernels only

Prints a table per part and writes JSON. Exits 1 if a kernel disagrees with its reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
"""Dense bf16 tensor-core peaks (no sparsity), for MFU."""


def inputs(op: str, B: int, T: int, H: int, K: int, V: int, dtype: torch.dtype) -> dict:
    from evolve.kernels.modules import l2_norm

    g = torch.Generator(device="cuda").manual_seed(0)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", generator=g)

    q, k, v = rnd(B, T, H, K), rnd(B, T, H, K), rnd(B, T, H, V)
    if op in ("delta_rule", "gated_delta_rule"):
        q, k = l2_norm(q), l2_norm(k)
    args: dict[str, torch.Tensor] = {"q": q, "k": k, "v": v}
    if op in ("delta_rule", "gated_delta_rule"):
        args["beta"] = rnd(B, T, H).sigmoid()
    if op == "gated_delta_rule":
        args["g"] = -torch.nn.functional.softplus(rnd(B, T, H)) * 0.1
    if op == "gla":
        args["g"] = torch.nn.functional.logsigmoid(rnd(B, T, H, K)) / 16
    return {name: t.to(dtype if name in ("q", "k", "v", "beta") else torch.float32)
            .requires_grad_(True) for name, t in args.items()}


def run_op(op: str, args: dict, backend: str) -> tuple[torch.Tensor, dict]:
    import evolve.kernels as K

    os.environ["EVOLVE_KERNEL_BACKEND"] = backend
    try:
        o, _ = getattr(K, op)(**args)
        o.float().square().mean().backward()
        grads = {n: t.grad.detach().clone() for n, t in args.items()}
        for t in args.values():
            t.grad = None
        return o.detach().float(), grads
    finally:
        os.environ.pop("EVOLVE_KERNEL_BACKEND", None)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def time_ms(fn: Callable[[], Any], repeats: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def check_kernels(tol: float) -> tuple[list[dict], bool]:
    rows, ok = [], True
    for op in ("linear_attn", "delta_rule", "gated_delta_rule", "gla"):
        row: dict[str, Any] = {"op": op}
        try:
            # Correctness: bf16 through the default dispatch against the float32 reference.
            small = inputs(op, 2, 257, 4, 64, 64, torch.bfloat16)
            ref_args = {n: t.detach().float().requires_grad_(True) for n, t in small.items()}
            o_ref, g_ref = run_op(op, ref_args, "naive")
            o, grads = run_op(op, small, "auto")
            row["out_rel_err"] = rel_err(o, o_ref)
            row["grad_rel_err"] = max(rel_err(grads[n], g_ref[n]) for n in grads)
            row["ok"] = row["out_rel_err"] < tol and row["grad_rel_err"] < 4 * tol
            ok &= row["ok"]
            # Speed at the explore shape: our chunk form against fla's kernels.
            big = inputs(op, 8, 2048, 8, 64, 64, torch.bfloat16)
            row["chunk_ms"] = time_ms(lambda: run_op(op, big, "chunk"))
            try:
                row["fla_ms"] = time_ms(lambda: run_op(op, big, "fla"))
                row["fla_speedup"] = row["chunk_ms"] / row["fla_ms"]
            except Exception as exc:  # fla missing or refusing this op: report, go on
                row["fla_error"] = f"{type(exc).__name__}: {exc}"[:200]
        except Exception as exc:
            row["ok"] = ok = False
            row["error"] = traceback.format_exc(limit=3)[-600:]
        rows.append(row)
    return rows, ok


def train_explore(steps: int, mixer: str) -> dict[str, Any]:
    """`steps` DeepSpeed steps of the explore preset's lm track; tokens/s and MFU."""
    from dataclasses import replace
    from pathlib import Path as P
    import tempfile

    from evolve.model.contract import load_mixer_class
    from evolve.presets import explore
    from evolve.train import _batches
    from evolve.trainer import DeferredSignals, run_track

    cfg = explore()
    assert cfg.lm is not None
    track = replace(cfg.lm, max_steps=steps, max_tokens=None, log_every=10,
                    checkpoint_every=10**9, optim=replace(cfg.lm.optim, warmup_steps=10))
    batches, _ = _batches("lm", replace(cfg, lm=track), 0)
    folder = P(tempfile.mkdtemp(prefix="gpu_check_"))
    t0 = time.time()
    out = run_track("lm", track, cfg.runtime, load_mixer_class(mixer), batches, folder, 0,
                    DeferredSignals())
    wall = time.time() - t0
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    # 6 N flops per token (forward + backward) ignores the mixer's own T-dependent work: a
    # lower bound on the model flops, hence on MFU.
    mfu = 6 * out.num_params * out.tokens_per_s / (peak * 1e12) if peak else None
    return {"mixer": mixer, "steps": out.steps, "status": out.status, "loss": out.final_loss,
            "params": out.num_params, "tokens_per_s": out.tokens_per_s, "mfu": mfu,
            "peak_mem_gb": out.peak_mem_mb / 1024, "wall_s": wall, "device": name}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--mixer", default="deltanet")
    parser.add_argument("--tol", type=float, default=0.02, help="bf16 relative error bound")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--out", default="bench-out/gpu_check.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(),
                              "torch": torch.__version__}
    t0 = time.time()
    rows, ok = check_kernels(args.tol)
    report["kernels"] = rows
    print(f"{'op':<18}{'out err':>10}{'grad err':>10}{'chunk ms':>10}{'fla ms':>9}{'ratio':>7}")
    for r in rows:
        print(f"{r['op']:<18}{r.get('out_rel_err', float('nan')):>10.4f}"
              f"{r.get('grad_rel_err', float('nan')):>10.4f}{r.get('chunk_ms', float('nan')):>10.2f}"
              f"{r.get('fla_ms', float('nan')):>9.2f}{r.get('fla_speedup', float('nan')):>7.2f}"
              f"  {'ok' if r.get('ok') else 'FAIL ' + r.get('error', '')[-200:]}")
    if not args.skip_train:
        try:
            report["train"] = t = train_explore(args.steps, args.mixer)
            print(f"explore/{t['mixer']}: {t['steps']} steps, {t['params']:,} params, "
                  f"{t['tokens_per_s']:,.0f} tokens/s, MFU {t['mfu'] or float('nan'):.3f}, "
                  f"peak {t['peak_mem_gb']:.1f} GB, loss {t['loss']:.3f}, {t['wall_s']:.0f} s")
        except Exception:
            report["train_error"] = traceback.format_exc()[-2000:]
            print(report["train_error"], file=sys.stderr)
            ok = False
    report["wall_s"] = time.time() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out} ({report['wall_s']:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
