"""Candidate trainings as job arrays through submitit, found again after any restart.

Usage (the driver does this)::

    launcher = Launcher(store, LaunchConfig(executor="slurm", partition="gpu", gpus_per_task=1))
    launcher.resume()                     # after a restart: reattach by job id, recover, mark lost
    launcher.submit(["c000001", "c000002"], TrainJob(), train_cfg, generation=3)  # one array
    while launcher.active:
        changed = launcher.poll()         # {"c000001": "done", ...}; results are on disk
        time.sleep(launcher.cfg.poll_s)

The callable is any picklable `fn(candidate_dir: str, train_cfg: dict)`; make it a
`submitit.helpers.Checkpointable` so that the pre-timeout signal (or a preemption) checkpoints and
requeues it instead of failing it. Executors: ``debug`` runs in this process (at `poll`),
``local`` runs subprocesses on this machine, ``slurm`` submits with sbatch.

Crash safety: a ``submit_begin`` event is journaled before sbatch runs; each job id is written to
the candidate's job.json and journaled as soon as submitit returns. A driver that died in between
finds the ids again from the job.json files or from submitit's pickles in the submission folder
(`resume`), so nothing is submitted twice and nothing is silently dropped: a job the scheduler
no longer knows is recorded as ``lost``, which may be resubmitted.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit
from submitit.core.utils import DelayedSubmission

from evolve.configio import choice, positive
from evolve.journal import ACTIVE_STATUSES, Submission
from evolve.locks import LockTimeoutError, RunLock
from evolve.scheduler import (JobFiles, JobInfo, array_master, local_job_info, local_task_pids,
                              read_outcome, slurm_job_infos, tail)
from evolve.store import StateError, Store, read_json

log = logging.getLogger(__name__)

EXECUTORS = ("debug", "local", "slurm")
SUBMITTABLE_STATUSES = ("created", "proposed", "checked", "submit_failed", "lost", "failed")
"""A candidate in one of these has no live job, so submitting it cannot duplicate a training."""


class LaunchError(StateError):
    """A job could not be submitted, found or signalled."""


class SubmissionError(LaunchError):
    """The scheduler refused a submission (sbatch missing, bad partition or account, ...)."""


@dataclass(kw_only=True)
class LaunchConfig:
    """Where and how candidate trainings run."""

    executor: str = "local"
    """debug (in this process, for unit tests), local (subprocesses on this machine) or slurm."""
    array_parallelism: int = 4
    """At most this many tasks of one generation run at once (Slurm: --array=0-N%P; local: slot
    locks shared by every local job of the run)."""
    partition: str | None = None
    """Slurm partition (--partition); None: the cluster's default."""
    account: str | None = None
    """Slurm account (--account)."""
    qos: str | None = None
    """Slurm quality of service (--qos)."""
    constraint: str | None = None
    """Slurm node features (--constraint), e.g. 'a100|h100'."""
    gpus_per_task: int = 0
    """GPUs per training (--gpus-per-node, as each job is one task on one node; locally:
    CUDA_VISIBLE_DEVICES=0..N-1)."""
    cpus_per_task: int = 1
    """CPU cores per training (--cpus-per-task)."""
    mem_gb: float | None = None
    """Memory per training in GB (--mem); None: the partition's default."""
    timeout_min: int = 60
    """Wall time per run of a training (--time). A checkpointable training is requeued when it
    runs out, up to max_num_timeout times. Local jobs are killed after it too."""
    signal_delay_s: int = 120
    """The pre-timeout signal (USR2) comes this many seconds before the time limit, leaving time
    to write a checkpoint."""
    max_num_timeout: int = 3
    """How many times a training may be requeued after running out of time."""
    sbatch_extra: dict[str, Any] = field(default_factory=dict)
    """Further #SBATCH options, e.g. {reservation: lab, exclude: node07}; 'key: true' gives a
    bare flag."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before each training, e.g. 'module load cuda/12.4', 'source venv/bin/activate'."""
    python: str | None = None
    """Python command that runs the training; None: the interpreter running the driver."""
    job_name: str = "evolve"
    """Prefix of Slurm job names; the run's name and uid and the submission are appended."""
    use_srun: bool = True
    """Start the training through srun inside the allocation (submitit's default)."""
    poll_s: float = 15.0
    """Seconds between two looks at the scheduler while jobs run."""
    lost_after_s: float = 120.0
    """A job that neither sacct nor squeue knows this long after submission is recorded as lost
    (sacct lags submission by seconds, so a fresh job must not look lost)."""
    result_grace_s: float = 30.0
    """Seconds to wait for a finished job's result file to appear (shared filesystems lag)
    before recording the job as failed without a result."""

    def __post_init__(self) -> None:
        choice("launch.executor", self.executor, EXECUTORS)
        positive("launch.array_parallelism", self.array_parallelism)
        positive("launch.gpus_per_task", self.gpus_per_task, allow_zero=True)
        positive("launch.cpus_per_task", self.cpus_per_task)
        if self.mem_gb is not None:
            positive("launch.mem_gb", self.mem_gb)
        if not isinstance(self.timeout_min, int) or self.timeout_min < 1:
            raise ValueError(f"launch.timeout_min={self.timeout_min!r} must be a whole number of "
                             "minutes >= 1 (sbatch --time takes minutes)")
        if not 0 <= self.signal_delay_s < self.timeout_min * 60:
            raise ValueError(f"launch.signal_delay_s={self.signal_delay_s!r} must lie in "
                             f"[0, timeout_min * 60 = {self.timeout_min * 60})")
        positive("launch.max_num_timeout", self.max_num_timeout, allow_zero=True)
        positive("launch.poll_s", self.poll_s)
        positive("launch.lost_after_s", self.lost_after_s, allow_zero=True)
        positive("launch.result_grace_s", self.result_grace_s, allow_zero=True)
        for key in self.sbatch_extra:
            if not isinstance(key, str) or not key or key.startswith("-"):
                raise ValueError(f"launch.sbatch_extra key {key!r} must be an option name without "
                                 "dashes, e.g. 'reservation'")


