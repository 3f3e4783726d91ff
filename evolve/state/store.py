"""The state of one run on the shared filesystem: creating, opening, writing and locking it.

Usage::

    store = Store.create("state/myrun", resolved_config_dict)   # new run, or resume (config checked)
    store = Store.open("state/myrun")                            # existing run, e.g. for `evolve status`
    cid = store.new_candidate(generation=3, parents=["c000007"])  # "c000042", folder created, journaled
    p = store.candidate(cid)                                     # CandidatePaths: p.mixer, p.result, ...
    store.write_json(p.proposal, {...})                          # temp file + fsync + rename
    store.record("proposed", cid, proposer="mutate")              # one fsynced journal line
    state = store.replay()                                       # Replay: .candidates[cid].status, ...
    with store.lock("cognition"):                                # inter-process lock (evolve.state.locks)
        ...

The layout of a run folder (every file name) is `evolve.state.layout`; `Store` is a `RunLayout`.

Writers: the driver writes the journal and candidate metadata; a job writes only inside its
own candidate folder (the result file, train/), with `atomic_write_json`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import yaml

from evolve.state.fsio import (ConfigMismatchError, JournalCorruptError, NotARunError, StateError,
                         atomic_write_bytes, atomic_write_json, atomic_write_text, config_diff,
                         plain, read_json)
from evolve.state.journal import CandidateState, Journal, Replay, replay_events
from evolve.state.layout import RUN_FOLDERS, CandidatePaths, RunLayout
from evolve.state.locks import LOCK_KINDS, LockTimeoutError, RunLock, pid_alive

log = logging.getLogger(__name__)



@dataclass(kw_only=True)
class StoreConfig:
    """How run state is written to the shared filesystem."""

    lock: str = "file"
    """Lock kind: file (flock; released by the kernel when a holder dies) or soft (a marker file
    recording host and pid, for filesystems without working flock; dead holders on this host are
    detected and their locks broken)."""
    lock_timeout_s: float = 120.0
    """Seconds to wait for a lock before failing with an error that names the holder."""
    group_shareable: bool = False
    """Make created files group-writable (umask 002, g+rw files, setgid folders) so that a lab
    group can share one state folder."""
    fsync: bool = True
    """fsync every atomic write and journal line. Turn off only for throwaway runs on slow disks."""

    def __post_init__(self) -> None:
        if self.lock not in LOCK_KINDS:
            raise ValueError(f"store.lock={self.lock!r} is not valid; choose one of: {', '.join(LOCK_KINDS)}")
        if not self.lock_timeout_s > 0:
            raise ValueError(f"store.lock_timeout_s={self.lock_timeout_s!r} must be > 0")


class Store(RunLayout):
    """One run's state folder. Build it with `Store.create` (driver) or `Store.open` (readers)."""

    def __init__(self, root: str | os.PathLike[str], cfg: StoreConfig | None = None, *,
                 writer: bool = False) -> None:
        super().__init__(root)
        self.cfg = cfg or StoreConfig()
        self._uid: str | None = None
        if self.cfg.group_shareable:
            # Process-wide on purpose: files written by submitit and by jobs (which inherit the
            # umask locally, and through SLURM_UMASK on Slurm) must be group-writable too.
            os.umask(0o002)
        self.journal = Journal(self.journal_path, fsync=self.cfg.fsync,
                               mode=self._file_mode())
        self._refuse_lost_journal()
        if writer:
            repaired = self.journal.repair_torn_tail()
            if repaired:
                self.record("journal_repaired", dropped_bytes=repaired)

    def _refuse_lost_journal(self) -> None:
        """A run whose journal is gone while candidate folders remain has lost its history:
        resuming would start it again and forget every candidate, and a view would show an
        empty run. Refuse, naming what is left."""
        if self.journal_path.exists() or not self.run_yaml.is_file():
            return
        folders = sorted(p.name for p in self.candidates_dir.glob("c*") if p.is_dir()) \
            if self.candidates_dir.is_dir() else []
        if folders:
            raise StateError(
                f"{self.journal_path} is missing, but {len(folders)} candidate folder(s) remain "
                f"({folders[0]} .. {folders[-1]}): the run's history is gone. Rebuild it "
                f"from the candidate folders with `evolve fsck {self.root} --fix`, or restore "
                "it from a backup; evolve will neither restart this run nor show it as empty.")

    # Layout: the paths come from RunLayout (evolve.state.layout).
    @property
    def uid(self) -> str:
        """A random id given to the run at creation (tells apart runs that share a name)."""
        if self._uid is None:
            with open(self.journal_path, "rb") as f:
                first = f.readline()
            try:
                self._uid = str(json.loads(first).get("uid", ""))
            except ValueError:
                self._uid = ""
        return self._uid

    # Creating and opening.
    @classmethod
    def create(cls, root: str | os.PathLike[str], config: dict[str, Any], *,
               cfg: StoreConfig | None = None, force: bool = False,
               upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
               announce: bool = True) -> Store:
        """Start a new run at `root`, or resume the run there.

        `config` is the resolved run config as a plain dict; it is frozen as run.yaml. Resuming
        with a different config raises ConfigMismatchError listing the differing keys, unless
        `force`, which adopts the new config and journals the change. `upgrade` reads a frozen
        config the way this version of evolve does (filling keys that a newer version added
        with their defaults): a key missing from run.yaml whose new value is that default is
        not a change, so a run started by an older evolve resumes under a newer one.
        `announce=False` journals no `run_resumed`: a driver records its start itself, once it
        holds the driver lock (the holder is the only writer of the journal).
        """
        root = Path(root).absolute()
        new = plain(config)
        if cls.is_run(root):
            store = cls(root, cfg, writer=True)
            old = store.config()
            # `root` is how the folder was spelled (relative to where the run was started), not
            # part of the experiment: a resume from another directory names it differently.
            keys = [k for k in config_diff(old, new) if k != "root"]
            if keys and upgrade is not None:
                try:
                    read_now = plain(upgrade(old))
                except Exception:  # noqa: BLE001 - an unreadable old config: report every key
                    read_now = None
                if read_now is not None:
                    keys = [k for k in keys if not (_dotted_get(old, k, _MISSING) is _MISSING
                                                    and _dotted_get(read_now, k)
                                                    == _dotted_get(new, k))]
            # Where the run executes (partition, account, qos, time, setup lines) is not what it
            # studies: those keys follow the run file on resume, journaled; the world size stays.
            moved = [k for k in keys if k.startswith("launch.") and k not in _WORLD_SIZE_KEYS]
            keys = [k for k in keys if k not in moved]
            if moved:
                store._write_config(_relaunched(old, new))
                store.record("launch_changed", changes={k: [_dotted_get(old, k),
                                                            _dotted_get(new, k)] for k in moved})
                old = store.config()
            if keys and not force:
                raise ConfigMismatchError(
                    f"{store.run_yaml}: the config differs from the run's frozen config in "
                    f"{len(keys)} key(s): {', '.join(keys)}. Resume with the original config, "
                    "start a new run, or force the change.", keys)
            if keys:
                changes = {k: [_dotted_get(old, k), _dotted_get(new, k)] for k in keys}
                atomic_write_text(store.run_yaml_backup(int(time.time())), _yaml(old),
                                  mode=store._file_mode(), fsync=store.cfg.fsync)
                store._write_config(new)
                store.record("config_forced", keys=keys, changes=changes)
                log.warning("run %s: config changed by force in %s", root, ", ".join(keys))
            if announce:
                store.record("run_resumed", host=socket.gethostname(), pid=os.getpid())
            return store
        if root.exists() and not root.is_dir():
            raise NotARunError(f"{root} exists and is not a directory")
        if root.is_dir() and not _is_partial_run(root):
            raise NotARunError(
                f"{root} is not empty and is not an evolve run (no run.yaml); refusing to write into "
                "it. Choose a new run name or an empty folder.")
        store = cls(root, cfg, writer=False)
        store._mkdir(root)
        for name in RUN_FOLDERS:
            store._mkdir(store.root / name)
        store.record("run_created", format=1, uid=os.urandom(4).hex(), host=socket.gethostname(),
                     pid=os.getpid())
        # run.yaml last: it marks the folder as a run, so a crash before it leaves a folder that
        # `create` can complete.
        store._write_config(new)
        return store

    @classmethod
    def open(cls, root: str | os.PathLike[str], cfg: StoreConfig | None = None, *,
             writer: bool = False) -> Store:
        """Open an existing run. `cfg` defaults to run.yaml's `store` section, if it has one.

        A reader (`writer=False`) never modifies the folder; a writer repairs a torn journal tail.
        """
        root = Path(root).absolute()
        if not cls.is_run(root):
            what = "does not exist" if not root.exists() else "has no run.yaml"
            raise NotARunError(f"{root} is not an evolve run: it {what}")
        if cfg is None:
            from evolve.config.loading import from_dict  # strict keys, errors naming run.yaml

            layout = RunLayout(root)
            section = _read_yaml(layout.run_yaml).get("store")
            cfg = (from_dict(StoreConfig, section, source=str(layout.run_yaml), prefix="store")
                   if isinstance(section, dict) else StoreConfig())
        return cls(root, cfg, writer=writer)

    def config(self) -> dict[str, Any]:
        """The frozen run config (run.yaml) as a plain dict."""
        return _read_yaml(self.run_yaml)

    def _write_config(self, config: dict[str, Any]) -> None:
        self.write_text(self.run_yaml, "# Resolved config of this run, frozen at its first start.\n"
                        + _yaml(config))

    # Writing files.
    def _file_mode(self) -> int | None:
        return 0o664 if self.cfg.group_shareable else None

    def _mkdir(self, path: Path) -> None:
        if path.is_dir():
            return
        path.mkdir(parents=True, exist_ok=True)
        if self.cfg.group_shareable:
            # setgid: files created inside inherit the folder's group, whoever creates them.
            os.chmod(path, 0o2775)

    def write_json(self, path: Path, obj: Any, *, mode: int | None = None) -> None:
        """Atomically write JSON (parent folders are created)."""
        self._mkdir(path.parent)
        atomic_write_json(path, obj, mode=mode if mode is not None else self._file_mode(),
                          fsync=self.cfg.fsync)

    def write_text(self, path: Path, text: str, *, mode: int | None = None) -> None:
        """Atomically write text (parent folders are created)."""
        self._mkdir(path.parent)
        atomic_write_text(path, text, mode=mode if mode is not None else self._file_mode(),
                          fsync=self.cfg.fsync)

    def update_json(self, path: Path, fn: Callable[[Any], Any], *, lock: str,
                    default: Any = None) -> Any:
        """Read-modify-write a JSON file under `lock(lock)`; returns what `fn` returned."""
        with self.lock(lock):
            new = fn(read_json(path, default))
            self.write_json(path, new)
            return new

    def write_endpoint(self, info: dict[str, Any]) -> None:
        """Write llm/endpoint.json with mode 0600 (it holds the API key)."""
        self.write_json(self.endpoint_path, info, mode=0o600)

    def read_endpoint(self) -> dict[str, Any] | None:
        """llm/endpoint.json, or None when no server has announced itself."""
        return read_json(self.endpoint_path, None)

    # Candidates.
    def new_candidate(self, **fields: Any) -> str:
        """Create the next candidate folder (c000000, c000001, ...) and journal its creation.

        Safe across processes: the id counter is read and bumped under lock("ids"), and the
        folder is created with an exclusive mkdir, so two callers never get the same id.
        """
        counter = self.next_id_path
        with self.lock("ids"):
            self._mkdir(self.candidates_dir)
            nxt = read_json(counter, None)
            if not isinstance(nxt, int):
                ids = self.candidate_ids()
                nxt = int(ids[-1][1:]) + 1 if ids else 0
            while True:
                cid = f"c{nxt:06d}"
                try:
                    (self.candidates_dir / cid).mkdir()
                    break
                except FileExistsError:
                    nxt += 1  # a folder the counter did not know (e.g. restored by hand)
            if self.cfg.group_shareable:
                os.chmod(self.candidates_dir / cid, 0o2775)
            self.write_json(counter, nxt + 1)
            self.record("created", cid, **fields)
        return cid

    # Journal.
    def record(self, event: str, candidate: str | None = None, **fields: Any) -> dict[str, Any]:
        """Append one event to journal.jsonl (fsynced) and return it."""
        ev: dict[str, Any] = {"t": round(time.time(), 3), "event": event}
        if candidate is not None:
            ev["candidate"] = candidate
        ev.update(fields)
        self.journal.append(ev)
        return ev

    def events(self) -> Iterator[dict[str, Any]]:
        """Every journal event, oldest first (a torn last line is skipped)."""
        return iter(self.journal.read())

    def replay(self) -> Replay:
        """The current state of every candidate and open submission, rebuilt from the journal."""
        return replay_events(self.journal.read())

    # Locks.
    @contextmanager
    def driver_lock(self) -> Iterator[None]:
        """Hold the run's driver lock (the right to write its journal), recording who holds it;
        StateError naming the holder (host, pid, since when) and how to stop it if another
        driver holds it. Nothing is written to the journal before it is held."""
        lock = self.lock("driver", timeout_s=0)
        try:
            lock.acquire()
        except LockTimeoutError:
            holder = read_json(self.driver_holder_path, None) or {}
            who = (f"pid {holder.get('pid')} on host {holder.get('host')} since "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder['since']))}"
                   if "since" in holder else "an unknown process")
            raise StateError(
                f"{self.root}: another driver is running this run ({who}; lock "
                f"{lock.path}). Stop it with `touch {self.stop_path}` (it stops at its next "
                f"safe point) or `kill -TERM {holder.get('pid', 'PID')}` on its host, then run "
                "again.") from None
        try:
            self.write_json(self.driver_holder_path, {"pid": os.getpid(),
                                                      "host": socket.gethostname(),
                                                      "since": time.time()})
            yield
        finally:
            lock.release()

    def driver_holder(self) -> dict[str, Any] | None:
        """Who runs this run's driver now ({"pid", "host", "since"}), or None when no driver
        holds the lock: read from the lock itself, not from the journal, so a killed driver
        (kill -9, a lost node) is not reported as running."""
        try:
            probe = self.lock("driver", timeout_s=0)
            probe.acquire()
        except LockTimeoutError:
            return read_json(self.driver_holder_path, None) or {}
        except OSError:  # a read-only run folder: judge by the recorded holder's pid
            holder = read_json(self.driver_holder_path, None)
            if holder and holder.get("host") == socket.gethostname():
                return holder if pid_alive(int(holder.get("pid", 0))) else None
            return holder
        probe.release()
        return None

    def lock(self, name: str, *, timeout_s: float | None = None) -> RunLock:
        """An inter-process lock named `name` (e.g. "cognition", "driver") in this run."""
        self._mkdir(self.locks_dir)
        return RunLock(self.lock_path(name, soft=self.cfg.lock != "file"), kind=self.cfg.lock,
                       timeout_s=self.cfg.lock_timeout_s if timeout_s is None else timeout_s,
                       mode=self._file_mode(), on_break=self._lock_broken)

    def _lock_broken(self, info: dict[str, Any]) -> None:
        self.record("lock_broken", **info)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"


