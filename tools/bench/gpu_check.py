"""GPU readiness in one run (about 4 minutes on one H100/H200): the kernels on CUDA in bf16
against the float32 references and against fla's kernels, the dispatcher's default backend per
op, and DeepSpeed trainings of the `explore` preset with tokens/s, step time, peak memory and MFU.

    python tools/bench/gpu_check.py                          # everything, on the GPU
    python tools/bench/gpu_check.py --steps 50 --json bench-out/gpu_check.json
    python tools/bench/gpu_check.py --skip-train             # kernels only
    python tools/bench/gpu_check.py --mixers deltanet,gla    # which baselines to train
    python tools/bench/gpu_check.py --device cpu --steps 2   # smoke test of the same code on CPU

Parts (each runs in its own Python process, so a crash or a hung kernel in one part is reported
and the others still run; the run stops starting parts when --budget-s is spent):
1. env: the GPU (name, SMs, memory), its dense bf16 peak from the datasheet table, a measured
   8192^3 bf16 matmul rate, versions, and the backend `evolve.kernels` picks by default ("auto")
   for each op on this node, with the reason when it is not fla.
2. kernels: each op (linear_attn, delta_rule, gated_delta_rule, gla, short_conv) in bf16 through
   the chunk, fla and auto backends against the float32 token-by-token reference (relative norm
   error of the output and of every input gradient, fla's error measure); then, at the explore
   shape (B=32, T=2048, H=8, K=V=32; short_conv D=256), forward and forward+backward times of our
   chunked form and fla's kernel, their ratio, and the difference between the two outputs.
3. train:<mixer>: --steps DeepSpeed steps (ZeRO-1, bf16, one rank) of the explore preset's lm
   track on the prepared corpus (synthetic bytes when it is not prepared). Reports the median
   step time after --warmup steps, tokens/s, peak memory, loss, the backends the mixer's kernel
   calls used, and MFU: model FLOPs (6 x matmul parameters per token, plus the chunked mixer's
   own T-dependent work) per second over the GPU's dense bf16 peak.

Everything is printed to stdout; --json (or --out) writes the whole report. Exit status: 0 all
good, 1 a kernel disagrees with its reference (beyond --tol / --grad-tol), 2 no CUDA device
(with --device cuda), 3 a part failed or timed out without any disagreement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Without an install, find evolve in this checkout (appended, not prepended: nothing of the
# checkout should be found before an installed package). tools/bench/ itself (first on sys.path
# when run as a script) is dropped for the same reason: it once held a kernels.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if importlib.util.find_spec("evolve") is None:
    sys.path.append(str(ROOT))
DEFAULT_MIXERS = "deltanet,gated_deltanet"

# Part time caps in seconds (each part also stops at the run's --budget-s).
PART_CAP_S = {"env": 90, "kernels": 150, "train": 120}
PART_MIN_S = {"env": 20, "kernels": 40, "train": 45}
"""A part is skipped (not started) when less than this is left of the budget."""


# ------------------------------------------------------------------ the GPU's dense bf16 peak

def peak_bf16_tflops(name: str, sm_count: int = 0, mem_gib: float = 0.0
                     ) -> tuple[float | None, str]:
    """The dense (no sparsity) bf16 tensor-core peak of a GPU in TFLOP/s, from the vendor's
    datasheets, and the model it was read as. The H100's three forms share one name stem:
    the PCIe card has 114 SMs, the NVL card 94 GB (the SXM part 132 SMs and 80 GB); the H200
    NVL names itself. Unknown GPUs give (None, reason): pass --peak-tflops."""
    n = name.lower()
    if "gh200" in n:
        return 989.0, "GH200 (H100/H200 SXM rate)"
    if "h200" in n:
        return (835.0, "H200 NVL") if "nvl" in n else (989.0, "H200 SXM")
    if "h100" in n or "h800" in n:
        stem = "H800" if "h800" in n else "H100"
        if "pcie" in n or sm_count == 114:
            return 756.0, f"{stem} PCIe"
        if "nvl" in n or mem_gib > 90:
            return 835.0, f"{stem} NVL"
        return 989.0, f"{stem} SXM"
    if "b200" in n:
        return 2250.0, "B200"
    if "a100" in n or "a800" in n:
        return 312.0, "A100"
    if "l40s" in n:
        return 362.0, "L40S"
    if re.search(r"\bl40\b", n):
        return 181.0, "L40"
    if re.search(r"\ba10g\b", n):
        return None, "A10G (no published bf16 peak: pass --peak-tflops)"
    if re.search(r"\ba10\b", n):
        return 125.0, "A10"
    if re.search(r"\bl4\b", n):
        return 121.0, "L4"
    return None, f"unknown GPU {name!r}: pass --peak-tflops"


# ------------------------------------------------------------------ helpers

def _torch():
    import torch
    return torch


def sync(device: str) -> None:
    if device == "cuda":
        _torch().cuda.synchronize()


def time_ms(fn: Callable[[], Any], device: str, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn` in milliseconds after `warmup` calls (CUDA events on GPU)."""
    torch = _torch()
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def rel_err(a, b) -> float:
    """fla's error measure: ||a - b|| / ||b|| (relative norm, equivalently RMS ratio)."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def short_error() -> str:
    exc = sys.exc_info()[1]
    return f"{type(exc).__name__}: {exc}"[:400] if exc else ""


def fmt(x: Any, spec: str = ".4f", width: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        s = "-"
    elif isinstance(x, (int, float)):
        s = format(x, spec)
    else:
        s = str(x)
    return s.rjust(width) if width else s


# ------------------------------------------------------------------ kernels

def make_inputs(op: str, B: int, T: int, H: int, K: int, V: int, device: str, dtype) -> dict:
    """Leaf tensors for `op` as the baselines produce them: L2-normalised q and k for the delta
    rules, beta in (0, 1) in the model's dtype, log-decays in float32 (the baselines compute
    them in float32)."""
    torch = _torch()
    import torch.nn.functional as F

    from evolve.kernels.modules import l2_norm

    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape: int):
        return torch.randn(*shape, generator=g).to(device)

    if op == "short_conv":
        D, W = H * K, 4
        args = {"x": rnd(B, T, D).to(dtype), "weight": (rnd(D, W) / W).to(dtype),
                "bias": (rnd(D) * 0.1).to(dtype)}
    else:
        q, k, v = rnd(B, T, H, K), rnd(B, T, H, K), rnd(B, T, H, V)
        if op in ("delta_rule", "gated_delta_rule"):
            q, k = l2_norm(q), l2_norm(k)
        args = {"q": q.to(dtype), "k": k.to(dtype), "v": v.to(dtype)}
        if op in ("delta_rule", "gated_delta_rule"):
            args["beta"] = rnd(B, T, H).sigmoid().to(dtype)
        if op == "gated_delta_rule":
            args["g"] = -F.softplus(rnd(B, T, H)) * 0.1
        if op == "gla":
            args["g"] = F.logsigmoid(rnd(B, T, H, K)) / 16
        if op == "simple_gla":
            args["g"] = -F.softplus(rnd(B, T, H)) * 0.1
        if op == "kda":  # issue 16's ops: KDA, Gated DeltaProduct (n_h = 2), RWKV-7's rule
            args.update(q=l2_norm(q).to(dtype), k=l2_norm(k).to(dtype),
                        beta=rnd(B, T, H).sigmoid().to(dtype), g=F.logsigmoid(rnd(B, T, H, K)) / 16)
        if op == "gated_delta_product":
            args.update(q=l2_norm(q).to(dtype), k=l2_norm(rnd(B, 2 * T, H, K)).to(dtype),
                        v=rnd(B, 2 * T, H, V).to(dtype), g=-F.softplus(rnd(B, T, H)) * 0.1,
                        beta=(2 * rnd(B, 2 * T, H).sigmoid()).to(dtype))
        if op == "generalized_delta_rule":
            kk = l2_norm(rnd(B, T, H, K))
            args.update(a=(-kk).to(dtype), b=(kk * rnd(B, T, H, K).sigmoid()).to(dtype),
                        gk=-math.exp(-0.5) * rnd(B, T, H, K).sigmoid())
    return {n: t.detach().requires_grad_(True) for n, t in args.items()}


def as_reference(args: dict) -> dict:
    """The same values in float32 (the bf16-rounded inputs, so only the arithmetic differs)."""
    return {n: t.detach().float().requires_grad_(True) for n, t in args.items()}


def upstream(op: str, args: dict):
    """A fixed random output gradient, like fla's tests (not a loss that depends on o)."""
    torch = _torch()
    x = args["x"] if op == "short_conv" else args["v"]
    # o is [B, T, H, V] with q's T (gated_delta_product's v has n_h steps per token)
    shape = x.shape if op == "short_conv" else (*args["q"].shape[:3], x.shape[-1])
    g = torch.Generator(device="cpu").manual_seed(1)
    return torch.randn(*shape, generator=g).to(x.device)


