"""A seccomp-BPF filter that stops a process from creating processes, opening sockets or
changing the filesystem, built with ctypes (the standard library has no seccomp module).

    status = install_filter()     # "on (x86_64, 58 syscalls filtered)" or "off: <why>"

Installed by the sandboxed gate child after torch is imported and before the candidate's code
runs; it holds for every thread of the process (SECCOMP_FILTER_FLAG_TSYNC) and for root too.
Blocked calls fail with EPERM (ENOSYS for clone3, so that glibc falls back to clone, whose
flags a filter can read: threads are allowed, new processes are not). Only x86_64 is
supported: syscall numbers differ per architecture and an untested table would be a guess.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
CLONE_THREAD = 0x00010000
# open/openat flags that create, truncate or allow writing; O_TMPFILE's own bit included.
WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000 | 0o20000000

# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl).
DENY_X86_64 = {
    "creat": 85, "mkdir": 83, "mkdirat": 258, "rmdir": 84, "unlink": 87, "unlinkat": 263,
    "rename": 82, "renameat": 264, "renameat2": 316, "link": 86, "linkat": 265, "symlink": 88,
    "symlinkat": 266, "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452,
    "chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260, "truncate": 76, "ftruncate": 77,
    "mknod": 133, "mknodat": 259, "utime": 132, "utimes": 235, "utimensat": 280,
    "futimesat": 261, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197,
    "lremovexattr": 198, "fremovexattr": 199, "mount": 165, "umount2": 166, "pivot_root": 155,
    "chroot": 161, "swapon": 167, "swapoff": 168, "fork": 57, "vfork": 58, "execve": 59,
    "execveat": 322, "socket": 41, "socketpair": 53, "ptrace": 101, "process_vm_readv": 310,
    "process_vm_writev": 311, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "name_to_handle_at": 303, "open_by_handle_at": 304, "tkill": 200,
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "keyctl": 250,
    "add_key": 248, "request_key": 249, "setns": 308, "unshare": 272, "acct": 163,
    "reboot": 169,
}
NR_OPEN, NR_OPENAT, NR_OPENAT2, NR_CLONE, NR_CLONE3 = 2, 257, 437, 56, 435
NR_KILL, NR_TGKILL = 62, 234

BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_JSET_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
OFF_NR, OFF_ARCH = 0, 4


def _arg(i: int) -> int:
    """Offset of the low 32 bits of syscall argument i in struct seccomp_data (little endian)."""
    return 16 + 8 * i


class _Program:
    """A BPF program with symbolic forward jumps, resolved when assembled."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | int, str | int, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, (code, jt, jf, k) in enumerate(self.code):
            offs = []
            for target in (jt, jf):
                off = self.labels[target] - pc - 1 if isinstance(target, str) else target
                if not 0 <= off <= 255:
                    raise AssertionError(f"BPF jump out of range at {pc}: {off}")
                offs.append(off)
            out += struct.pack("HBBI", code, offs[0], offs[1], k & 0xFFFFFFFF)
        return bytes(out)


def build_program(pid: int) -> bytes:
    """The filter for x86_64; `pid` is the only process kill/tgkill may signal."""
    p = _Program()
    p.op(BPF_LD_W_ABS, OFF_ARCH)
    p.op(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0)
    p.op(BPF_RET_K, RET_KILL_PROCESS)  # a 32-bit or foreign-ABI syscall: nothing legitimate
    p.op(BPF_LD_W_ABS, OFF_NR)
    p.op(BPF_JGE_K, X32_SYSCALL_BIT, "deny", 0)
    p.op(BPF_JEQ_K, NR_OPEN, "open", 0)
    p.op(BPF_JEQ_K, NR_OPENAT, "openat", 0)
    p.op(BPF_JEQ_K, NR_CLONE, "clone", 0)
    p.op(BPF_JEQ_K, NR_KILL, "signal", 0)
    p.op(BPF_JEQ_K, NR_TGKILL, "signal", 0)
    p.op(BPF_JEQ_K, NR_CLONE3, "enosys", 0)
    p.op(BPF_JEQ_K, NR_OPENAT2, "enosys", 0)
    for nr in sorted(set(DENY_X86_64.values())):
        p.op(BPF_JEQ_K, nr, "deny", 0)
    p.op(BPF_RET_K, RET_ALLOW)
    p.label("open")
    p.op(BPF_LD_W_ABS, _arg(1))
    p.op(BPF_JSET_K, WRITE_FLAGS, "deny", "allow")
    p.label("openat")
    p.op(BPF_LD_W_ABS, _arg(2))
    p.op(BPF_JSET_K, WRITE_FLAGS, "deny", "allow")
    p.label("clone")
    p.op(BPF_LD_W_ABS, _arg(0))
    p.op(BPF_JSET_K, CLONE_THREAD, "allow", "deny")
    p.label("signal")  # kill(pid, sig) and tgkill(tgid, tid, sig): only this process
    p.op(BPF_LD_W_ABS, _arg(0))
    p.op(BPF_JEQ_K, pid, "allow", "deny")
    p.label("allow")
    p.op(BPF_RET_K, RET_ALLOW)
    p.label("deny")
    p.op(BPF_RET_K, RET_ERRNO | errno.EPERM)
    p.label("enosys")
    p.op(BPF_RET_K, RET_ERRNO | errno.ENOSYS)
    return p.assemble()


def install_filter() -> str:
    """Install the filter on every thread of this process; returns a status line."""
    machine = platform.machine()
    if machine != "x86_64":
        return f"off: seccomp filter supports x86_64 only, this is {machine}"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.restype = ctypes.c_int
    code = build_program(os.getpid())
    buf = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    pr_set_no_new_privs = 38
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
        return f"off: prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}"
    nr_seccomp, set_mode_filter, flag_tsync = 317, 1, 1
    rc = libc.syscall(nr_seccomp, set_mode_filter, flag_tsync, ctypes.byref(prog))
    if rc != 0:
        return f"off: seccomp(SET_MODE_FILTER, TSYNC) failed: rc={rc}, " \
               f"{os.strerror(ctypes.get_errno())}"
    return f"on (x86_64, {len(DENY_X86_64) + 6} syscalls filtered)"
