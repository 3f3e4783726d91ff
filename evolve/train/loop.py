"""The training loop for one track: resumable, budgeted, and safe to pre-empt between steps.

    outcome = run_track("lm", track_cfg, runtime, mixer_cls, batches, folder, seed, signals)

`batches(step)` returns the (inputs, targets) of a step as a pure function of the step, so a
resumed run draws exactly the batches it would have drawn, with no sampler state to save.
"""

from __future__ import annotations

import json
import math
import random
import resource
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.nn as nn

from evolve import EvolveError
from evolve.train.engines import make_engine, pick_device
from evolve.state.fsio import atomic_write_text
from evolve.model.lm import LanguageModel, count_params
from evolve.train.config import RuntimeConfig, TrackConfig
from evolve.train.distributed import Ranks, agree_to_stop, init_process_group

PREEMPT_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


class Interrupted(EvolveError):
    """A pre-emption signal arrived in a foreground training; the checkpoint is saved."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; "
                         "the checkpoint is saved: run the same command again to resume")
        self.signum = signum
        self.step = step


class DeferredSignals:
    """Delays pre-emption signals that arrive during a step until the step is complete.

    A handler that ran in the middle of `optimizer.step()` would save a half-updated model.
    The original handlers (submitit's checkpoint-and-requeue on Slurm) still run, just at a
    step boundary. Where no handler was installed, `on_signal` is called instead.
    """

    def __init__(self) -> None:
        self.in_step = False
        self.pending: list[tuple[Any, int]] = []
        self.on_signal: Callable[[int], None] | None = None
        self.save_hook: Callable[[], None] | None = None
        """Saves the live training state; set by the training loop while a track runs."""
        self.group: Any = None
        """With N ranks: their process group. A signal is then acted on only when all ranks
        agree, at the same step, since the checkpoint is collective."""
        self.device: Any = "cpu"
        self._saved: dict[int, Any] = {}

    def install(self) -> None:
        for signum in PREEMPT_SIGNALS:
            old = signal.getsignal(signum)
            self._saved[signum] = old
            signal.signal(signum, self._handler(old))

    def restore(self) -> None:
        for signum, old in self._saved.items():
            signal.signal(signum, old)
        self._saved.clear()

    def _handler(self, old: Any) -> Callable[[int, FrameType | None], None]:
        def handle(signum: int, frame: FrameType | None) -> None:
            self.pending.append((old, signum))
            # With N ranks a signal waits for the next step boundary, where all ranks agree.
            if not self.in_step and self.group is None:
                self.flush()
        return handle

    def flush(self) -> None:
        while self.pending:
            old, signum = self.pending.pop(0)
            if callable(old):
                # submitit only logs SIGTERM (Slurm sends it before killing a pre-empted job):
                # save progress first so the requeued job loses nothing.
                if signum == signal.SIGTERM and self.save_hook is not None:
                    self.save_hook()
                old(signum, None)
            elif self.on_signal is not None:
                self.on_signal(signum)

    @contextmanager
    def step(self) -> Iterator[None]:
        self.in_step = True
        try:
            yield
        finally:
            self.in_step = False
        if self.group is None:
            self.flush()
        elif agree_to_stop(bool(self.pending), self.group, self.device):
            self._stop_together()

    def _stop_together(self, wait_s: float = 60.0, linger_s: float = 300.0) -> None:
        # Every rank saves at this same step (the checkpoint is collective), then acts on its own
        # signal: submitit's handler checkpoints and requeues from rank 0 (Slurm then ends every
        # task of the job) and returns on the other ranks. A rank whose signal has not arrived
        # yet (the tasks are signalled one by one) waits for it.
        if self.save_hook is not None:
            self.save_hook()
        self.save_hook = None
        deadline = time.monotonic() + wait_s
        while not self.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        signum = self.pending[0][1] if self.pending else signal.SIGTERM
        self.flush()
        # Still here: not the rank that requeues. Training on alone would hang in the next
        # collective, and an error would be reported as the job's failure: wait to be ended.
        deadline = time.monotonic() + linger_s
        while time.monotonic() < deadline:
            time.sleep(0.5)
        raise Interrupted(signum, -1)


@dataclass
class TrackOutcome:
    """How a track ended and what it measured; `model` is kept for evaluation."""

    status: str
    """done, time_budget, rung (stopped at a screening rung, to be continued), diverged,
    stopped_early (above the loss ceiling) or failed."""
    steps: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    peak_mem_mb: float
    final_loss: float
    num_params: int
    reason: str = ""
    model: nn.Module | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "model"}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed % 2**32)
    except ImportError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux; it is the whole process's peak, an upper bound.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MetricsLog:
    """train/metrics.jsonl: one JSON object a line, flushed per line; and the same curves as
    TensorBoard event files in train/tensorboard/, so `tensorboard --logdir state/RUN` shows
    every candidate's training."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        """False on ranks other than 0: one training, one curve."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._board: Any = None
        self.purge_step: int | None = None
        """On a resume, TensorBoard drops the events of the steps the resume repeats."""

    def _scalars(self, row: dict[str, Any]) -> None:
        if "track" not in row or "step" not in row:
            return
        if self._board is None:
            from torch.utils.tensorboard import SummaryWriter

            self._board = SummaryWriter(str(self.path.parent / "tensorboard"), flush_secs=30,
                                        purge_step=self.purge_step)
        for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mem_mb"):
            if isinstance(row.get(key), (int, float)):
                self._board.add_scalar(f"{row['track']}/{key}", row[key], row["step"],
                                       walltime=row.get("time"))

    def flush(self) -> None:
        if self._board is not None:
            self._board.flush()

    def close(self) -> None:
        if self._board is not None:
            self._board.close()
            self._board = None

    def truncate_after(self, track: str, step: int) -> None:
        """Drop lines of `track` past `step`: they came from steps that the resume repeats."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a crash
            if row.get("track") == track and row.get("step", -1) > step:
                continue
            kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
        self._scalars(row)


def _prepare(cfg: TrackConfig, runtime: RuntimeConfig, mixer_cls: type, mixer_source: str,
             seed: int, signals: DeferredSignals, ranks: Ranks) -> tuple[Any, Any, Any, int]:
    """Seeds, device, threads, the process group and the engine around a fresh model:
    (device, group, engine, number of parameters)."""
    seed_everything(seed)
    device = pick_device(runtime, ranks)
    if runtime.num_threads and device.type == "cpu":
        torch.set_num_threads(runtime.num_threads)
    micro, accumulation = cfg.accumulation(ranks.world_size)
    group = init_process_group(ranks, device.type)
    signals.group, signals.device = group, device
    model = LanguageModel(cfg.model, mixer_cls, mixer_source)
    engine = make_engine(model, cfg.optim, cfg.total_steps(), runtime, device, micro,
                         accumulation, ranks, group)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return device, group, engine, count_params(model)


def _open_metrics(path: Path, track: str, start: int, ranks: Ranks) -> MetricsLog:
    """The track's metrics log; on a resume at `start`, rows of later steps (written after
    the checkpoint a killed run resumes from) are dropped and the resume is logged."""
    metrics = MetricsLog(path, enabled=ranks.is_main)
    if start:
        metrics.purge_step = start + 1
        metrics.truncate_after(track, start)
        metrics.write({"event": "resume", "track": track, "step": start, "time": time.time()})
    return metrics


def run_track(name: str, cfg: TrackConfig, runtime: RuntimeConfig, mixer_cls: type,
              batches: Batches, folder: Path, seed: int, signals: DeferredSignals,
              mixer_source: str = "mixer", on_step: Callable[[int, float], None] | None = None,
              ranks: Ranks = Ranks(), stop_step: int | None = None) -> TrackOutcome:
    """Train one track to its budget, resuming from `folder/<name>/` if a checkpoint is there.

    `stop_step` (a screening rung) ends the training there instead, checkpointed (status
    "rung"), on the whole budget's schedule, so that a later call continues it. With N ranks,
    `batches(step)` gives this rank's rows of the global batch; every rank runs this function,
    rank 0 alone writes the metrics."""
    device, group, engine, num_params = _prepare(cfg, runtime, mixer_cls, mixer_source, seed,
                                                 signals, ranks)
    total = cfg.total_steps()
    end = min(total, stop_step or total)
    ceiling = dict(cfg.loss_ceiling)
    ckpt_dir = folder / name
    extra = engine.load(ckpt_dir) or {}
    start = extra.get("step", 0)
    tokens = extra.get("tokens", 0)
    elapsed = extra.get("elapsed", 0.0)
    last_loss = extra.get("loss", float("nan"))
    metrics = _open_metrics(folder / "metrics.jsonl", name, start, ranks)

    state = {"step": start}

    def save() -> None:
        engine.save(ckpt_dir, {"step": state["step"], "tokens": tokens, "loss": last_loss,
                               "elapsed": elapsed + (time.time() - t0)})
        metrics.flush()

    def foreground_stop(signum: int) -> None:
        save()
        raise Interrupted(signum, state["step"])

    signals.on_signal = foreground_stop
    signals.save_hook = save
    t0 = time.time()
    train_time = 0.0
    step_tokens = cfg.batch_size * cfg.seq_len
    status, reason = "done", ""
    for step in range(start, end):
        with signals.step():
            inputs, targets = batches(step)
            t_step = time.perf_counter()
            out = engine.train_step(inputs.to(device), targets.to(device), step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - t_step
            tokens += step_tokens
            last_loss = out["loss"]
            state["step"] = step + 1
            if on_step is not None:
                on_step(step + 1, last_loss)
            if not math.isfinite(last_loss) or last_loss > cfg.diverge_loss:
                status, reason = "diverged", f"loss {last_loss} at step {step + 1}"
            elif step + 1 in ceiling and last_loss > ceiling[step + 1]:
                status, reason = "stopped_early", (
                    f"loss {last_loss:.4f} at step {step + 1} is above the loss ceiling "
                    f"{ceiling[step + 1]:.4f} (every baseline's loss there plus the margin)")
            if (step + 1) % cfg.log_every == 0 or step + 1 in (end, total) or status != "done":
                metrics.write({"track": name, "step": step + 1, "loss": last_loss,
                               "lr": out["lr"], "grad_norm": out["grad_norm"], "tokens": tokens,
                               "tokens_per_s": step_tokens * (step + 1 - start)
                               / max(train_time, 1e-9),
                               "mem_mb": round(peak_memory_mb(device), 1), "time": time.time()})
            if status != "done":
                break
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < end:
                save()
            # Ranks' clocks differ: they agree, so that all stop at the same step.
            if cfg.max_time_s and agree_to_stop(elapsed + time.time() - t0 > cfg.max_time_s,
                                                group, device):
                status, reason = "time_budget", f"stopped by max_time_s={cfg.max_time_s}"
                break
    signals.save_hook = None
    metrics.close()
    if status == "done" and state["step"] < total:
        status, reason = "rung", f"stopped at the rung step {state['step']} of {total}"
    if status in ("done", "time_budget", "rung"):
        save()
    done_steps = state["step"]
    return TrackOutcome(
        status=status, steps=done_steps, tokens=tokens,
        wall_s=elapsed + time.time() - t0,
        tokens_per_s=step_tokens * max(0, done_steps - start) / max(train_time, 1e-9),
        peak_mem_mb=peak_memory_mb(device), final_loss=last_loss, num_params=num_params,
        reason=reason, model=engine.model,
    )