def run_op(op: str, args: dict, backend: str, do=None, backward: bool = True,
           collect: bool = True):
    """Runs `op` through the dispatcher with EVOLVE_KERNEL_BACKEND=backend ("auto": unset).
    Returns (output in float32, {input: grad in float32}); grads are empty without backward
    or `collect` (timing runs)."""
    torch = _torch()
    import evolve.kernels as K

    old = os.environ.pop("EVOLVE_KERNEL_BACKEND", None)
    if backend != "auto":
        os.environ["EVOLVE_KERNEL_BACKEND"] = backend
    try:
        if not backward:
            with torch.no_grad():
                o, _ = getattr(K, op)(**args)
            return o.float(), {}
        o, _ = getattr(K, op)(**args)
        (o.float() * do).sum().backward()
        grads = {n: t.grad.detach().float().clone() for n, t in args.items()
                 if t.grad is not None} if collect else {}
        for t in args.values():
            t.grad = None
        return o.detach().float(), grads
    finally:
        os.environ.pop("EVOLVE_KERNEL_BACKEND", None)
        if old is not None:
            os.environ["EVOLVE_KERNEL_BACKEND"] = old


def auto_backends(ops: list[str], device: str, H: int, K: int) -> dict:
    """The backend the dispatcher picks by default for a training call (grad enabled) of each
    op on `device` at H heads of size K, and its reason when that is not fla."""
    from evolve.kernels.dispatch import planned_backends

    try:
        plan = planned_backends(device, head_dim=K, num_heads=H)
    except Exception:
        return {op: {"backend": None, "reason": short_error()} for op in ops}
    return {op: {"backend": plan[op][0], "reason": "" if plan[op][0] == "fla" else plan[op][1]}
            for op in ops}


