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
import signal
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit
from submitit.core.utils import DelayedSubmission

from evolve.launch.executors import (EXECUTORS, LaunchConfig, LaunchError, SlotLimited,
                              SubmissionError, make_executor, sbatch_script, slurm_parameters)
from evolve.state.journal import ACTIVE_STATUSES, Submission
from evolve.launch.job_state import (JobFiles, JobInfo, array_master, local_job_info,
                                     local_task_processes, read_outcome, slurm_job_infos,
                                     stopped_by_signal, tail)
from evolve.state.store import StateError, Store, read_json

log = logging.getLogger(__name__)

SUBMITTABLE_STATUSES = ("created", "proposed", "checked", "submit_failed", "lost", "failed")
"""A candidate in one of these has no live job, so submitting it cannot duplicate a training."""
MACHINE_FAILURES = ("NODE_FAIL", "BOOT_FAIL")
"""Slurm end states that say the machine failed, not the training: trained again once."""


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
        self._accounting_since: dict[str, float] = {}

    @property
    def active(self) -> list[str]:
        """Candidates with a job that has not been collected yet."""
        return sorted(self._handles)

    def job_id(self, cid: str) -> str:
        """The scheduler's id of the candidate's current job."""
        return self._handle(cid).job_id

    # Submitting.
    def submit(self, candidates: Sequence[str], fn: Callable[[str, dict[str, Any]], Any],
               train_cfg: dict[str, Any], *, generation: int | None = None,
               max_alive: int | None = None, launch: LaunchConfig | None = None
               ) -> dict[str, str]:
        """Submit one job array training `candidates`; returns {candidate: job id}.

        With `max_alive` (the driver passes search.max_in_flight), only as many are submitted
        as keep this launcher's live jobs within it, and with the local executor within its
        free slots too (array_parallelism less the local jobs alive): each local task is a
        process from submission on, waiting or training, so a larger array would hold more
        trainings alive than the run allows. Those left over are not in the returned dict and
        stay submittable; submit them again when a job has ended.

        `launch` replaces the launcher's settings for this submission (promoted trainings
        at a GPU preset from a CPU run: search.promote.launch).

        Raises StateError if a candidate has a live job (or is finished), and SubmissionError if
        the scheduler refuses; the refusal is journaled and the candidates stay submittable.
        """
        cands = list(candidates)
        cfg = launch or self.cfg
        if len(set(cands)) != len(cands):
            raise ValueError(f"candidates listed twice in one submission: {cands}")
        if not cands:
            return {}
        state = self.store.replay()
        for cid in cands:
            st = state.candidates.get(cid)
            if st is None:
                raise StateError(f"{cid} is not in the journal of {self.store.root}")
            if st.status not in SUBMITTABLE_STATUSES or cid in self._handles:
                raise StateError(
                    f"{cid} is {st.status} (job {st.job_id}); only candidates that are "
                    f"{', '.join(SUBMITTABLE_STATUSES)} may be submitted, so no training runs twice")
        if max_alive is not None:
            cands = cands[:self._room(max_alive, cfg)]
            if not cands:
                return {}
        name = f"s{len(state.submissions):06d}"
        folder = self.store.job_folder(name)
        job_name = f"{cfg.job_name}-{self.store.name}-{self.store.uid}-{name}"
        for cid in cands:
            self._archive_error(cid, state.candidates[cid].attempts)
        self.store.record("submit_begin", submission=name, executor=cfg.executor,
                          folder=self._rel(folder), candidates=cands, generation=generation,
                          job_name=job_name)
        dirs = [str(self.store.candidate(c).dir) for c in cands]
        try:
            executor = make_executor(cfg, folder, job_name)
            call: Callable[..., Any] = fn
            if cfg.executor == "local":
                call = SlotLimited(fn, str(self.store.locks_dir / "slots"),
                                   cfg.array_parallelism, self.store.cfg.lock,
                                   gpus_per_slot=cfg.gpus_per_task)
            jobs = executor.map_array(call, dirs, [train_cfg] * len(cands))
        except Exception as exc:
            message = _submission_error_text(exc)
            # Some tasks may have started (a local executor starts them one by one).
            self._recover(self.store.replay().submissions[name], reason=message)
            raise SubmissionError(
                f"submitting {len(cands)} training(s) as {name} with the {cfg.executor} "
                f"executor failed: {message}") from None
        attempts = {c: state.candidates[c].attempts + 1 for c in cands}
        for cid, job in zip(cands, jobs):
            self._jobs[cid] = job
            self._record_submitted(cid, name, cfg.executor, job.job_id, folder, attempts[cid])
        return {cid: self._handles[cid].job_id for cid in cands}

    def _room(self, max_alive: int, cfg: LaunchConfig) -> int:
        """How many more jobs may start now under `cfg`: within `max_alive` live jobs and,
        locally, within the free slots."""
        room = max_alive - len(self._handles)
        if cfg.executor == "local":
            alive = sum(h.executor == "local" for h in self._handles.values())
            room = min(room, cfg.array_parallelism - alive)
        return max(0, room)

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
            if h.executor == "slurm" and (info.source != "sacct" or info.active):
                # The result is written before the job ends, and slurmdbd records the end (and so
                # the elapsed time the GPU-hours come from) a moment later, longer on a busy
                # controller. Wait for it a while; past the grace the bill is estimated.
                first = self._accounting_since.setdefault(h.cid, now)
                if now - first < self.cfg.result_grace_s:
                    return None
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
        if h.executor == "local" and stopped_by_signal(h.files):
            # `evolve stop --jobs` (or a SIGTERM by hand): checkpointed and ended on purpose.
            # Lost, not failed: the driver resubmits it and it resumes from its checkpoint.
            return self._finish(h, "lost", info, reason=(
                f"job {h.job_id} was stopped by SIGTERM with its checkpoint kept"))
        first = self._terminal_since.setdefault(h.cid, now)
        if now - first < self.cfg.result_grace_s:
            return None
        ended = f"job {h.job_id} ended {info.state} (exit {info.exit_code or '?'}) without a result"
        if (h.executor == "local" and info.state == "EXITED") or info.state in MACHINE_FAILURES:
            # No result and no Python error: the process was killed from outside (SIGKILL, a
            # stopped machine, a failed node) or by the kernel's OOM killer. The first is not the
            # design's fault, so it trains again once, from its checkpoint; twice is a failure.
            if not self._killed_before(h.cid):
                return self._finish(h, "lost", info, killed=True, reason=(
                    f"{ended} or an error (killed from outside?); submitted again once, from "
                    "its checkpoint"))
            return self._finish(h, "failed", info, reason=(
                f"{ended} or an error, the second time (killed twice: out of memory?)"))
        return self._finish(h, "failed", info, reason=ended)

    def _killed_before(self, cid: str) -> bool:
        """Whether a job of `cid` already ended killed without a result (journaled `lost` with
        `killed`); read from the journal only on this rare path."""
        return any(e.get("event") == "lost" and e.get("candidate") == cid and e.get("killed")
                   for e in self.store.events())

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
                trace: str | None = None, reason: str | None = None,
                killed: bool = False) -> str:
        paths = self.store.candidate(h.cid)
        elapsed = info.elapsed_s or max(0.0, time.time() - h.submitted)
        if h.executor == "slurm" and info.source == "sacct":
            gpu_hours, requeues = info.gpu_hours, max(info.runs - 1, 0)
        else:  # no accounting: wall time since submission times every GPU of every task
            gpus = self.cfg.gpus_per_task * self.cfg.tasks_per_node * self.cfg.nodes
            gpu_hours = elapsed * gpus / 3600.0
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
            if killed:
                record["killed"] = True  # so that fsck's rebuilt journal still counts the kill
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
            if killed:
                fields["killed"] = True
        self.store.record(status, h.cid, **fields)
        self._handles.pop(h.cid, None)
        self._jobs.pop(h.cid, None)
        self._terminal_since.pop(h.cid, None)
        self._accounting_since.pop(h.cid, None)
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
            pids = local_task_processes(int(h.job_id))
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


