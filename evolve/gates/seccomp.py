"""A seccomp filter that stops a process from creating processes, opening sockets or changing
the filesystem, built by libseccomp (through `pyseccomp`) for the machine it runs on.

    status = install_filter()     # "on (x86_64 via libseccomp, 77 syscalls filtered)" or "off: ..."
    status = probe()              # the same policy built (not loaded): what `evolve doctor` says

Installed by the sandboxed gate child after torch is imported and before the candidate's code
runs; it holds for every thread of the process (TSYNC) and for root too. Blocked calls fail
with EPERM (ENOSYS for clone3 and openat2, so that glibc falls back to clone and openat, whose
arguments a filter can read: threads are allowed, new processes are not). The policy names
syscalls; libseccomp maps them to this architecture's numbers (a name the architecture lacks,
such as `fork` on aarch64, is skipped by libseccomp) and kills the process on a syscall of a
foreign ABI (32-bit or x32 on x86_64). Two facts are read from the host rather than named:
the open flags (Python's os.O_*), and clone's flags being its first argument, as on x86_64 and
aarch64 (s390 swaps the first two: a filter there would need that one exception). Where
libseccomp cannot be loaded the layer is off and the status says so and how to fix it; the
other sandbox layers still hold.
"""

from __future__ import annotations

import errno
import os
import platform
from typing import Any

# Refused outright (EPERM). Names, not numbers: libseccomp owns the per-architecture tables.
DENY = (
    "creat", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat",
    "renameat2", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat",
    "fchmodat2", "chown", "fchown", "lchown", "fchownat", "truncate", "ftruncate", "mknod",
    "mknodat", "utime", "utimes", "utimensat", "futimesat", "setxattr", "lsetxattr",
    "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "mount", "umount2",
    "pivot_root", "chroot", "swapon", "swapoff", "fork", "vfork", "execve", "execveat",
    "socket", "socketpair", "ptrace", "process_vm_readv", "process_vm_writev",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "name_to_handle_at",
    "open_by_handle_at", "tkill", "bpf", "perf_event_open", "userfaultfd", "kexec_load",
    "init_module", "finit_module", "delete_module", "keyctl", "add_key", "request_key",
    "setns", "unshare", "acct", "reboot",
)
# Answered ENOSYS: the C library then falls back to a call whose arguments the filter reads.
FALL_BACK = ("clone3", "openat2")
# open/openat flags that create, truncate or allow writing, as this platform defines them;
# O_TMPFILE without the O_DIRECTORY bit it includes.
WRITE_FLAGS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC,
               getattr(os, "O_TMPFILE", 0) & ~os.O_DIRECTORY)
CLONE_THREAD = 0x00010000
FIX = ("install the system's libseccomp (Debian/Ubuntu: apt-get install libseccomp2; "
       "RHEL/Rocky: dnf install libseccomp) and the Python package pyseccomp")


_load_error: str | None = None
"""Why pyseccomp could not be imported the first time (a later try can fail differently)."""


def preload() -> None:
    """Import pyseccomp now: its import runs ldconfig to find libseccomp and reads files, which
    the sandbox child can do only before it drops privileges; a failure is kept for the status."""
    global _load_error
    try:
        _library()
    except (ImportError, OSError, RuntimeError) as exc:
        _load_error = f"{type(exc).__name__}: {exc}"


def _library() -> Any:
    """The pyseccomp module; raises ImportError/OSError/RuntimeError when libseccomp is absent."""
    if _load_error is not None:
        raise ImportError(_load_error)
    import pyseccomp  # loads libseccomp.so at import time

    return pyseccomp


def build_filter(pid: int, arch: int | None = None) -> tuple[Any, list[str], list[str]]:
    """The policy as a pyseccomp.SyscallFilter (not loaded), the names it filters and the
    names this libseccomp does not know. `arch` builds it for another architecture (a
    pyseccomp.Arch value) instead of this one, to inspect with export_pfc."""
    sc = _library()
    target = sc.Arch.NATIVE if arch is None else arch
    filt = sc.SyscallFilter(sc.ALLOW)
    if arch is not None:
        filt.add_arch(arch)
        filt.remove_arch(sc.Arch.NATIVE)
    filt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)  # nothing legitimate uses another ABI
    filt.set_attr(sc.Attr.CTL_TSYNC, 1)
    filtered: set[str] = set()
    unknown: set[str] = set()

    def rule(action: int, name: str, *args: Any) -> None:
        number = sc.resolve_syscall(target, name)
        if number == -1:  # __NR_SCMP_ERROR: a libseccomp older than the syscall
            unknown.add(name)
        elif number >= 0:  # negative: a syscall this architecture does not have
            filt.add_rule(action, name, *args)
            filtered.add(name)

    eperm = sc.ERRNO(errno.EPERM)
    for name in DENY:
        rule(eperm, name)
    for name in FALL_BACK:
        rule(sc.ERRNO(errno.ENOSYS), name)
    for name, flags_arg in (("open", 1), ("openat", 2)):
        for bit in (b for b in WRITE_FLAGS if b):
            rule(eperm, name, sc.Arg(flags_arg, sc.MASKED_EQ, bit, bit))
    rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))  # a process, not a thread
    for name in ("kill", "tgkill"):  # kill(pid, sig), tgkill(tgid, tid, sig): only this process
        rule(eperm, name, sc.Arg(0, sc.NE, pid))
    return filt, sorted(filtered), sorted(unknown)


def _build_here() -> tuple[Any, str]:
    """This process's filter and its status line, or None and an "off: ..." line."""
    try:
        filt, filtered, unknown = build_filter(os.getpid())
    except (ImportError, OSError, RuntimeError) as exc:
        why = _load_error or f"{type(exc).__name__}: {exc}"
        return None, f"off: libseccomp cannot be loaded ({why}); {FIX}"
    status = f"on ({platform.machine()} via libseccomp, {len(filtered)} syscalls filtered"
    return filt, status + (f"; unknown to this libseccomp: {', '.join(unknown)})"
                           if unknown else ")")


def probe() -> str:
    """What install_filter would report, without loading anything into this process."""
    return _build_here()[1]


def install_filter() -> str:
    """Install the filter on every thread of this process; returns a status line."""
    filt, status = _build_here()
    if filt is None:
        return status
    try:
        filt.load()  # sets no_new_privs first (libseccomp's default)
    except OSError as exc:
        return f"off: seccomp_load failed: {exc}"
    return status