def check_op(op: str, a: argparse.Namespace, backends: list[str]) -> dict:
    """Correctness of every backend against the float32 reference."""
    torch = _torch()
    device, dtype = a.device, getattr(torch, a.dtype)
    row: dict[str, Any] = {"op": op, "dtype": a.dtype, "errors": {}, "ok": True}
    B, T, H, D = a.check_shape
    row["check_shape"] = [B, T, H, D]
    small = make_inputs(op, B, T, H, D, D, device, dtype)
    do = upstream(op, small)
    o_ref, g_ref = run_op(op, as_reference(small), "naive", do)
    for backend in backends:
        err: dict[str, Any] = {}
        try:
            o, grads = run_op(op, small, backend, do)
            err["out"] = rel_err(o, o_ref)
            err["grad"] = {n: rel_err(grads[n], g_ref[n]) for n in g_ref if n in grads}
            err["grad_max"] = max(err["grad"].values()) if err["grad"] else None
            missing = sorted(set(g_ref) - set(grads))
            if missing:
                err["note"] = f"no gradient for {missing}"
        except Exception:
            err["error"] = short_error()
            try:  # fla may refuse only the backward (gated delta rule on Hopper): check forward
                o, _ = run_op(op, small, backend, backward=False)
                err["out"] = rel_err(o, o_ref)
                err["note"] = "forward only (backward refused)"
            except Exception:
                pass
        if "out" in err:
            bad_out = not err["out"] <= a.tol
            bad_grad = err.get("grad_max") is not None and not err["grad_max"] <= a.grad_tol
            err["ok"] = not (bad_out or bad_grad)
            if not err["ok"]:
                row["ok"] = False
                err["disagrees"] = True
        else:
            # fla refusing a call (or failing) is reported, not a disagreement: the default
            # ("auto") then falls back to chunk and is checked itself. chunk and auto must run.
            err["ok"] = backend == "fla"
        if backend in ("auto", "chunk") and "error" in err:
            err["ok"] = row["ok"] = False
        row["errors"][backend] = err
    return row


def speed_op(op: str, a: argparse.Namespace, backends: list[str], row: dict) -> None:
    """Forward and forward+backward times at the explore shape, chunk against fla, into `row`."""
    torch = _torch()
    device, dtype = a.device, getattr(torch, a.dtype)
    B, T, H, D = a.speed_shape
    row["speed_shape"] = [B, T, H, D]
    big = make_inputs(op, B, T, H, D, D, device, dtype)
    do = upstream(op, big)
    outs: dict[str, Any] = {}
    speed: dict[str, Any] = {}
    for backend in [b for b in ("chunk", "fla") if b in backends]:
        s: dict[str, Any] = {}
        try:
            outs[backend], _ = run_op(op, big, backend, backward=False)
            s["fwd_ms"] = time_ms(lambda b=backend: run_op(op, big, b, backward=False),
                                  device, a.repeats)
        except Exception:
            s["fwd_error"] = short_error()
        try:
            s["fwdbwd_ms"] = time_ms(lambda b=backend: run_op(op, big, b, do, collect=False),
                                     device, a.repeats)
        except Exception:
            s["fwdbwd_error"] = short_error()
        speed[backend] = s
    row["speed"] = speed
    c, f = speed.get("chunk", {}), speed.get("fla", {})
    if c.get("fwd_ms") and f.get("fwd_ms"):
        row["fwd_ratio_chunk_over_fla"] = c["fwd_ms"] / f["fwd_ms"]
    if c.get("fwdbwd_ms") and f.get("fwdbwd_ms"):
        row["fwdbwd_ratio_chunk_over_fla"] = c["fwdbwd_ms"] / f["fwdbwd_ms"]
    if "chunk" in outs and "fla" in outs:
        row["chunk_vs_fla_out"] = rel_err(outs["chunk"], outs["fla"])


