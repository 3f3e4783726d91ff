"""The run state store: atomic writes, the journal, config freezing, ids and locks.

Real files and real processes throughout: concurrent writers are separate processes, and the
dead lock holder is a process that really dies holding the lock.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from evolve.state.locks import LockTimeoutError
from evolve.state.store import (ConfigMismatchError, JournalCorruptError, NotARunError, StateError,
                          Store, StoreConfig, atomic_write_json, read_json)

CONFIG = {"name": "t", "train": {"lr": 0.01, "steps": 10}, "launch": {"partition": "gpu"}}
FORK = mp.get_context("fork")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "run", CONFIG)


# Atomic writes.
def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    atomic_write_json(path, {"v": 1})
    atomic_write_json(path, {"v": 2})
    assert read_json(path) == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    atomic_write_json(path, {"v": 1})
    with pytest.raises(TypeError, match="a.json"):
        atomic_write_json(path, {"v": object()})
    assert read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def _rewrite(path: str, n: int) -> None:
    for i in range(n):
        atomic_write_json(path, {"i": i, "pad": "x" * 200_000})


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    atomic_write_json(path, {"i": -1, "pad": ""})
    writer = FORK.Process(target=_rewrite, args=(str(path), 150))
    writer.start()
    reads = 0
    while writer.is_alive() or reads == 0:
        data = json.loads(path.read_text())  # raises on a torn file
        assert "pad" in data
        reads += 1
    writer.join()
    assert writer.exitcode == 0 and reads > 10


def test_read_json_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": 1,\n  oops\n}\n')
    with pytest.raises(StateError, match=r"bad.json:3:"):
        read_json(path)
    assert read_json(tmp_path / "missing.json", None) is None


def test_endpoint_is_private(store: Store) -> None:
    store.write_endpoint({"host": "h", "port": 1, "key": "secret"})
    assert stat.S_IMODE(store.endpoint_path.stat().st_mode) == 0o600
    assert store.read_endpoint()["key"] == "secret"


def test_group_shareable_files_and_folders(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        s = Store.create(tmp_path / "run", CONFIG, cfg=StoreConfig(group_shareable=True))
        cid = s.new_candidate()
        s.write_json(s.candidate(cid).proposal, {"m": 1})
        assert stat.S_IMODE(s.candidate(cid).proposal.stat().st_mode) & 0o060 == 0o060
        assert s.candidate(cid).dir.stat().st_mode & stat.S_ISGID
        assert stat.S_IMODE(s.journal_path.stat().st_mode) & 0o060 == 0o060
    finally:
        os.umask(old)


# Creating and resuming runs.
def test_resume_with_same_config_and_refusal_listing_keys(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", CONFIG)
    again = Store.create(tmp_path / "run", json.loads(json.dumps(CONFIG)))
    assert [e["event"] for e in again.events()][-1] == "run_resumed"
    changed = {"name": "t", "train": {"lr": 0.02, "steps": 10}, "launch": {}, "extra": 1}
    with pytest.raises(ConfigMismatchError) as err:
        Store.create(tmp_path / "run", changed)
    # Where it runs (launch.partition) follows the new config, journaled; the rest is refused.
    assert err.value.keys == ["extra", "train.lr"]
    assert [e for e in Store.open(tmp_path / "run").events()
            if e["event"] == "launch_changed"][0]["changes"] == {"launch.partition": ["gpu", None]}
    assert "train.lr" in str(err.value) and "run.yaml" in str(err.value)
    forced = Store.create(tmp_path / "run", changed, force=True)
    assert forced.config() == changed
    ev = [e for e in forced.events() if e["event"] == "config_forced"][0]
    assert ev["changes"]["train.lr"] == [0.01, 0.02]


def test_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(NotARunError, match="does not exist"):
        Store.open(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(NotARunError, match="has no run.yaml"):
        Store.open(tmp_path)
    with pytest.raises(NotARunError, match="not empty"):
        Store.create(tmp_path, CONFIG)


def test_exceptions_pickle() -> None:
    for exc in (ConfigMismatchError("m", ["a.b"]), JournalCorruptError("m", 7), StateError("s"),
                LockTimeoutError("l")):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
    assert pickle.loads(pickle.dumps(ConfigMismatchError("m", ["a.b"]))).keys == ["a.b"]


# Journal and replay.
def test_replay_folds_events_into_candidate_state(store: Store) -> None:
    a, b = store.new_candidate(generation=0), store.new_candidate(generation=0, parents=["x"])
    store.record("checked", a, passed=True)
    store.record("rejected", b, error="causality")
    store.record("submit_begin", submission="s0", executor="local", folder="jobs/s0", candidates=[a])
    store.record("submitted", a, submission="s0", job_id="17_0")
    store.record("done", a, gpu_hours=0.5)
    store.record("scored", a, fitness=1.25)
    state = store.replay()
    assert state.candidates[a].status == "scored" and state.candidates[a].fitness == 1.25
    assert state.candidates[a].job_ids == ["17_0"] and state.candidates[a].attempts == 1
    assert state.candidates[b].status == "rejected" and state.candidates[b].parents == ["x"]
    assert state.open_submissions() == []


def test_torn_last_line_is_tolerated_then_repaired(store: Store) -> None:
    cid = store.new_candidate()
    with open(store.journal_path, "ab") as f:
        f.write(b'{"t": 1, "event": "checked", "cand')  # a crash mid-write
    assert store.replay().candidates[cid].status == "created"
    writer = Store.open(store.root, writer=True)  # a resuming driver
    writer.record("checked", cid)
    events = list(writer.events())
    assert [e["event"] for e in events][-2:] == ["journal_repaired", "checked"]
    assert writer.replay().candidates[cid].status == "checked"
    assert b"cand" in (store.root / "journal.jsonl.torn").read_bytes()


def test_corrupt_middle_line_names_the_line(store: Store) -> None:
    store.new_candidate()
    lines = store.journal_path.read_text().splitlines()
    lines.insert(1, '{"t": 1, "event": "checked"')  # line 2: broken, followed by good lines
    store.journal_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(JournalCorruptError) as err:
        store.replay()
    assert err.value.line == 2
    assert "journal.jsonl:2:" in str(err.value)


# Ids and locks across processes.
def _make_ids(root: str, n: int, q: mp.Queue) -> None:
    s = Store.open(root)
    q.put([s.new_candidate() for _ in range(n)])


def test_sequential_ids_under_concurrency(store: Store) -> None:
    q: mp.Queue = FORK.Queue()
    procs = [FORK.Process(target=_make_ids, args=(str(store.root), 15, q)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = sorted(i for _ in procs for i in q.get(timeout=60))
    for p in procs:
        p.join()
    assert ids == [f"c{i:06d}" for i in range(60)]
    assert sorted(store.replay().candidates) == ids
    assert store.candidate_ids() == ids


def _increment(root: str, kind: str, n: int) -> None:
    s = Store.open(root, StoreConfig(lock=kind))
    path = s.root / "counter.json"
    for _ in range(n):
        s.update_json(path, lambda d: {"n": (d or {"n": 0})["n"] + 1}, lock="counter")


@pytest.mark.parametrize("kind", ["file", "soft"])
def test_locked_read_modify_write_loses_no_update(store: Store, kind: str) -> None:
    procs = [FORK.Process(target=_increment, args=(str(store.root), kind, 20)) for _ in range(16)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 16
    assert read_json(store.root / "counter.json") == {"n": 16 * 20}


HOLDER = textwrap.dedent("""
    import os, signal, sys, time
    from evolve.state.store import Store, StoreConfig
    s = Store.open(sys.argv[1], StoreConfig(lock="soft"))
    lock = s.lock("cognition")
    lock.acquire()
    print("HELD", os.getpid(), flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # dies holding the lock: no release, no cleanup
    time.sleep(60)
""")


def test_soft_lock_of_a_dead_holder_is_broken_and_journaled(store: Store) -> None:
    proc = subprocess.run([sys.executable, "-c", HOLDER, str(store.root), "die"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and proc.stdout.startswith("HELD")
    dead_pid = int(proc.stdout.split()[1])
    assert (store.locks_dir / "cognition.softlock").exists()  # the stale marker is there
    soft = Store.open(store.root, StoreConfig(lock="soft", lock_timeout_s=10))
    with soft.lock("cognition"):
        pass
    broken = [e for e in soft.events() if e["event"] == "lock_broken"]
    assert len(broken) == 1 and broken[0]["pid"] == dead_pid


def test_soft_lock_of_a_live_holder_times_out_naming_it(store: Store) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store.root), "live"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("HELD")
        soft = Store.open(store.root, StoreConfig(lock="soft"))
        with pytest.raises(LockTimeoutError, match=f"pid {proc.pid}"):
            soft.lock("cognition", timeout_s=0.5).acquire()
    finally:
        proc.kill()
        proc.wait()


def test_file_lock_is_released_when_its_holder_dies(store: Store) -> None:
    code = HOLDER.replace('StoreConfig(lock="soft")', 'StoreConfig(lock="file")')
    proc = subprocess.run([sys.executable, "-c", code, str(store.root), "die"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("HELD")
    t = time.time()
    with store.lock("cognition", timeout_s=5):
        assert time.time() - t < 1


def test_store_config_validation() -> None:
    with pytest.raises(ValueError, match="file, soft"):
        StoreConfig(lock="nfs")


def test_checked_but_not_passed_is_rejected_and_nan_configs_resume(tmp_path: Path) -> None:
    s = Store.create(tmp_path / "run", {"x": float("nan")})
    cid = s.new_candidate()
    s.record("checked", cid, passed=False, gate="causality")
    assert s.replay().candidates[cid].status == "rejected"
    Store.create(tmp_path / "run", {"x": float("nan")})  # NaN equals NaN here: no mismatch