def slurm_parameters(cfg: LaunchConfig, job_name: str) -> dict[str, Any]:
    """The keyword arguments of submitit's SlurmExecutor.update_parameters for `cfg`."""
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": cfg.timeout_min,
        "cpus_per_task": cfg.cpus_per_task,
        "signal_delay_s": cfg.signal_delay_s,
        "array_parallelism": cfg.array_parallelism,
        "use_srun": cfg.use_srun,
    }
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(cfg, key) is not None:
            params[key] = getattr(cfg, key)
    if cfg.gpus_per_task:
        # One task per job, so per node = per task; --gpus-per-task would also need --ntasks.
        params["gpus_per_node"] = cfg.gpus_per_task
    if cfg.mem_gb is not None:
        params["mem"] = f"{int(round(cfg.mem_gb * 1024))}M"
    if cfg.setup:
        params["setup"] = list(cfg.setup)
    if cfg.sbatch_extra:
        params["additional_parameters"] = dict(cfg.sbatch_extra)
    return params


def sbatch_script(cfg: LaunchConfig, folder: str | os.PathLike[str], num_tasks: int, *,
                  job_name: str = "evolve") -> str:
    """The sbatch script submitit writes for an array of `num_tasks` trainings under `cfg`.

    Works without Slurm installed, so configs can be checked anywhere.
    """
    from submitit.slurm.slurm import _make_sbatch_string  # the text SlurmExecutor submits

    python = cfg.python or shlex.quote(sys.executable)
    command = f"{python} -u -m submitit.core._submit {shlex.quote(str(Path(folder).absolute()))}"
    return _make_sbatch_string(command=command, folder=Path(folder).absolute(),
                               map_count=num_tasks if num_tasks > 1 else None,
                               **slurm_parameters(cfg, job_name))


