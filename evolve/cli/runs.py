"""Which run a read-only command shows when none is named: the most recently active one.

    run = default_run()      # state/<the run whose journal changed last>, else state/demo
"""

from __future__ import annotations

import sys
from pathlib import Path

from evolve.state.layout import RunLayout

DEFAULT_ROOT = Path("state")


def default_run(root: Path = DEFAULT_ROOT) -> Path:
    """The run folder under `root` whose journal was written last (named on stderr), else
    root/demo, the embedded default's folder."""
    runs = [p for p in root.glob("*") if RunLayout(p).journal_path.is_file()] \
        if root.is_dir() else []
    if not runs:
        return root / "demo"
    latest = max(runs, key=lambda p: RunLayout(p).journal_path.stat().st_mtime)
    if len(runs) > 1:
        print(f"evolve: showing {latest}, the most recently active of {len(runs)} runs under "
              f"{root}/ (name a run folder to choose another)", file=sys.stderr)
    return latest
