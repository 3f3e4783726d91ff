"""Every file name of a run folder, and nothing else: the one place that spells them.

Layout of ``state/<run>/``::

    run.yaml             the resolved config, frozen at first start (run.<time>.yaml: forced changes)
    journal.jsonl        append-only events (evolve.state.journal); the source of truth for resume
    candidates/<id>/     mixer.py proposal.json checks.json job.json train/ (metrics.jsonl, ...)
                         result.json analysis.json error.json llm/
                         confirmation.json, confirmation-<preset>.json (follow-ups, per preset)
    cognition/           shared ideas and lessons, changed only under lock("cognition")
    llm/endpoint.json    where the model server listens (mode 0600: it holds the API key)
    jobs/<submission>/   submitit's pickles and logs, one folder per job array
    locks/               lock files; driver.holder.json names the driver holding the run
    requests/<name>.json what `evolve verify` asks the driver to do
    ablation.json        the ablation's plan, then its table
    STOP                 present: the driver stops at its next safe point
    report/              `evolve report`'s static HTML

Code that reads or writes a run asks `RunLayout` (which `Store` is) or `CandidatePaths`;
docs/ARCHITECTURE.md says who writes each file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

CANDIDATE_ID = re.compile(r"^c\d{6,}$")
"""A candidate's id: "c" and six or more digits (c000042); also its folder's name."""
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
"""Names that become file names (locks, submissions, presets in confirmation-<preset>.json)."""

RUN_FILE = "run.yaml"
JOURNAL_FILE = "journal.jsonl"
TORN_SUFFIX = ".torn"
"""journal.jsonl.torn keeps the bytes of a torn last line that a writer cut off."""
RUN_FOLDERS = ("candidates", "cognition", "llm", "jobs", "locks")
"""The folders `Store.create` makes; with the journal, all an interrupted creation leaves."""
CONFIRMATION_PREFIX = "confirmation"
RESULT_CACHE = ".result-cache"
"""The site's result cache (evolve.state.result_cache), beside the run folders of one root."""


def result_cache_dir(root: str | os.PathLike[str]) -> Path:
    """The result cache shared by the runs under `root` (a run folder's parent)."""
    return Path(root).absolute() / RESULT_CACHE


def _checked(name: str, what: str) -> str:
    if not SAFE_NAME.match(name):
        raise ValueError(f"{what} {name!r} may only contain letters, digits, _ . -")
    return name


@dataclass(frozen=True)
class CandidatePaths:
    """The files of one candidate; a job receives `dir` and writes only below it."""

    id: str
    dir: Path

    @classmethod
    def of(cls, candidate_dir: str | os.PathLike[str]) -> CandidatePaths:
        """The paths of a candidate folder given by path (how a job sees its candidate)."""
        d = Path(candidate_dir)
        return cls(id=d.name, dir=d)

    @property
    def mixer(self) -> Path:
        return self.dir / "mixer.py"

    @property
    def proposal(self) -> Path:
        return self.dir / "proposal.json"

    @property
    def mixer_before_repair(self) -> Path:
        """The model's file as it was before the engineer's verified repair replaced it."""
        return self.dir / "mixer.orig.py"

    @property
    def repair_dir(self) -> Path:
        """The engineer's attempts, one numbered folder each (a candidate-like folder)."""
        return self.dir / "repair"

    @property
    def checks(self) -> Path:
        return self.dir / "checks.json"

    @property
    def job(self) -> Path:
        return self.dir / "job.json"

    @property
    def train(self) -> Path:
        """The training's own folder: checkpoints, metrics.jsonl, TensorBoard events."""
        return self.dir / "train"

    @property
    def metrics(self) -> Path:
        return self.train / "metrics.jsonl"

    @property
    def result(self) -> Path:
        return self.dir / "result.json"

    def rung_result(self, fraction: float) -> Path:
        """The result file of the training to `fraction` of the budget (a screening rung),
        kept when the continuation to the whole budget replaces the result file."""
        return self.dir / f"rung-{fraction:g}.json"

    def rung_results(self) -> dict[float, Path]:
        """Every rung result file of the candidate, by fraction of the budget."""
        found = {}
        for path in self.dir.glob("rung-*.json"):
            try:
                found[float(path.stem.removeprefix("rung-"))] = path
            except ValueError:
                continue  # not a name this module wrote
        return dict(sorted(found.items()))

    @property
    def analysis(self) -> Path:
        return self.dir / "analysis.json"

    @property
    def error(self) -> Path:
        return self.dir / "error.json"

    @property
    def llm(self) -> Path:
        """Stored LLM calls (prompt, response, settings) that produced or analysed this candidate."""
        return self.dir / "llm"

    def confirmation(self, preset: str | None = None) -> Path:
        """The confirmation of this candidate at the run's own training (`preset` None) or its
        promotion to `preset`, written by the driver once every seed finished."""
        if preset is None:
            return self.dir / f"{CONFIRMATION_PREFIX}.json"
        return self.dir / f"{CONFIRMATION_PREFIX}-{_checked(preset, 'preset')}.json"

    def confirmations(self) -> dict[str | None, Path]:
        """The confirmation files present, by preset (None: the run's own training)."""
        out: dict[str | None, Path] = {}
        if not self.dir.is_dir():
            return out
        for path in sorted(self.dir.glob(f"{CONFIRMATION_PREFIX}*.json")):
            if path.name == f"{CONFIRMATION_PREFIX}.json":
                out[None] = path
            elif path.name.startswith(f"{CONFIRMATION_PREFIX}-"):
                out[path.stem[len(CONFIRMATION_PREFIX) + 1:]] = path
        return out