def part_kernels(a: argparse.Namespace) -> dict:
    torch = _torch()
    from evolve.kernels import available_backends

    torch.backends.cuda.matmul.allow_tf32 = False  # the float32 reference in full float32
    torch.backends.cudnn.allow_tf32 = False
    avail = available_backends()
    backends = ["chunk"] + (["fla"] if "fla" in avail else []) + ["auto"]
    print(f"[kernels] backends {backends} (available: {avail}); dtype {a.dtype}; "
          f"check shape B,T,H,D={a.check_shape}; speed shape {a.speed_shape}", flush=True)
    rows: list[dict] = []
    result = {"kernels": rows}

    def save() -> None:  # after every step, so a timeout keeps what was measured
        if a.part_json:
            Path(a.part_json).write_text(json.dumps(result, default=str))

    # Correctness of every op first (it decides the exit status), then the timings.
    for op in a.ops:
        t0 = time.time()
        try:
            row = check_op(op, a, backends)
        except Exception:
            row = {"op": op, "ok": False, "error": traceback.format_exc(limit=4)[-1500:]}
        row["check_s"] = round(time.time() - t0, 1)
        rows.append(row)
        save()
        print(f"[kernels] {op}: {'ok' if row.get('ok') else 'FAIL'} ({row['check_s']} s) "
              f"{json.dumps(row, default=str)[:1200]}", flush=True)
        if a.device == "cuda":
            torch.cuda.empty_cache()
    if a.skip_speed:
        return result
    for row in rows:
        t0 = time.time()
        try:
            speed_op(row["op"], a, backends, row)
        except Exception:
            row["speed_error"] = short_error()
        row["speed_s"] = round(time.time() - t0, 1)
        save()
        print(f"[kernels] {row['op']} speed ({row['speed_s']} s): "
              f"{json.dumps(row.get('speed'), default=str)}", flush=True)
        if a.device == "cuda":
            torch.cuda.empty_cache()
    return result


# ------------------------------------------------------------------ env

