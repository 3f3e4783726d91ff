"""LaunchConfig, and the submitit executors, sbatch scripts and local slot cap it gives.

Usage::

    cfg = LaunchConfig(executor="slurm", partition="gpu", gpus_per_task=1, timeout_min=240)
    print(sbatch_script(cfg, "state/run/jobs/s000003", num_tasks=16))   # what sbatch will get
    executor = make_executor(cfg, folder, job_name="evolve-run-s000003")

`evolve.launch.launcher.Launcher` uses these; they are separate so that a config can be checked (and its
sbatch script shown) on a machine without Slurm.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import submitit
from submitit.core.utils import DelayedSubmission

from evolve.config.loading import choice, positive
from evolve.launch.job_state import STOPPED_MARK
from evolve.state.locks import LockTimeoutError, RunLock
from evolve.state.store import StateError

EXECUTORS = ("debug", "local", "slurm")
STOPPED_EXIT = 128 + signal.SIGTERM


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
    """GPUs per process of a training (one is the norm: one process per GPU). Slurm:
    --gpus-per-node = gpus_per_task x tasks_per_node; locally each concurrent training gets its
    own GPUs (CUDA_VISIBLE_DEVICES of its slot)."""
    tasks_per_node: int = 1
    """Processes per training on each node (--ntasks-per-node): data-parallel ranks, one per
    GPU. Each gets its rank from submitit; the global batch is split over all of them."""
    nodes: int = 1
    """Nodes per training (--nodes); the training's world size is nodes x tasks_per_node."""
    cpus_per_task: int = 1
    """CPU cores per training (--cpus-per-task)."""
    mem_gb: float | None = None
    """Memory per training in GB (--mem); None: the partition's default."""
    timeout_min: int = 60
    """Wall time per run of a training (--time). A checkpointable training is requeued when it
    runs out, up to max_num_timeout times. Local jobs are timed from submission, so the wait
    for a parallelism slot counts: size it for (trainings / array_parallelism) runs."""
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
    before recording the job as failed without a result, and for sacct to record the end of a
    job that left its result (the GPU-hours come from that record)."""

    def __post_init__(self) -> None:
        choice("launch.executor", self.executor, EXECUTORS)
        positive("launch.array_parallelism", self.array_parallelism)
        positive("launch.gpus_per_task", self.gpus_per_task, allow_zero=True)
        positive("launch.cpus_per_task", self.cpus_per_task)
        positive("launch.tasks_per_node", self.tasks_per_node)
        positive("launch.nodes", self.nodes)
        if self.executor != "slurm" and self.nodes > 1:
            raise ValueError(f"launch.nodes={self.nodes} needs launch.executor: slurm (the "
                             f"{self.executor} executor runs on this machine only)")
        if self.executor == "local" and self.tasks_per_node > 1 and self.gpus_per_task:
            raise ValueError("launch.tasks_per_node > 1 with GPUs is not supported by the local "
                             "executor (its slots hand out GPUs to one process per training); "
                             "use executor: slurm, or gpus_per_task: 0 for CPU ranks")
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
    params["ntasks_per_node"] = cfg.tasks_per_node
    params["nodes"] = cfg.nodes
    if cfg.gpus_per_task:
        # Per node, so that Slurm's --gpus-per-node and srun's tasks agree on one GPU a task.
        params["gpus_per_node"] = cfg.gpus_per_task * cfg.tasks_per_node
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

    Waiting jobs take free slots oldest first, by the name of their first argument (the
    candidate folder, c000000 before c000001): each waiter holds a lock named after it while it
    waits, and a job leaves a free slot to any older waiter. Without the order whichever
    process polled first won, and the reference baseline, which every score waits for, could
    train last.
    """

    def __init__(self, fn: Callable[..., Any], slots_dir: str, num_slots: int,
                 lock_kind: str = "file", gpus_per_slot: int = 0) -> None:
        self.fn = fn
        self.slots_dir = slots_dir
        self.num_slots = num_slots
        self.lock_kind = lock_kind
        self.gpus_per_slot = gpus_per_slot
        """Slot i owns GPUs i*g .. i*g+g-1, so concurrent local trainings never share one."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # submitit's local tasks ignore SIGTERM ("Bypassing signal SIGTERM"), so a stopped run
        # left trainings behind that only kill -9 ended. Here SIGTERM ends the training; the
        # training's DeferredSignals first saves its checkpoint at a step boundary.
        signal.signal(signal.SIGTERM, stop_on_signal)
        if int(os.environ.get("SUBMITIT_LOCAL_GLOBALID", "0")) != 0:
            # The other ranks of a multi-process training: rank 0 holds the training's slot,
            # and they wait for it in the process group's rendezvous.
            return self.fn(*args, **kwargs)
        lock, slot = self._take_slot(Path(str(args[0])).name if args else "")
        if self.gpus_per_slot:
            first = slot * self.gpus_per_slot
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(
                str(g) for g in range(first, first + self.gpus_per_slot))
        try:
            return self.fn(*args, **kwargs)
        finally:
            lock.release()

    def _lock(self, name: str) -> RunLock:
        return RunLock(Path(self.slots_dir) / name, kind=self.lock_kind, timeout_s=0)

    def _older_waiting(self, key: str) -> bool:
        """Whether a live job with a smaller key waits for a slot (its wait lock is held)."""
        for path in Path(self.slots_dir).glob("wait-*.lock"):
            if path.name[len("wait-"):-len(".lock")] >= key:
                continue
            probe = self._lock(path.name)
            try:
                probe.acquire()
            except LockTimeoutError:
                return True
            probe.release()  # nobody holds it: that waiter got its slot or died
        return False

    def _take_slot(self, key: str) -> tuple[RunLock, int]:
        Path(self.slots_dir).mkdir(parents=True, exist_ok=True)
        waiting = self._lock(f"wait-{key}.lock")
        try:
            waiting.acquire()
        except LockTimeoutError:  # the same candidate waits twice (a requeue racing): no order
            waiting = None
        try:
            while True:
                if waiting is None or not self._older_waiting(key):
                    for i in range(self.num_slots):
                        lock = self._lock(f"slot{i}.lock")
                        try:
                            lock.acquire()
                            return lock, i
                        except LockTimeoutError:
                            continue
                # Waiters poll: 0.5 s keeps eight of them under a tenth of a core, and a slot's
                # hand-over this late is nothing against a training's minutes.
                time.sleep(0.5)
        finally:
            if waiting is not None:
                waiting.release()

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:  # type: ignore[override]
        inner = getattr(self.fn, "checkpoint", None)
        resumed = inner(*args, **kwargs) if inner is not None else None
        if resumed is None:
            return None
        wrapped = SlotLimited(resumed.function, self.slots_dir, self.num_slots, self.lock_kind,
                              self.gpus_per_slot)
        return DelayedSubmission(wrapped, *resumed.args, **resumed.kwargs)


def stop_on_signal(signum: int, frame: Any = None) -> None:
    """End a local training (its checkpoint saved by then) without a result: submitit writes
    no result for SystemExit, and the log's last line tells the launcher why it ended."""
    print(f"{STOPPED_MARK} {signal.Signals(signum).name}; its checkpoint is kept, and a "
          "resumed run continues it", file=sys.stderr, flush=True)
    raise SystemExit(STOPPED_EXIT)


def make_executor(cfg: LaunchConfig, folder: Path, job_name: str) -> submitit.Executor:
    """The submitit executor for `cfg`, writing into `folder`; SubmissionError without Slurm."""
    if cfg.executor == "debug":
        return submitit.DebugExecutor(folder)
    if cfg.executor == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=cfg.max_num_timeout, python=cfg.python)
        params: dict[str, Any] = {"timeout_min": cfg.timeout_min,
                                  "signal_delay_s": cfg.signal_delay_s,
                                  "tasks_per_node": cfg.tasks_per_node}
        if cfg.gpus_per_task:
            params["gpus_per_node"] = cfg.gpus_per_task
        if cfg.setup:
            params["setup"] = list(cfg.setup)
        ex.update_parameters(**params)
        return ex
    for tool in ("sbatch", "srun"):
        if shutil.which(tool) is None:
            raise SubmissionError(f"'{tool}' is not on PATH: this machine cannot submit Slurm "
                                  "jobs. Run the driver on a login node, or use executor: local")
    ex = submitit.SlurmExecutor(folder, max_num_timeout=cfg.max_num_timeout, python=cfg.python)
    ex.update_parameters(**slurm_parameters(cfg, job_name))
    return ex
