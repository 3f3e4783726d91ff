"""Run the CHECK gates on one mixer file in a child process that cannot harm the machine.

    report = run_sandboxed(path, CheckConfig(), model_cfg, GATES)   # parent side

The parent never reads the candidate: it starts `python -I -B -c ...` in a new session, with
the candidate's folder as working directory, a scrubbed environment (HOME and TMPDIR point
nowhere, proxies point at a closed port), and reads JSON events from a pipe: `start` when a
gate begins, `verdict` when it ends, `sandbox` with the isolation the child applied. A gate
that outlives its wall-clock limit has its whole process group killed, and fails.

The child (`child_main`) runs the static gates first (no torch, so cheap rejections are
cheap), then imports torch, and then, before any line of the candidate runs:
RLIMIT_CORE=0, RLIMIT_FSIZE, RLIMIT_CPU, RLIMIT_AS (torch's own address space plus
memory_limit_mb); drops root to `sandbox_user` (so RLIMIT_NPROC and file permissions apply);
installs the seccomp filter of `evolve.gates.seccomp` (no processes, sockets or filesystem changes,
for root too); and adds a Python audit hook that refuses the same operations with a readable
message. docs/GATES.md says what each layer does and does not hold.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from evolve.gates.check import GATES, REQUIRES, STATIC_GATES, CheckConfig, CheckReport, Verdict
from evolve.model.config import ModelConfig

LOG_TAIL_BYTES = 8192
MAX_EVENT_BYTES = 16 * 2**20
DISCARD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, connections fail


def _child_env() -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "TMPDIR": "/nonexistent",
           "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0"}
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY"):
        env[var] = DISCARD_PROXY
    if "LD_LIBRARY_PATH" in os.environ:  # cluster module systems put libraries there
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


def run_sandboxed(path: Path, cfg: CheckConfig, model: ModelConfig,
                  gates: tuple[str, ...] = GATES) -> CheckReport:
    """Run `gates` (in GATES order) on the mixer file `path` in a sandboxed child."""
    import dataclasses

    start = time.monotonic()
    request = {"path": str(path), "gates": list(gates), "cfg": dataclasses.asdict(cfg),
               "model": dataclasses.asdict(model)}
    read_fd, write_fd = os.pipe()
    # The child imports evolve exactly as this process does (-I drops PYTHONPATH and the
    # current directory, which is the candidate's folder and must not shadow any module).
    boot = ("import sys; sys.path[:0] = " + repr([p for p in sys.path if os.path.isabs(p)]) +
            "; from evolve.gates.sandbox import child_main; raise SystemExit(child_main(sys.argv[1:]))")
    proc = subprocess.Popen(
        [sys.executable, "-I", "-B", "-c", boot, json.dumps(request), str(write_fd)],
        cwd=path.parent, env=_child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, pass_fds=(write_fd,), start_new_session=True)
    os.close(write_fd)
    watch = _Watch(proc, read_fd, cfg)
    try:
        watch.run()
    finally:
        os.close(read_fd)
        if proc.stdout:
            proc.stdout.close()
    report = CheckReport(path=str(path), verdicts=watch.verdicts,
                         sandbox=watch.sandbox_info(gates))
    report.elapsed_s = time.monotonic() - start
    return report


class _Watch:
    """Reads the child's events and output; kills its process group past a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes], event_fd: int, cfg: CheckConfig) -> None:
        self.proc, self.event_fd, self.cfg = proc, event_fd, cfg
        self.verdicts: list[Verdict] = []
        self.layers: dict[str, Any] = {}
        self.phase, self.phase_start = "startup", time.monotonic()
        self.killed_for: str | None = None
        self.log = bytearray()
        self.log_total = 0
        self.pending = b""
        self.child_error: str | None = None

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        sel.register(self.event_fd, selectors.EVENT_READ, "events")
        sel.register(self.proc.stdout.fileno(), selectors.EVENT_READ, "log")
        open_fds = 2
        while open_fds:
            deadline = self.phase_start + self.cfg.timeout_for(self.phase)
            ready = sel.select(timeout=max(0.0, min(deadline - time.monotonic(), 1.0)))
            for key, _ in ready:
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                    open_fds -= 1
                elif key.data == "events":
                    self._events(data)
                else:
                    self._log(data)
            if self.killed_for is None and time.monotonic() > deadline:
                self.killed_for = self.phase
                self._kill()
        sel.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._kill()
            self.proc.wait()
        self._close_open_gate()

    def _kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _log(self, data: bytes) -> None:
        self.log_total += len(data)
        self.log += data
        del self.log[:-LOG_TAIL_BYTES]

    def _events(self, data: bytes) -> None:
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        if len(self.pending) > MAX_EVENT_BYTES:
            lines, self.pending = [b"not an event"], b""
        for line in lines:
            try:
                event = json.loads(line)
                kind = event.pop("event")
            except (ValueError, AttributeError, KeyError):
                # Only the gate runner writes here; anything else means the child is not sane.
                self.child_error = f"unreadable event from the child: {line[:200]!r}"
                self._kill()
                return
            if kind == "start":
                self.phase, self.phase_start = event["gate"], time.monotonic()
            elif kind == "verdict":
                self.verdicts.append(Verdict.from_dict(event))
                self.phase, self.phase_start = "between", time.monotonic()
            elif kind == "sandbox":
                self.layers.update(event)
            elif kind == "error":
                self.child_error = event["message"]

    def _close_open_gate(self) -> None:
        """Turn a child that died inside a gate into that gate's failure."""
        rc = self.proc.returncode
        gate = self.phase
        if gate in GATES and all(v.gate != gate for v in self.verdicts):
            self.verdicts.append(Verdict(gate=gate, passed=False, message=self._death(gate, rc),
                                         measured={"exit_status": rc},
                                         elapsed_s=time.monotonic() - self.phase_start))

    def _death(self, gate: str, rc: int | None) -> str:
        if self.killed_for == gate:
            return (f"the {gate} gate ran past its wall-clock limit of "
                    f"{self.cfg.timeout_for(gate):.0f} s and the process was killed: an endless "
                    "loop, or far too slow for the small inputs of the gates")
        if rc is not None and rc < 0:
            sig = signal.Signals(-rc).name
            if sig == "SIGXCPU":
                return (f"the process used its CPU-time limit of {self.cfg.cpu_limit_s} s "
                        f"during the {gate} gate and was killed")
            return (f"the process died of {sig} during the {gate} gate (a crash in native code, "
                    "or the kernel's OOM killer)")
        tail = self.log.decode("utf-8", "replace").strip()[-1500:]
        return f"the process exited with status {rc} during the {gate} gate; its output:\n{tail}"

    def sandbox_info(self, gates: tuple[str, ...]) -> dict[str, Any]:
        info: dict[str, Any] = {"layers": self.layers, "exit_status": self.proc.returncode,
                                "output_bytes": self.log_total,
                                "output_tail": self.log.decode("utf-8", "replace")[-2000:]}
        if self.killed_for == "startup" or (self.phase == "startup" and
                                            self.proc.returncode != 0):
            info["incomplete"] = (f"the sandbox did not start (exit status "
                                  f"{self.proc.returncode}): {self.child_error or ''}"
                                  f"{info['output_tail'][-800:]}")
        elif self.child_error:
            info["incomplete"] = f"internal error in the gate runner: {self.child_error}"
        elif all(v.passed for v in self.verdicts):
            missing = [g for g in gates if all(v.gate != g for v in self.verdicts)]
            if missing:
                info["incomplete"] = (f"the child stopped (exit status {self.proc.returncode}) "
                                      f"before the gates {', '.join(missing)}")
        return info