class SlotLimited(submitit.helpers.Checkpointable):
    """Runs `fn` once one of `num_slots` slot locks is free.

    submitit's local executor starts every job at once; this caps how many train at a time. The
    slots are flock'ed files, so a killed job frees its slot. Checkpointing is delegated to `fn`:
    a wrapped callable without a `checkpoint` method is not requeued.
    """

    def __init__(self, fn: Callable[..., Any], slots_dir: str, num_slots: int,
                 lock_kind: str = "file") -> None:
        self.fn = fn
        self.slots_dir = slots_dir
        self.num_slots = num_slots
        self.lock_kind = lock_kind

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        lock = self._take_slot()
        try:
            return self.fn(*args, **kwargs)
        finally:
            lock.release()

    def _take_slot(self) -> RunLock:
        while True:
            for i in range(self.num_slots):
                lock = RunLock(Path(self.slots_dir) / f"slot{i}.lock", kind=self.lock_kind,
                               timeout_s=0)
                try:
                    lock.acquire()
                    return lock
                except LockTimeoutError:
                    continue
            time.sleep(0.2)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:  # type: ignore[override]
        inner = getattr(self.fn, "checkpoint", None)
        resumed = inner(*args, **kwargs) if inner is not None else None
        if resumed is None:
            return None
        wrapped = SlotLimited(resumed.function, self.slots_dir, self.num_slots, self.lock_kind)
        return DelayedSubmission(wrapped, *resumed.args, **resumed.kwargs)


@dataclass
class _Handle:
    """A job the launcher watches: one candidate's current attempt."""

    cid: str
    executor: str
    job_id: str
    folder: Path
    submission: str
    submitted: float
    status: str = "submitted"
    runs: int = 0

    @property
    def files(self) -> JobFiles:
        return JobFiles(self.folder, self.job_id)


