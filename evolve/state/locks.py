"""Inter-process locks on the shared filesystem, built on `filelock`.

Usage::

    lock = RunLock(run_dir / "locks" / "cognition.lock", kind="file", timeout_s=60)
    with lock:
        ...  # read-modify-write under the lock

Two kinds:

- ``file`` (default): `filelock.FileLock`, an ``flock`` on the lock file. The kernel releases it
  when the holder dies, so a killed driver never leaves a stale lock. Works on local disks and on
  NFSv4 / Lustre / GPFS mounts where ``flock`` is enabled.
- ``soft``: `filelock.SoftFileLock`, for filesystems where ``flock`` is missing or silently
  local-only (some NFS mounts with ``nolock``, some FUSE filesystems). The lock is the existence
  of the file, which records the holder's pid and host. A holder that died on *this* host is
  detected and its lock broken (filelock does the breaking; this module reports it through
  ``on_break`` so the run's journal shows who died holding what). A holder on another host
  cannot be probed: waiting for it ends in `LockTimeoutError` naming the host, pid and file, and
  a person must remove the file once they know the process is gone.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

import filelock

from evolve import EvolveError

LOCK_KINDS = ("file", "soft")

log = logging.getLogger(__name__)


class LockTimeoutError(EvolveError, TimeoutError):
    """A lock was not acquired in time; the message names the file and, if known, the holder."""


def read_holder(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The holder recorded in a soft lock file, as {"pid", "host"}, or None if unreadable.

    filelock writes ``pid\\nhost\\n[start token]\\n``; anything else (an empty marker written by an
    old filelock, a half-written file) reads as None.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(1024).splitlines()
    except OSError:
        return None
    if len(lines) < 2 or not lines[0].strip().isdigit():
        return None
    return {"pid": int(lines[0]), "host": lines[1].strip()}


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (zombies count as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            # The state letter follows the parenthesised command name, which may contain spaces.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _same_host(host: str) -> bool:
    # filelock may record a container-qualified name; compare the leading label too.
    here = socket.gethostname()
    return host == here or host.split(".")[0] == here.split(".")[0] or host.startswith(here + "@")


class RunLock:
    """A named inter-process lock (context manager); see the module docstring for the kinds.

    `on_break` is called with {"lock", "pid", "host"} after this process acquired a soft lock
    whose previous holder had died on this host without releasing it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        kind: str = "file",
        timeout_s: float = 60.0,
        mode: int | None = None,
        on_break: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if kind not in LOCK_KINDS:
            raise ValueError(f"lock kind {kind!r} is not valid; choose one of: {', '.join(LOCK_KINDS)}")
        self.path = Path(path)
        self.kind = kind
        self.timeout_s = timeout_s
        self.on_break = on_break
        cls = filelock.FileLock if kind == "file" else filelock.SoftFileLock
        # thread_local=False: the same RunLock object may be entered from any thread of the driver.
        self._lock = cls(str(self.path), timeout=timeout_s, mode=-1 if mode is None else mode,
                         thread_local=False)

    @property
    def is_locked(self) -> bool:
        """Whether this object currently holds the lock."""
        return bool(self._lock.is_locked)

    def acquire(self, timeout_s: float | None = None) -> None:
        """Block until the lock is held, or raise LockTimeoutError after `timeout_s` seconds."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stale = self._stale_holder() if self.kind == "soft" else None
        try:
            self._lock.acquire(timeout=timeout)
        except filelock.Timeout:
            holder = read_holder(self.path) if self.kind == "soft" else None
            who = f"; held by pid {holder['pid']} on host {holder['host']}" if holder else ""
            hint = (" (a holder on another host cannot be checked: remove the file once that"
                    " process is known to be gone)" if holder and not _same_host(holder["host"]) else "")
            raise LockTimeoutError(
                f"could not acquire {self.kind} lock {self.path} within {timeout:g}s{who}{hint}"
            ) from None
        if stale is not None:
            event = {"lock": str(self.path), **stale}
            log.warning("broke stale lock %s held by dead pid %s on %s", self.path, stale["pid"],
                        stale["host"])
            if self.on_break is not None:
                self.on_break(event)

    def _stale_holder(self) -> dict[str, Any] | None:
        holder = read_holder(self.path)
        if holder is None or not _same_host(holder["host"]) or pid_alive(holder["pid"]):
            return None
        return holder

    def release(self) -> None:
        """Release the lock (a no-op when not held)."""
        self._lock.release()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"RunLock({str(self.path)!r}, kind={self.kind!r}, locked={self.is_locked})"
