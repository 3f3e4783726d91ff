"""Atomic file writes, JSON reading with located errors, and the state exceptions.

Usage::

    atomic_write_json(path, {"loss": 1.2})   # readers see the old file or the new one, never a part
    data = read_json(path, default=None)    # a broken file raises StateError naming file:line:col

A job writes its result file with `atomic_write_json`; it needs nothing else from the store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from evolve import EvolveError


class StateError(EvolveError, RuntimeError):
    """Run state on disk is missing, invalid or inconsistent; the message names the file."""


class NotARunError(StateError):
    """A directory given as a run is not an evolve run (it has no run.yaml)."""


class ConfigMismatchError(StateError):
    """A run was resumed with a config that differs from its frozen run.yaml.

    `keys` lists the differing dotted keys, e.g. ["train.optim.lr", "launch.partition"].
    """

    def __init__(self, message: str, keys: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = list(keys)

    def __reduce__(self) -> tuple[Any, ...]:
        # Extra constructor arguments must be spelled out, or unpickling (in the driver reading a
        # job's result) fails with a TypeError.
        return (type(self), (str(self), self.keys))


class JournalCorruptError(StateError):
    """A line of journal.jsonl other than a torn last line does not parse; `line` is 1-based."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.line))


def fsync_dir(path: Path) -> None:
    """fsync a folder, making the names created or renamed in it durable."""
    # The rename is durable only once the directory entry is; some filesystems refuse O_RDONLY dirs.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None,
                       fsync: bool = True) -> None:
    """Write `data` to `path` so that readers see the old or the new file, never a part.

    The temp file lives in the same folder (a rename across filesystems is not atomic). `mode`
    sets the permissions explicitly; else they follow the umask, like a plain open().
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp.{os.getpid()}.{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if mode is not None else 0o666)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int | None = None,
                      fsync: bool = True) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode, fsync=fsync)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, mode: int | None = None,
                      fsync: bool = True) -> None:
    """Write `obj` as indented JSON, atomically (see `atomic_write_bytes`)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n"
    except TypeError as exc:
        raise TypeError(f"cannot write {path}: {exc}") from exc
    atomic_write_text(path, text, mode=mode, fsync=fsync)


def read_json(path: str | os.PathLike[str], default: Any = ...) -> Any:
    """Read a JSON file; `default` (if given) is returned when the file does not exist.

    A file that does not parse raises StateError naming the file, line and column.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if default is ...:
            raise StateError(f"{path}: no such file") from None
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None


def plain(value: Any, where: str = "config") -> Any:
    """`value` as plain YAML/JSON data (dicts with str keys, lists, scalars); tuples become lists.

    Raises StateError naming the dotted key of the first value that is not plain data.
    """
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise StateError(f"{where}: key {k!r} is not a string")
            out[k] = plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise StateError(f"{where}: {type(value).__name__} is not plain data (dict, list, str, number)")


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs, sorted; [] when equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys: list[str] = []
        for k in sorted(set(old) | set(new)):
            dotted = f"{prefix}.{k}" if prefix else k
            if k not in old or k not in new:
                keys.append(dotted)
            else:
                keys.extend(config_diff(old[k], new[k], dotted))
        return keys
    if isinstance(old, float) and isinstance(new, float) and old != old and new != new:
        return []  # NaN == NaN for this purpose
    return [] if old == new else [prefix or "<root>"]
