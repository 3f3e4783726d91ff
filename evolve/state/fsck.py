"""Check a run folder against its invariants (docs/STATE.md), and repair what can be rebuilt.

Usage (`evolve fsck RUN [--fix]` does this)::

    problems = check_run(layout, job_state=ask_scheduler)    # [Problem(file, what, fix), ...]
    actions = fix_run(layout, problems, score=rescore)        # what was done, one line each

What it checks: the journal against the candidate folders (a journal missing or with a corrupt
line, a folder the journal never created, a candidate the journal knows without a folder),
every JSON file of the run (one that does not parse), the journal's events (about a candidate
never created, out of order) and the jobs the journal thinks alive against the scheduler
(`job_state`, given by the caller: the state layer does not know schedulers).

What `--fix` does: a missing or damaged journal is rebuilt from the candidate folders and job
files (the old one is kept beside it as a backup), and a candidate with an unreadable file is
journaled `damaged` (the driver leaves it alone; the file stays for a person to look at).
Nothing is ever deleted. Fitness is not a file of its own: the rebuild asks `score` (given by the
caller, which knows the run's baselines and fitness) for the candidates whose training is done.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from evolve.state.fsio import JournalCorruptError, StateError, atomic_write_bytes, read_json
from evolve.state.journal import ACTIVE_STATUSES, Journal, Replay, replay_events
from evolve.state.layout import CandidatePaths, RunLayout

JobState = Callable[[dict[str, Any]], "tuple[str, bool] | None"]
"""(job.json record) -> (scheduler state, still active), or None when it cannot be asked."""
Score = Callable[[list[str]], dict[str, dict[str, Any]]]
"""(ids of candidates whose training is done) -> {id: fields of their `scored` event}, or
{"event": "failed", "error": ...} for one that fails scoring; ids it cannot score yet are left
out (they stay done, and the driver scores them when it resumes)."""

DAMAGED = "damaged"
"""The status a candidate with an unreadable file gets from `--fix`."""
_ORDER = ("created", "proposed", "checked", "submitted")
"""Events of a candidate that happen once per candidate and in this order (a resubmission
repeats the later ones)."""


@dataclass(frozen=True)
class Problem:
    """One broken invariant of a run folder."""

    file: Path
    """The file (or folder) where it shows."""
    what: str
    """What is wrong, in a sentence."""
    fix: str
    """What `evolve fsck --fix` does about it ("nothing" when it needs a person)."""
    action: str = ""
    """The repair `fix_run` applies: "rebuild" (the journal), "damaged" (mark the candidate)
    or "" (report only)."""
    candidate: str | None = None

    def line(self) -> str:
        return f"{self.file}: {self.what}; --fix: {self.fix}"


def check_run(layout: RunLayout, *, job_state: JobState | None = None) -> list[Problem]:
    """Every broken invariant of the run at `layout`, journal first."""
    problems, replay = _check_journal(layout)
    problems += _check_json_files(layout, replay)
    if replay is not None:
        problems += _check_folders(layout, replay)
        problems += _check_events(layout, replay)
        if job_state is not None:
            problems += _check_jobs(layout, replay, job_state)
    return problems


def _check_journal(layout: RunLayout) -> tuple[list[Problem], Replay | None]:
    path = layout.journal_path
    rebuild = "rebuild it from the candidate folders and job files (the old one kept as backup)"
    if not path.exists():
        if layout.candidate_ids():
            return [Problem(path, f"missing while {len(layout.candidate_ids())} candidate "
                            "folder(s) remain", rebuild, "rebuild")], None
        return [], replay_events([])
    try:
        events = Journal(path).read()
    except JournalCorruptError as exc:
        return [Problem(path, f"corrupt line {exc.line}", rebuild, "rebuild")], None
    problems = []
    if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        problems.append(Problem(path, "torn last line (a crash during a write)",
                                "nothing; the next `evolve run` moves it aside"))
    return problems, replay_events(events)


def _json_files(layout: RunLayout) -> list[Path]:
    """Every JSON file of the run but submitit's own (jobs/ holds pickles and logs)."""
    return sorted(p for p in layout.root.rglob("*.json")
                  if layout.jobs_dir not in p.parents and p.is_file())


def _unreadable(path: Path) -> str | None:
    try:
        read_json(path)
    except (StateError, UnicodeDecodeError, OSError) as exc:
        return str(exc) if isinstance(exc, StateError) else f"{path}: {exc}"
    return None


