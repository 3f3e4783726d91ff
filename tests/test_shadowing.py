"""Nothing of ours shadows an installed distribution, from the repository root or inside a job.

PyPI has a `kernels` distribution that transformers imports (when fla or sentence-transformers
load). Python run from the repository root puts the root first on `sys.path`, so a top-level
`kernels/__init__.py` would be found instead of it. The root's `kernels/` therefore holds no
`__init__.py` (see setup.cfg): these tests import the real packages with the root as the
working folder, in a plain subprocess and in a real submitit job started from there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULES = ["kernels", "fla", "sentence_transformers", "evolve.kernels"]


def assert_real_packages(files: dict[str, str]) -> None:
    kernels_file = Path(files["kernels"])
    assert "site-packages" in kernels_file.parts and kernels_file.name == "__init__.py", (
        f"`import kernels` found {kernels_file}, not the installed distribution")
    for name in ("fla", "sentence_transformers"):
        assert files[name] not in ("None", ""), f"{name} imported as a namespace: {files[name]}"
    assert Path(files["evolve.kernels"]).parent == REPO / "evolve" / "kernels"


def test_installed_packages_import_from_the_repository_root() -> None:
    code = ("import json, sys, importlib; print(json.dumps({n: str(getattr("
            "importlib.import_module(n), '__file__', None)) for n in sys.argv[1:]}))")
    out = subprocess.run([sys.executable, "-c", code, *MODULES], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=300)
    assert_real_packages(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_root_kernels_folder_is_no_regular_package() -> None:
    assert (REPO / "kernels").is_dir()
    assert not (REPO / "kernels" / "__init__.py").exists(), (
        "kernels/__init__.py makes the folder a regular package that shadows the installed "
        "`kernels` distribution from the repository root")


@pytest.mark.slow
def test_installed_packages_import_inside_a_local_job_started_from_the_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit

    monkeypatch.chdir(REPO)  # as `evolve run` or `sbatch slurm/driver.sbatch` from the root
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    executor.update_parameters(timeout_min=5)
    import jobs_for_tests

    job = executor.submit(jobs_for_tests.imported_from, MODULES)
    assert_real_packages(job.result())
