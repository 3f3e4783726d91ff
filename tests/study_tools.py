"""Load a script of tools/study/ as a module (the folder is not a package: its scripts run by
path), for the tests of those tools."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

STUDY = Path(__file__).resolve().parents[1] / "tools" / "study"


def load_study_tool(name: str) -> ModuleType:
    """tools/study/<name>.py as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"study_{name}", STUDY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
