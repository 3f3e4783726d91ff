"""`evolve fsck` on a real finished run: a deleted journal is rebuilt from the candidate folders
so that `evolve top` shows the same candidates with the same scores; a corrupt journal line and
an unreadable result are reported with their files, repaired, and nothing is deleted."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import run_config_dict


def evolve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evolve.cli.main", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small finished search (two baselines, two proposals), trained for real."""
    tmp = tmp_path_factory.mktemp("fsck")
    cfg_file = tmp / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(run_config_dict(tmp / "state",
                                                       search={"max_candidates": 2})))
    out = evolve("run", str(cfg_file))
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "state" / "mini"


def copy_of(run: Path, tmp_path: Path) -> Path:
    # Times not kept, as by a plain `cp -r`; the name kept, as the frozen config holds it.
    return Path(shutil.copytree(run, tmp_path / "copy" / run.name, copy_function=shutil.copy))


@pytest.mark.slow
def test_a_deleted_journal_is_rebuilt_and_top_shows_the_same_scores(
        finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    before = evolve("top", str(run), "--json")
    assert before.returncode == 0, before.stderr
    (run / "journal.jsonl").unlink()
    refused = evolve("top", str(run))
    assert refused.returncode == 2 and f"evolve fsck {run} --fix" in refused.stderr
    report = evolve("fsck", str(run))
    assert report.returncode == 1
    folders = len(list((run / "candidates").glob("c*")))
    assert f"{run / 'journal.jsonl'}: missing while {folders} candidate folder(s) remain" \
        in report.stdout
    fixed = evolve("fsck", str(run), "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    after = evolve("top", str(run), "--json")
    assert after.returncode == 0, after.stderr
    assert yaml.safe_load(after.stdout) == yaml.safe_load(before.stdout)
    assert evolve("fsck", str(run)).returncode == 0
    # The rebuilt run resumes as finished: nothing is proposed or trained again.
    cfg = yaml.safe_load((run / "run.yaml").read_text())
    cfg["root"] = str(run.parent)
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(cfg))
    lines = len((run / "journal.jsonl").read_text().splitlines())
    again = evolve("run", str(tmp_path / "again.yaml"))
    assert again.returncode == 0, again.stderr[-3000:]
    new = [yaml.safe_load(ln)["event"] for ln in
           (run / "journal.jsonl").read_text().splitlines()[lines:]]
    assert "created" not in new and "submitted" not in new, new


@pytest.mark.slow
def test_a_corrupt_line_and_an_unreadable_result_are_repaired_without_deleting(
        finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    before = {r["id"]: r for r in yaml.safe_load(evolve("top", str(run), "--json").stdout)}
    target = max(c for c, r in before.items() if r["kind"] == "proposal")
    journal = run / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    lines[4] = "garbage{\n"
    journal.write_text("".join(lines))
    result = run / "candidates" / target / "result.json"
    result.write_text(result.read_text()[:200])
    report = evolve("fsck", str(run))
    assert report.returncode == 1
    assert f"{journal}: corrupt line 5; --fix: rebuild it" in report.stdout
    assert f"{result}: does not parse" in report.stdout
    assert f"--fix: journal {target} as damaged (the file is kept)" in report.stdout
    fixed = evolve("fsck", str(run), "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    backups = list(run.glob("journal.jsonl.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == "".join(lines)
    assert result.exists()
    top = yaml.safe_load(evolve("top", str(run), "--json").stdout)
    rows = {r["id"]: r for r in top}
    assert set(rows) == set(before)
    assert rows[target]["status"] == "damaged"
    assert all(rows[c]["fitness"] == r["fitness"] for c, r in before.items() if c != target)
    again = evolve("fsck", str(run))
    assert f"{target} is journaled damaged already" in again.stdout


def test_fix_refuses_a_run_whose_driver_is_running(tmp_path: Path) -> None:
    import signal

    from test_run_misuse import HOLD, make_run

    _, run = make_run(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        journal = (run / "journal.jsonl").read_bytes()
        (run / "candidates" / "c000000").mkdir()  # a folder the journal never created
        out = evolve("fsck", str(run), "--fix")
        assert out.returncode == 2 and "a driver is running this run" in out.stderr, out.stderr
        assert (run / "journal.jsonl").read_bytes() == journal
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
