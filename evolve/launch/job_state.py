"""What the scheduler knows about a job: Slurm through sacct (squeue as fallback), local jobs
through their controller process, and the job's own result and log files.

Usage (evolve.launch.launcher does this)::

    infos = slurm_job_infos(["4242_0", "4242_1"])   # {"4242_0": JobInfo(state="RUNNING", ...)}
    info = local_job_info("31337", folder)            # RUNNING while the controller lives, else EXITED
    outcome = read_outcome(folder, "4242_0")           # ("success", result) | ("error", traceback) | None

sacct is the source of truth: it keeps finished jobs, requeue history (``--duplicates``) and
allocated GPUs, from which GPU-hours are computed. It lags a few seconds behind submission and
fails without accounting (slurmdbd), so squeue fills in. A job neither knows is reported with
state UNKNOWN and source "none"; the caller decides when that means lost.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from evolve.state.locks import pid_alive

log = logging.getLogger(__name__)

ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING", "COMPLETING",
    "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD", "SPECIAL_EXIT",
})
"""Slurm states (and local RUNNING) in which a job may still produce a result."""

SACCT_FIELDS = ("JobID", "State", "ElapsedRaw", "AllocTRES", "ExitCode")
_GPU_TRES = re.compile(r"(?:^|,)gres/gpu=(\d+)")
_QUERY_TIMEOUT_S = 60
STOPPED_MARK = "evolve: training stopped by"
"""How a local training stopped by SIGTERM (`evolve stop --jobs`) ends its log
(`executors.stop_on_signal`): the launcher records it lost (resubmitted, it resumes from its
checkpoint), not failed."""


@dataclass
class JobInfo:
    """One job as the scheduler reports it."""

    job_id: str
    state: str
    """Slurm state (RUNNING, COMPLETED, FAILED, ...), EXITED for a local job whose controller is
    gone, or UNKNOWN when no source knows the job."""
    source: str
    """Where the state came from: sacct, squeue, proc, or none (asked, not known), or error
    (the scheduler could not be asked)."""
    elapsed_s: float = 0.0
    """Wall time summed over every run of the job (requeues included)."""
    gpu_s: float = 0.0
    """GPU-seconds: elapsed time times allocated GPUs, summed over runs."""
    runs: int = 0
    """How many times the job started (1 + requeues); 0 when unknown."""
    exit_code: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def gpu_hours(self) -> float:
        return self.gpu_s / 3600.0


def array_master(job_id: str) -> str:
    """"4242" for "4242_3" (an array task) and for "4242" (a plain job)."""
    return job_id.split("_", 1)[0]


def _expand_ids(raw: str) -> list[str]:
    """sacct/squeue job ids: "12", "12_3", or a pending range such as "12_[3-5,7%2]"."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", raw)
    if m is None:
        return [raw]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out.extend(f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return out


def _run(cmd: list[str]) -> tuple[int, str, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=_QUERY_TIMEOUT_S)
    except FileNotFoundError:
        return 127, "", f"{cmd[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{cmd[0]} did not answer within {_QUERY_TIMEOUT_S}s"
    return p.returncode, p.stdout, p.stderr


def parse_sacct(text: str) -> dict[str, JobInfo]:
    """Parse ``sacct -X -D -P -n -o JobID,State,ElapsedRaw,AllocTRES,ExitCode`` output.

    With --duplicates a requeued job has one row per run, oldest first; its state is the last
    row's, its elapsed time and GPU-seconds the sums.
    """
    infos: dict[str, JobInfo] = {}
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) < len(SACCT_FIELDS) or not cols[0]:
            continue
        raw, state, elapsed, tres, exit_code = cols[: len(SACCT_FIELDS)]
        state = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0"
        secs = float(elapsed) if elapsed.strip().isdigit() else 0.0
        m = _GPU_TRES.search(tres)
        gpus = int(m.group(1)) if m else 0
        for jid in _expand_ids(raw):
            info = infos.get(jid)
            if info is None:
                info = infos[jid] = JobInfo(job_id=jid, state=state, source="sacct")
            info.state = state
            info.exit_code = exit_code
            info.runs += 1
            info.elapsed_s += secs
            info.gpu_s += secs * gpus
    return infos


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """Parse ``squeue -h -r -o %i|%T`` output."""
    infos: dict[str, JobInfo] = {}
    for line in text.splitlines():
        raw, _, state = line.strip().partition("|")
        if raw:
            for jid in _expand_ids(raw):
                infos[jid] = JobInfo(job_id=jid, state=state.strip() or "UNKNOWN", source="squeue")
    return infos


