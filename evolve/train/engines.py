"""Optimisation engines: plain PyTorch (DDP over N ranks) and DeepSpeed (bf16, ZeRO, N ranks).

Both expose the same small interface so the training loop does not care which one runs:

    engine = make_engine(model, optim_cfg, total_steps, runtime, device, micro, accumulation,
                         ranks, group)
    loss = engine.train_step(inputs, targets, step)      # this rank's rows of the global batch:
                                                         # forward/backward per micro-batch,
                                                         # clip, one update; the loss is the
                                                         # global batch's (mean over ranks)
    engine.save(folder, extra); engine.load(folder)      # every rank calls both

With N ranks each trains on its slice of the global batch, gradients are averaged over ranks (and
over micro-batches), so N ranks take the same step one process would on the whole batch.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from evolve.train.config import OptimConfig, RuntimeConfig
from evolve.train.distributed import Ranks, mean_over_ranks

IGNORE_INDEX = -100


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Learning rate for 0-based `step` of `total` steps."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, total - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "linear":
        return floor + (cfg.lr - floor) * (1 - progress)
    if cfg.schedule == "cosine":
        return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_start = total - int(cfg.decay_fraction * total)  # wsd
    if step < decay_start:
        return cfg.lr
    frac = (step - decay_start) / max(1, total - decay_start)
    return cfg.lr - (cfg.lr - floor) * frac


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: norms, biases, gates' scalars and embeddings' 1-d params stay free."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)


class TorchEngine:
    """AdamW in plain PyTorch; bf16 through autocast; DistributedDataParallel over N ranks."""

    def __init__(self, model: nn.Module, cfg: OptimConfig, total_steps: int,
                 runtime: RuntimeConfig, device: torch.device, accumulation: int = 1,
                 ranks: Ranks = Ranks(), group: Any = None):
        self.model = model.to(device)
        self.cfg = cfg
        self.total_steps = total_steps
        self.device = device
        self.accumulation = accumulation
        self.ranks = ranks
        self.group = group
        self.autocast = runtime.precision == "bf16"
        fused = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                           betas=tuple(cfg.betas), fused=fused)
        wrapped: nn.Module = self.model
        self.ddp: Any = None
        if group is not None:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = self.ddp = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                process_group=group)
        self.forward_model = (torch.compile(wrapped) if runtime.compile
                              and device.type == "cuda" else wrapped)

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, step: int) -> dict:
        lr = lr_at(step, self.total_steps, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        micro_inputs, micro_targets = inputs.chunk(self.accumulation), targets.chunk(
            self.accumulation)
        for i, (x, y) in enumerate(zip(micro_inputs, micro_targets)):
            last = i == self.accumulation - 1
            # Gradients are all-reduced over ranks once, on the last micro-batch.
            sync = self.ddp.no_sync() if self.ddp is not None and not last else nullcontext()
            with sync:
                with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                    enabled=self.autocast):
                    logits = self.forward_model(x)
                loss = lm_loss(logits, y) / self.accumulation
                loss.backward()
            total += loss.item()
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
                     if self.cfg.grad_clip > 0 else torch.tensor(0.0))
        self.optimizer.step()
        return {"loss": mean_over_ranks(total, self.group, self.device), "lr": lr,
                "grad_norm": float(grad_norm)}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        if not self.ranks.is_main:  # every rank holds the same weights: rank 0 writes them
            return
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "engine.pt.tmp"
        torch.save({**self.state_dict(), "extra": extra}, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, folder / "engine.pt")

    def load(self, folder: Path) -> dict[str, Any] | None:
        path = folder / "engine.pt"
        if not path.exists():
            return None
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return state["extra"]


class DeepSpeedEngine:
    """DeepSpeed: bf16 and ZeRO from the runtime config, data parallel over the ranks."""

    def __init__(self, model: nn.Module, cfg: OptimConfig, total_steps: int,
                 runtime: RuntimeConfig, device: torch.device, micro_batch: int,
                 accumulation: int = 1, group: Any = None):
        import deepspeed

        self.cfg = cfg
        self.total_steps = total_steps
        self.accumulation = accumulation
        self.group = group
        ds_config = {
            "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": accumulation,
            "gradient_clipping": cfg.grad_clip,
            "bf16": {"enabled": runtime.precision == "bf16"},
            "zero_optimization": {"stage": runtime.zero_stage},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                      betas=tuple(cfg.betas))
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=ds_config,
            dist_init_required=True)
        self.model = self.engine.module
        self.device = self.engine.device

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, step: int) -> dict:
        lr = lr_at(step, self.total_steps, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        # DeepSpeed scales each micro-batch's loss by 1/accumulation and steps the optimiser
        # (all-reducing gradients over ranks) only at the accumulation boundary.
        for x, y in zip(inputs.chunk(self.accumulation), targets.chunk(self.accumulation)):
            logits = self.engine(x.to(self.device))
            loss = lm_loss(logits, y.to(self.device))
            self.engine.backward(loss)
            self.engine.step()
            total += loss.item() / self.accumulation
        grad_norm = self.engine.get_global_grad_norm()
        return {"loss": mean_over_ranks(total, self.group, self.device), "lr": lr,
                "grad_norm": float(grad_norm) if grad_norm is not None else 0.0}

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
        # DeepSpeed writes its own files and a `latest` tag file last, so a crash mid-save
        # leaves the previous tag in place.
        self.engine.save_checkpoint(str(folder / "deepspeed"), tag=f"step{extra['step']}",
                                    client_state={"extra": extra})

    def load(self, folder: Path) -> dict[str, Any] | None:
        if not (folder / "deepspeed" / "latest").exists():
            return None
        _, client = self.engine.load_checkpoint(str(folder / "deepspeed"))
        return (client or {}).get("extra")


def pick_device(runtime: RuntimeConfig, ranks: Ranks = Ranks()) -> torch.device:
    """This rank's device: its local rank's GPU among those visible (one per task when Slurm
    binds GPUs to tasks), else the CPU."""
    if runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("runtime.device=cuda but torch sees no CUDA device")
        visible = torch.cuda.device_count()
        return torch.device("cuda", ranks.local_rank if ranks.local_rank < visible else 0)
    return torch.device("cpu")


def use_deepspeed(runtime: RuntimeConfig, device: torch.device) -> bool:
    if runtime.engine == "torch":
        return False
    if runtime.engine == "deepspeed":
        return True
    if device.type != "cuda":
        return False
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return False
    return True


def make_engine(model: nn.Module, cfg: OptimConfig, total_steps: int, runtime: RuntimeConfig,
                device: torch.device, micro_batch: int, accumulation: int = 1,
                ranks: Ranks = Ranks(), group: Any = None):
    if runtime.activation_checkpointing:
        model.activation_checkpointing = True
    if use_deepspeed(runtime, device):
        return DeepSpeedEngine(model, cfg, total_steps, runtime, device, micro_batch,
                               accumulation, group)
    return TorchEngine(model, cfg, total_steps, runtime, device, accumulation, ranks, group)
