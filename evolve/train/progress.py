"""Terminal output for one training: a progress bar while it runs, a table of its result.

Rich output on a terminal, plain lines otherwise (logs of batch jobs stay readable).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from evolve.state.layout import CandidatePaths


class TrainProgress:
    """`with TrainProgress(cfg) as p: ... p.update(track, step, loss)`."""

    def __init__(self, cfg: Any, stream: Any = None):
        self.totals = {name: t.total_steps() for name, t in cfg.tracks().items()}
        self.stream = stream or sys.stderr
        self.rich = self.stream.isatty()
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._last_plain: dict[str, int] = {}

    def __enter__(self) -> TrainProgress:
        if self.rich:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                                      TimeRemainingColumn(), console=Console(file=self.stream))
            self._progress.start()
            for name, total in self.totals.items():
                self._tasks[name] = self._progress.add_task(name, total=total, loss="-")
        return self

    def update(self, track: str, step: int, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._tasks[track], completed=step, loss=f"{loss:.3f}")
            return
        total = self.totals[track]
        every = max(1, total // 10)
        if step % every == 0 or step == total:
            print(f"[{track}] step {step}/{total} loss {loss:.4f}", file=self.stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def result_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    m = result.get("metrics", {})
    rows = [("status", result.get("status", "?"))]
    if result.get("reason"):
        rows.append(("reason", result["reason"]))

    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows += [
        ("bits per byte (val)", fmt(m.get("bpb"), ".4f")),
        ("MQAR accuracy", fmt(m.get("mqar_acc"), ".3f")),
    ]
    for pairs, acc in (m.get("mqar_acc_by_pairs") or {}).items():
        rows.append((f"  MQAR @ {pairs} pairs", fmt(acc, ".3f")))
    if m.get("benchmark_avg") is not None:
        rows.append(("benchmark average", fmt(m.get("benchmark_avg"), ".4f")))
        lm_eval = result["tracks"]["lm"]["eval"]["benchmarks"]
        for task, acc in lm_eval.items():
            rows.append((f"  {task}", fmt(acc, ".4f")))
    rows += [
        ("parameters (lm)", fmt(m.get("num_params"), ",")),
        ("train tokens/s (lm)", fmt(m.get("tokens_per_s"), ",.0f")),
        ("peak memory MB", fmt(m.get("peak_mem_mb"), ",.0f")),
        ("wall time s", fmt(result.get("wall_s"), ".1f")),
    ]
    return rows


def print_result(result: dict[str, Any], folder: Path, stream: Any = None) -> None:
    stream = stream or sys.stdout
    rows = result_rows(result)
    if stream.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{result.get('mixer')} (seed {result.get('seed')})")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in rows:
            table.add_row(key, value)
        Console(file=stream).print(table)
    else:
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}", file=stream)
    print(f"result: {CandidatePaths.of(folder).result}", file=stream)
