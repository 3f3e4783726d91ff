"""A regular (non-editable) install must contain every module and data file the package uses.

An editable install imports kernels/ subpackages that setup.cfg forgets to list; a wheel drops
them, so this test builds one and compares its contents with the source tree.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_contains_every_module_and_data_file(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("evolve-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"evolve/kernels/{p.relative_to(REPO / 'kernels')}"
                for p in (REPO / "kernels").rglob("*.py")}
    expected |= {str(p.relative_to(REPO)) for p in (REPO / "evolve").rglob("*")
                 if p.is_file() and p.suffix in (".py", ".yaml", ".txt", ".json")
                 and "__pycache__" not in p.parts}
    missing = sorted(expected - names)
    assert not missing, f"missing from the wheel (list them in setup.cfg): {missing}"