def part_env(a: argparse.Namespace) -> dict:
    torch = _torch()
    out: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                           "cuda": torch.version.cuda, "device_kind": a.device}
    for mod in ("triton", "fla", "deepspeed", "transformers", "submitit", "pydantic"):
        try:
            if mod == "deepspeed":
                os.environ.setdefault("DS_BUILD_OPS", "0")
            out[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception:
            out[mod] = f"not importable ({short_error()[:200]})"
    if a.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        mem_gib = p.total_memory / 2**30
        out.update(gpu=torch.cuda.get_device_name(0), sm_count=p.multi_processor_count,
                   mem_gib=round(mem_gib, 1), capability=f"{p.major}.{p.minor}")
        peak, model = peak_bf16_tflops(out["gpu"], p.multi_processor_count, mem_gib)
        if a.peak_tflops:
            peak, model = a.peak_tflops, f"{model}; --peak-tflops {a.peak_tflops}"
        out.update(peak_bf16_tflops=peak, gpu_model=model)
        try:
            n = 8192
            x = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
            y = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
            ms = time_ms(lambda: x @ y, "cuda", repeats=10, warmup=3)
            out["matmul_bf16_tflops"] = round(2 * n**3 / (ms * 1e-3) / 1e12, 1)
            del x, y
        except Exception:
            out["matmul_error"] = short_error()
    head = a.speed_shape
    out["auto_backend"] = auto_backends(a.ops, a.device, head[2], head[3])
    return out


# ------------------------------------------------------------------ training

def synthetic_corpus(folder: Path, nbytes: int = 4_000_000) -> Path:
    """Random printable bytes: a stand-in corpus where none is prepared (throughput only)."""
    import numpy as np

    path = folder / "synthetic.txt"
    rng = np.random.default_rng(0)
    path.write_bytes(rng.integers(32, 127, size=nbytes, dtype=np.uint8).tobytes())
    return path


def train_config(a: argparse.Namespace, steps: int):
    """The explore preset's lm track cut to `steps` steps (its shapes, optimiser, bf16 and
    DeepSpeed ZeRO-1 unchanged on CUDA); on CPU a tiny model of the same form."""
    from dataclasses import replace

    from evolve.train.presets import explore

    cfg = explore()
    assert cfg.lm is not None
    track = replace(cfg.lm, max_steps=steps, max_tokens=None, log_every=10**9,
                    checkpoint_every=10**9,
                    optim=replace(cfg.lm.optim, warmup_steps=min(cfg.lm.optim.warmup_steps,
                                                                 max(1, steps // 3))))
    runtime = cfg.runtime
    if a.device == "cpu":
        model = replace(track.model, hidden_size=64, num_layers=2, num_heads=4, max_seq_len=128,
                        target_params=None)
        track = replace(track, model=model, batch_size=4, seq_len=128)
        runtime = replace(runtime, device="cpu", precision="fp32")
    if a.engine:
        runtime = replace(runtime, engine=a.engine)
    return replace(cfg, lm=track, mqar=None, runtime=runtime)


def load_corpus(cfg, folder: Path):
    """The prepared corpus ($EVOLVE_DATA), never downloading; synthetic bytes otherwise."""
    from dataclasses import replace

    from evolve.train.data import load_data

    data_cfg = replace(cfg.data, auto_prepare=False)
    try:
        return load_data(data_cfg), f"{data_cfg.corpus} ({data_cfg.resolved_data_dir()})"
    except Exception:
        why = short_error()
        path = synthetic_corpus(folder)
        data = load_data(replace(data_cfg, corpus=str(path), data_dir=str(folder / "data")))
        return data, f"synthetic random bytes ({why[:200]})"


def mixer_flops_per_token(mixer: str, model_cfg) -> float:
    """Forward + backward FLOPs per token of the chunked mixer's T-dependent work, all layers:
    per head, scores q k^T and scores @ v inside a chunk (2 C (K + V)), plus reading and
    updating the state (2 x 2 K V), times 3 for forward and backward. Softmax attention:
    2 T (K + V) per head with a causal half. A rough count, small at the explore shape."""
    H = model_cfg.num_heads
    K = V = model_cfg.hidden_size // H
    C = model_cfg.chunk_size
    if mixer == "softmax":
        T = model_cfg.max_seq_len
        per_head = 2 * (T / 2) * (K + V)
    else:
        per_head = 2 * C * (K + V) + 4 * K * V
    return 3 * per_head * H * model_cfg.num_layers


def part_train(a: argparse.Namespace, mixer: str) -> dict:
    torch = _torch()
    from torch import nn

    from evolve.train.engines import pick_device, use_deepspeed
    from evolve.kernels import dispatch
    from evolve.model.contract import load_mixer_class
    from evolve.model.lm import LanguageModel, count_params
    from evolve.train.loop import DeferredSignals, run_track

    t0 = time.time()
    steps = a.steps
    cfg = train_config(a, steps)
    track = cfg.lm
    if a.part_timeout:
        # End the loop in time to report (the setup before the loop takes ~10-30 s).
        from dataclasses import replace
        track = replace(track, max_time_s=max(10.0, a.part_timeout - 45))
    folder = Path(tempfile.mkdtemp(prefix=f"gpu_check_{mixer}_"))
    data, data_note = load_corpus(cfg, folder)
    print(f"[train:{mixer}] data: {data_note}; {data}", flush=True)
    seed = 0
    rank = int(os.environ.get("RANK", "0"))
    mixer_cls = load_mixer_class(mixer)
    # The parameter counts, from a copy on the meta device (the engine may flatten or shard).
    with torch.device("meta"):
        probe = LanguageModel(track.model, mixer_cls)
    params = count_params(probe)
    matmul_params = sum(m.weight.numel() for m in probe.modules() if isinstance(m, nn.Linear))
    del probe
    flops_per_token = 6 * matmul_params + mixer_flops_per_token(mixer, track.model)
    tokens_per_step = track.batch_size * track.seq_len
    peak, gpu_model = None, None
    if a.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        peak, gpu_model = peak_bf16_tflops(torch.cuda.get_device_name(0),
                                           p.multi_processor_count, p.total_memory / 2**30)
        peak = a.peak_tflops or peak
    res: dict[str, Any] = {
        "mixer": mixer, "steps_asked": steps,
        "engine": "deepspeed" if use_deepspeed(cfg.runtime, pick_device(cfg.runtime))
        else "torch",
        "precision": cfg.runtime.precision, "zero_stage": cfg.runtime.zero_stage,
        "batch_size": track.batch_size, "seq_len": track.seq_len, "params": params,
        "matmul_params": matmul_params, "flops_per_token": flops_per_token,
        "peak_bf16_tflops": peak, "gpu_model": gpu_model, "data": data_note,
    }

    def batches(step: int):
        return data.train_batch(step=step, batch_size=track.batch_size, seq_len=track.seq_len,
                                seed=seed, rank=rank)

    # Which backend each kernel call took (the dispatcher picks per call).
    used: dict[str, int] = {}
    original = dispatch.select_backend

    def counting(op, x, v=None):
        b = original(op, x, v)
        used[f"{op}={b}"] = used.get(f"{op}={b}", 0) + 1
        return b

    dispatch.select_backend = counting
    stamps: list[float] = []
    losses: list[float] = []

    def measure() -> None:
        """The figures from the steps so far (saved as they come: a timeout keeps them)."""
        step_s = [b - a_ for a_, b in zip([t_start, *stamps[:-1]], stamps, strict=True)]
        warm = min(a.warmup, max(0, len(step_s) - 1))
        steady = step_s[warm:] or step_s
        med = statistics.median(steady) if steady else None
        tps = tokens_per_step / med if med else None
        achieved = flops_per_token * tps / 1e12 if tps else None
        res.update(
            steps=len(stamps), first_loss=losses[0] if losses else None,
            last_loss=losses[-1] if losses else None,
            setup_and_first_step_s=step_s[0] if step_s else None,
            step_ms_median=med * 1e3 if med else None,
            step_ms_min=min(steady) * 1e3 if steady else None, steady_steps=len(steady),
            tokens_per_s=tps, model_tflops=achieved if a.device == "cuda" else None,
            mfu=achieved / peak if achieved and peak else None,
            backends_used=dict(used), wall_s=round(time.time() - t0, 1))
        if a.device == "cuda":
            res.update(peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30,
                       peak_reserved_gib=torch.cuda.max_memory_reserved() / 2**30)
        if a.part_json:
            Path(a.part_json).write_text(json.dumps(res, default=str))

    def on_step(step: int, loss: float) -> None:
        stamps.append(time.perf_counter())
        losses.append(loss)
        if step == 1 or step % 10 == 0 or step == steps:
            print(f"[train:{mixer}] step {step}/{steps} loss {loss:.4f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        if step % 5 == 0 or step == 1:
            measure()

    t_start = time.perf_counter()
    out = run_track("lm", track, cfg.runtime, mixer_cls, batches, folder, seed,
                    DeferredSignals(), on_step=on_step)
    dispatch.select_backend = original
    measure()
    res.update(status=out.status, reason=out.reason, final_loss=out.final_loss,
               tokens_per_s_with_warmup=out.tokens_per_s, peak_mem_gib=out.peak_mem_mb / 1024)
    try:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:
        pass
    import shutil
    shutil.rmtree(folder, ignore_errors=True)  # the final checkpoint: ~0.3 GB at explore
    return res


# ------------------------------------------------------------------ orchestration

def run_part(name: str, a: argparse.Namespace, argv: list[str], timeout: float) -> dict:
    """Runs one part in a child process (output straight to our stdout) and reads its JSON."""
    with tempfile.NamedTemporaryFile(prefix="gpu_check_part_", suffix=".json",
                                     delete=False) as fh:
        result_path = Path(fh.name)
    cmd = [sys.executable, "-u", str(Path(__file__).resolve()), *argv, "--part", name,
           "--part-json", str(result_path), "--part-timeout", str(int(timeout))]
    t0 = time.time()
    print(f"\n=== part {name} (at most {timeout:.0f} s) ===", flush=True)
    sys.stdout.flush()
    # Its own process group, so a timeout also ends what it started (compilers, workers).
    proc = subprocess.Popen(cmd, stdout=sys.stdout, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        rc: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rc = None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    seconds = round(time.time() - t0, 1)
    try:  # a part may have saved partial results before it timed out
        result = json.loads(result_path.read_text()) if result_path.stat().st_size else {}
    except Exception:
        result = {}
    finally:
        result_path.unlink(missing_ok=True)
    if rc is None:
        result.setdefault("error", f"timed out after {timeout:.0f} s")
    elif rc != 0 and "error" not in result:
        result["error"] = f"part process exited with status {rc}"
    result["seconds"] = seconds
    print(f"=== part {name}: {'error: ' + result['error'][:300] if 'error' in result else 'done'}"
          f" ({seconds} s) ===", flush=True)
    return result


def child(a: argparse.Namespace) -> int:
    """--part NAME: run one part in this process and write its JSON to --part-json."""
    result: dict[str, Any]
    try:
        if a.device == "cuda":
            torch = _torch()
            if not torch.cuda.is_available():
                raise RuntimeError("torch sees no CUDA device")
        if a.part == "env":
            result = part_env(a)
        elif a.part == "kernels":
            result = part_kernels(a)
        elif a.part.startswith("train:"):
            result = part_train(a, a.part.split(":", 1)[1])
        else:
            raise ValueError(f"unknown part {a.part}")
    except Exception:
        tb = traceback.format_exc()
        print(tb, flush=True)
        result = {"error": short_error(), "traceback": tb[-3000:]}
    Path(a.part_json).write_text(json.dumps(result, default=str))
    return 0


def print_summary(report: dict[str, Any], a: argparse.Namespace) -> None:
    env = report.get("env", {})
    print("\n" + "=" * 100)
    print("GPU CHECK SUMMARY")
    print("=" * 100)
    if a.device == "cuda":
        print(f"device        {env.get('gpu')} (read as {env.get('gpu_model')}), "
              f"{env.get('sm_count')} SMs, {env.get('mem_gib')} GiB, sm_{env.get('capability')}")
        print(f"bf16 peak     {fmt(env.get('peak_bf16_tflops'), '.0f')} TFLOP/s (datasheet, "
              f"dense); measured 8192^3 matmul {fmt(env.get('matmul_bf16_tflops'), '.0f')} "
              "TFLOP/s")
    else:
        print("device        cpu (smoke mode)")
    print(f"versions      python {env.get('python')}, torch {env.get('torch')}, "
          f"cuda {env.get('cuda')}, triton {env.get('triton')}, fla {env.get('fla')}, "
          f"deepspeed {env.get('deepspeed')}, transformers {env.get('transformers')}")
    if "error" in env:
        print(f"env error     {env['error']}")
    auto = env.get("auto_backend", {})
    if auto:
        print("\ndefault backend per op (dispatcher 'auto', training call):")
        for op, info in auto.items():
            reason = f"  ({info['reason'][:160]})" if info.get("reason") else ""
            print(f"  {op:<24}{info.get('backend')!s:<8}{reason}")

    kern = report.get("kernels", {})
    rows = kern.get("kernels", [])
    if rows:
        print(f"\nkernels vs float32 reference (relative norm error; ok: out <= {a.tol}, "
              f"grad <= {a.grad_tol}), dtype {a.dtype}:")
        print(f"  {'op':<24}{'backend':<8}{'out err':>10}{'grad err':>10}  result")
    for r in rows:
        if "error" in r and not r.get("errors"):
            print(f"  {r['op']:<24}{'':<8}{'':>10}{'':>10}  FAIL {r['error'][-300:]}")
            continue
        for backend, e in r.get("errors", {}).items():
            if e.get("disagrees"):
                status = "DISAGREES"
            elif "error" in e:
                status = "FAIL" if backend != "fla" else (
                    "fwd ok, bwd n/a" if "out" in e else "n/a")
            else:
                status = "ok"
            note = "; ".join(x for x in (e.get("note", ""), e.get("error", "")[:150]) if x)
            print(f"  {r['op']:<24}{backend:<8}{fmt(e.get('out'), '.2e', 10)}"
                  f"{fmt(e.get('grad_max'), '.2e', 10)}  {status}{'  ' + note if note else ''}")
    if rows and any("speed" in r for r in rows):
        shape = next((r["speed_shape"] for r in rows if "speed_shape" in r), None)
        print(f"\nchunk vs fla at the explore shape B,T,H,D={shape} (ms, median; ratio = "
              "chunk / fla, >1: fla faster):")
        print(f"  {'op':<24}{'chunk fwd':>10}{'fla fwd':>10}{'ratio':>7}{'chunk f+b':>11}"
              f"{'fla f+b':>10}{'ratio':>7}{'chunk~fla':>11}")
        for r in rows:
            sp = r.get("speed", {})
            c, f = sp.get("chunk", {}), sp.get("fla", {})
            print(f"  {r['op']:<24}{fmt(c.get('fwd_ms'), '.2f', 10)}"
                  f"{fmt(f.get('fwd_ms'), '.2f', 10)}"
                  f"{fmt(r.get('fwd_ratio_chunk_over_fla'), '.2f', 7)}"
                  f"{fmt(c.get('fwdbwd_ms'), '.2f', 11)}{fmt(f.get('fwdbwd_ms'), '.2f', 10)}"
                  f"{fmt(r.get('fwdbwd_ratio_chunk_over_fla'), '.2f', 7)}"
                  f"{fmt(r.get('chunk_vs_fla_out'), '.2e', 11)}")
            for side, s in (("chunk", c), ("fla", f)):
                for key in ("fwd_error", "fwdbwd_error"):
                    if key in s:
                        print(f"      {side} {key.split('_')[0]}: {s[key][:200]}")
            if "speed_error" in r:
                print(f"      {r['speed_error'][:300]}")
    if "error" in kern:
        print(f"  kernels part error: {kern['error']}")

    trains = report.get("train", [])
    if trains:
        print("\nexplore-preset training (one rank; median step after warm-up):")
        print(f"  {'mixer':<16}{'status':<10}{'steps':>6}{'params':>12}{'step ms':>9}"
              f"{'tokens/s':>12}{'peak GiB':>10}{'TFLOP/s':>9}{'MFU':>7}{'loss':>14}")
        for t in trains:
            if "steps" not in t:
                print(f"  {t.get('mixer', '?'):<16}FAIL      {t.get('error', '?')[:300]}")
                continue
            status = t.get("status") or ("partial" if "error" in t else "?")
            final = t.get("final_loss", t.get("last_loss"))
            loss = f"{fmt(t.get('first_loss'), '.2f')}->{fmt(final, '.2f')}"
            print(f"  {t['mixer']:<16}{status:<10}{t['steps']:>6}{t.get('params', 0):>12,}"
                  f"{fmt(t.get('step_ms_median'), '.1f', 9)}"
                  f"{fmt(t.get('tokens_per_s'), ',.0f', 12)}"
                  f"{fmt(t.get('peak_mem_gib'), '.2f', 10)}{fmt(t.get('model_tflops'), '.1f', 9)}"
                  f"{fmt(t.get('mfu'), '.3f', 7)}{loss:>14}")
            zero = f" ZeRO-{t.get('zero_stage')}" if t.get("engine") == "deepspeed" else ""
            print(f"      {t.get('engine')}{zero} {t.get('precision')}, "
                  f"batch {t.get('batch_size')}x{t.get('seq_len')}, "
                  f"{fmt(t.get('flops_per_token', 0) / 1e6, '.1f')} MFLOP/token, setup + first "
                  f"step {fmt(t.get('setup_and_first_step_s'), '.1f')} s, {t.get('wall_s')} s "
                  f"in all")
            print(f"      kernels: {t.get('backends_used')}; data: {str(t.get('data'))[:70]}")
            if t.get("reason"):
                print(f"      stopped: {t['reason']}")
            if "error" in t:
                print(f"      error: {t['error'][:300]}")
    print(f"\nresult: {report['verdict']} (exit {report['exit_code']}); "
          f"{report['wall_s']:.0f} s in all")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    from evolve.kernels import OPS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda (default) or cpu: a smoke test of the same code with tiny shapes")
    p.add_argument("--steps", type=int, default=40, help="training steps per mixer (default 40)")
    p.add_argument("--warmup", type=int, default=10,
                   help="steps left out of the step-time median (compilation, autotuning)")
    p.add_argument("--mixers", default=DEFAULT_MIXERS,
                   help=f"comma-separated baselines to train (default {DEFAULT_MIXERS})")
    p.add_argument("--engine", choices=("torch", "deepspeed", "auto"), default=None,
                   help="training engine (default: the preset's, deepspeed; torch on --device cpu)")
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated kernel ops to check")
    p.add_argument("--tol", type=float, default=0.02,
                   help="bound on the output's relative norm error against the float32 reference")
    p.add_argument("--grad-tol", type=float, default=0.05,
                   help="bound on each input gradient's relative norm error")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                   help="kernel inputs (default bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per kernel timing")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="dense bf16 peak for MFU when the GPU is not in the table")
    p.add_argument("--skip-kernels", action="store_true")
    p.add_argument("--skip-speed", action="store_true", help="kernels: correctness only")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--budget-s", type=float, default=300,
                   help="stop starting parts after this many seconds (default 300)")
    p.add_argument("--cap-s", type=float, default=None,
                   help="time cap of each part (default: env 90 s, kernels 150 s, each "
                   "training 120 s)")
    p.add_argument("--json", "--out", dest="json", default="bench-out/gpu_check.json",
                   help="where to write the JSON report (default bench-out/gpu_check.json)")
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part-json", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part-timeout", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.ops = [o for o in a.ops.split(",") if o]
    for op in a.ops:
        if op not in OPS:
            p.error(f"unknown op {op!r}; valid: {', '.join(OPS)}")
    a.mixer_list = [m for m in a.mixers.split(",") if m]
    if a.dtype is None:
        a.dtype = "bfloat16" if a.device == "cuda" else "float32"
    if a.engine is None and a.device == "cpu":
        a.engine = "torch"
    # (B, T, H, D): the correctness check crosses a partial chunk; the speed shape is explore's
    # (batch 32, context 2048, 8 heads of 32).
    if a.device == "cuda":
        a.check_shape, a.speed_shape = (2, 257, 4, 32), (32, 2048, 8, 32)
    else:
        a.check_shape, a.speed_shape = (1, 67, 2, 16), (2, 256, 2, 16)
    return a


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    try:
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    except Exception:
        pass
    a = parse(raw)
    if a.part:
        return child(a)
    t0 = time.time()
    deadline = t0 + a.budget_s
    if a.device == "cuda":
        try:
            import torch
            cuda_ok = torch.cuda.is_available()
        except Exception:
            cuda_ok = False
        if not cuda_ok:
            print("gpu_check: torch sees no CUDA device (use --device cpu for the smoke test)")
            return 2
    report: dict[str, Any] = {"args": {k: v for k, v in vars(a).items()
                                       if k not in ("part", "part_json")},
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    parts = ["env"] + ([] if a.skip_kernels else ["kernels"]) + \
        ([] if a.skip_train else [f"train:{m}" for m in a.mixer_list])
    skipped = []
    for name in parts:
        kind = name.split(":")[0]
        left = deadline - time.time()
        if left < PART_MIN_S[kind]:
            skipped.append(name)
            result = {"error": f"skipped: {left:.0f} s of the --budget-s {a.budget_s:.0f} left"}
            print(f"\n=== part {name}: skipped ({left:.0f} s left of the budget) ===", flush=True)
        else:
            result = run_part(name, a, raw, min(a.cap_s or PART_CAP_S[kind], left))
        if kind == "train":
            result.setdefault("mixer", name.split(":", 1)[1])
            report.setdefault("train", []).append(result)
        else:
            report[kind] = result
    disagree = any(not r.get("ok", False)
                   for r in report.get("kernels", {}).get("kernels", []))
    failed = [k for k in ("env", "kernels") if "error" in report.get(k, {})] + \
        [f"train:{t.get('mixer')}" for t in report.get("train", []) if "error" in t]
    if disagree:
        code, verdict = 1, "a kernel disagrees with its reference or failed"
    elif failed:
        code, verdict = 3, f"parts failed or skipped: {', '.join(failed)}"
    else:
        code, verdict = 0, "all parts ok"
    report.update(exit_code=code, verdict=verdict, wall_s=time.time() - t0)
    print_summary(report, a)
    if a.json:
        path = Path(a.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
