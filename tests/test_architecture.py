"""The direction of dependencies between evolve's parts holds (setup.cfg's [importlinter]
contracts, checked by import-linter's `lint-imports`, which sees imports inside functions too),
and a broken rule is caught: the same check on a copy of the package with one forbidden import
added must fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
SUBPACKAGES = ("agents", "cli", "config", "gates", "launch", "model", "search", "state", "train",
               "views", "kernels")


def lint(package_root: Path) -> subprocess.CompletedProcess:
    if not LINT.exists():
        pytest.fail(f"{LINT} is missing: install the dev extra (import-linter)")
    env = {**os.environ, "PYTHONPATH": str(package_root)}
    return subprocess.run([str(LINT), "--config", str(REPO / "setup.cfg"), "--no-cache"],
                          cwd=package_root, env=env, capture_output=True, text=True, timeout=300)


def copy_package(dest: Path) -> Path:
    """The package laid out as installed (kernels/<op>/ inside evolve/kernels/), so that
    import-linter sees the op folders too."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "evolve", dest / "evolve", ignore=ignore)
    for op in (REPO / "kernels").iterdir():
        if op.is_dir() and op.name != "__pycache__":
            shutil.copytree(op, dest / "evolve" / "kernels" / op.name, ignore=ignore)
    return dest


def test_the_import_contracts_hold(tmp_path: Path) -> None:
    out = lint(copy_package(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("importer, imported", [
    ("train/job.py", "evolve.search.driver"),       # the job must not import the search
    ("kernels/utils.py", "evolve.model.contract"),  # kernels import torch only
    ("kernels/delta_rule/chunk.py", "evolve.state.store"),  # the op folders too
    ("state/store.py", "evolve.train.presets"),     # state sits below every part
])
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, importer: str,
                                              imported: str) -> None:
    root = copy_package(tmp_path)
    module = root / "evolve" / importer
    # Inside a function, where import cycles hide: import-linter must still see it.
    module.write_text(module.read_text() + f"\n\ndef _broken():\n    import {imported}\n")
    out = lint(root)
    assert out.returncode != 0, out.stdout
    assert "BROKEN" in out.stdout and imported in out.stdout, out.stdout


def test_no_module_sits_directly_in_the_package() -> None:
    loose = sorted(p.name for p in (REPO / "evolve").glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules directly in evolve/: {loose}; put each in the part it belongs to"
    for name in SUBPACKAGES:
        init = REPO / "evolve" / name / "__init__.py"
        assert init.is_file() and '"""' in init.read_text(), f"{init} must say what it owns"


def test_every_error_class_of_evolve_derives_from_one_base() -> None:
    import importlib
    import inspect
    import pkgutil

    import evolve
    from evolve import EvolveError

    outside = []
    for info in pkgutil.walk_packages(evolve.__path__, "evolve."):
        if info.name.startswith("evolve.kernels"):
            continue  # kernels import torch only; their errors are plain ValueError/RuntimeError
        module = importlib.import_module(info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if (cls.__module__ == info.name and issubclass(cls, BaseException)
                    and not issubclass(cls, EvolveError)):
                outside.append(f"{info.name}.{name}")
    assert not outside, f"error classes not derived from evolve.EvolveError: {outside}"


RUN_FILE_NAMES = {"run.yaml", "journal.jsonl", "requests", "ablation.json", "STOP",
                  "mixer.py", "proposal.json", "checks.json", "job.json", "result.json",
                  "analysis.json", "error.json", "confirmation.json", "confirmation-",
                  "endpoint.json", "driver.holder.json"}
"""A run folder's file names: a string constant of exactly one of these is a path being built."""


def code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module's code, without its docstrings (line, text)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            docstrings.add(id(node.body[0].value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_run_folder_file_names_are_spelled_only_in_the_layout_module() -> None:
    """evolve.state.layout owns every file name of a run folder: code elsewhere asks it."""
    found = []
    for path in sorted((REPO / "evolve").rglob("*.py")):
        if path == REPO / "evolve" / "state" / "layout.py":
            continue
        found += [f"{path.relative_to(REPO)}:{line}: {text!r}"
                  for line, text in code_strings(path) if text.strip("/") in RUN_FILE_NAMES]
    assert not found, "run-folder file names outside evolve/state/layout.py:\n" + "\n".join(found)


def test_the_per_candidate_file_names_appear_nowhere_else_even_in_prose() -> None:
    """A plain grep: the names of the files a candidate's lifecycle writes (and the requests
    folder) are in the layout module only; docstrings and messages say "the result file"."""
    names = ("proposal.json", "result.json", "ablation.json", "confirmation.json",
             "confirmation-", "requests/")
    found = [f"{path.relative_to(REPO)}: {name}"
             for path in sorted((REPO / "evolve").rglob("*.py"))
             if path != REPO / "evolve" / "state" / "layout.py"
             for name in names if name in path.read_text(encoding="utf-8")]
    assert not found, "\n".join(found)
