"""Optimisation engines: plain PyTorch (CPU, or one GPU) and DeepSpeed (bf16, ZeRO, multi-GPU).

Both expose the same small interface so the training loop does not care which one runs:

    engine = make_engine(model, optim_cfg, total_steps, runtime, device)
    loss = engine.train_step(inputs, targets, step)      # forward, backward, clip, update
    engine.save(folder); engine.load(folder)
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from evolve.train.config import OptimConfig, RuntimeConfig

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
    """AdamW in plain PyTorch; bf16 through autocast."""

    def __init__(self, model: nn.Module, cfg: OptimConfig, total_steps: int,
                 runtime: RuntimeConfig, device: torch.device):
        self.model = model.to(device)
        self.cfg = cfg
        self.total_steps = total_steps
        self.device = device
        self.autocast = runtime.precision == "bf16"
        fused = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                           betas=tuple(cfg.betas), fused=fused)
        self.forward_model = (torch.compile(self.model) if runtime.compile
                              and device.type == "cuda" else self.model)

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, step: int) -> dict:
        lr = lr_at(step, self.total_steps, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.forward_model(inputs)
        loss = lm_loss(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
                     if self.cfg.grad_clip > 0 else torch.tensor(0.0))
        self.optimizer.step()
        return {"loss": loss.item(), "lr": lr, "grad_norm": float(grad_norm)}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def save(self, folder: Path, extra: dict[str, Any]) -> None:
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
                 runtime: RuntimeConfig, device: torch.device, micro_batch: int):
        import deepspeed

        ensure_distributed_env()
        self.cfg = cfg
        self.total_steps = total_steps
        ds_config = {
            "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": 1,
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
        logits = self.engine(inputs.to(self.device))
        loss = lm_loss(logits, targets.to(self.device))
        self.engine.backward(loss)
        self.engine.step()
        grad_norm = self.engine.get_global_grad_norm()
        return {"loss": loss.item(), "lr": lr,
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


def ensure_distributed_env() -> None:
    """Fill in torch.distributed's variables from Slurm's, or for a single process.

    Without them DeepSpeed falls back to discovering ranks through mpi4py.
    """
    env = os.environ
    if "RANK" not in env:
        env["RANK"] = env.get("SLURM_PROCID", "0")
        env["WORLD_SIZE"] = env.get("SLURM_NTASKS", "1") if "SLURM_PROCID" in env else "1"
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("LOCAL_RANK", "0")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in env:
        # A port derived from the job id keeps concurrent jobs on one node apart.
        job = int(env.get("SLURM_JOB_ID", os.getpid()))
        env["MASTER_PORT"] = str(20000 + job % 20000)


def pick_device(runtime: RuntimeConfig) -> torch.device:
    if runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("runtime.device=cuda but torch sees no CUDA device")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
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
                device: torch.device, micro_batch: int):
    if use_deepspeed(runtime, device):
        return DeepSpeedEngine(model, cfg, total_steps, runtime, device, micro_batch)
    return TorchEngine(model, cfg, total_steps, runtime, device)
