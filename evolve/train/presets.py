"""The training configuration of one candidate, and the named presets.

    cfg = load_train_config("tiny")                       # a preset
    cfg = load_train_config("tiny", "my.yaml")            # a preset with a YAML file's overrides

Presets are plain functions returning a TrainConfig; a scale is a preset, never a code path.
- tiny: CPU, 3-29 min per training on one thread (191-1735 s measured in docs/BASELINES.md).
- explore: the published exploration setting (~20M parameters, 8 layers, hidden 256, 8 heads,
  context 2048, AdamW 3e-4, WSD, bf16, ~1B tokens on one GPU).
- verify: ~340M parameters (24 layers, hidden 1024), multi-GPU DeepSpeed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from evolve.config.loading import ConfigError, from_dict, merge, read_yaml
from evolve.train.data import DataConfig
from evolve.train.evaluate import EvalConfig
from evolve.model.config import ModelConfig
from evolve.train.mqar import MQARConfig
from evolve.train.config import OptimConfig, RuntimeConfig, TrackConfig


@dataclass(kw_only=True)
class TrainConfig:
    """Everything that decides how one candidate is trained and scored."""

    seed: int = 0
    """Training seed (weights, batches); evaluation sets are fixed independently of it."""
    lm: TrackConfig | None = None
    """The language-modelling track (None: skip it)."""
    mqar: TrackConfig | None = None
    """The associative-recall track (None: skip it)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The corpus and tokenizer of the lm track."""
    mqar_task: MQARConfig = field(default_factory=MQARConfig)
    """The recall task of the mqar track."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """What is measured after training."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Device, precision, engine."""
    budget_fraction: float = 1.0
    """Train each track to this fraction of its steps, on the schedule of the whole budget,
    then checkpoint and evaluate: a screening rung (search.fidelity). A later training of the
    same folder with a larger fraction continues from that checkpoint, repeating no step."""

    def __post_init__(self) -> None:
        if not 0.0 < self.budget_fraction <= 1.0:
            raise ValueError(f"budget_fraction={self.budget_fraction} must lie in (0, 1]")
        if self.lm is None and self.mqar is None:
            raise ValueError("both tracks are off: set lm, mqar or both")
        if self.lm is not None and self.lm.task != "lm":
            raise ValueError(f"lm.task={self.lm.task!r} must be 'lm'")
        if self.mqar is not None:
            if self.mqar.task != "mqar":
                raise ValueError(f"mqar.task={self.mqar.task!r} must be 'mqar'")
            if self.mqar.seq_len != self.mqar_task.seq_len:
                raise ValueError(f"mqar.seq_len={self.mqar.seq_len} differs from "
                                 f"mqar_task.seq_len={self.mqar_task.seq_len}; set both")
            if self.mqar.model.vocab_size < self.mqar_task.vocab_size:
                raise ValueError(f"mqar.model.vocab_size={self.mqar.model.vocab_size} is "
                                 f"smaller than mqar_task.vocab_size={self.mqar_task.vocab_size}")

    def tracks(self) -> dict[str, TrackConfig]:
        return {name: t for name, t in (("lm", self.lm), ("mqar", self.mqar)) if t is not None}

    def only_tracks(self, names: Iterable[str]) -> TrainConfig:
        names = list(names)
        for name in names:
            if name not in ("lm", "mqar"):
                raise ConfigError(f"unknown track {name!r}; valid tracks: lm, mqar")
        return replace(self, lm=self.lm if "lm" in names else None,
                       mqar=self.mqar if "mqar" in names else None)


def tiny() -> TrainConfig:
    """CPU scale for tests, the demo and the search studies (see docs/BASELINES.md)."""
    lm = TrackConfig(
        task="lm",
        # Every mixer gets the same total size: the MLP width absorbs the mixer's cost.
        model=ModelConfig(vocab_size=256, hidden_size=128, num_layers=2, num_heads=4,
                          conv_size=4, chunk_size=64, max_seq_len=256, target_params=450_000),
        optim=OptimConfig(lr=3e-3, betas=(0.9, 0.98), weight_decay=0.1, warmup_steps=30,
                          schedule="wsd", decay_fraction=0.3),
        batch_size=8, seq_len=256, max_steps=300, log_every=10, checkpoint_every=100,
    )
    mqar = TrackConfig(
        task="mqar",
        model=ModelConfig(vocab_size=64, hidden_size=64, num_layers=2, num_heads=2,
                          conv_size=4, chunk_size=64, max_seq_len=64, target_params=110_000),
        optim=OptimConfig(lr=3e-3, betas=(0.9, 0.98), weight_decay=0.1, warmup_steps=100,
                          schedule="linear"),
        batch_size=64, seq_len=64, max_steps=800, log_every=20, checkpoint_every=200,
    )
    return TrainConfig(
        lm=lm, mqar=mqar,
        data=DataConfig(corpus="shakespeare", tokenizer="byte", val_fraction=0.05),
        mqar_task=MQARConfig(vocab_size=64, seq_len=64, num_kv_pairs=8,
                             eval_num_kv_pairs=(4, 8, 16), num_eval_examples=1024),
        eval=EvalConfig(bpb_windows=256, lm_eval_tasks=("piqa", "arc_easy", "hellaswag"),
                        lm_eval_limit=100),
        runtime=RuntimeConfig(device="cpu", precision="fp32", engine="torch"),
    )


