"""The sandbox's seccomp layer through libseccomp: one policy by name for every architecture,
and an honest "off" (in the filter's status, `evolve doctor` and the gate report) on a node
where libseccomp cannot be loaded. The fault is real: a private mount namespace in which the
library file is replaced by an empty one, so the dynamic loader refuses it."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from evolve.gates.seccomp import DENY, FALL_BACK, build_filter, install_filter

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "bad_mixers"


def _libseccomp_file() -> str:
    """The file this Python loads as libseccomp (from its own memory map)."""
    import pyseccomp  # noqa: F401  (maps the library)

    for line in Path("/proc/self/maps").read_text().splitlines():
        if "libseccomp" in line:
            return line.split()[-1]
    raise AssertionError("pyseccomp imported but no libseccomp is mapped")


def _without_libseccomp(cmd: list[str], timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in a mount namespace where libseccomp's file is empty (needs root)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        if os.environ.get("CI") == "1":
            pytest.fail("this test needs root and unshare(1) to hide libseccomp")
        pytest.skip("needs root and unshare(1) to hide libseccomp in a mount namespace")
    script = 'mount --bind /dev/null "$0" && exec "$@"'
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                           _libseccomp_file(), *cmd], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_policy_is_names_only() -> None:
    # No per-architecture table: the policy names syscalls and libseccomp numbers them.
    assert all(isinstance(name, str) for name in DENY + FALL_BACK)
    tree = ast.parse((REPO / "evolve" / "gates" / "seccomp.py").read_text())
    numbers = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, int) and not isinstance(n.value, bool) and n.value > 6]
    assert numbers == [0x00010000], numbers  # CLONE_THREAD, the same on every architecture


def test_the_same_policy_builds_for_aarch64() -> None:
    import pyseccomp

    _, here, unknown = build_filter(os.getpid())
    filt, arm, arm_unknown = build_filter(os.getpid(), pyseccomp.Arch.AARCH64)
    assert unknown == arm_unknown == []
    # aarch64 has only the *at forms: fork, open, mkdir... do not exist there, the rest does.
    assert {"openat", "clone", "execve", "socket", "mkdirat", "kill"} <= set(arm)
    assert "fork" not in arm and "open" not in arm and set(arm) < set(here)
    with tempfile.TemporaryFile("w+") as pfc:
        filt.export_pfc(pfc)
        pfc.seek(0)
        text = pfc.read()
    assert "arch aarch64" in text and "x86_64" not in text
    assert "action KILL_PROCESS" in text  # a syscall of another ABI kills the process


def test_layer_is_off_when_pyseccomp_cannot_be_imported() -> None:
    # A test double: pyseccomp hidden from the import system (sys.modules[...] = None), as on
    # an install without it; the real fault (no loadable libseccomp) is the next test.
    probe = ("import sys; sys.modules['pyseccomp'] = None\n"
             "from evolve.gates.seccomp import install_filter, probe\n"
             "print(probe()); print(install_filter())")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=60).stdout.splitlines()
    off = "off: libseccomp cannot be loaded (ModuleNotFoundError"
    assert len(out) == 2 and all(line.startswith(off) for line in out), out
    assert "apt-get install libseccomp2" in out[0]


def test_layer_is_off_without_libseccomp_and_doctor_says_so() -> None:
    proc = _without_libseccomp([sys.executable, "-c", "from evolve.gates.seccomp import "
                                "install_filter; print(install_filter())"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("off: libseccomp cannot be loaded"), proc.stdout
    doctor = _without_libseccomp([sys.executable, "-m", "evolve.cli.main", "doctor", "--json",
                                  "--only", "seccomp"])
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["seccomp"]["status"] == "FAIL", checks
    assert "off" in checks["seccomp"]["detail"] and "libseccomp2" in checks["seccomp"]["detail"]
    assert doctor.returncode == 1


@pytest.mark.slow
def test_gate_report_says_the_layer_is_off_without_libseccomp(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "ok_cumsum_linear_attention.py", tmp_path / "mixer.py")
    proc = _without_libseccomp([sys.executable, "-m", "evolve.cli.main", "check",
                                str(tmp_path / "mixer.py"), "--gates", "parse,imports,"
                                "interface,smoke"], timeout=300)
    assert "[sandbox] the seccomp layer is off: libseccomp cannot be loaded" in proc.stdout, \
        proc.stdout + proc.stderr


def test_install_filter_is_on_here() -> None:
    # In a child: a loaded filter cannot be removed from this test process.
    out = subprocess.run([sys.executable, "-c", "from evolve.gates.seccomp import "
                          "install_filter, probe; print(probe()); print(install_filter())"],
                         cwd=REPO, capture_output=True, text=True, check=True, timeout=60)
    probed, installed = out.stdout.splitlines()
    assert probed == installed and installed.startswith("on (") and "via libseccomp" in installed
    assert install_filter.__module__ == "evolve.gates.seccomp"