class Launcher:
    """Submits, watches and collects the trainings of one run; see the module docstring."""

    def __init__(self, store: Store, cfg: LaunchConfig | None = None) -> None:
        self.store = store
        self.cfg = cfg or LaunchConfig()
        self._handles: dict[str, _Handle] = {}
        self._jobs: dict[str, Any] = {}  # submitit Job objects of this process (debug, local)
        self._terminal_since: dict[str, float] = {}

    @property
    def active(self) -> list[str]:
        """Candidates with a job that has not been collected yet."""
        return sorted(self._handles)

    def job_id(self, cid: str) -> str:
        """The scheduler's id of the candidate's current job."""
        return self._handle(cid).job_id

    # Submitting.
    def submit(self, candidates: Sequence[str], fn: Callable[[str, dict[str, Any]], Any],
               train_cfg: dict[str, Any], *, generation: int | None = None) -> dict[str, str]:
        """Submit one job array training `candidates`; returns {candidate: job id}.

        Raises StateError if a candidate has a live job (or is finished), and SubmissionError if
        the scheduler refuses; the refusal is journaled and the candidates stay submittable.
        """
        cands = list(candidates)
        if not cands:
            return {}
        if len(set(cands)) != len(cands):
            raise ValueError(f"candidates listed twice in one submission: {cands}")
        state = self.store.replay()
        for cid in cands:
            st = state.candidates.get(cid)
            if st is None:
                raise StateError(f"{cid} is not in the journal of {self.store.root}")
            if st.status not in SUBMITTABLE_STATUSES or cid in self._handles:
                raise StateError(
                    f"{cid} is {st.status} (job {st.job_id}); only candidates that are "
                    f"{', '.join(SUBMITTABLE_STATUSES)} may be submitted, so no training runs twice")
        name = f"s{len(state.submissions):06d}"
        folder = self.store.job_folder(name)
        job_name = f"{self.cfg.job_name}-{self.store.name}-{self.store.uid}-{name}"
        for cid in cands:
            self._archive_error(cid, state.candidates[cid].attempts)
        self.store.record("submit_begin", submission=name, executor=self.cfg.executor,
                          folder=self._rel(folder), candidates=cands, generation=generation,
                          job_name=job_name)
        dirs = [str(self.store.candidate(c).dir) for c in cands]
        try:
            executor = self._make_executor(folder, job_name)
            call: Callable[..., Any] = fn
            if self.cfg.executor == "local":
                call = SlotLimited(fn, str(self.store.locks_dir / "slots"),
                                   self.cfg.array_parallelism, self.store.cfg.lock)
            jobs = executor.map_array(call, dirs, [train_cfg] * len(cands))
        except Exception as exc:
            message = _submission_error_text(exc)
            # Some tasks may have started (a local executor starts them one by one).
            self._recover(self.store.replay().submissions[name], reason=message)
            raise SubmissionError(
                f"submitting {len(cands)} training(s) as {name} with the {self.cfg.executor} "
                f"executor failed: {message}") from None
        attempts = {c: state.candidates[c].attempts + 1 for c in cands}
        for cid, job in zip(cands, jobs):
            self._jobs[cid] = job
            self._record_submitted(cid, name, self.cfg.executor, job.job_id, folder, attempts[cid])
        return {cid: self._handles[cid].job_id for cid in cands}

    def _make_executor(self, folder: Path, job_name: str) -> submitit.Executor:
        cfg = self.cfg
        if cfg.executor == "debug":
            return submitit.DebugExecutor(folder)
        if cfg.executor == "local":
            ex = submitit.LocalExecutor(folder, max_num_timeout=cfg.max_num_timeout, python=cfg.python)
            params: dict[str, Any] = {"timeout_min": cfg.timeout_min,
                                      "signal_delay_s": cfg.signal_delay_s}
            if cfg.gpus_per_task:
                params["gpus_per_node"] = cfg.gpus_per_task
            if cfg.setup:
                params["setup"] = list(cfg.setup)
            ex.update_parameters(**params)
            return ex
        for tool in ("sbatch", "srun"):
            if _which(tool) is None:
                raise SubmissionError(f"'{tool}' is not on PATH: this machine cannot submit Slurm "
                                      "jobs. Run the driver on a login node, or use executor: local")
        ex = submitit.SlurmExecutor(folder, max_num_timeout=cfg.max_num_timeout, python=cfg.python)
        ex.update_parameters(**slurm_parameters(cfg, job_name))
        return ex

    def _record_submitted(self, cid: str, submission: str, executor: str, job_id: str,
                          folder: Path, attempt: int, *, recovered: bool = False) -> None:
        paths = self.store.candidate(cid)
        old = read_json(paths.job, None)
        if isinstance(old, dict) and old.get("submission") == submission:
            record = old  # written before a crash; only the journal line is missing
        else:
            history = list(old.pop("history", [])) + [old] if isinstance(old, dict) else []
            record = {"candidate": cid, "executor": executor, "job_id": job_id,
                      "array_job_id": array_master(job_id), "submission": submission,
                      "folder": self._rel(folder), "submitted": round(time.time(), 3),
                      "attempt": attempt, "state": "SUBMITTED", "history": history}
            # job.json first: a driver that dies right after still finds the id there.
            self.store.write_json(paths.job, record)
        self.store.record("submitted", cid, submission=submission, job_id=job_id,
                          executor=executor, attempt=attempt, **({"recovered": True} if recovered else {}))
        self._handles[cid] = _Handle(cid=cid, executor=executor, job_id=job_id, folder=folder,
                                     submission=submission, submitted=record["submitted"])

    # Finding jobs again.
    def resume(self) -> dict[str, str]:
        """After a restart: finish interrupted submissions and reattach to every live job.

        Returns {candidate: job id} of the jobs now watched. Jobs of the debug executor lived in
        the dead driver's process and are recorded as lost.
        """
        state = self.store.replay()
        open_subs = state.open_submissions()
        for sub in open_subs:
            self._recover(sub, reason="the driver stopped before recording this job id")
        if open_subs:
            state = self.store.replay()
        for st in state.with_status(*ACTIVE_STATUSES):
            if st.id in self._handles:
                continue
            sub = state.submissions.get(st.submission or "")
            record = read_json(self.store.candidate(st.id).job, None) or {}
            if record.get("job_id") != st.job_id:
                record = {}  # the journal wins over a job.json it does not match
            executor = record.get("executor") or (sub.executor if sub else "")
            folder = record.get("folder") or (sub.folder if sub else "")
            if not st.job_id or not folder or executor not in EXECUTORS:
                self.store.record("lost", st.id, job_id=st.job_id,
                                  error="no job id or submission folder recorded for this job")
                continue
            handle = _Handle(cid=st.id, executor=executor, job_id=st.job_id,
                             folder=self.store.root / folder, submission=st.submission or "",
                             submitted=float(record.get("submitted", st.updated)), status=st.status)
            if executor == "debug":
                self._finish(handle, "lost", JobInfo(st.job_id, "UNKNOWN", "none"),
                             reason="debug jobs run inside the driver and died with it")
                continue
            self._handles[st.id] = handle
        return {cid: h.job_id for cid, h in self._handles.items()}

    def _recover(self, sub: Submission, *, reason: str) -> None:
        """Record the job ids of an interrupted submission; the rest become submit_failed."""
        folder = self.store.root / sub.folder
        found: dict[str, str] = {}
        for cid in sub.candidates:
            record = read_json(self.store.candidate(cid).job, None)
            if isinstance(record, dict) and record.get("submission") == sub.name:
                found[cid] = record["job_id"]
        if len(found) + len(sub.job_ids) < len(sub.candidates):
            found.update({c: j for c, j in _ids_from_pickles(folder).items() if c not in found})
        state = self.store.replay()
        missing = []
        for cid in sub.candidates:
            if cid in sub.job_ids:
                continue
            if cid in found:
                st = state.candidates.get(cid)
                attempt = (st.attempts if st else 0) + 1
                self._record_submitted(cid, sub.name, sub.executor, found[cid], folder, attempt,
                                       recovered=True)
            else:
                missing.append(cid)
        if missing:
            self.store.record("submit_failed", submission=sub.name, candidates=missing, error=reason)
            log.warning("submission %s: no job for %s (%s); they may be submitted again",
                        sub.name, ", ".join(missing), reason)

    # Watching.
    def poll(self) -> dict[str, str]:
        """Look at every watched job once; returns {candidate: new status} for those that changed.

        Finished jobs are collected: done (the training returned), failed (error.json holds the
        traceback and log tails) or lost (the scheduler no longer knows the job).
        """
        changes: dict[str, str] = {}
        by_kind: dict[str, list[_Handle]] = {}
        for h in list(self._handles.values()):
            by_kind.setdefault(h.executor, []).append(h)
        infos: dict[str, JobInfo] = {}
        if "slurm" in by_kind:
            ids = [h.job_id for h in by_kind["slurm"]]
            infos.update({f"slurm:{j}": i for j, i in slurm_job_infos(ids).items()})
        for h in by_kind.get("local", []):
            job = self._jobs.get(h.cid)
            if job is not None and getattr(job, "_process", None) is not None:
                job._process.poll()  # reap our own finished controller, else it lingers as a zombie
            infos[f"local:{h.job_id}"] = local_job_info(h.job_id, h.folder)
        for h in by_kind.get("debug", []):
            changes[h.cid] = self._run_debug(h)
        now = time.time()
        for kind in ("slurm", "local"):
            for h in by_kind.get(kind, []):
                new = self._update(h, infos[f"{kind}:{h.job_id}"], now)
                if new:
                    changes[h.cid] = new
        return changes

    def _update(self, h: _Handle, info: JobInfo, now: float) -> str | None:
        outcome = read_outcome(h.files)
        if outcome is not None:
            kind, value = outcome
            if kind == "success":
                return self._finish(h, "done", info, result=value)
            return self._finish(h, "failed", info, trace=str(value))
        if info.active:
            self._terminal_since.pop(h.cid, None)
            if info.runs > h.runs > 0:
                self.store.record("requeued", h.cid, job_id=h.job_id, runs=info.runs)
            h.runs = max(h.runs, info.runs)
            if info.state == "RUNNING" and h.status == "submitted":
                h.status = "running"
                self.store.record("running", h.cid, job_id=h.job_id)
                return "running"
            return None
        if info.state == "UNKNOWN":
            if info.source == "none" and now - h.submitted >= self.cfg.lost_after_s:
                return self._finish(h, "lost", info, reason=(
                    f"the scheduler has no record of job {h.job_id} ({now - h.submitted:.0f}s "
                    "after submission) and it left no result"))
            return None
        first = self._terminal_since.setdefault(h.cid, now)
        if now - first >= self.cfg.result_grace_s:
            return self._finish(h, "failed", info, reason=(
                f"job {h.job_id} ended {info.state} (exit {info.exit_code or '?'}) without a result"))
        return None

    def _run_debug(self, h: _Handle) -> str:
        job = self._jobs[h.cid]
        env = {"SUBMITIT_EXECUTOR": "debug", "SUBMITIT_DEBUG_JOB_ID": h.job_id}
        info = JobInfo(h.job_id, "COMPLETED", "debug", runs=1)
        try:
            with submitit.helpers.environment_variables(**env):
                result = job.submission().result()
        except Exception:
            return self._finish(h, "failed", info, trace=traceback.format_exc())
        return self._finish(h, "done", info, result=result)

    def _finish(self, h: _Handle, status: str, info: JobInfo, *, result: Any = None,
                trace: str | None = None, reason: str | None = None) -> str:
        paths = self.store.candidate(h.cid)
        elapsed = info.elapsed_s or max(0.0, time.time() - h.submitted)
        if h.executor == "slurm":
            gpu_hours, requeues = info.gpu_hours, max(info.runs - 1, 0)
        else:  # no accounting: wall time since submission times the GPUs asked for
            gpu_hours = elapsed * self.cfg.gpus_per_task / 3600.0
            requeues = _count_requeues(h.files)
        record = read_json(paths.job, None) or {}
        if record.get("job_id") == h.job_id:
            # sacct may still say RUNNING while the job writes its result and exits.
            final_state = ("LOST" if status == "lost" else info.state if not info.active
                           else "COMPLETED" if status == "done" else "FAILED")
            record.update(state=final_state, outcome=status,
                          finished=round(time.time(), 3), elapsed_s=round(elapsed, 1),
                          gpu_hours=round(gpu_hours, 6), requeues=requeues,
                          exit_code=info.exit_code)
            self.store.write_json(paths.job, record)
        fields: dict[str, Any] = {"job_id": h.job_id, "gpu_hours": round(gpu_hours, 6),
                                  "requeues": requeues}
        if status == "failed":
            error = {"candidate": h.cid, "job_id": h.job_id, "state": info.state,
                     "exit_code": info.exit_code, "reason": reason, "traceback": trace,
                     "stderr_tail": tail(h.files.stderr), "stdout_tail": tail(h.files.stdout),
                     "logs": [self._rel(h.files.stderr), self._rel(h.files.stdout)]}
            self.store.write_json(paths.error, error)
            fields["error"] = _summary(trace) if trace else reason
        elif status == "lost":
            fields["error"] = reason
        self.store.record(status, h.cid, **fields)
        self._handles.pop(h.cid, None)
        self._jobs.pop(h.cid, None)
        self._terminal_since.pop(h.cid, None)
        return status

    def wait(self, timeout_s: float | None = None, poll_s: float | None = None) -> dict[str, str]:
        """Poll until no job is watched; returns the final status of each collected candidate."""
        deadline = None if timeout_s is None else time.time() + timeout_s
        final: dict[str, str] = {}
        while self._handles:
            for cid, status in self.poll().items():
                if status != "running":
                    final[cid] = status
            if not self._handles:
                break
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"jobs still running after {timeout_s}s: "
                                   + ", ".join(f"{h.cid} ({h.job_id})" for h in self._handles.values()))
            time.sleep(self.cfg.poll_s if poll_s is None else poll_s)
        return final

    # Signalling.
    def interrupt(self, cid: str) -> None:
        """Send the preemption signal (USR2) to the candidate's training: it checkpoints and is
        requeued. For drills and tests; Slurm sends the same signal before the time limit."""
        h = self._handle(cid)
        if h.executor == "slurm":
            _check_call(["scancel", f"--signal={submitit.JobEnvironment.USR_SIG}", h.job_id])
        elif h.executor == "local":
            pids = [p for p in _descendants(int(h.job_id))
                    if "submitit.core._submit" in _cmd(p)]
            if not pids:
                raise LaunchError(f"{cid}: local job {h.job_id} has no running task to signal")
            for pid in pids:
                os.kill(pid, signal.SIGUSR2)
        else:
            raise LaunchError(f"{cid}: debug jobs run in-process and cannot be interrupted")

    def cancel(self, cid: str) -> None:
        """Cancel the candidate's job and record it as cancelled."""
        h = self._handle(cid)
        if h.executor == "slurm":
            _check_call(["scancel", h.job_id])
        elif h.executor == "local" and local_job_info(h.job_id, h.folder).active:
            os.kill(int(h.job_id), signal.SIGINT)  # the controller then kills its tasks
        self.store.record("cancelled", cid, job_id=h.job_id)
        self._handles.pop(cid, None)
        self._jobs.pop(cid, None)

    # Helpers.
    def _handle(self, cid: str) -> _Handle:
        try:
            return self._handles[cid]
        except KeyError:
            raise LaunchError(f"{cid} has no job watched by this launcher (active: "
                              f"{', '.join(self.active) or 'none'})") from None

    def _rel(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.store.root))
        except ValueError:
            return str(path)

    def _archive_error(self, cid: str, attempts: int) -> None:
        err = self.store.candidate(cid).error
        if err.exists():
            os.replace(err, err.with_name(f"error.{attempts}.json"))