def explore() -> TrainConfig:
    """The published exploration setting: ~20M parameters, ~1B tokens, one GPU, bf16.

    The corpus must be named by the user (train.data.corpus): ~1B tokens would read the default
    Shakespeare (~1.2M BPE tokens) hundreds of times, which `check_token_budget` refuses. The
    tokenizer is a byte-level BPE of 8,192 tokens trained offline on the corpus (or the site's
    file in data.tokenizer_path); bits per byte stay exact through the tokenizer's byte counts.
    """
    model = ModelConfig(vocab_size=8192, hidden_size=256, num_layers=8, num_heads=8,
                        conv_size=4, chunk_size=64, max_seq_len=2048, target_params=20_000_000,
                        tie_embeddings=False)
    lm = TrackConfig(
        task="lm", model=model,
        optim=OptimConfig(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, warmup_steps=1000,
                          schedule="wsd", decay_fraction=0.2),
        # 32 x 2048 = 65,536 tokens a step; 15,000 steps ~ 1B tokens.
        batch_size=32, seq_len=2048, max_steps=15_000, max_tokens=1_000_000_000,
        log_every=50, checkpoint_every=1000,
    )
    mqar = TrackConfig(
        task="mqar",
        model=ModelConfig(vocab_size=8192, hidden_size=128, num_layers=2, num_heads=2,
                          conv_size=4, max_seq_len=256),
        optim=OptimConfig(lr=1e-3, warmup_steps=200, schedule="linear"),
        batch_size=256, seq_len=256, max_steps=4000, log_every=50, checkpoint_every=1000,
    )
    return TrainConfig(
        lm=lm, mqar=mqar,
        data=DataConfig(corpus="shakespeare", tokenizer="bpe", bpe_vocab_size=8192),
        mqar_task=MQARConfig(vocab_size=8192, seq_len=256, num_kv_pairs=32,
                             eval_num_kv_pairs=(16, 32, 64), num_eval_examples=2048,
                             random_non_queries=True),
        eval=EvalConfig(bpb_windows=512, lm_eval_limit=500),
        runtime=RuntimeConfig(device="cuda", precision="bf16", engine="deepspeed", zero_stage=1),
    )


def verify() -> TrainConfig:
    """~340M parameters on several GPUs: the re-run of the best candidates at scale.

    Run it with `launch.tasks_per_node` GPUs (8 is the intended node; any divisor of 16 works).
    The global batch is 64 x 2048 tokens, micro-batches of 4 sequences per GPU, so 8 GPUs
    accumulate 2 micro-batches a step and 1 GPU accumulates 16. Memory per GPU, bf16 with
    DeepSpeed ZeRO-2 over N GPUs and activation checkpointing:
    - weights (bf16) 340M x 2 B = 0.68 GB on every GPU;
    - fp32 master weights and Adam's two moments, 340M x 12 B = 4.1 GB, and the fp32 gradient
      buckets, 1.4 GB, sharded by ZeRO-2: 0.7 GB each on 8 GPUs (5.5 GB on one);
    - activations with checkpointing: each block's input, 4 x 2048 x 1024 x 2 B = 17 MB x 24
      blocks = 0.4 GB, plus one block's recomputed working set (mixer and SwiGLU, ~2 GB at
      this micro-batch) and the logits, 4 x 2048 x 8192 x 4 B = 0.27 GB with their gradient;
    about 4 GB on each of 8 GPUs and 9 GB on one: within a 40 GB A100 either way, and room to
    turn checkpointing off (about 34 x 4 x 2048 x 1024 x 24 B ~ 7 GB more) on 80 GB GPUs.
    """
    base = explore()
    assert base.lm is not None
    model = replace(base.lm.model, hidden_size=1024, num_layers=24, num_heads=16,
                    target_params=340_000_000)
    lm = replace(base.lm, model=model, batch_size=64, micro_batch_size=4, max_steps=120_000,
                 max_tokens=15_000_000_000, checkpoint_every=2000)
    return replace(base, lm=lm, runtime=replace(base.runtime, zero_stage=2,
                                                activation_checkpointing=True))


PRESETS: dict[str, Callable[[], TrainConfig]] = {"tiny": tiny, "explore": explore,
                                                 "verify": verify}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]()


def load_train_config(preset_name: str, path: str | Path | None = None) -> TrainConfig:
    """A preset, with the overrides of a YAML file (strict keys, errors with file and line)."""
    cfg = preset(preset_name)
    if path is None:
        return cfg
    data, lines = read_yaml(path)
    return merge(cfg, data, source=str(path), lines=lines)


def train_config_from_dict(data: dict) -> TrainConfig:
    """Rebuild a TrainConfig from its plain-dict form (how jobs receive it)."""
    return from_dict(TrainConfig, data, source="train config")