def _check_json_files(layout: RunLayout, replay: Replay | None) -> list[Problem]:
    problems = []
    for path in _json_files(layout):
        reason = _unreadable(path)
        if reason is None:
            continue
        what = f"does not parse ({reason.split(': ', 1)[-1]})"
        cid = _candidate_of(layout, path)
        st = replay.candidates.get(cid) if replay is not None and cid else None
        if cid is None:
            problems.append(Problem(path, what, "nothing; restore it from a backup or move it "
                                    "aside by hand"))
        elif st is not None and st.status == DAMAGED:
            problems.append(Problem(path, what, f"nothing; {cid} is journaled damaged already "
                                    "(restore the file by hand to look at it again)"))
        else:
            problems.append(Problem(path, what, f"journal {cid} as damaged (the file is kept)",
                                    "damaged", cid))
    return problems


def _candidate_of(layout: RunLayout, path: Path) -> str | None:
    try:
        rel = path.relative_to(layout.candidates_dir)
    except ValueError:
        return None
    cid = rel.parts[0] if rel.parts else ""
    return cid if cid in layout.candidate_ids() else None


def _check_folders(layout: RunLayout, replay: Replay) -> list[Problem]:
    problems = []
    on_disk = set(layout.candidate_ids())
    for cid in sorted(on_disk - set(replay.candidates)):
        problems.append(Problem(layout.candidate(cid).dir, "a candidate folder the journal never "
                                "created (a crash between mkdir and the journal line, or copied "
                                "in)", "nothing; the run ignores it"))
    for cid in sorted(set(replay.candidates) - on_disk):
        problems.append(Problem(layout.candidate(cid).dir, "the journal knows this candidate but "
                                "its folder is gone", "journal it as damaged", "damaged", cid))
    return problems


def _check_events(layout: RunLayout, replay: Replay) -> list[Problem]:
    problems = [Problem(layout.journal_path, f"line {ig['line']}: event {ig['event']!r} about "
                        f"{ig['candidate']}, which the journal never created",
                        "nothing; replay ignores it") for ig in replay.ignored]
    seen: dict[str, int] = {}
    for n, ev in enumerate(Journal(layout.journal_path).read(), start=1):
        cid, name = ev.get("candidate"), ev.get("event")
        if cid is None or name not in _ORDER or cid not in replay.candidates:
            continue
        rank = _ORDER.index(name)
        if rank < seen.get(cid, -1) and name != "submitted":
            problems.append(Problem(layout.journal_path, f"line {n}: {name} of {cid} after a "
                                    "later step", "nothing; replay applies it as written"))
        seen[cid] = max(seen.get(cid, -1), rank)
    return problems


def _check_jobs(layout: RunLayout, replay: Replay, job_state: JobState) -> list[Problem]:
    problems = []
    for st in replay.with_status(*ACTIVE_STATUSES):
        paths = layout.candidate(st.id)
        record = read_or_none(paths.job)
        if not isinstance(record, dict) or record.get("job_id") != st.job_id:
            problems.append(Problem(paths.job, f"the journal says job {st.job_id} of {st.id} is "
                                    f"{st.status} but job.json does not name it",
                                    "nothing; `evolve run` records it lost and resubmits it"))
            continue
        answer = job_state(record)
        if answer is None or answer[1]:
            continue
        done = paths.result.exists()
        problems.append(Problem(paths.job, f"job {st.job_id} of {st.id} is {st.status} in the "
                                f"journal, but the scheduler says: {answer[0]}"
                                + (" (its result file is there)" if done else ""),
                                "nothing; `evolve run` collects it" if done else
                                "nothing; `evolve run` records it failed, or lost (and trains it "
                                "on) when it was stopped"))
    return problems


