"""A run survives misuse: a second driver is refused without writing anything and names the
one that runs; the driver counts as running only while it holds the lock (not after kill -9)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import run_config_dict
from evolve.state.store import Store

HOLD = """
import sys, time
from evolve.state.store import Store
store = Store.open(sys.argv[1])
with store.driver_lock():
    store.record("driver_start", pid=0, host="h", proposer="none")  # as a driver does
    print("holding", flush=True)
    time.sleep(600)
"""


def make_run(tmp_path: Path) -> tuple[Path, Path]:
    cfg_file = tmp_path / "run.yaml"
    cfg = run_config_dict(tmp_path / "state", search={"max_candidates": 1})
    cfg_file.write_text(yaml.safe_dump(cfg))
    # A run folder as `evolve run` creates it, without training anything.
    from evolve.config.loading import to_dict
    from evolve.search.run_config import load_run_config

    run_cfg = load_run_config(cfg_file)
    Store.create(run_cfg.run_dir, to_dict(run_cfg))
    return cfg_file, Path(run_cfg.run_dir)


def test_a_second_driver_is_refused_writes_nothing_and_names_the_first(tmp_path: Path) -> None:
    cfg_file, run = make_run(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        journal = (run / "journal.jsonl").read_bytes()
        assert Store.open(run).driver_holder()["pid"] == holder.pid
        out = evolve("run", str(cfg_file))
        assert out.returncode == 2, out.stderr
        assert f"another driver is running this run (pid {holder.pid} on host" in out.stderr
        assert "STOP" in out.stderr and "Traceback" not in out.stderr
        assert (run / "journal.jsonl").read_bytes() == journal, "a refused driver wrote"
        assert driver_status(run).startswith(f"running (pid {holder.pid} on ")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # Killed with -9: the kernel released the lock, so nobody runs the driver any more,
    # whatever the holder record and the journal (a driver_start, no driver_stop) say.
    assert Store.open(run).driver_holder() is None
    assert driver_status(run) == "died without stopping (no process holds the driver lock)"


def driver_status(run: Path) -> str:
    out = evolve("status", str(run), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["driver"]


def evolve(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli.main", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def test_bad_input_and_a_failed_gate_end_in_distinct_exit_codes_without_tracebacks(
        tmp_path: Path) -> None:
    for bad in (tmp_path, tmp_path / "missing.py"):
        out = evolve("check", str(bad))
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and str(bad) in out.stderr
    fixtures = Path(__file__).parent / "fixtures" / "bad_mixers"
    out = evolve("check", str(fixtures / "parse_bad_indent.py"))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr



def test_a_run_whose_journal_was_deleted_is_refused_not_restarted(tmp_path: Path) -> None:
    cfg_file, run = make_run(tmp_path)
    store = Store.open(run, writer=True)
    cid = store.new_candidate(generation=0, parents=[])
    store.write_text(store.candidate(cid).mixer, "# mixer\n")
    (run / "journal.jsonl").unlink()
    for args in (("run", str(cfg_file)), ("status", str(run)), ("top", str(run)),
                 ("report", str(run))):
        out = evolve(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert "journal.jsonl is missing, but 1 candidate folder(s) remain" in out.stderr
        assert "Traceback" not in out.stderr
    assert not (run / "journal.jsonl").exists(), "a refused command recreated the journal"
    assert not (run / "report").exists()


def test_an_event_about_a_candidate_never_created_is_not_counted(tmp_path: Path) -> None:
    _, run = make_run(tmp_path)
    store = Store.open(run, writer=True)
    cid = store.new_candidate(generation=0, parents=[])
    before = json.loads(evolve("status", str(run), "--json").stdout)["candidates"]
    with open(run / "journal.jsonl", "a") as fh:  # a line appended by hand
        fh.write(json.dumps({"t": 0, "event": "scored", "candidate": "c999999",
                             "fitness": 9.0}) + "\n")
    replay = Store.open(run).replay()
    assert list(replay.candidates) == [cid]
    assert replay.ignored == [{"line": replay.num_events, "event": "scored",
                               "candidate": "c999999"}]
    assert json.loads(evolve("status", str(run), "--json").stdout)["candidates"] == before == 1


def test_a_driver_started_with_a_stop_file_submits_nothing_and_names_the_file(
        tmp_path: Path) -> None:
    cfg_file, run = make_run(tmp_path)
    (run / "STOP").touch()
    out = evolve("run", str(cfg_file))
    assert out.returncode == 0, out.stderr
    assert f"STOP file {run / 'STOP'}: remove it to go on" in out.stderr
    events = [json.loads(line)["event"] for line in
              (run / "journal.jsonl").read_text().splitlines()]
    assert "created" not in events and "submitted" not in events, events
    assert events[-2:] == ["driver_start", "driver_stop"]


TRAIN_SETTINGS = {"lm": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1},
                  "mqar": {"max_steps": 2, "batch_size": 16, "checkpoint_every": 2,
                           "log_every": 1},
                  "eval": {"lm_eval_tasks": [], "bpb_windows": 2},
                  "mqar_task": {"num_eval_examples": 16}, "runtime": {"num_threads": 1}}


@pytest.mark.slow
def test_train_runs_the_gates_first_and_records_a_skip(tmp_path: Path) -> None:
    leaky = Path(__file__).parent / "fixtures" / "bad_mixers" / "leak_flip.py"
    settings = tmp_path / "train.yaml"
    settings.write_text(yaml.safe_dump(TRAIN_SETTINGS))
    out = tmp_path / "out"
    refused = evolve("train", "--mixer", str(leaky), "--config", str(settings), "--out",
                     str(out), "--tracks", "mqar", cwd=tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert "fails the causality gate; not trained" in refused.stderr
    assert not (out / "train").exists()
    forced = evolve("train", "--mixer", str(leaky), "--config", str(settings), "--out",
                    str(out), "--tracks", "mqar", "--no-check", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["checks"] == {"skipped": True, "reason": "--no-check"}
    # Run outside a checkout (tmp_path): no git noise.
    assert "fatal" not in refused.stderr + forced.stderr


@pytest.mark.slow  # eight CLI processes
def test_a_binary_or_empty_config_or_mixer_is_an_error_naming_the_file(tmp_path: Path) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00binary")
    mixer = tmp_path / "bin.py"
    mixer.write_bytes(b"\xff\xfe\x00binary")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    for args in (("config", "validate", str(binary)), ("run", str(binary)),
                 ("check", "--config", str(binary), str(mixer)),
                 ("train", "--mixer", "deltanet", "--config", str(binary))):
        out = evolve(*args, cwd=tmp_path)
        assert out.returncode == 2, (args, out.stderr)
        assert f"{binary}: not a text file (byte 0xff at offset 0 is not UTF-8)" in out.stderr
        assert "Traceback" not in out.stderr and "codec" not in out.stderr
    for args in (("check", str(mixer)), ("train", "--mixer", str(mixer))):
        out = evolve(*args, cwd=tmp_path)
        assert out.returncode == 1, (args, out.stderr)
        assert f"{mixer.name}:1: not UTF-8 (byte 0xff at offset 0)" in out.stdout + out.stderr
    for args in (("run", str(empty)), ("config", "validate", str(empty))):
        out = evolve(*args, cwd=tmp_path)
        assert out.returncode == 2 and f"{empty}: the file is empty" in out.stderr, out.stderr
    assert not (tmp_path / "state").exists(), "an empty run file started the demo"
