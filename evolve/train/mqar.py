"""Multi-query associative recall (MQAR), in the style of the Zoology benchmark (Arora et al. 2023).

A sequence first lists key-value pairs, then asks for keys again; the model must emit, at each
query, the value that was paired with that key::

    k1 v1 k2 v2 ... kP vP | x x k2 x k1 x x ...
                             labels: -100 except at each query key, where it is that key's value

Keys come from 1 .. vocab/2 - 1, values from vocab/2 .. vocab - 1 (distinct within a sequence);
queries sit on even offsets after the pairs (and after `query_gap` tokens of filler), their gaps
drawn from Zoology's power law; every other position holds filler (0, or a random token with
random_non_queries) and is ignored (-100).

The gap is what makes recall mean recall for a design with a local path: a sliding-window
attention of w tokens sees every key of a sequence no longer than w, and on Zoology's bunched
queries it sees most keys of any sequence. With `query_gap` >= w - 1 no query is within w tokens
of its key, so only the design's long-range memory can answer.

Usage::

    cfg = MQARConfig()                                   # vocab 64, T 64, 8 pairs
    x, y = mqar_batch(cfg, step=0, batch_size=64, seed=0)      # int64 [64, 64] each
    x, y = mqar_eval_set(cfg, num_kv_pairs=8)                  # the fixed evaluation set

Batches are a pure function of (seed, rank, step); the evaluation set of (eval_seed,
num_kv_pairs), drawn from a different random stream than any training batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from evolve.config.loading import positive

if TYPE_CHECKING:
    import numpy as np
    import torch

IGNORE_INDEX = -100
"""Label of positions that are not scored (torch's cross_entropy default ignore_index)."""


@dataclass(kw_only=True)
class MQARConfig:
    """The associative-recall task: vocabulary, length, pairs, and its evaluation set."""

    vocab_size: int = 64
    """Tokens: keys are 1 .. vocab_size/2 - 1, values vocab_size/2 .. vocab_size - 1."""
    seq_len: int = 64
    """Sequence length T (inputs and labels are [B, T])."""
    num_kv_pairs: int = 8
    """Key-value pairs per training sequence (every key is queried once)."""
    power_a: float = 0.01
    """Zoology's power-law exponent for the gaps between queries (small: queries bunch early)."""
    query_gap: int = 0
    """Filler tokens between the last pair and the first query slot: every query is at least
    query_gap + 2 tokens after its key, out of reach of one layer's local window of up to
    query_gap + 2 tokens (a stack reaches further: evolve/search/recall_reach.py); 0: Zoology's
    layout, queries right after the pairs."""
    random_non_queries: bool = False
    """Fill non-query positions with random tokens (Zoology's default, meant for vocabularies of
    thousands) instead of 0. With a small vocabulary random filler repeats the sequence's own
    keys, each followed by a random token, which overwrites the pairs in a recurrent state and
    makes the task unlearnable (tiny preset: 15% accuracy at 8 pairs after 800 steps)."""
    eval_num_kv_pairs: tuple[int, ...] = (4, 8, 16)
    """Pair counts to report accuracy at (each needs 4 * pairs + query_gap <= seq_len + 1)."""
    num_eval_examples: int = 1024
    """Sequences in the fixed evaluation set of each pair count."""
    eval_seed: int = 1234
    """Seed of the evaluation sets (the same for every candidate, so scores compare)."""

    def __post_init__(self) -> None:
        self.eval_num_kv_pairs = tuple(self.eval_num_kv_pairs)
        positive("num_eval_examples", self.num_eval_examples)
        if self.vocab_size < 6 or self.vocab_size % 2:
            raise ValueError(f"vocab_size={self.vocab_size} must be even and at least 6")
        if not 0.0 < self.power_a <= 1.0:
            raise ValueError(f"power_a={self.power_a} must lie in (0, 1]")
        if not self.eval_num_kv_pairs:
            raise ValueError("eval_num_kv_pairs is empty; give at least one pair count")
        if isinstance(self.query_gap, bool) or not isinstance(self.query_gap, int) \
                or self.query_gap < 0:
            raise ValueError(f"query_gap={self.query_gap!r} must be a whole number >= 0 (filler "
                             "tokens between the pairs and the queries)")
        for p in (self.num_kv_pairs, *self.eval_num_kv_pairs):
            check_pairs(p, vocab_size=self.vocab_size, seq_len=self.seq_len,
                        query_gap=self.query_gap)


def check_pairs(num_kv_pairs: int, *, vocab_size: int, seq_len: int, query_gap: int = 0) -> None:
    """Raise ValueError unless `num_kv_pairs` pairs (and `query_gap`) fit the vocabulary and
    the length."""
    if num_kv_pairs < 1:
        raise ValueError(f"num_kv_pairs={num_kv_pairs} must be at least 1")
    if num_kv_pairs > vocab_size // 2 - 1:
        raise ValueError(f"num_kv_pairs={num_kv_pairs} exceeds the {vocab_size // 2 - 1} "
                         f"distinct keys of vocab_size={vocab_size}")
    if 4 * num_kv_pairs + query_gap > seq_len + 1:
        gap = f" + query_gap ({query_gap})" if query_gap else ""
        raise ValueError(f"num_kv_pairs={num_kv_pairs} does not fit seq_len={seq_len}: pairs "
                         f"and queries need 4 * pairs{gap} <= seq_len + 1 (at most "
                         f"{(seq_len + 1 - query_gap) // 4} pairs)")


def generate_mqar(rng: np.random.Generator, *, num_examples: int, vocab_size: int, seq_len: int,
                  num_kv_pairs: int, power_a: float = 0.01, query_gap: int = 0,
                  random_non_queries: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Draw `num_examples` MQAR sequences from `rng`: (inputs, labels), int64 [N, seq_len]."""
    import numpy as np

    check_pairs(num_kv_pairs, vocab_size=vocab_size, seq_len=seq_len, query_gap=query_gap)
    n, p, half = num_examples, num_kv_pairs, vocab_size // 2
    keys = _distinct(rng, n, half - 1, p) + 1
    values = _distinct(rng, n, half, p) + half

    if random_non_queries:
        inputs = rng.integers(0, vocab_size, size=(n, seq_len))
    else:
        inputs = np.zeros((n, seq_len), dtype=np.int64)
    labels = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    inputs[:, 0:2 * p:2] = keys
    inputs[:, 1:2 * p:2] = values

    # Query slots: even offsets after the pairs and the gap, chosen without replacement with
    # Zoology's power-law weights (Gumbel top-k samples exactly that).
    first = 2 * p + query_gap
    num_slots = (seq_len - first + 1) // 2
    x = np.arange(1, num_slots + 1, dtype=np.float64)
    log_w = np.log(power_a) + (power_a - 1.0) * np.log(x)
    gumbel = -np.log(-np.log(rng.random((n, num_slots)).clip(1e-300, 1.0)))
    slots = np.argsort(-(log_w + gumbel), axis=1)[:, :p]
    pos = first + 2 * slots                                   # [n, p]
    rows = np.arange(n)[:, None]
    inputs[rows, pos] = keys
    labels[rows, pos] = values
    return inputs.astype(np.int64), labels


def _distinct(rng: np.random.Generator, n: int, k: int, p: int) -> np.ndarray:
    """[n, p] ints from 0..k-1, distinct within a row, every ordered choice equally likely."""
    import numpy as np

    if p * p > k:
        # Dense: the p smallest of k uniform draws are a uniform p-subset; shuffle its order.
        return rng.permuted(np.argpartition(rng.random((n, k)), p - 1, axis=1)[:, :p], axis=1)
    # Sparse (large vocabularies): redraw the rows that repeat a value; with p * p <= k at
    # most about half of them do, so this ends after a few rounds and skips k draws per row.
    out = rng.integers(0, k, size=(n, p))
    while True:
        s = np.sort(out, axis=1)
        bad = (s[:, 1:] == s[:, :-1]).any(axis=1)
        if not bad.any():
            return out
        out[bad] = rng.integers(0, k, size=(int(bad.sum()), p))


def mqar_batch(cfg: MQARConfig, *, step: int, batch_size: int, seed: int, rank: int = 0,
               world_size: int = 1, num_kv_pairs: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank `rank`'s rows (inputs, labels), int64 [batch_size / world_size, seq_len], of the
    global training batch; a function of (seed, step) only, so a resumed job draws the same
    batches, ranks differ, and N ranks together see what one process would."""
    import numpy as np
    import torch

    rng = np.random.default_rng([seed, 0, step, 0])
    x, y = generate_mqar(rng, num_examples=batch_size, vocab_size=cfg.vocab_size,
                         seq_len=cfg.seq_len, power_a=cfg.power_a, query_gap=cfg.query_gap,
                         random_non_queries=cfg.random_non_queries,
                         num_kv_pairs=cfg.num_kv_pairs if num_kv_pairs is None else num_kv_pairs)
    from evolve.train.distributed import rank_rows

    rows = rank_rows(batch_size, rank, world_size)
    return torch.from_numpy(x[rows]), torch.from_numpy(y[rows])


def mqar_eval_set(cfg: MQARConfig, num_kv_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed evaluation set for `num_kv_pairs`: cfg.num_eval_examples sequences."""
    import numpy as np
    import torch

    rng = np.random.default_rng([cfg.eval_seed, 1, num_kv_pairs, 0])
    x, y = generate_mqar(rng, num_examples=cfg.num_eval_examples, vocab_size=cfg.vocab_size,
                         seq_len=cfg.seq_len, num_kv_pairs=num_kv_pairs, power_a=cfg.power_a,
                         query_gap=cfg.query_gap, random_non_queries=cfg.random_non_queries)
    return torch.from_numpy(x), torch.from_numpy(y)