def fix_run(layout: RunLayout, problems: list[Problem], *, score: Score | None = None,
            fsync: bool = True) -> list[str]:
    """Apply the repairs `problems` name; returns one line per action taken."""
    actions = []
    if any(p.action == "rebuild" for p in problems):
        backup = _backup_journal(layout)
        events = rebuild_events(layout, score=score)
        if backup is not None:
            events.append(_event("journal_rebuilt", time.time(), backup=backup.name))
        data = "".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n"
                       for e in events).encode("utf-8")
        atomic_write_bytes(layout.journal_path, data, fsync=fsync)
        actions.append(f"{layout.journal_path}: rebuilt, {len(events)} events"
                       + (f" (the old one kept as {backup.name})" if backup else ""))
    damaged = {p.candidate: p for p in problems if p.action == "damaged" and p.candidate}
    if damaged:
        journal = Journal(layout.journal_path, fsync=fsync)
        state = replay_events(journal.read())
        for cid, p in sorted(damaged.items()):
            if state.candidates.get(cid) is not None and state.candidates[cid].status == DAMAGED:
                continue
            journal.append(_event("damaged", time.time(), cid, status=DAMAGED, file=str(p.file),
                                  error=p.what))
            actions.append(f"{cid}: journaled as damaged ({p.file.name}: {p.what})")
    return actions


def _backup_journal(layout: RunLayout) -> Path | None:
    path = layout.journal_path
    if not path.exists():
        return None
    backup = path.with_name(f"{path.name}.{int(time.time())}.bak")
    os.replace(path, backup)
    return backup


