"""The novelty gate: reject code already tried, and send back ideas too close to archived ones.

    index = NoveltyIndex(NoveltyConfig(similarity_threshold=0.9))
    index.add("c000041", source=text, motivation="...", spec=spec)
    verdict = index.check(source=new_text, motivation="...", spec=new_spec)
    if not verdict.ok:
        print(verdict.kind, verdict.nearest_id, verdict.reason)

Code identity ignores comments, docstrings and formatting (the code is compared as its
normalised AST). Similarity is the cosine of embeddings of motivation + spec; the embedding
function is pluggable (`embed(texts) -> vectors`), by default a cheap deterministic bag of
hashed words and word pairs, so the gate works without any model.
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from evolve.model.space import FIELDS, MixerSpec

Embed = Callable[[Sequence[str]], Sequence[Sequence[float]]]

LEXICAL_DIM = 2048


@dataclass(kw_only=True)
class NoveltyConfig:
    """Thresholds of the novelty gate."""

    similarity_threshold: float = 0.92
    """Cosine similarity of motivation+spec at or above which a candidate is a near-duplicate
    of an archived one (1.0: only identical texts)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.similarity_threshold <= 1.0:
            raise ValueError(f"similarity_threshold={self.similarity_threshold} must be in (0, 1]")


@dataclass(frozen=True, kw_only=True)
class NoveltyVerdict:
    """The gate's answer for one candidate."""

    kind: str
    """'novel', 'duplicate_code' (rejected) or 'near_duplicate' (sent back to the researcher)."""
    reason: str
    """One sentence for the journal and the researcher; empty when novel."""
    code_hash: str
    """Hash of the candidate's normalised code."""
    nearest_id: str | None = None
    """The most similar archived candidate (the duplicate, for 'duplicate_code')."""
    similarity: float | None = None
    """Cosine similarity to `nearest_id` (1.0 for a code duplicate)."""

    @property
    def ok(self) -> bool:
        return self.kind == "novel"


def normalize_code(source: str) -> str:
    """`source` without comments, docstrings or formatting; unparsable text is only whitespace-
    collapsed (the parse gate reports it; here it must still hash stably)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return " ".join(source.split())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def code_hash(source: str) -> str:
    """16 hex digits, equal for files that differ only in comments, docstrings and layout."""
    return hashlib.sha256(normalize_code(source).encode()).hexdigest()[:16]


def idea_text(motivation: str, spec: MixerSpec | None = None) -> str:
    """What similarity compares: the motivation, then each spec field as 'field value'."""
    if spec is None:
        return motivation.strip()
    choices = "; ".join(f"{name} {getattr(spec, name)}" for name in FIELDS)
    return f"{motivation.strip()}\n{choices}"


_WORD = re.compile(r"[a-z0-9_]+(?:\.[0-9]+)?")


def lexical_embed(texts: Sequence[str]) -> list[list[float]]:
    """Unit vectors of hashed word and word-pair counts (log-scaled); deterministic everywhere."""
    out = []
    for text in texts:
        words = _WORD.findall(text.lower())
        counts: dict[int, float] = {}
        for token in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
            slot = zlib.crc32(token.encode()) % LEXICAL_DIM
            counts[slot] = counts.get(slot, 0.0) + 1.0
        vec = np.zeros(LEXICAL_DIM)
        for slot, count in counts.items():
            vec[slot] = 1.0 + math.log(count)
        out.append(_unit(vec).tolist())
    return out


class NoveltyIndex:
    """The archive as the gate sees it: code hashes and idea embeddings by candidate id."""

    def __init__(self, config: NoveltyConfig | None = None, embed: Embed | None = None) -> None:
        self.config = config or NoveltyConfig()
        self.embed = embed or lexical_embed
        self._by_hash: dict[str, str] = {}
        self._ids: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None  # rows of _vectors, stacked on first query

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, candidate_id: str, *, source: str | None = None, motivation: str = "",
            spec: MixerSpec | None = None) -> None:
        """Archive a candidate (its code, if given, and its idea)."""
        if source is not None:
            self._by_hash.setdefault(code_hash(source), candidate_id)
        self._ids.append(candidate_id)
        self._vectors.append(self._embed(idea_text(motivation, spec)))
        self._matrix = None

    def duplicate_of(self, source: str) -> str | None:
        """The archived candidate with the same normalised code, if any."""
        return self._by_hash.get(code_hash(source))

    def nearest(self, motivation: str, spec: MixerSpec | None = None
                ) -> tuple[str, float] | None:
        """The archived idea most similar to this one, and the cosine similarity."""
        if not self._ids:
            return None
        if self._matrix is None:
            self._matrix = np.stack(self._vectors)
        scores = self._matrix @ self._embed(idea_text(motivation, spec))
        best = int(np.argmax(scores))  # the first (oldest) of equals
        return self._ids[best], float(scores[best])

    def _embed(self, text: str) -> np.ndarray:
        return _unit(np.asarray(self.embed([text])[0], dtype=np.float64))

    def check(self, *, source: str, motivation: str, spec: MixerSpec | None = None
              ) -> NoveltyVerdict:
        """Code duplicate first (a hard reject), then the similarity threshold."""
        digest = code_hash(source)
        duplicate = self._by_hash.get(digest)
        if duplicate is not None:
            return NoveltyVerdict(kind="duplicate_code", code_hash=digest, nearest_id=duplicate,
                                  similarity=1.0, reason=f"the code is the same as {duplicate}'s "
                                  "(ignoring comments, docstrings and formatting)")
        near = self.nearest(motivation, spec)
        if near is not None and near[1] >= self.config.similarity_threshold:
            return NoveltyVerdict(
                kind="near_duplicate", code_hash=digest, nearest_id=near[0], similarity=near[1],
                reason=f"the idea is too close to {near[0]} (similarity {near[1]:.3f} >= "
                       f"{self.config.similarity_threshold}); propose something that differs "
                       "from it in substance")
        return NoveltyVerdict(kind="novel", code_hash=digest, reason="",
                              nearest_id=near[0] if near else None,
                              similarity=near[1] if near else None)


def _unit(vec: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec
