"""The scripts of tools/study/ as modules, for the tests of those tools. The folder is not a
package: its scripts run by path, so each has the folder first on sys.path and imports its
siblings by name (search.py imports search_confirm, which imports proxy); the tests put the
folder on sys.path the same way."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

STUDY = Path(__file__).resolve().parents[1] / "tools" / "study"


def load_study_tool(name: str) -> ModuleType:
    """tools/study/<name>.py as a module (imported once per test process)."""
    if str(STUDY) not in sys.path:
        sys.path.insert(0, str(STUDY))
    return importlib.import_module(name)
