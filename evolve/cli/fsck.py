"""`evolve fsck RUN [--fix]`: check a run folder's invariants (docs/STATE.md) and repair it.

    evolve fsck state/demo          # one line per problem: file, what is wrong, what --fix does
    evolve fsck state/demo --fix    # rebuild a lost or damaged journal, mark damaged candidates

Exit status: 0 when the run is sound (or `--fix` repaired everything it can), 1 when problems
remain, 2 on bad input (not a run). The checks are `evolve.state.fsck`; this module gives them
what the state layer does not know: the scheduler (for jobs the journal thinks alive) and the
run's fitness (to score rebuilt trainings as the driver did).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from evolve.state.fsck import Score, check_run, fix_run, read_or_none
from evolve.state.fsio import NotARunError, StateError
from evolve.state.layout import RunLayout
from evolve.state.locks import LockTimeoutError, RunLock


def main_fsck(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="evolve fsck", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder")
    parser.add_argument("--fix", action="store_true",
                        help="rebuild a missing or damaged journal from the candidate folders "
                             "(the old one kept as a backup) and journal candidates with an "
                             "unreadable file as damaged; nothing is deleted")
    args = parser.parse_args(argv)
    layout = RunLayout(args.run)
    if not layout.is_run(layout.root):
        raise NotARunError(f"{layout.root} is not an evolve run: it has no {layout.run_yaml.name}")
    problems = check_run(layout, job_state=_job_state(layout))
    for p in problems:
        print(p.line())
    if not args.fix:
        if problems:
            print(f"{len(problems)} problem(s); `evolve fsck {args.run} --fix` applies the "
                  "repairs named")
        else:
            print(f"{layout.root}: no problems found")
        return 1 if problems else 0
    # The repair writes the journal, which only the holder of the driver lock may do.
    lock = _driver_lock(layout)
    try:
        lock.acquire()
    except LockTimeoutError:
        raise StateError(f"{layout.root}: a driver is running this run; stop it (`evolve stop "
                         f"{args.run}`) before `evolve fsck --fix`") from None
    try:
        actions = fix_run(layout, problems, score=_scorer(layout))
    finally:
        lock.release()
    for action in actions:
        print(f"fixed: {action}")
    left = [p for p in check_run(layout, job_state=_job_state(layout)) if p.action]
    for p in left:
        print(f"still: {p.line()}")
    return 1 if left else 0


def driver_running(layout: RunLayout) -> bool:
    """Whether a driver holds the run (a run without a journal has none: Store refuses it)."""
    from evolve.state.store import Store

    if not layout.journal_path.exists():
        return False
    return Store.open(layout.root).driver_holder() is not None


def _driver_lock(layout: RunLayout) -> RunLock:
    """The run's driver lock, of the kind its run.yaml names (`Store.lock` needs a journal)."""
    with open(layout.run_yaml, encoding="utf-8") as f:
        store = (yaml.safe_load(f) or {}).get("store") or {}
    kind = store.get("lock", "file") if isinstance(store, dict) else "file"
    return RunLock(layout.lock_path("driver", soft=kind == "soft"), kind=kind, timeout_s=0)


def _job_state(layout: RunLayout) -> Any:
    """Asks the scheduler about a job.json record: (state, active), None if it cannot say."""
    from evolve.launch.job_state import (JobFiles, local_job_info, slurm_job_infos,
                                         stopped_by_signal)

    def ask(record: dict[str, Any]) -> tuple[str, bool] | None:
        job_id, executor = str(record.get("job_id")), record.get("executor")
        if executor == "local":
            folder = layout.root / str(record.get("folder", ""))
            info = local_job_info(job_id, folder)
            if not info.active and stopped_by_signal(JobFiles(folder, job_id)):
                return "stopped by SIGTERM, its checkpoint kept", False
        elif executor == "slurm":
            info = slurm_job_infos([job_id])[job_id]
        else:
            return None
        return None if info.source == "error" else (info.state, info.active)

    return ask


def _scorer(layout: RunLayout) -> Score:
    """Fitness of rebuilt trainings against the run's reference baseline, as the driver
    computes it (its training-time leakage re-check is not redone)."""
    from evolve.search.fitness import Reference, fitness
    from evolve.search.run_config import run_config_from_dict
    from evolve.search.screening_steps import cpu_hours

    with open(layout.run_yaml, encoding="utf-8") as f:
        cfg = run_config_from_dict(yaml.safe_load(f) or {}, source=str(layout.run_yaml))

    def read(path: Path) -> dict[str, Any]:
        value = read_or_none(path)
        return value if isinstance(value, dict) else {}

    def score(done: list[str]) -> dict[str, dict[str, Any]]:
        props = {c: read(layout.candidate(c).proposal) for c in layout.candidate_ids()}
        out: dict[str, dict[str, Any]] = {}
        for cid in done:
            preset = props[cid].get("preset")
            refs = [c for c, p in props.items() if p.get("kind") == "baseline"
                    and p.get("name") == cfg.fitness.reference and p.get("preset") == preset]
            if not refs or any(c not in done for c in refs):
                continue  # the reference is not trained (yet): the driver scores it later
            result = read(layout.candidate(cid).result)
            cost = {"cpu_hours": cpu_hours(result)}
            if result.get("status") != "ok":
                out[cid] = {"event": "failed", "error": result.get("reason", "no result file"),
                            **cost}
                continue
            if float(result.get("budget_fraction", 1.0)) < 1.0:
                continue  # a screening rung's result: the driver scores it at its rung
            refs = [c for c in refs if float(read(layout.candidate(c).result).get(
                "budget_fraction", 1.0)) == 1.0] if refs else refs
            if not refs:
                continue
            reference = Reference.from_results([read(layout.candidate(c).result) for c in refs],
                                               cfg.fitness.reference, cfg.fitness.mqar_pairs)
            terms = fitness(result, reference, cfg.fitness)
            out[cid] = {"fitness": terms["fitness"], "terms": terms, **cost}
        return out

    return score