def _ids_from_pickles(folder: Path) -> dict[str, str]:
    """{candidate id: job id} from submitit's `<job id>_submitted.pkl` files in `folder`."""
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    for pkl in folder.glob("*_submitted.pkl"):
        job_id = pkl.name[: -len("_submitted.pkl")]
        try:
            delayed = DelayedSubmission.load(pkl)
            found[Path(delayed.args[0]).name] = job_id
        except Exception as exc:  # an unreadable pickle must not stop the others
            log.warning("cannot read %s to recover its job: %s", pkl, exc)
    return found


def _count_requeues(files: JobFiles) -> int:
    # submitit logs one "Requeued job" line per requeue into the job's (appended) stdout.
    try:
        return files.stdout.read_text(errors="replace").count("Requeued job")
    except OSError:
        return 0


def _summary(trace: str) -> str:
    lines = [ln for ln in trace.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


def _submission_error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # submitit's FailedJobError carries sbatch's stderr; keep its meaningful lines.
    return " | ".join(ln.strip() for ln in text.splitlines() if ln.strip())[:2000]


def _which(tool: str) -> str | None:
    import shutil

    return shutil.which(tool)


def _check_call(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise LaunchError(f"{cmd[0]} is not on PATH") from None
    except subprocess.CalledProcessError as exc:
        raise LaunchError(f"{' '.join(cmd)} failed: {exc.stderr.strip()}") from None


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        children = local_task_pids(todo.pop())
        out.extend(children)
        todo.extend(children)
    return out