class _Emitter:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, event: str, **fields: Any) -> None:
        data = (json.dumps({"event": event, **fields}, default=str) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]


def _set_limit(which: int, soft: int, hard: int | None = None) -> None:
    import resource

    current_hard = resource.getrlimit(which)[1]
    hard = soft if hard is None else hard
    if current_hard != resource.RLIM_INFINITY:
        hard, soft = min(hard, current_hard), min(soft, current_hard)
    resource.setrlimit(which, (soft, hard))


def _early_limits(cfg: CheckConfig) -> None:
    import resource

    _set_limit(resource.RLIMIT_CORE, 0)
    # Nothing in a gate writes a file; the seccomp filter already refuses to open one, and a
    # write to an inherited file would fail with EFBIG (SIGXFSZ ignored, so it is an OSError).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _set_limit(resource.RLIMIT_FSIZE, 0)
    _set_limit(resource.RLIMIT_CPU, cfg.cpu_limit_s, cfg.cpu_limit_s + 5)


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _tasks_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1 0").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


def _drop_privileges(user: str) -> str:
    import pwd
    import resource

    if os.geteuid() != 0:
        return f"kept uid {os.geteuid()} (not root)"
    if not user:
        return "kept root (sandbox_user is empty)"
    pw = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    # Threads count too; the seccomp filter is what stops new processes, this is the backstop.
    limit = _tasks_of(pw.pw_uid) + 32
    _set_limit(resource.RLIMIT_NPROC, limit)
    return f"uid {pw.pw_uid} ({user}), RLIMIT_NPROC {limit}"


_WRITE_MODES = set("wax+")
_BLOCKED_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                   "subprocess.Popen", "pty.spawn", "os.killpg", "socket.__new__",
                   "socket.connect", "socket.bind", "os.remove", "os.rename", "os.rmdir",
                   "os.mkdir", "os.symlink", "os.link", "os.chmod", "os.chown", "os.truncate",
                   "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
                   "tempfile.mkstemp", "tempfile.mkdtemp")


