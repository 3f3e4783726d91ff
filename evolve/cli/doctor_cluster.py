"""The checks of `evolve doctor` for what breaks on a cluster node: the GPU and bf16 the preset
needs, DeepSpeed, the distributed backend, the corpus against the token budget, the sandbox's
seccomp layer, packages shadowed by folders of the repository root, and the Slurm partition and
account of the run's launch section. Each FAIL names the fix.

    checks = cluster_checks(run_cfg)     # [(name, fn)], fn() -> Check; run by evolve.cli.doctor
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.metadata
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from evolve.cli.doctor import COMMAND_TIMEOUT_S, Check
from evolve.cli.doctor import _command as command

SECCOMP_PROBE = """import errno, os, sys
from evolve.gates.seccomp import install_filter
status = install_filter()
print(status)
if status.startswith("on"):
    try:
        os.mkdir(sys.argv[1] + "/probe")
        print("mkdir succeeded")
    except OSError as exc:
        print("mkdir refused" if exc.errno == errno.EPERM else f"mkdir failed: {exc}")
"""


def check_gpu(train: Any, preset_name: str) -> Check:
    """CUDA where the preset trains on it, and bf16 where it trains in bf16 (on either device)."""
    import torch

    runtime = train.runtime
    wants_cuda = runtime.device == "cuda"
    if not torch.cuda.is_available():
        if wants_cuda:
            return Check("gpu", "FAIL", f"no CUDA device here, and preset {preset_name!r} trains "
                         "on CUDA: run its trainings on a GPU partition (launch.partition, "
                         "launch.gpus_per_task: 1), or use preset tiny on CPU")
        device = torch.device("cpu")
    else:
        device = torch.device("cuda")
    detail = "CUDA " + str(torch.version.cuda) if device.type == "cuda" else "no GPU (CPU only)"
    if runtime.precision != "bf16":
        return Check("gpu", "OK", f"{detail}; preset {preset_name!r} trains in {runtime.precision}")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return Check("gpu", "FAIL", f"{detail}: {torch.cuda.get_device_name()} has no bf16 "
                     "(needs compute capability >= 8.0, A100/H100): request such GPUs with "
                     "launch.constraint, or set train.runtime.precision: fp32")
    try:
        a = torch.ones(8, 8, device=device, dtype=torch.bfloat16)
        (a @ a).sum().item()
    except RuntimeError as exc:
        return Check("gpu", "FAIL", f"{detail}: a bf16 matmul fails ({exc}); set "
                     "train.runtime.precision: fp32")
    return Check("gpu", "OK", f"{detail}; bf16 matmul works on {device.type} "
                 f"(preset {preset_name!r} trains in bf16)")


def check_deepspeed(train: Any) -> Check:
    """DeepSpeed imports, with the ZeRO stage the preset asks for."""
    engine = train.runtime.engine
    try:
        # DeepSpeed's logger writes to stdout at import: keep `evolve doctor --json` parseable.
        with contextlib.redirect_stdout(sys.stderr):
            import deepspeed
            from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer  # noqa: F401
    except Exception as exc:  # a broken install raises anything: report it, do not crash
        status = "FAIL" if engine == "deepspeed" else "WARN"
        return Check("deepspeed", status, f"does not import ({type(exc).__name__}: {exc}); "
                     "reinstall it from the lock (bash install.sh), or set "
                     "train.runtime.engine: torch")
    detail = (f"{deepspeed.__version__} imports with ZeRO stages 1-2; engine {engine!r}, "
              f"zero_stage {train.runtime.zero_stage}")
    if engine == "deepspeed" and train.runtime.device == "cpu":
        # Seen on the local cluster: two CPU ranks make DeepSpeed compile its shared-memory
        # communication op (deepspeed_shm_comm) at the first training, with ninja and c++.
        missing = [tool for tool in ("ninja", "c++") if shutil.which(tool) is None]
        if missing:
            return Check("deepspeed", "WARN", f"{detail}; {' and '.join(missing)} not on PATH: "
                         "DeepSpeed on CPU compiles an op at its first multi-process training: "
                         "install them (apt-get install ninja-build g++) or use engine: torch")
        detail += "; on CPU it compiles deepspeed_shm_comm once (minutes) at the first training"
    return Check("deepspeed", "OK", detail)


DIST_PROBE = """import sys, torch, torch.distributed as dist
backend, port = sys.argv[1], sys.argv[2]
dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
t = torch.ones(1, device="cuda" if backend == "nccl" else "cpu")
dist.all_reduce(t)
dist.destroy_process_group()
print(f"all_reduce gave {t.item():g}")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_distributed(backend: str) -> Check:
    """A world-size-1 process group of `backend` (nccl on CUDA, gloo on CPU) and one all_reduce,
    in a child process so that nothing stays initialised here."""
    proc = subprocess.run([sys.executable, "-c", DIST_PROBE, backend, str(_free_port())],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode == 0 and "all_reduce gave 1" in proc.stdout:
        return Check("distributed", "OK", f"{backend}: a world-size-1 group initialises and "
                     "all-reduces")
    error = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
    fix = ("nccl needs a CUDA device and torch's CUDA build: run on a GPU node"
           if backend == "nccl" else "check that 127.0.0.1 is reachable and torch was built "
           "with gloo")
    return Check("distributed", "FAIL", f"{backend} does not initialise ({error}): {fix}")


def check_budget(train: Any) -> Check:
    """The corpus's training tokens against the preset's token budget."""
    from evolve.config.loading import ConfigError
    from evolve.train.budget import check_token_budget

    if train.lm is None:
        return Check("budget", "OK", "no lm track")
    try:
        check_token_budget(train)
    except ConfigError as exc:
        return Check("budget", "FAIL", str(exc))
    return Check("budget", "OK", f"corpus {train.data.corpus!r} holds the lm track's budget "
                 f"within data.max_epochs={train.data.max_epochs:g}")


SHADOW_PROBE = """import importlib.util, sys
for name in sys.argv[1:]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    places = list(spec.submodule_search_locations or []) if spec else []
    origin = spec.origin if spec and spec.origin not in (None, "namespace") else ""
    print(name, origin or ";".join(places))
"""


def check_shadowing(root: Path) -> Check:
    """Folders and .py files of `root` (where Python starts: the submit folder) that `import`
    would take for packages: an installed package of that name is hidden, and a library that
    probes for an optional package by name finds the folder."""
    names = sorted({p.stem for p in root.iterdir() if not p.name.startswith(".")
                    and (p.is_dir() or p.suffix == ".py") and p.stem.isidentifier()} - {"evolve"})
    proc = subprocess.run([sys.executable, "-c", SHADOW_PROBE, *names], cwd=root,
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    found = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    here = root.resolve()
    inside = [n for n in names if any(Path(loc).resolve() in (here / n, here / f"{n}.py",
                                                               here / n / "__init__.py")
                                      for loc in found.get(n, "").split(";") if loc)]
    if not inside:
        safe = " (PYTHONSAFEPATH is set)" if os.environ.get("PYTHONSAFEPATH") else ""
        return Check("shadowing", "OK", f"no folder of {root} is imported as a package{safe}")
    installed = importlib.metadata.packages_distributions()
    hidden = [n for n in inside if n in installed]
    text = (f"from {root}, `import` finds the folders {', '.join(inside)} of this repository"
            + (f", hiding the installed {', '.join(hidden)}" if hidden else "")
            + ": set PYTHONSAFEPATH=1 (in the site file's setup: line, e.g. "
            "`setup: export PYTHONSAFEPATH=1`, and in your shell)")
    return Check("shadowing", "FAIL" if hidden else "WARN", text)


def check_seccomp() -> Check:
    """The sandbox's seccomp layer installed in a child process, which then tries a mkdir."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-c", SECCOMP_PROBE, tmp], capture_output=True,
                              text=True, timeout=60)
        lines = proc.stdout.splitlines() or [f"no output: {proc.stderr.strip()[-300:]}"]
    if lines[0].startswith("on") and lines[1:] == ["mkdir refused"]:
        return Check("seccomp", "OK", f"{lines[0]}; a mkdir under it is refused")
    if lines[0].startswith("off"):
        return Check("seccomp", "FAIL", f"the gate sandbox's seccomp layer is {lines[0]}")
    return Check("seccomp", "FAIL", f"{' | '.join(lines)}: the filter does not hold")


def check_slurm_names(launch: Any) -> Check:
    """The launch section's partition in `sinfo` and its account in the user's associations."""
    if launch.executor != "slurm":
        return Check("slurm_names", "OK", f"executor {launch.executor!r}: no partition or "
                     "account to check")
    if shutil.which("sinfo") is None:
        return Check("slurm_names", "WARN", "sinfo is not on PATH: partition and account "
                     "cannot be checked from here")
    problems = []
    if launch.partition:
        rc, out = command(["sinfo", "-h", "-o", "%R"])
        known = out.replace("|", " ").split()
        if rc == 0 and launch.partition not in known:
            problems.append(f"partition {launch.partition!r} is not one of this cluster's "
                            f"({', '.join(known)}): fix launch.partition")
    if launch.account and shutil.which("sacctmgr"):
        user = os.environ.get("USER") or getpass.getuser()
        rc, out = command(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}",
                           "format=account"])
        accounts = sorted(set(out.replace("|", " ").split()))
        if rc == 0 and launch.account not in accounts:
            problems.append(f"account {launch.account!r} is not associated with user {user} "
                            f"(theirs: {', '.join(accounts) or 'none'}): fix launch.account, "
                            "or ask the admins to add the association")
    if problems:
        return Check("slurm_names", "FAIL", "; ".join(problems))
    return Check("slurm_names", "OK", f"partition {launch.partition or '(default)'}, account "
                 f"{launch.account or '(default)'} are known to Slurm")


def cluster_checks(cfg: Any) -> list[tuple[str, Callable[[], Check]]]:
    """The checks for the run config `cfg` (a RunConfig), in order."""
    train = cfg.train
    backend = "nccl" if train.runtime.device == "cuda" else "gloo"
    return [("gpu", lambda: check_gpu(train, cfg.preset)),
            ("deepspeed", lambda: check_deepspeed(train)),
            ("distributed", lambda: check_distributed(backend)),
            ("budget", lambda: check_budget(train)),
            ("shadowing", lambda: check_shadowing(Path.cwd())),
            ("seccomp", check_seccomp),
            ("slurm_names", lambda: check_slurm_names(cfg.launch))]
