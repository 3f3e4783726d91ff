"""The job: train and score one candidate mixer, resumably.

On a scheduler (submitit, local or Slurm)::

    job = executor.submit(TrainJob(), candidate_dir, to_dict(train_cfg))

In the foreground (`evolve train`)::

    result = train_foreground("deltanet", load_train_config("tiny"), Path("state/train/d"))

A candidate folder holds `mixer.py`; the job writes only inside it: `train/` (checkpoints and
`metrics.jsonl`, the curves) and, once, atomically, the result file. A pre-emption signal saves a
checkpoint at the next step boundary; the requeued job resumes there. A track that finished
records `train/<track>/done.json`, so a requeue never trains or evaluates it twice.
A failure of the candidate's own code is recorded in the result file (status "failed", reason,
traceback) instead of crashing the job, so the loop goes on.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

import submitit

from evolve.config.loading import to_dict
from evolve.state.fsio import atomic_write_json
from evolve.state.layout import CandidatePaths
from evolve.state.result_cache import versions
from evolve.model.contract import MixerLoadError, load_mixer_class, resolve_mixer_path
from evolve.train.presets import TrainConfig, train_config_from_dict
from evolve.train.distributed import Ranks, setup_ranks
from evolve.train.loop import DeferredSignals, Interrupted, TrackOutcome, run_track

RESULT_VERSION = 1


def _batches(name: str, cfg: TrainConfig, seed: int, ranks: Ranks = Ranks()):
    """`batches(step)`: this rank's rows of the global batch of each step; and the data."""
    rank, world = ranks.rank, ranks.world_size
    track = cfg.tracks()[name]
    if name == "lm":
        from evolve.train.data import load_data

        data = load_data(cfg.data)
        if data.tokenizer.vocab_size > track.model.vocab_size:
            raise ValueError(f"lm.model.vocab_size={track.model.vocab_size} is smaller than the "
                             f"tokenizer's vocabulary ({data.tokenizer.vocab_size})")
        return (lambda step: data.train_batch(step=step, batch_size=track.batch_size,
                                              seq_len=track.seq_len, seed=seed, rank=rank,
                                              world_size=world)), data
    from evolve.train.mqar import mqar_batch

    return (lambda step: mqar_batch(cfg.mqar_task, step=step, batch_size=track.batch_size,
                                    seed=seed, rank=rank, world_size=world)), None


def _evaluate(name: str, outcome: TrackOutcome, cfg: TrainConfig, data: Any) -> dict[str, Any]:
    """The track's scores, in the precision it trained in: a bf16 training is scored in bf16 by
    both engines (the torch engine under autocast; DeepSpeed's module holds bf16 weights), so
    a score does not depend on which engine ran. (Scoring DeepSpeed's fp32 master weights
    instead would mean gathering the optimiser's ZeRO shards on one rank.)"""
    import torch

    model = outcome.model
    assert model is not None
    model.eval()
    device = next(model.parameters()).device.type
    with torch.autocast(device, dtype=torch.bfloat16, enabled=cfg.runtime.precision == "bf16"):
        return _scores(name, model, cfg, data)


def _scores(name: str, model: Any, cfg: TrainConfig, data: Any) -> dict[str, Any]:
    from evolve.train import evaluate

    if name == "mqar":
        by_pairs = evaluate.mqar_accuracy(model, cfg.mqar_task)
        return {"by_pairs": {str(p): acc for p, acc in by_pairs.items()},
                "accuracy": sum(by_pairs.values()) / len(by_pairs)}
    assert cfg.lm is not None
    t0 = time.time()
    windows = data.val_windows(seq_len=cfg.lm.seq_len, max_windows=cfg.eval.bpb_windows)
    bpb = evaluate.bits_per_byte(model, windows, data.tokenizer, batch_size=cfg.eval.batch_size)
    out: dict[str, Any] = {"bpb": bpb, "bpb_windows": len(windows),
                           "bpb_seconds": round(time.time() - t0, 2)}
    runs = evaluate.run_lm_eval(model, data.tokenizer, cfg.eval, max_length=cfg.lm.seq_len)
    if runs:
        # Length-normalised accuracy where the task has it (the literature's convention for
        # multiple choice), else accuracy.
        scores = {task: r.get("acc_norm", r.get("acc")) for task, r in runs.items()}
        out["benchmarks"] = scores
        out["benchmark_details"] = runs
        valid = [v for v in scores.values() if v is not None]
        out["benchmark_avg"] = sum(valid) / len(valid) if valid else None
    return out