def _audit_hook(event: str, args: tuple[Any, ...]) -> None:
    # Readable refusals at the Python level; the seccomp filter refuses the same in the kernel.
    if event == "open":
        mode, flags = (args[1], args[2]) if len(args) >= 3 else (None, 0)
        writes = (isinstance(mode, str) and bool(_WRITE_MODES & set(mode))) or \
            (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT |
                                                 os.O_TRUNC | os.O_APPEND))
        if writes:
            raise PermissionError(f"blocked by the evolve sandbox: open({args[0]!r}, "
                                  f"{mode!r}) for writing; a mixer writes no files")
    elif event in _BLOCKED_EVENTS or (event == "os.kill" and args and args[0] != os.getpid()):
        raise PermissionError(f"blocked by the evolve sandbox: {event}; a mixer starts no "
                              "processes, opens no sockets and changes no files")


def _isolate(cfg: CheckConfig) -> dict[str, Any]:
    """Everything after torch is imported and before the candidate runs."""
    import resource

    from evolve.gates.seccomp import install_filter, preload

    preload()  # before the privilege drop: the library is found by reading files as root
    address_space = _address_space()
    limit = address_space + cfg.memory_limit_mb * 2**20
    _set_limit(resource.RLIMIT_AS, limit)
    info: dict[str, Any] = {
        "rlimit_as_mb": limit // 2**20, "torch_address_space_mb": address_space // 2**20,
        "rlimit_cpu_s": cfg.cpu_limit_s, "rlimit_fsize": 0, "rlimit_core": 0,
        "user": _drop_privileges(cfg.sandbox_user),
    }
    info["seccomp"] = install_filter()
    sys.addaudithook(_audit_hook)
    info["audit_hook"] = "on"
    return info


def _preload() -> None:
    """Import what a mixer may import while files are still readable, and warm torch up."""
    import importlib
    import pkgutil

    import einops  # noqa: F401
    import torch
    import torch.nn.functional  # noqa: F401
    import torch.utils._python_dispatch  # noqa: F401  (used by the cost gate)

    import evolve.kernels
    import evolve.model.lm  # noqa: F401  (used by the params gate)

    for info in pkgutil.walk_packages(evolve.kernels.__path__, "evolve.kernels."):
        importlib.import_module(info.name)
    torch.set_num_threads(1)  # timings of the cost gate compare lengths, not thread pools
    torch.ones(8, 8, requires_grad=True).sum().backward()


def child_main(argv: list[str]) -> int:
    """Entry point of the sandboxed child: argv = [request JSON, event pipe fd]."""
    import tempfile

    from evolve.config.loading import from_dict

    # torch's import reaches dill, which asks tempfile for a directory, and tempfile finds one
    # by writing a probe file into /tmp. A preset tempdir is returned without probing; one that
    # does not exist makes any later use fail, as it should.
    tempfile.tempdir = "/nonexistent"
    request = json.loads(argv[0])
    emit = _Emitter(int(argv[1]))
    cfg = from_dict(CheckConfig, request["cfg"], source="sandbox request")
    _early_limits(cfg)
    path = Path(request["path"])
    source = path.read_bytes()  # before dropping privileges: the folder may be private
    gates: list[str] = request["gates"]

    from evolve.gates import static as static_gates

    ctx = static_gates.Context(path=path, source=source, cfg=cfg,
                                model=ModelConfig(**request["model"]))
    started = False
    passed: dict[str, bool] = {}
    for gate in GATES:
        if gate not in gates:
            continue
        needs = [g for g in REQUIRES[gate] if g in gates]
        if not all(passed.get(g) for g in needs):
            continue
        emit("start", gate=gate)
        verdict: Verdict | None = None
        if gate == "parse":
            verdict, ctx.tree = static_gates.parse_gate(source, path, cfg)
        elif ctx.tree is None:  # gates asked for without parse: parse anyway, ungated
            _, ctx.tree = static_gates.parse_gate(source, path, cfg)
        if gate == "imports" and ctx.tree is not None:
            verdict = static_gates.imports_gate(ctx.tree, path, cfg)
        elif gate == "interface":
            verdict = static_gates.interface_precheck(ctx)
        if verdict is None and gate not in STATIC_GATES:
            if not started:
                emit("start", gate="startup")
                try:
                    _preload()
                    emit("sandbox", **_isolate(cfg))
                except Exception as exc:
                    emit("error", message=f"{type(exc).__name__}: {exc}")
                    return 2
                started = True
                emit("start", gate=gate)
            from evolve.gates import runtime as runtime_gates

            start = time.monotonic()
            verdict = runtime_gates.GATE_FUNCS[gate](ctx)
            verdict.elapsed_s = time.monotonic() - start
        assert verdict is not None
        passed[gate] = verdict.passed
        emit("verdict", **verdict.to_dict())
        if not verdict.passed and cfg.stop_at_first_failure:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
