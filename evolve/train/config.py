"""Training configuration (torch-free): optimiser, the two training tracks, runtime.

A training of one candidate runs up to two tracks, each a separate model trained from scratch:
``lm`` (language modelling on the corpus; scored by held-out bits per byte and benchmarks) and
``mqar`` (multi-query associative recall; scored by accuracy). Budgets are in steps, tokens and
wall time; the first one reached ends the track.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from evolve.config.loading import choice, positive
from evolve.model.config import ModelConfig

TASKS = ("lm", "mqar")
SCHEDULES = ("wsd", "linear", "cosine", "constant")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
ENGINES = ("auto", "torch", "deepspeed")


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = 3e-3
    """Peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas."""
    weight_decay: float = 0.1
    """Decoupled weight decay (not applied to norms, biases and 1-d parameters)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0: no clipping)."""
    warmup_steps: int = 100
    """Linear warm-up from 0 to lr."""
    schedule: str = "wsd"
    """After warm-up: wsd (warmup-stable-decay), linear, cosine or constant."""
    decay_fraction: float = 0.2
    """wsd only: the last fraction of the steps decays linearly to min_lr_ratio * lr."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of lr."""

    def __post_init__(self) -> None:
        choice("schedule", self.schedule, SCHEDULES)
        positive("lr", self.lr)
        positive("warmup_steps", self.warmup_steps, allow_zero=True)
        if not 0.0 <= self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction={self.decay_fraction} must lie in [0, 1]")


@dataclass(kw_only=True)
class TrackConfig:
    """One training task: a model, an optimiser, a batch shape and a budget."""

    task: str = "lm"
    """lm (language modelling on the corpus) or mqar (associative recall)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The backbone around the mixer."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and schedule."""
    batch_size: int = 8
    """Sequences per step (global, over all data-parallel ranks)."""
    micro_batch_size: int | None = None
    """Sequences per forward/backward on one rank (None: batch_size / world size, no
    accumulation). batch_size = micro_batch_size x accumulation steps x world size."""
    seq_len: int = 256
    """Tokens per sequence."""
    max_steps: int = 300
    """Step budget; the schedule is laid out over this many steps."""
    max_tokens: int | None = None
    """Token budget (None: max_steps decides)."""
    max_time_s: float | None = None
    """Wall-time budget for this track in seconds (None: none). Ends the track early, keeping
    the schedule, so results stay comparable only when every candidate finishes its steps."""
    log_every: int = 10
    """Append a line to train/metrics.jsonl every this many steps."""
    checkpoint_every: int = 100
    """Save a resumable checkpoint every this many steps (and on a pre-emption signal)."""
    diverge_loss: float = 20.0
    """A loss above this (or NaN/Inf) stops the track as diverged."""
    loss_ceiling: tuple[tuple[int, float], ...] = ()
    """(step, loss) pairs: a training whose loss at one of these steps is above the value stops
    early (status stopped_early, its curve kept). The driver sets them from the run's
    baselines (search.fidelity.stop_margin above every baseline's loss at that step); empty:
    no such stop."""

    def __post_init__(self) -> None:
        choice("task", self.task, TASKS)
        self.loss_ceiling = tuple((int(step), float(loss)) for step, loss in self.loss_ceiling)
        for name in ("batch_size", "seq_len", "max_steps", "log_every", "checkpoint_every"):
            positive(name, getattr(self, name))
        if self.micro_batch_size is not None:
            positive("micro_batch_size", self.micro_batch_size)
        if self.seq_len > self.model.max_seq_len:
            raise ValueError(f"seq_len={self.seq_len} exceeds model.max_seq_len="
                             f"{self.model.max_seq_len}")

    def accumulation(self, world_size: int) -> tuple[int, int]:
        """(micro-batch size, accumulation steps) on each of `world_size` ranks; ValueError
        naming the keys when the global batch does not split evenly."""
        if self.batch_size % world_size:
            raise ValueError(f"batch_size={self.batch_size} does not split over {world_size} "
                             f"ranks; make it a multiple of the number of tasks")
        per_rank = self.batch_size // world_size
        micro = self.micro_batch_size or per_rank
        if per_rank % micro:
            raise ValueError(f"micro_batch_size={micro} does not divide the per-rank batch "
                             f"{per_rank} (batch_size={self.batch_size} over {world_size} "
                             f"ranks)")
        return micro, per_rank // micro

    def total_steps(self) -> int:
        if self.max_tokens is None:
            return self.max_steps
        return max(1, min(self.max_steps, self.max_tokens // (self.batch_size * self.seq_len)))

    def steps_at(self, fraction: float) -> int:
        """The step a training to `fraction` of the budget stops at (at least 1)."""
        return max(1, min(self.total_steps(), round(self.total_steps() * fraction)))


@dataclass(kw_only=True)
class RuntimeConfig:
    """Where and how a training runs."""

    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    precision: str = "fp32"
    """fp32 or bf16 (autocast on CPU; DeepSpeed's bf16 mode on GPU)."""
    engine: str = "auto"
    """torch, deepspeed, or auto (DeepSpeed on CUDA when installed, else plain torch)."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage (0-3)."""
    num_threads: int = 0
    """torch intra-op threads on CPU (0: torch's default)."""
    compile: bool = False
    """torch.compile the model (GPU only; slow to start, faster steps)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward instead of keeping them: less memory
    (what lets a long context fit), about a third more compute."""

    def __post_init__(self) -> None:
        choice("device", self.device, DEVICES)
        choice("precision", self.precision, PRECISIONS)
        choice("engine", self.engine, ENGINES)
        choice("zero_stage", self.zero_stage, (0, 1, 2, 3))