def _yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise NotARunError(f"{path}: no such file; not an evolve run") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise StateError(f"{where}: run.yaml does not parse: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StateError(f"{path}: run.yaml must hold a mapping, not {type(data).__name__}")
    return data


def _is_partial_run(root: Path) -> bool:
    """Whether `root` is empty or holds only what an interrupted `Store.create` leaves."""
    ours = {RunLayout(root).journal_path.name, *RUN_FOLDERS}
    for p in root.iterdir():
        if p.name not in ours or (p.is_dir() and p.name != "locks" and any(p.iterdir())):
            return False
    return True


_MISSING = object()
_WORLD_SIZE_KEYS = ("launch.tasks_per_node", "launch.nodes", "launch.gpus_per_task")
"""Launch keys that shape a training (its processes), so a resume does not take them silently."""


def _relaunched(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`old` with the launch section of `new`, but the world-size keys of `old`."""
    launch = dict(new.get("launch") or {})
    for key in _WORLD_SIZE_KEYS:
        name = key.split(".", 1)[1]
        if name in (old.get("launch") or {}):
            launch[name] = old["launch"][name]
    return {**old, "launch": launch}


def _dotted_get(d: Any, dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return default
        d = d[part]
    return d


__all__ = [
    "CandidatePaths", "CandidateState", "ConfigMismatchError", "JournalCorruptError",
    "LockTimeoutError", "NotARunError", "Replay", "StateError", "Store", "StoreConfig",
    "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "config_diff", "plain",
    "read_json",
]