class RunLayout:
    """The paths of one run folder (`Store` is one, with the writing added)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()

    @classmethod
    def is_run(cls, path: str | os.PathLike[str]) -> bool:
        """Whether `path` holds an evolve run (a run.yaml)."""
        return (Path(path) / RUN_FILE).is_file()

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def run_yaml(self) -> Path:
        return self.root / RUN_FILE

    def run_yaml_backup(self, stamp: int) -> Path:
        """Where a forced config change keeps the config it replaced."""
        return self.root / f"run.{stamp}.yaml"

    @property
    def journal_path(self) -> Path:
        return self.root / JOURNAL_FILE

    @property
    def candidates_dir(self) -> Path:
        return self.root / "candidates"

    @property
    def next_id_path(self) -> Path:
        """The candidate id counter, bumped under lock("ids")."""
        return self.candidates_dir / ".next_id"

    @property
    def cognition_dir(self) -> Path:
        return self.root / "cognition"

    @property
    def llm_dir(self) -> Path:
        return self.root / "llm"

    @property
    def endpoint_path(self) -> Path:
        return self.llm_dir / "endpoint.json"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def locks_dir(self) -> Path:
        return self.root / "locks"

    @property
    def driver_holder_path(self) -> Path:
        """Who holds the driver lock: host, pid, since when."""
        return self.locks_dir / "driver.holder.json"

    def lock_path(self, name: str, *, soft: bool = False) -> Path:
        # One file name per kind: flock leaves an empty file behind, which a soft lock would take
        # for a marker held by an unknown owner and wait on forever.
        return self.locks_dir / f"{_checked(name, 'lock name')}{'.softlock' if soft else '.lock'}"

    @property
    def requests_dir(self) -> Path:
        """`evolve verify` requests, one JSON file each, consumed by the driver."""
        return self.root / "requests"

    def request_path(self, name: str) -> Path:
        return self.requests_dir / f"{_checked(name, 'request name')}.json"

    @property
    def ablation_path(self) -> Path:
        return self.root / "ablation.json"

    @property
    def stop_path(self) -> Path:
        return self.root / "STOP"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def job_folder(self, submission: str) -> Path:
        """submitit's folder for one submission (one job array): pickles and logs."""
        return self.jobs_dir / _checked(submission, "submission name")

    def candidate(self, cid: str) -> CandidatePaths:
        """The paths of candidate `cid` (the folder need not exist)."""
        if not CANDIDATE_ID.match(cid):
            raise ValueError(f"candidate id {cid!r} is not valid: expected 'c' and 6+ digits, "
                             "e.g. c000042")
        return CandidatePaths(id=cid, dir=self.candidates_dir / cid)

    def candidate_ids(self) -> list[str]:
        """Ids of the candidate folders on disk, in order."""
        if not self.candidates_dir.is_dir():
            return []
        return sorted(p.name for p in self.candidates_dir.iterdir() if CANDIDATE_ID.match(p.name))
