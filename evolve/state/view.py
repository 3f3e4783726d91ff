"""RunView: the one read-model of a run, for the driver, the leaderboard, the report, the CLI
and tools/study.

    view = RunView.open("state/demo")          # a reader: takes no lock, writes nothing
    view.state.candidates["c000042"].status    # the journal's replay, redone when it grew
    view.kind("c000042"), view.proposal(...), view.result(...), view.confirmations(...)

Reads are cached: the proposal file is written once before a candidate is journaled as proposed
and never changes; every other file is re-read when its size or modification time changed.
A file that cannot be read marks its candidate damaged (`damaged`: id -> file and reason) and
reads as the default: one bad file never makes the rest of a run unreadable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from evolve.state.fsio import StateError, read_json
from evolve.state.journal import FOLLOW_UPS, KINDS, CandidateState, Replay
from evolve.state.store import Store

__all__ = ["FOLLOW_UPS", "KINDS", "RunView"]

class RunView:
    """The journal's replay and the candidates' files of one run, read once and cached."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.damaged: dict[str, str] = {}
        """Candidates with a file that cannot be read: id -> the file and why."""
        self._state: Replay | None = None
        self._journal_size = -1
        self._proposals: dict[str, dict[str, Any]] = {}
        self._files: dict[Path, tuple[tuple[int, int], Any]] = {}

    @classmethod
    def open(cls, run: str | os.PathLike[str]) -> RunView:
        return cls(Store.open(run))

    @property
    def state(self) -> Replay:
        """The journal's replay, recomputed only when the journal grew (it is append-only, so
        its size identifies its content)."""
        try:
            size = self.store.journal_path.stat().st_size
        except FileNotFoundError:
            size = 0
        if self._state is None or size != self._journal_size:
            self._state = self.store.replay()
            self._journal_size = size
        return self._state

    def candidates(self, *kinds: str) -> list[CandidateState]:
        """The run's candidates in id order, only those of `kinds` when given."""
        cands = list(self.state.candidates.values())
        return [c for c in cands if self.kind(c.id) in kinds] if kinds else cands

    def read(self, cid: str, path: Path, default: Any = None) -> Any:
        """A candidate's JSON file (cached until it changes), or `default` when absent or
        unreadable, the latter marking the candidate damaged."""
        try:
            st = path.stat()
        except OSError:
            return default
        key = (st.st_size, st.st_mtime_ns)
        cached = self._files.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            value = read_json(path, default)
        except StateError as exc:
            self.damaged.setdefault(cid, str(exc))
            return default
        self._files[path] = (key, value)
        return value

    def proposal(self, cid: str) -> dict[str, Any]:
        """The proposal file ({} while absent or damaged)."""
        cached = self._proposals.get(cid)
        if cached is None:
            value = self.read(cid, self.store.candidate(cid).proposal, {})
            cached = value if isinstance(value, dict) else {}
            if cached:
                self._proposals[cid] = cached
        return cached

    def kind(self, cid: str) -> str:
        return str(self.proposal(cid).get("kind", "proposal"))

    def result(self, cid: str) -> dict[str, Any] | None:
        """The result file, written once by the training; None until then (or when damaged)."""
        value = self.read(cid, self.store.candidate(cid).result, None)
        return value if isinstance(value, dict) else None

    def file(self, cid: str, name: str) -> Any:
        """Another JSON file of a candidate by its `CandidatePaths` attribute: "checks", "job",
        "analysis", "error"; None when absent or unreadable."""
        return self.read(cid, getattr(self.store.candidate(cid), name), None)

    def confirmations(self, cid: str) -> dict[str | None, dict[str, Any]]:
        """A candidate's confirmation (key None: at the run's own training) and promotions
        (key: the preset), as the driver wrote them."""
        out: dict[str | None, dict[str, Any]] = {}
        for preset, path in self.store.candidate(cid).confirmations().items():
            conf = self.read(cid, path, None)
            if isinstance(conf, dict):
                out[conf.get("preset") or preset] = conf
        return out

    def derived(self, cid: str, kind: str) -> list[str]:
        """The replicas or ablations of `cid`, in id order."""
        return [d for d in self.state.candidates
                if self.kind(d) == kind and self.proposal(d).get("of") == cid]

    def ablation(self) -> dict[str, Any] | None:
        """The run's ablation file (plan, then table), None without one or when unreadable."""
        try:
            value = read_json(self.store.ablation_path, None)
        except StateError:
            return None
        return value if isinstance(value, dict) else None

    def gpu_hours(self) -> float:
        return sum(c.gpu_hours for c in self.state.candidates.values())