def _headline(tracks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The few numbers that fitness and the leaderboard read."""
    out: dict[str, Any] = {}
    lm = tracks.get("lm", {})
    if "eval" in lm:
        out["bpb"] = lm["eval"].get("bpb")
        if lm["eval"].get("benchmarks"):
            out["benchmark_avg"] = lm["eval"].get("benchmark_avg")
        out["tokens_per_s"] = lm.get("tokens_per_s")
        out["peak_mem_mb"] = lm.get("peak_mem_mb")
        out["num_params"] = lm.get("num_params")
    mq = tracks.get("mqar", {})
    if "eval" in mq:
        out["mqar_acc"] = mq["eval"].get("accuracy")
        out["mqar_acc_by_pairs"] = mq["eval"].get("by_pairs")
        out.setdefault("tokens_per_s", mq.get("tokens_per_s"))
    return out


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def train_candidate(mixer: str | Path, cfg: TrainConfig, folder: Path,
                    signals: DeferredSignals, on_step=None,
                    ranks: Ranks = Ranks()) -> dict[str, Any]:
    """Train every track of `cfg` for the mixer; write and return the result file's content.

    With N ranks every rank trains; rank 0 alone evaluates and writes done.json and
    the result file (the others return what they trained, unwritten)."""
    from evolve.kernels.dispatch import reset_used_backends, used_backends

    folder.mkdir(parents=True, exist_ok=True)
    train_dir = folder / "train"
    started, cpu_started = time.time(), time.process_time()
    rung = cfg.budget_fraction < 1.0
    result: dict[str, Any] = {
        "version": RESULT_VERSION, "mixer": str(mixer), "seed": cfg.seed, "status": "ok",
        "budget_fraction": cfg.budget_fraction,
        "host": platform.node(), "world_size": ranks.world_size, "config": to_dict(cfg),
        # What a result depends on besides code, config and seed: the libraries' versions and
        # torch's thread count (a float sum's order, hence the last bits, follows both).
        "versions": versions(), "tracks": {},
    }
    try:
        mixer_cls = load_mixer_class(mixer)
        for name, track in cfg.tracks().items():
            # A track that reached this training's end records it once, so a requeued job
            # never trains or evaluates it twice; a rung's record is its own (a continuation
            # to the whole budget trains on from the rung's checkpoint).
            done_file = train_dir / name / (f"rung-{cfg.budget_fraction:g}.json" if rung
                                            else "done.json")
            if done_file.exists():
                result["tracks"][name] = json.loads(done_file.read_text())
                continue
            batches, data = _batches(name, cfg, cfg.seed, ranks)
            reset_used_backends()
            outcome = run_track(name, track, cfg.runtime, mixer_cls, batches, train_dir,
                                cfg.seed, signals, mixer_source=str(mixer),
                                on_step=(lambda s, loss, n=name: on_step(n, s, loss))
                                if on_step else None, ranks=ranks,
                                stop_step=track.steps_at(cfg.budget_fraction) if rung else None)
            summary = outcome.summary()
            # Which kernel each op ran on (chunk on CPU, fla on a GPU where fla works), and why.
            summary["kernel_backends"] = used_backends()
            if not ranks.is_main:
                result["tracks"][name] = summary
                continue
            if outcome.status in ("done", "time_budget", "rung"):
                summary["eval"] = _evaluate(name, outcome, cfg, data)
            done_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(done_file, summary)
            result["tracks"][name] = summary
            if outcome.status in ("diverged", "stopped_early"):
                result["status"] = "failed"
                result["reason"] = f"{name} track {outcome.status.replace('_', ' ')}: " \
                                   f"{outcome.reason}"
                result["stopped_early"] = outcome.status == "stopped_early"
                break
    except (Interrupted, SystemExit, KeyboardInterrupt):
        raise  # pre-emption: the checkpoint is saved and the job will resume
    except MixerLoadError as exc:
        result.update(status="failed", reason=str(exc), traceback=traceback.format_exc())
    except Exception as exc:
        # The candidate's code may fail in any way at training time; record it, don't crash.
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
    result["metrics"] = _headline(result["tracks"])
    used: dict[str, set[str]] = {}
    for track in result["tracks"].values():
        for op, backends in track.get("kernel_backends", {}).items():
            used.setdefault(op, set()).update(backends)
    result["kernel_backends"] = {op: sorted(b) for op, b in sorted(used.items())}
    result["wall_s"] = round(time.time() - started, 2)
    # This process's CPU time (all its threads): what a training cost, robust to a machine
    # shared with other work (wall time is not). Rank 0's alone with several ranks.
    result["cpu_s"] = round(time.process_time() - cpu_started, 2)
    result["torch_threads"] = torch_threads()  # as the training set it
    if ranks.is_main:
        atomic_write_json(CandidatePaths.of(folder).result, result)
    return result


class TrainJob(submitit.helpers.Checkpointable):
    """A submitit job: `TrainJob()(candidate_dir, train_cfg_dict)` -> result dict.

    On USR2 (Slurm's pre-timeout signal, or a pre-emption) submitit calls `checkpoint`, which
    our deferred handler lets happen only between steps; the job then requeues and resumes.
    """

    def __init__(self) -> None:
        self._signals: DeferredSignals | None = None

    def __call__(self, candidate_dir: str, train_cfg: dict[str, Any]) -> dict[str, Any]:
        # First, before anything picks a device, a data shard or a micro-batch size.
        ranks = setup_ranks()
        cfg = train_config_from_dict(train_cfg)
        folder = Path(candidate_dir)
        self._signals = DeferredSignals()
        self._signals.install()
        try:
            return train_candidate(CandidatePaths.of(folder).mixer, cfg, folder, self._signals,
                                   ranks=ranks)
        finally:
            self._signals.restore()

    def checkpoint(self, candidate_dir: str, train_cfg: dict[str, Any]
                   ) -> submitit.helpers.DelayedSubmission:
        if self._signals is not None and self._signals.save_hook is not None:
            self._signals.save_hook()
        # A fresh job object: this one holds live references that must not be pickled.
        return submitit.helpers.DelayedSubmission(TrainJob(), candidate_dir, train_cfg)

    def __getstate__(self) -> dict[str, Any]:
        return {"_signals": None}


def train_foreground(mixer: str, cfg: TrainConfig, folder: Path, preset: str = "",
                     checks: dict | None = None) -> dict:
    """`evolve train`: copy the mixer into `folder`, train with a progress bar, return result.
    `checks` (what the gates said, or that they were skipped) goes into the result file."""
    from evolve.train.budget import check_token_budget

    source = resolve_mixer_path(mixer)
    check_token_budget(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    target = CandidatePaths.of(folder).mixer
    if not target.exists() or target.read_bytes() != source.read_bytes():
        if (folder / "train").exists():
            raise ValueError(f"{folder} already holds a training of a different mixer; "
                             "choose another --out")
        shutil.copyfile(source, target)
    signals = DeferredSignals()
    signals.install()
    try:
        from evolve.train.progress import TrainProgress

        with TrainProgress(cfg) as progress:
            result = train_candidate(target, cfg, folder, signals, on_step=progress.update)
        if checks is not None:
            result["checks"] = checks
            atomic_write_json(CandidatePaths.of(folder).result, result)
        return result
    finally:
        signals.restore()
