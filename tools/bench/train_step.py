"""Old against new: one tiny-preset training step per baseline, and each sped-up piece, in one run.

"Old" is the code at a git revision (--ref, by default the last one before the CPU speed-up of
the short convolution, the chunked kernels, l2_norm and the SwiGLU), "new" the working tree.
- Pieces (forward + backward): the old function is loaded from `git show REF:path` into a
  temporary module next to the new one and both run in this process, interleaved.
- Whole steps (forward, backward, clip, AdamW; the tiny preset's lm and mqar tracks; the same
  seed, batch and optimiser settings as a training): two worker processes, one importing the old
  revision's evolve (extracted with `git archive` to a temporary folder) and one the working
  tree, take turns step by step (the order alternates), so both see the same machine load.
Every timing is one thread (torch.set_num_threads(1), as trainings run). The tables give the
median wall-clock and the median thread CPU time (steadier on a CPU shared with other work) of
--repeats runs after --warmup, and the new/old ratio of the medians. Each row also gives the
largest difference old against new (pieces: outputs and gradients, relative to the largest
magnitude; steps: the loss of the first step from the same initialisation).

Run from the repository root:
    .venv/bin/python tools/bench/train_step.py               # writes bench-out/train_step.json
    .venv/bin/python tools/bench/train_step.py --repeats 5 --no-pieces --mixers gla
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

from evolve.state.fsio import atomic_write_json

ROOT = Path(__file__).resolve().parents[2]
# The last revision before the speed-up (1edc74f): the "old" side by default.
DEFAULT_REF = "1edc74f"
MIXERS = ("linear_attention", "deltanet", "gated_deltanet", "gla")
TRACKS = ("lm", "mqar")


def git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True).stdout


def median(xs: list[float]) -> float:
    return round(statistics.median(xs), 3)


# ---------------------------------------------------------------- whole steps, in two workers

WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
import evolve
import evolve.kernels
for module in (evolve, evolve.kernels):  # the tree asked for, not the installed one
    assert module.__file__.startswith(sys.argv[1]), module.__file__
from evolve.train.engines import TorchEngine
from evolve.model.contract import load_mixer_class
from evolve.model.lm import LanguageModel
from evolve.train.presets import tiny

cfg = tiny()
engine = batch = None
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "setup":
        track = getattr(cfg, cmd["track"])
        torch.manual_seed(0)
        model = LanguageModel(track.model, load_mixer_class(cmd["mixer"]))
        engine = TorchEngine(model, track.optim, track.total_steps(), cfg.runtime,
                             torch.device("cpu"))
        gen = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, track.model.vocab_size, (track.batch_size, track.seq_len + 1),
                               generator=gen)
        batch = (tokens[:, :-1], tokens[:, 1:])
        out = {"file": evolve.kernels.__file__}
    else:
        # a step in the middle of the schedule: past the warm-up, the full learning rate
        step = cmd["step"]
        wall, cpu = time.perf_counter(), time.thread_time()
        res = engine.train_step(*batch, step)
        out = {"wall_ms": (time.perf_counter() - wall) * 1e3,
               "cpu_ms": (time.thread_time() - cpu) * 1e3, "loss": res["loss"]}
    print(json.dumps(out), flush=True)
"""


class Worker:
    def __init__(self, tree: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tree)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )

    def ask(self, **cmd) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


def old_tree(ref: str, dest: Path) -> Path:
    """evolve/ and kernels/ of `ref` under dest, laid out as installed: dest/evolve/kernels."""
    archive = git("archive", "--format=tar", ref, "evolve", "kernels")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # Older refs kept the whole package in kernels/; newer ones keep only the op folders there.
    (dest / "evolve" / "kernels").mkdir(exist_ok=True)
    for entry in (dest / "kernels").iterdir():
        entry.rename(dest / "evolve" / "kernels" / entry.name)
    return dest


