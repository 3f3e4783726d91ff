"""Tokenizers: byte level (the default; exact bits per byte) and a byte-level BPE trained locally.

Usage::

    tok = ByteTokenizer()
    ids = tok.encode("To be, or not")          # one id per UTF-8 byte, vocab 256
    assert tok.decode(ids) == "To be, or not"

    tok = train_bpe(texts, vocab_size=4096, path=Path("bpe.json"))   # or load_bpe(path)
    tok.token_bytes[i]     # how many UTF-8 bytes token i stands for (bits per byte is exact)

Both map any text to ids and back without loss (the BPE works on bytes, so nothing is
out of vocabulary). `eot_id` is the id of "\\n": corpora join their documents with newlines, so
it is the natural token to condition on when a context is empty.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Protocol

TOKENIZERS = ("byte", "bpe")


class Tokenizer(Protocol):
    """What the data pipeline and the evaluation need from a tokenizer."""

    name: str
    """Identifies the tokenizer and its vocabulary (recorded next to every token shard)."""
    vocab_size: int

    @property
    def eot_id(self) -> int: ...

    @property
    def token_bytes(self) -> list[int]: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocab 256, one token per byte."""

    name = "byte"
    vocab_size = 256

    @property
    def eot_id(self) -> int:
        return 10  # "\n"

    @property
    def token_bytes(self) -> list[int]:
        return [1] * self.vocab_size

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        ids = list(ids)
        bad = [i for i in ids if not 0 <= i < 256]
        if bad:
            raise ValueError(f"byte tokenizer: ids {bad[:5]} are outside 0..255")
        # A model may emit bytes that are not valid UTF-8; show them rather than fail.
        return bytes(ids).decode("utf-8", errors="replace")


def _byte_level_alphabet() -> dict[str, int]:
    """Inverse of GPT-2's byte -> printable character map that byte-level BPE vocabularies use."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = list(printable)
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class BPETokenizer:
    """A byte-level BPE from the `tokenizers` package, loaded from a local JSON file."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"BPE tokenizer file {self.path} does not exist")
        try:
            self._tok = HFTokenizer.from_file(str(self.path))
        except Exception as exc:  # the Rust error does not say which file
            raise ValueError(f"{self.path} is not a `tokenizers` JSON file: {exc}") from exc
        self.vocab_size = self._tok.get_vocab_size()
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        self.name = f"bpe{self.vocab_size}-{digest}"

    @cached_property
    def eot_id(self) -> int:
        ids = self.encode("\n")
        if len(ids) != 1:
            raise ValueError(f"{self.path}: '\\n' is not a single token ({ids})")
        return ids[0]

    @cached_property
    def token_bytes(self) -> list[int]:
        alphabet = _byte_level_alphabet()
        out = []
        for i in range(self.vocab_size):
            token = self._tok.id_to_token(i)
            if token is None or any(ch not in alphabet for ch in token):
                raise ValueError(f"{self.path}: token {i} ({token!r}) is not byte-level; "
                                 "train the BPE with evolve.train.tokenizer.train_bpe")
            out.append(len(token))
        return out

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)


def train_bpe(texts: Iterable[str], *, vocab_size: int, path: str | Path) -> BPETokenizer:
    """Train a byte-level BPE on `texts`, save it to `path` (atomically) and load it.

    Training on a few MB takes seconds; the file is what makes runs reproducible, so
    callers cache it and record its name (which includes a hash of the file).
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ValueError(f"bpe vocab_size={vocab_size} must exceed 256 (the byte alphabet)")
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_nonempty(texts), trainer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tok.save(str(tmp))
    json.loads(tmp.read_text())  # fail here, not at load time, if the file is broken
    tmp.replace(path)
    return BPETokenizer(path)


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    seen = False
    for t in texts:
        if t:
            seen = True
            yield t
    if not seen:
        raise ValueError("cannot train a BPE on an empty corpus")


def load_bpe(path: str | Path) -> BPETokenizer:
    """Load a byte-level BPE saved by `train_bpe` (or any byte-level `tokenizers` JSON)."""
    return BPETokenizer(path)