def slurm_job_infos(job_ids: Sequence[str]) -> dict[str, JobInfo]:
    """The state of each job id (array tasks as "4242_3"), one sacct call for all of them."""
    if not job_ids:
        return {}
    masters = ",".join(sorted({array_master(j) for j in job_ids}))
    rc, out, err = _run(["sacct", "-X", "-D", "-P", "-n", "-o", ",".join(SACCT_FIELDS), "-j", masters])
    sacct_ok = rc == 0
    known = parse_sacct(out) if sacct_ok else {}
    if not sacct_ok:
        log.warning("sacct failed (%s); falling back to squeue: %s", rc, err.strip()[:300])
    missing = [j for j in job_ids if j not in known]
    squeue_ok = True
    queued: dict[str, JobInfo] = {}
    if missing:
        ids = ",".join(sorted({array_master(j) for j in missing}))
        rc, out, err = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ids])
        # squeue exits 1 with "Invalid job id" when it knows none of the ids: that is an answer.
        squeue_ok = rc == 0 or "Invalid job id" in err
        queued = parse_squeue(out) if rc == 0 else {}
        if not squeue_ok:
            log.warning("squeue failed (%s): %s", rc, err.strip()[:300])
    result = {}
    for j in job_ids:
        if j in known:
            result[j] = known[j]
        elif j in queued:
            result[j] = queued[j]
        else:
            source = "none" if (sacct_ok and squeue_ok) else "error"
            result[j] = JobInfo(job_id=j, state="UNKNOWN", source=source)
    return result


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def local_job_info(job_id: str, folder: str | os.PathLike[str]) -> JobInfo:
    """A local job's id is its controller's pid: RUNNING while that process lives and is still
    submitit's controller for `folder` (a recycled pid does not count), else EXITED."""
    pid = int(job_id) if job_id.isdigit() else -1
    if pid > 0 and pid_alive(pid):
        cmd = _cmdline(pid)
        if "submitit.local._local" in cmd and str(folder) in cmd:
            return JobInfo(job_id=job_id, state="RUNNING", source="proc", runs=1)
    return JobInfo(job_id=job_id, state="EXITED", source="proc")


def local_task_pids(controller_pid: int) -> list[int]:
    """Pids of the direct children of a process."""
    return [int(e) for e in os.listdir("/proc")
            if e.isdigit() and _parent(int(e)) == controller_pid]


def local_task_processes(controller_pid: int) -> list[int]:
    """Pids of the training processes under a local controller (through a setup shell too)."""
    out, todo = [], [controller_pid]
    while todo:
        children = local_task_pids(todo.pop())
        out.extend(p for p in children if "submitit.core._submit" in _cmdline(p))
        todo.extend(children)
    return out


@dataclass(frozen=True)
class LocalProcess:
    """A live process of one run's local trainings."""

    pid: int
    role: str
    """controller (submitit's, one per job; its pid is the job id) or training (a task)."""
    submission: str
    """The submission folder's name (jobs/<submission>)."""
    parent: int


def run_processes(jobs_dir: str | os.PathLike[str]) -> list[LocalProcess]:
    """Every live local controller and training of the run whose submissions live under
    `jobs_dir`, by its command line (submitit names the submission folder in it)."""
    root = str(Path(jobs_dir).absolute()) + os.sep
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        cmd = _cmdline(int(entry)).split()
        for module, role in (("submitit.local._local", "controller"),
                             ("submitit.core._submit", "training")):
            if module in cmd and cmd.index(module) + 1 < len(cmd) \
                    and cmd[cmd.index(module) + 1].startswith(root) \
                    and not _slurm_task(int(entry)):
                folder = cmd[cmd.index(module) + 1][len(root):].split(os.sep)[0]
                found.append(LocalProcess(int(entry), role, folder, _parent(int(entry))))
    return sorted(found, key=lambda p: p.pid)


def _slurm_task(pid: int) -> bool:
    """Whether the process is a task of a Slurm job (on a one-node cluster, or a node shared
    with the login shell, Slurm's tasks show up here too: they are Slurm's to signal)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            # submitit's own mark, not SLURM_JOB_ID: a local job started by a driver that runs
            # inside a Slurm job inherits that, and is ours to signal.
            return b"\0SUBMITIT_EXECUTOR=slurm\0" in b"\0" + f.read()
    except OSError:
        return False


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


@dataclass(frozen=True)
class JobFiles:
    """submitit's files for one job (task 0) in its submission folder."""

    folder: Path
    job_id: str

    @property
    def result(self) -> Path:
        return self.folder / f"{self.job_id}_0_result.pkl"

    @property
    def submitted(self) -> Path:
        return self.folder / f"{self.job_id}_submitted.pkl"

    @property
    def stdout(self) -> Path:
        return self.folder / f"{self.job_id}_0_log.out"

    @property
    def stderr(self) -> Path:
        return self.folder / f"{self.job_id}_0_log.err"


def read_outcome(files: JobFiles) -> tuple[str, Any] | None:
    """("success", returned value) or ("error", traceback text) from the job, or None if absent."""
    from submitit.core.utils import pickle_load  # submitit is only needed once jobs exist

    if not files.result.exists():
        return None
    try:
        outcome = pickle_load(files.result)
    except EOFError:
        return None  # still being written (NFS); the caller polls again
    except Exception as exc:  # a result that cannot be unpickled is an error to report, not hide
        return ("error", f"could not read {files.result}: {type(exc).__name__}: {exc}")
    if not (isinstance(outcome, tuple) and len(outcome) == 2):
        return ("error", f"{files.result}: unexpected content {type(outcome).__name__}")
    return outcome  # type: ignore[return-value]


def tail(path: str | os.PathLike[str], lines: int = 60, max_bytes: int = 64_000) -> str:
    """The last `lines` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def stopped_by_signal(files: JobFiles) -> bool:
    """Whether the job's training ended on SIGTERM on purpose, its checkpoint saved."""
    return STOPPED_MARK in tail(files.stderr, lines=5)