def bench_steps(ref: str, mixers: list[str], tracks: list[str], repeats: int,
                warmup: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # new: the repository itself (evolve.kernels comes from the editable install's mapping)
        workers = {"old": Worker(old_tree(ref, Path(tmp))), "new": Worker(ROOT)}
        try:
            for track in tracks:
                for mixer in mixers:
                    for w in workers.values():
                        w.ask(op="setup", track=track, mixer=mixer)
                    times: dict[str, dict[str, list[float]]] = {
                        s: {"wall": [], "cpu": []} for s in workers}
                    first_loss = {}
                    for i in range(warmup + repeats):
                        order = ("old", "new") if i % 2 == 0 else ("new", "old")
                        for side in order:
                            # the same step index on both sides: the same learning rate
                            out = workers[side].ask(op="step", step=100 + i)
                            first_loss.setdefault(side, out["loss"])
                            if i >= warmup:
                                times[side]["wall"].append(out["wall_ms"])
                                times[side]["cpu"].append(out["cpu_ms"])
                    row = {"track": track, "mixer": mixer}
                    for side in workers:
                        row[f"{side}_ms"] = median(times[side]["wall"])
                        row[f"{side}_cpu_ms"] = median(times[side]["cpu"])
                    row["ratio"] = round(row["new_ms"] / row["old_ms"], 3)
                    row["cpu_ratio"] = round(row["new_cpu_ms"] / row["old_cpu_ms"], 3)
                    row["first_loss_diff"] = abs(first_loss["old"] - first_loss["new"])
                    rows.append(row)
                    print(f"  step {track:<5}{mixer:<18}old {row['old_ms']:8.1f} ms  "
                          f"new {row['new_ms']:8.1f} ms  x{row['ratio']:.2f}  "
                          f"(cpu x{row['cpu_ratio']:.2f})", flush=True)
        finally:
            for w in workers.values():
                w.close()
    return rows


# ---------------------------------------------------------------- pieces, in this process

def kernels_file(ref: str, name: str) -> str:
    """Where evolve.kernels' module `name` lives at `ref` (kernels/ before the move to evolve/)."""
    new = f"evolve/kernels/{name}"
    found = subprocess.run(["git", "cat-file", "-e", f"{ref}:{new}"], cwd=ROOT,
                           capture_output=True).returncode == 0
    return new if found else f"kernels/{name}"


def load_old(ref: str, path: str, name: str, package: str | None = None) -> ModuleType:
    """The file `path` at `ref` as a module `name` (in `package`, for relative imports)."""
    source = git("show", f"{ref}:{path}").decode()
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = package
    module.__file__ = f"{ref}:{path}"
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def piece_cases(ref: str) -> list[tuple[str, str, Callable, Callable, Callable[[], dict]]]:
    """(piece, shape label, old fn, new fn, make leaf inputs) for every sped-up piece."""
    import torch
    import torch.nn.functional as F

    import evolve.model.lm as lm_new
    from evolve.kernels import dispatch, modules

    def randn(gen, *shape):
        return torch.randn(*shape, generator=gen)

    def attn_inputs(op, B, T, H, D):
        def make():
            gen = torch.Generator().manual_seed(0)
            xs = {"q": randn(gen, B, T, H, D), "k": randn(gen, B, T, H, D),
                  "v": randn(gen, B, T, H, D)}
            if op in ("delta_rule", "gated_delta_rule"):
                xs["q"], xs["k"] = F.normalize(xs["q"], dim=-1), F.normalize(xs["k"], dim=-1)
                xs["beta"] = torch.sigmoid(randn(gen, B, T, H))
            if op == "gated_delta_rule":
                xs["g"] = -F.softplus(randn(gen, B, T, H)) * 0.1
            if op == "gla":
                xs["g"] = F.logsigmoid(randn(gen, B, T, H, D)) / 16
            return {n: x.requires_grad_() for n, x in xs.items()}
        return make

    cases = []
    # (lm track, mqar track) shapes of the tiny preset: [B, T, H, head dim] and [B, T, D]
    heads = {"lm": (8, 256, 4, 32), "mqar": (64, 64, 2, 32)}
    for op in ("short_conv", "linear_attn", "delta_rule", "gated_delta_rule", "gla"):
        old_mod = load_old(ref, f"kernels/{op}/chunk.py", f"evolve.kernels.{op}._ref_chunk",
                           package=f"evolve.kernels.{op}")
        old_fn = getattr(old_mod, f"chunk_{op}")
        new_fn = getattr(dispatch, f"chunk_{op}")
        for track, (B, T, H, D) in heads.items():
            if op == "short_conv":
                def make(B=B, T=T, D=H * D):
                    gen = torch.Generator().manual_seed(0)
                    return {"x": randn(gen, B, T, D).requires_grad_(),
                            "weight": (randn(gen, D, 4) / 2).requires_grad_()}
                cases.append((op, f"{track} [{B},{T},{H * D}]", old_fn, new_fn, make))
            else:
                cases.append((op, f"{track} [{B},{T},{H},{D}]", old_fn, new_fn,
                              attn_inputs(op, B, T, H, D)))
    old_modules = load_old(ref, kernels_file(ref, "modules.py"), "evolve.kernels._ref_modules",
                           package="evolve.kernels")
    for track, (B, T, H, D) in heads.items():
        def make_l2(B=B, T=T, H=H, D=D):
            return {"x": randn(torch.Generator().manual_seed(0), B, T, H, D).requires_grad_()}
        cases.append(("l2_norm", f"{track} [{B},{T},{H},{D}]", old_modules.l2_norm,
                      modules.l2_norm, make_l2))
    old_lm = load_old(ref, "evolve/model/lm.py", "evolve.model._ref_lm", package="evolve.model")
    torch.manual_seed(0)
    hidden = 366  # the tiny lm track's SwiGLU width for the 450k-parameter target
    mlp_new = lm_new.SwiGLU(128, hidden)
    mlp_old = old_lm.SwiGLU(128, hidden)
    mlp_old.load_state_dict(mlp_new.state_dict())

    def make_mlp():
        return {"x": randn(torch.Generator().manual_seed(0), 8, 256, 128).requires_grad_()}
    cases.append(("swiglu", "lm [8,256,128]->366", lambda x: mlp_old(x), lambda x: mlp_new(x),
                  make_mlp))
    return cases


def first(out):
    return out[0] if isinstance(out, tuple) else out


def bench_pieces(ref: str, repeats: int, warmup: int, only: list[str] | None) -> list[dict]:
    import torch

    rows = []
    for piece, shape, old_fn, new_fn, make in piece_cases(ref):
        if only and piece not in only:
            continue
        xs = make()
        # equivalence: outputs and gradients of a fixed random projection of the output
        results = {}
        for side, fn in (("old", old_fn), ("new", new_fn)):
            out = first(fn(**xs))
            proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
            grads = torch.autograd.grad((out * proj).sum(), list(xs.values()))
            results[side] = [out, *grads]
        diff = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
                   for a, b in zip(results["old"], results["new"]))

        times: dict[str, dict[str, list[float]]] = {s: {"wall": [], "cpu": []}
                                                     for s in ("old", "new")}
        for i in range(warmup + repeats):
            order = (("old", old_fn), ("new", new_fn))
            for side, fn in (order if i % 2 == 0 else order[::-1]):
                wall, cpu = time.perf_counter(), time.thread_time()
                out = first(fn(**xs))
                out.backward(torch.ones_like(out))
                if i >= warmup:
                    times[side]["wall"].append((time.perf_counter() - wall) * 1e3)
                    times[side]["cpu"].append((time.thread_time() - cpu) * 1e3)
                for x in xs.values():
                    x.grad = None
        row = {"piece": piece, "shape": shape}
        for side in ("old", "new"):
            row[f"{side}_ms"] = median(times[side]["wall"])
            row[f"{side}_cpu_ms"] = median(times[side]["cpu"])
        row["ratio"] = round(row["new_ms"] / row["old_ms"], 3)
        row["cpu_ratio"] = round(row["new_cpu_ms"] / row["old_cpu_ms"], 3)
        row["max_rel_diff"] = diff
        rows.append(row)
        print(f"  piece {piece:<18}{shape:<22}old {row['old_ms']:7.2f} ms  "
              f"new {row['new_ms']:7.2f} ms  x{row['ratio']:.2f}  (cpu x{row['cpu_ratio']:.2f})"
              f"  diff {diff:.1e}", flush=True)
    return rows