def submit_llm_server(store: Store, model: str, *, script: str | os.PathLike[str] | None = None,
                      sbatch_args: Sequence[str] = (), vllm_args: Sequence[str] = ()) -> str:
    """Submit slurm/llm.sbatch to serve `model` for this run; returns (and journals) its job id.

    `sbatch_args` go to sbatch (e.g. ["--partition=gpu"]), `vllm_args` to vLLM's server.
    """
    path = Path(script) if script is not None else Path(__file__).resolve().parents[2] / "slurm" / "llm.sbatch"
    if not path.is_file():
        raise LaunchError(f"{path} not found (a non-editable install does not ship slurm/): "
                          "pass script= the path of llm.sbatch")
    cmd = ["sbatch", "--parsable", *sbatch_args, str(path), str(store.root), model, *vllm_args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SubmissionError("'sbatch' is not on PATH: the model server needs Slurm, or run "
                              "`EVOLVE_LLM_INLINE=1 bash slurm/llm.sbatch RUN MODEL` on a GPU machine") from None
    if proc.returncode != 0:
        message = _submission_error_text(RuntimeError(proc.stderr))
        store.record("llm_submit_failed", model=model, error=message)
        raise SubmissionError(f"sbatch {path.name} failed: {message}")
    job_id = proc.stdout.strip().split(";")[0]
    store.record("llm_submitted", job_id=job_id, model=model)
    return job_id


def wait_for_endpoint(store: Store, *, job_id: str | None = None, timeout_s: float = 3600.0,
                      poll_s: float = 5.0) -> dict[str, Any]:
    """Wait until llm/endpoint.json names a server (of job `job_id`, if given) that answers
    /health; returns the endpoint. Raises LaunchError if that job ends first, TimeoutError."""
    import urllib.request

    deadline = time.time() + timeout_s
    while True:
        info = store.read_endpoint()
        if info and (job_id is None or str(info.get("job_id")) == job_id):
            try:
                url = f"http://{info['host']}:{int(info['port'])}/health"
                urllib.request.urlopen(url, timeout=10).read()
                return info  # type: ignore[no-any-return]
            except (OSError, KeyError, ValueError) as exc:
                log.info("model server announced but not answering yet: %s", exc)
        if job_id is not None:
            state = slurm_job_infos([job_id])[job_id]
            if not state.active and state.source != "error" and state.state != "UNKNOWN":
                raise LaunchError(f"the model server job {job_id} ended {state.state} before "
                                  f"answering; see its log (evolve-llm-{job_id}.out)")
        if time.time() > deadline:
            raise TimeoutError(f"no model server answered within {timeout_s:g}s "
                               f"({store.endpoint_path})")
        time.sleep(poll_s)


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


def _check_call(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise LaunchError(f"{cmd[0]} is not on PATH") from None
    except subprocess.CalledProcessError as exc:
        raise LaunchError(f"{' '.join(cmd)} failed: {exc.stderr.strip()}") from None


__all__ = [
    "EXECUTORS", "SUBMITTABLE_STATUSES", "LaunchConfig", "LaunchError", "Launcher",
    "SlotLimited", "SubmissionError", "make_executor", "sbatch_script", "slurm_parameters",
    "submit_llm_server", "wait_for_endpoint",
]