def _event(name: str, t: float, cid: str | None = None, **fields: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {"t": round(t, 3), "event": name}
    if cid is not None:
        ev["candidate"] = cid
    ev.update(fields)
    return ev


def read_or_none(path: Path) -> Any:
    """A JSON file, or None when absent or unreadable (fsck reports those separately)."""
    try:
        return read_json(path, None)
    except (StateError, UnicodeDecodeError, OSError):
        return None


def _mtime(path: Path, default: float) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return default


def rebuild_events(layout: RunLayout, *, score: Score | None = None) -> list[dict[str, Any]]:
    """The events of a journal rebuilt from the run's files, oldest first.

    Each candidate gets the events its files prove, at the files' times: created and proposed
    (the proposal file), checked (checks.json, or a baseline's, which skips the gates), submitted
    and done, failed or lost per attempt (job.json and its history), scored (from `score`) and
    analyzed (analysis.json). Every submission folder under jobs/ gets its submit_begin, so
    that a resumed driver never reuses a submission's name."""
    timed: list[tuple[float, int, dict[str, Any]]] = []
    subs: dict[str, dict[str, Any]] = {}
    done: dict[str, float] = {}
    start = _mtime(layout.run_yaml, time.time())
    for cid in layout.candidate_ids():
        last = start
        for ev in _candidate_events(layout.candidate(cid), start, subs, done):
            # A candidate's own events stay in order, whatever the files' times say (a copy
            # without -p gives every file the time of the copy).
            last = ev["t"] = max(ev["t"], last)
            timed.append((ev["t"], len(timed), ev))
        if cid in done:
            done[cid] = last  # its last event is the done of its current attempt
    scores = score(sorted(done)) if score is not None and done else {}
    for cid, fields in scores.items():
        fields = dict(fields)
        name = fields.pop("event", "scored")
        t = done[cid] + 0.001
        timed.append((t, len(timed), _event(name, t, cid, **fields)))
        analysis = read_or_none(layout.candidate(cid).analysis)
        if name == "scored" and isinstance(analysis, dict):
            ta = max(_mtime(layout.candidate(cid).analysis, t), t + 0.001)
            timed.append((ta, len(timed), _event("analyzed", ta, cid,
                                                 lessons=len(analysis.get("lessons") or []),
                                                 analyzer=analysis.get("analyzer"))))
    for name, sub in _submissions(layout, subs).items():
        t = sub.pop("t") - 0.0005
        timed.append((t, -1, _event("submit_begin", t, submission=name, **sub)))
    timed.sort(key=lambda x: (x[0], x[1]))
    first = _event("run_created", min([start] + [x[0] for x in timed]), format=1,
                   uid=_old_uid(layout) or os.urandom(4).hex(), rebuilt=True)
    return [first] + [ev for _, _, ev in timed]


def _candidate_events(paths: CandidatePaths, start: float, subs: dict[str, dict[str, Any]],
                      done: dict[str, float]) -> list[dict[str, Any]]:
    cid = paths.id
    prop = read_or_none(paths.proposal)
    prop = prop if isinstance(prop, dict) else {}
    t = _mtime(paths.proposal, _mtime(paths.dir, start))
    lineage = {"generation": prop.get("generation"), "parents": list(prop.get("parents") or [])}
    events = [_event("created", t, cid, **lineage)]
    if not prop:
        return events
    events.append(_event("proposed", t, cid, **lineage))
    checks = read_or_none(paths.checks)
    if isinstance(checks, dict):
        events.append(_event("checked", _mtime(paths.checks, t), cid,
                             passed=bool(checks.get("passed")),
                             failed_gate=checks.get("failed_gate"),
                             **({} if checks.get("passed") else
                                {"error": f"gate {checks.get('failed_gate')} failed"})))
    elif prop.get("kind") != "proposal":
        events.append(_event("checked", t, cid, passed=True, gates=prop.get("kind")))
    record = read_or_none(paths.job)
    if not isinstance(record, dict):
        result = read_or_none(paths.result)
        reused = result.get("reused") if isinstance(result, dict) else None
        if isinstance(reused, dict):  # taken from the site's result cache, never submitted
            tf = _mtime(paths.result, t)
            events.append(_event("reused", tf, cid, key=reused.get("key"),
                                 source=reused.get("source"), gpu_hours=0.0))
            done[cid] = tf
        return events
    attempts = [r for r in record.get("history") or [] if isinstance(r, dict)] + [record]
    # A screened training's jobs in order: each rung's job, then the continuation; the rung
    # results say where each ended (its rung fitness is the driver's to recompute: left out).
    rungs = list(paths.rung_results().items())
    for n, r in enumerate(attempts, start=1):
        sub = subs.setdefault(str(r.get("submission")), {
            "t": float(r.get("submitted") or t), "executor": r.get("executor", ""),
            "folder": r.get("folder", ""), "candidates": []})
        sub["candidates"].append(cid)
        sub["t"] = min(sub["t"], float(r.get("submitted") or t))
        events.append(_event("submitted", float(r.get("submitted") or t), cid,
                             submission=r.get("submission"), job_id=r.get("job_id"),
                             executor=r.get("executor"), attempt=r.get("attempt", n)))
        outcome = r.get("outcome")
        if outcome in ("done", "failed", "lost"):
            tf = float(r.get("finished") or r.get("submitted") or t)
            fields: dict[str, Any] = {"job_id": r.get("job_id"),
                                      "gpu_hours": r.get("gpu_hours", 0.0),
                                      "requeues": r.get("requeues", 0)}
            if outcome != "done":
                fields["error"] = _error_text(paths, r) if r is record else \
                    f"attempt {n} ended {r.get('state')}"
            if outcome == "lost" and r.get("killed"):
                fields["killed"] = True  # the launcher trains a killed job again only once
            events.append(_event(outcome, tf, cid, **fields))
            if r is not record and outcome == "done" and rungs:
                fraction, rung_file = rungs.pop(0)
                cost = (read_or_none(rung_file) or {}).get("cpu_s") or 0.0
                events.append(_event("rung", tf, cid, rung=fraction, rung_fitness=None,
                                     cpu_hours=round(float(cost) / 3600.0, 6)))
                events.append(_event("promoted", tf, cid, reason="rebuilt: a later job ran"))
            if r is record and outcome == "done":
                done[cid] = tf
    return events


def _error_text(paths: CandidatePaths, record: dict[str, Any]) -> str:
    error = read_or_none(paths.error)
    if isinstance(error, dict):
        lines = [ln for ln in str(error.get("traceback") or "").strip().splitlines() if ln.strip()]
        return str(error.get("reason") or (lines[-1] if lines else ""))[:500] or "failed"
    return f"job {record.get('job_id')} ended {record.get('state')}"


def _submissions(layout: RunLayout, subs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every submission, by name: those job.json files name, and every folder under jobs/
    (a submission whose job files are gone still used its name)."""
    out = {k: v for k, v in subs.items() if k != "None"}
    if layout.jobs_dir.is_dir():
        for folder in sorted(p for p in layout.jobs_dir.iterdir() if p.is_dir()):
            if folder.name not in out:
                out[folder.name] = {"t": _mtime(folder, 0.0), "executor": "",
                                    "folder": str(folder.relative_to(layout.root)),
                                    "candidates": []}
    return dict(sorted(out.items()))


def _old_uid(layout: RunLayout) -> str | None:
    """The run's uid (in its job names) from the first line of a damaged journal or a backup."""
    candidates = [layout.journal_path] + sorted(
        layout.root.glob(f"{layout.journal_path.name}.*.bak"))
    for path in candidates:
        try:
            with open(path, "rb") as f:
                first = json.loads(f.readline())
        except (OSError, ValueError):
            continue
        if isinstance(first, dict) and first.get("uid"):
            return str(first["uid"])
    return None