def table(rows: list[dict], keys: tuple[str, ...], diff_key: str, diff_label: str) -> str:
    head = "".join(f"{k:<18}" for k in keys)
    lines = [f"{head}{'old ms':>9}{'new ms':>9}{'new/old':>9}{'old cpu':>9}{'new cpu':>9}"
             f"{'new/old':>9}{diff_label:>16}"]
    for r in rows:
        lines.append("".join(f"{r[k]:<18}" for k in keys)
                     + f"{r['old_ms']:>9.2f}{r['new_ms']:>9.2f}{r['ratio']:>9.2f}"
                     f"{r['old_cpu_ms']:>9.2f}{r['new_cpu_ms']:>9.2f}{r['cpu_ratio']:>9.2f}"
                     f"{r[diff_key]:>16.2e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default=DEFAULT_REF,
                        help="the old revision (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mixers", nargs="+", choices=MIXERS, default=list(MIXERS))
    parser.add_argument("--tracks", nargs="+", choices=TRACKS, default=list(TRACKS))
    parser.add_argument("--pieces", nargs="+", default=None, help="only these pieces")
    parser.add_argument("--no-pieces", action="store_true")
    parser.add_argument("--no-steps", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench-out/train_step.json"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    ref = git("rev-parse", "--short", args.ref).decode().strip()
    print(f"old = {ref}, new = working tree; torch {torch.__version__}, 1 thread, "
          f"median of {args.repeats} after {args.warmup} warm-up", flush=True)
    pieces = [] if args.no_pieces else bench_pieces(ref, args.repeats, args.warmup, args.pieces)
    steps = [] if args.no_steps else bench_steps(ref, args.mixers, args.tracks, args.repeats,
                                                 args.warmup)
    if pieces:
        print("\npieces, forward + backward")
        print(table(pieces, ("piece", "shape"), "max_rel_diff", "max rel diff"))
    if steps:
        print("\ntiny preset training step (forward, backward, clip, AdamW)")
        print(table(steps, ("track", "mixer"), "first_loss_diff", "1st loss diff"))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"ref": ref, "torch": torch.__version__, "threads": 1, "repeats": args.repeats,
              "warmup": args.warmup, "load_avg": os.getloadavg(), "pieces": pieces,
              "steps": steps}
    atomic_write_json(args.out, result)  # a reader never sees half a file
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
