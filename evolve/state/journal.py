"""The run journal: an append-only JSON-lines file of events, and its replay into current state.

Usage (through `evolve.state.store.Store`, which owns the file)::

    store.record("checked", "c000042", passed=True)
    state = store.replay()
    state.candidates["c000042"].status          # "checked"
    state.open_submissions()                     # arrays whose job ids were not all recorded

Each event is one line ``{"t": <unix time>, "event": <name>, "candidate": <id>?, ...}`` written
with a single ``write`` and fsynced. A crash can leave a torn last line: replay skips it with a
warning, and a writer (`Journal.repair_torn_tail`) moves it aside to ``journal.jsonl.torn``
before appending. A bad line anywhere else is corruption: `JournalCorruptError` names the line.

Events and the status they give a candidate (an event may also carry ``status`` explicitly;
``checked`` with ``passed: false`` means rejected; unknown events are kept in the file and
ignored by replay)::

    created proposed checked rejected submitted submit_failed running done failed lost
    cancelled scored analyzed reused(done) rung(paused) promoted(checked)

A screened training (search.fidelity) stops at a rung: `rung` (with ``rung``: the fraction of
the budget, ``rung_fitness``) pauses it; `promoted` (with ``fraction``: the next one) makes it
submittable again, to continue from its rung checkpoint. ``cpu_hours`` on any event adds to the
candidate's total (a screened training costs several jobs).

Fields copied into the candidate's state when present: generation, parents, island, fitness,
job_id, gpu_hours, requeues, error, submission. ``submitted`` also appends its job_id to job_ids
and counts an attempt. Run-level events about several candidates carry ``candidates: [...]``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from evolve.state.fsio import JournalCorruptError, fsync_dir

log = logging.getLogger(__name__)

EVENT_STATUS: dict[str, str] = {
    "created": "created",
    "proposed": "proposed",
    "checked": "checked",
    "rejected": "rejected",
    "submitted": "submitted",
    "submit_failed": "submit_failed",
    "running": "running",
    "done": "done",
    "reused": "done",
    "failed": "failed",
    "lost": "lost",
    "cancelled": "cancelled",
    "scored": "scored",
    "analyzed": "analyzed",
    "rung": "paused",
    "promoted": "checked",
}
"""Journal event -> the candidate status it sets."""

TRAINED = ("done", "scored", "analyzed")
"""Statuses of candidates whose training finished with a result."""
COUNTED = ("submitted", "running", *TRAINED, "failed", "lost", "submit_failed", "checked",
           "paused")
"""Statuses of proposals that count towards search.max_candidates."""
DROPPED = ("failed", "rejected", "cancelled")
"""Statuses of candidates the driver does not work on any more, without a result."""
UNFINISHED = ("created", "proposed", "checked", "submitted", "running", "done", "scored", "lost",
              "submit_failed")
"""Statuses of candidates the driver still has work on."""

FAILING = (*DROPPED, "lost", "submit_failed")
"""Statuses in which a candidate's last journal error describes it now (a candidate that was
resubmitted and then trained keeps the error of its earlier attempt, which is history)."""

ACTIVE_STATUSES = ("submitted", "running")
"""A candidate in one of these has a job the scheduler may still be running."""

RESUBMITTABLE_STATUSES = ("checked", "lost", "submit_failed")
"""A candidate in one of these is (re)submitted by the driver without risking a duplicate
training: checked, a lost job, or a submission the scheduler refused (or a killed driver left
without its job id). A failed training is not: it failed on its own merits."""

KINDS = ("baseline", "proposal", "replica", "ablation")
"""What a candidate is, from its proposal file: a baseline of the run, a proposal of the search,
or a follow-up (a replica: the same file with another seed or at a promotion preset; an
ablation: one change of a proposal reverted)."""
FOLLOW_UPS = ("replica", "ablation")
"""Kinds that re-train a design already in the archive: folded into its row, never ranked."""

_COPIED = ("generation", "parents", "island", "fitness", "job_id", "gpu_hours", "requeues",
           "error", "submission")


@dataclass(slots=True)
class CandidateState:
    """What the journal says about one candidate now."""

    id: str
    status: str = "created"
    generation: int | None = None
    parents: list[str] = field(default_factory=list)
    island: int | None = None
    fitness: float | None = None
    job_id: str | None = None
    job_ids: list[str] = field(default_factory=list)
    attempts: int = 0
    requeues: int = 0
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    """CPU time of its trainings (the sum over its jobs: rungs and continuation)."""
    rungs: dict[float, float] = field(default_factory=dict)
    """Screening rungs reached: fraction of the budget -> fitness there."""
    error: str | None = None
    submission: str | None = None
    created: float = 0.0
    updated: float = 0.0


@dataclass(slots=True)
class Submission:
    """One submission of a job array, from its submit_begin event and the events that followed."""

    name: str
    executor: str
    folder: str
    candidates: list[str]
    t: float = 0.0
    job_ids: dict[str, str] = field(default_factory=dict)
    failed: bool = False

    @property
    def open(self) -> bool:
        """True when the array may exist but some job ids were never recorded (a crash)."""
        return not self.failed and len(self.job_ids) < len(self.candidates)


@dataclass
class Replay:
    """The state rebuilt from the journal."""

    candidates: dict[str, CandidateState]
    submissions: dict[str, Submission]
    num_events: int
    ignored: list[dict[str, Any]] = field(default_factory=list)
    """Events about a candidate the journal never created (an appended line of something that
    never happened): {"line", "event", "candidate"}; never counted."""

    def with_status(self, *statuses: str) -> list[CandidateState]:
        """Candidates whose status is one of `statuses`, in id order."""
        return [c for c in self.candidates.values() if c.status in statuses]

    def open_submissions(self) -> list[Submission]:
        """Submissions interrupted between submit_begin and the last job id being recorded."""
        return [s for s in self.submissions.values() if s.open]


def replay_events(events: Iterable[dict[str, Any]]) -> Replay:
    """Fold events into the current state of every candidate and submission."""
    cands: dict[str, CandidateState] = {}
    subs: dict[str, Submission] = {}
    ignored: list[dict[str, Any]] = []
    n = 0
    for ev in events:
        n += 1
        name = ev.get("event")
        cid = ev.get("candidate")
        # The candidates whose state this event changes: its own, or a run-level event's list.
        about = [cid] if cid is not None else list(ev.get("candidates", [])) \
            if name in EVENT_STATUS or "status" in ev else []
        unknown = [c for c in about if c not in cands and name != "created"]
        if unknown:
            ignored.extend({"line": n, "event": name, "candidate": c} for c in unknown)
            continue
        if name == "submit_begin":
            subs[ev["submission"]] = Submission(
                name=ev["submission"], executor=ev.get("executor", ""), folder=ev.get("folder", ""),
                candidates=list(ev.get("candidates", [])), t=ev.get("t", 0.0))
        for c in about:
            _apply(cands, c, name, ev)
        sub = subs.get(ev.get("submission", "")) if "submission" in ev else None
        if sub is not None:
            if name == "submitted" and cid is not None:
                sub.job_ids[cid] = ev.get("job_id", "")
            elif name == "submit_failed":
                sub.failed = True
    if ignored:
        log.warning("journal: %d event(s) about candidates it never created were ignored "
                    "(first: line %d, %s %s)", len(ignored), ignored[0]["line"],
                    ignored[0]["event"], ignored[0]["candidate"])
    return Replay(candidates=dict(sorted(cands.items())), submissions=subs, num_events=n,
                  ignored=ignored)


def _apply(cands: dict[str, CandidateState], cid: str, name: Any, ev: dict[str, Any]) -> None:
    st = cands.get(cid)
    t = ev.get("t", 0.0)
    if st is None:
        st = cands[cid] = CandidateState(id=cid, created=t)
    status = ev.get("status") or EVENT_STATUS.get(name)  # type: ignore[arg-type]
    if name == "checked" and ev.get("passed") is False:
        status = "rejected"  # a gate verdict recorded as checked(passed=False)
    if status is not None:
        st.status = status
    for key in _COPIED:
        if key in ev:
            setattr(st, key, ev[key])
    if "cpu_hours" in ev:
        st.cpu_hours += float(ev["cpu_hours"])
    if name == "rung":
        st.rungs[float(ev["rung"])] = ev.get("rung_fitness")
    if name == "submitted":
        st.attempts += 1
        if ev.get("job_id"):
            st.job_ids.append(ev["job_id"])
    st.updated = t


class Journal:
    """journal.jsonl of one run. The driver is its only writer; anyone may read it."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True,
                 mode: int | None = None) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.mode = mode
        self._lock = threading.Lock()

    def append(self, event: dict[str, Any]) -> None:
        """Append one event as one line, with a single write, then fsync."""
        try:
            line = json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise TypeError(f"journal event {event.get('event')!r} is not JSON-serialisable: {exc}") from exc
        data = line.encode("utf-8")
        with self._lock:
            new = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                if self.mode is not None:
                    os.fchmod(fd, self.mode)
                os.write(fd, data)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if new and self.fsync:
                fsync_dir(self.path.parent)  # else a crash may lose the new file's name

    def read(self) -> list[dict[str, Any]]:
        """All events, oldest first. A torn last line is skipped; a bad earlier line raises."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        if not data:
            return []
        body, tail = data, b""
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            body, tail = data[:cut], data[cut:]
        events = self._parse_body(body)
        if tail:
            try:
                ev = json.loads(tail)
            except (ValueError, UnicodeDecodeError):
                ev = None
            if isinstance(ev, dict):
                events.append(ev)  # complete but for its newline
            else:
                line = body.count(b"\n") + 1
                log.warning("%s:%d: skipping a torn last line (%d bytes) left by a crash",
                            self.path, line, len(tail))
        return events

    def _parse_body(self, body: bytes) -> list[dict[str, Any]]:
        if not body:
            return []
        # One json.loads over all lines is ~5x faster than one per line; the per-line pass
        # only runs to locate a problem.
        try:
            text = body.decode("utf-8")
            # split("\n"), not splitlines(): U+2028 may appear unescaped inside a string.
            events = json.loads("[" + ",".join(text[:-1].split("\n")) + "]")
            if all(type(e) is dict for e in events):
                return events  # type: ignore[no-any-return]
        except (ValueError, UnicodeDecodeError):
            pass
        events = []
        for i, raw in enumerate(body.split(b"\n")[:-1], start=1):
            try:
                ev = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise JournalCorruptError(
                    f"{self.path}:{i}: corrupt journal line ({exc}): {raw[:120]!r}. The journal is "
                    "the run's source of truth; restore this line from a backup or truncate the "
                    "journal before it, knowing the events after it are lost.", line=i) from None
            if not isinstance(ev, dict):
                raise JournalCorruptError(
                    f"{self.path}:{i}: journal line is a JSON {type(ev).__name__}, not an object", line=i)
            events.append(ev)
        return events

    def repair_torn_tail(self) -> int:
        """Before appending: move a torn last line aside to journal.jsonl.torn; returns its size.

        Without this, the next event would be glued to the fragment and the journal would hold a
        corrupt line in the middle.
        """
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0
        if size == 0:
            return 0
        with open(self.path, "rb+") as f:
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return 0
            f.seek(0)
            data = f.read()
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            try:
                complete = isinstance(json.loads(tail), dict)
            except (ValueError, UnicodeDecodeError):
                complete = False
            if complete:
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
                dropped = 0
            else:
                with open(self.path.with_name(self.path.name + ".torn"), "ab") as side:
                    side.write(tail + b"\n")
                f.truncate(cut)
                dropped = len(tail)
            f.flush()
            os.fsync(f.fileno())
        if dropped:
            log.warning("%s: moved a torn last line (%d bytes) to %s.torn", self.path, dropped,
                        self.path.name)
        return dropped
