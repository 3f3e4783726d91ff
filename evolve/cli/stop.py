"""`evolve stop RUN [--jobs]`: stop a run's driver and, with --jobs, its trainings.

    evolve stop state/demo           # writes STOP: the driver proposes and submits nothing new
    evolve stop state/demo --jobs    # and ends its live trainings: each saves its checkpoint

Without --jobs the trainings run on (a resumed driver reattaches to them). With --jobs, local
trainings get SIGTERM through their submitit controller: each saves a checkpoint at its next
step boundary and exits, and the resumed run trains them on from there. Whatever of the run is
still alive after --grace seconds is killed and named. Slurm jobs get USR2, Slurm's own
pre-timeout signal (each saves its checkpoint and requeues itself, the tested pre-emption path),
then `scancel` once they left the RUNNING state or the grace period ran out; once the driver has
let go of the run,
each is journaled `lost` (under the driver lock), so the next `evolve run` submits it again and
it trains on from its checkpoint.

Exit status: 0 when nothing of the run's trainings is alive at the end, 1 otherwise, 2 on bad
input (not a run).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time

from evolve.cli.fsck import driver_running
from evolve.launch.job_state import LocalProcess, run_processes
from evolve.state.fsio import NotARunError, read_json
from evolve.state.journal import ACTIVE_STATUSES
from evolve.state.layout import RunLayout
from evolve.state.locks import pid_alive


def main_stop(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="evolve stop", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder")
    parser.add_argument("--jobs", action="store_true",
                        help="also end the run's live trainings (each checkpoints first)")
    parser.add_argument("--grace", type=float, default=60.0,
                        help="seconds the driver and trainings get to end (default 60)")
    args = parser.parse_args(argv)
    layout = RunLayout(args.run)
    if not layout.is_run(layout.root):
        raise NotARunError(f"{layout.root} is not an evolve run: it has no {layout.run_yaml.name}")
    layout.stop_path.write_text(f"written by `evolve stop` at {time.strftime('%F %T')}; remove "
                                "this file to let `evolve run` go on\n")
    print(f"wrote {layout.stop_path}: the driver stops at its next safe point")
    if not args.jobs:
        alive = [p for p in run_processes(layout.jobs_dir) if p.role == "training"]
        if alive:
            print(f"{len(alive)} local training(s) run on (pids "
                  f"{', '.join(str(p.pid) for p in alive)}); `--jobs` ends them")
        return 0
    deadline = time.monotonic() + args.grace
    # The driver first: one still running could submit a training after the scan below.
    while driver_running(layout) and time.monotonic() < deadline:
        time.sleep(0.2)
    slurm = _slurm_jobs(layout)
    for job in slurm.values():
        _scancel("--signal=USR2", job)
    procs = run_processes(layout.jobs_dir)
    controllers = {p.pid for p in procs if p.role == "controller"}
    for p in procs:
        # A controller forwards the signal to its tasks; a task is signalled directly only
        # when its controller is gone (one SIGTERM each: a second would interrupt its save).
        if p.role == "controller" or p.parent not in controllers:
            _signal(p, signal.SIGTERM)
    left = _wait(layout, deadline)
    _wait_slurm(list(slurm.values()), deadline)
    for p in left:
        print(f"{p.role} pid {p.pid} ({p.submission}) outlived the grace period: killed")
        _signal(p, signal.SIGKILL)
    for job in slurm.values():
        _scancel(job)
    if slurm:
        _record_stopped(layout, slurm)
    ended = [p for p in procs if p.role == "training"]
    print(f"{len(ended)} local training(s) ended"
          + (f", {len(slurm)} Slurm job(s) cancelled" if slurm else "")
          + "; `evolve run` on the run file resumes them from their checkpoints")
    if driver_running(layout):
        print(f"the driver still holds the run after {args.grace:g}s; it stops at its next "
              "safe point (`evolve status` names it)")
    return 1 if run_processes(layout.jobs_dir) else 0


def _wait(layout: RunLayout, deadline: float) -> list[LocalProcess]:
    while True:
        left = run_processes(layout.jobs_dir)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _wait_slurm(jobs: list[str], deadline: float) -> None:
    """Until no job of `jobs` is running any more (a checkpointed job requeues itself and
    waits as PENDING), or the deadline."""
    while jobs and time.monotonic() < deadline:
        try:
            out = subprocess.run(["squeue", "-h", "-o", "%T", "-j", ",".join(jobs)],
                                 capture_output=True, text=True, timeout=60).stdout.split()
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return
        if not {"RUNNING", "COMPLETING", "CONFIGURING"} & set(out):
            return
        time.sleep(1.0)


def _signal(p: LocalProcess, signum: int) -> None:
    if pid_alive(p.pid):
        try:
            os.kill(p.pid, signum)
        except ProcessLookupError:
            pass


def _slurm_jobs(layout: RunLayout) -> dict[str, str]:
    """The Slurm job ids of the run's candidates the journal says are alive, by candidate."""
    if not layout.journal_path.exists():
        return {}
    from evolve.state.store import Store

    state = Store.open(layout.root).replay()
    jobs = {}
    for c in state.with_status(*ACTIVE_STATUSES):
        record = read_json(layout.candidate(c.id).job, None)
        if isinstance(record, dict) and record.get("executor") == "slurm" and c.job_id:
            jobs[c.id] = c.job_id
    return jobs


def _record_stopped(layout: RunLayout, jobs: dict[str, str]) -> None:
    """Journal the cancelled Slurm trainings as lost, so that a resumed run submits them again
    (they resume from their checkpoints); only when no driver holds the run, since the lock
    holder is the only writer of the journal."""
    from evolve.state.fsio import StateError
    from evolve.state.store import Store

    store = Store.open(layout.root, writer=True)
    try:
        with store.driver_lock():
            for cid, job in jobs.items():
                store.record("lost", cid, job_id=job, error="stopped by `evolve stop --jobs`; "
                             "the next `evolve run` trains it on from its checkpoint")
    except StateError:
        print("a driver holds the run: it records the cancelled Slurm jobs itself")


def _scancel(*args: str) -> None:
    try:
        subprocess.run(["scancel", *args], capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        print(f"scancel {' '.join(args)}: {exc}")
