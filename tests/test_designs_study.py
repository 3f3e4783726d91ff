"""tools/study/designs.py: a run's trainings pooled by design and compared with its baselines.

The run folder is real (evolve.state.store.Store); its result.json files are written here in the
format the trainer writes, because the tool only reads them and real trainings of several
seeds would take minutes each.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from evolve.state.store import Store
from study_tools import STUDY, load_study_tool

def _add(store: Store, proposal: dict, seed: int, bpb: float, mqar16: float,
         status: str = "ok") -> str:
    cid = store.new_candidate(kind=proposal["kind"])
    paths = store.candidate(cid)
    store.write_json(paths.proposal, {**proposal, "id": cid, "seed": seed})
    store.write_json(paths.result, {
        "status": status, "seed": seed,
        "metrics": {"bpb": bpb, "mqar_acc": mqar16,
                    "mqar_acc_by_pairs": {"8": 1.0, "16": mqar16}}})
    return cid


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    store = Store.create(tmp_path / "run", {"name": "run", "fitness": {"mqar_pairs": 16}})
    gdn = {"kind": "baseline", "name": "gated_deltanet", "code_hash": "gdn"}
    for seed, bpb, mqar in [(0, 3.00, 0.20), (1, 3.02, 0.30), (2, 2.98, 0.25)]:
        _add(store, gdn, seed, bpb, mqar)
    design = {"kind": "proposal", "code_hash": "winner"}
    first = _add(store, design, 0, 2.80, 0.90)
    replica = {"kind": "replica", "of": first, "code_hash": "winner"}
    _add(store, replica, 0, 9.99, 0.0)  # the same seed again: counts once (the first)
    _add(store, replica, 1, 2.82, 0.95)
    _add(store, replica, 2, 2.78, 0.92)
    _add(store, replica, 3, 7.00, 0.0, status="failed")  # not a score
    ablation = {"kind": "ablation", "of": first, "revert": "out_norm", "code_hash": "variant"}
    _add(store, ablation, 0, 3.10, 0.90)
    _add(store, ablation, 1, 3.12, 0.91)  # two seeds: left out at --min-seeds 3
    return store.root


def test_designs_are_pooled_by_code_and_compared_with_welch_intervals(run: Path) -> None:
    tool = load_study_tool("designs")
    designs = tool.collect(run, 16)
    assert {d["name"]: sorted(d["seeds"]) for d in designs.values()} == {
        "gated_deltanet": [0, 1, 2], "c000003": [0, 1, 2],
        "c000003 without its out_norm change": [0, 1]}
    rows = tool.compare(designs, min_seeds=3)
    winner = [r for r in rows if r["design"] == "c000003"]
    assert len(winner) == 1 and winner[0]["versus"] == "gated_deltanet"
    d_bpb, half_bpb = winner[0]["delta_bpb"]
    d_mqar, half_mqar = winner[0]["delta_mqar"]
    assert d_bpb == pytest.approx(3.00 - 2.80)
    assert d_mqar == pytest.approx((0.90 + 0.95 + 0.92) / 3 - 0.25)
    # Both sides have sd 0.02 in bpb: se = sqrt(2 * 0.02**2 / 3), Welch df = 4, t = 2.776.
    assert half_bpb == pytest.approx(2.776 * math.sqrt(2 * 0.02 ** 2 / 3), rel=1e-3)
    assert winner[0]["better_bpb"] and winner[0]["better_mqar"]
    # The two-seed ablation variant is left out; a baseline is not compared with itself.
    assert len(rows) == 1


def test_the_command_writes_its_table_and_refuses_a_folder_that_is_not_a_run(
        run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(STUDY / "designs.py"),
                           str(run), "--out", str(out)], capture_output=True, text=True,
                          check=True)
    assert "| c000003 | winner | c000003 | 3 |" in done.stdout
    assert "**yes**" in done.stdout
    saved = json.loads((out / "designs.json").read_text())
    assert saved["pairs"] == 16 and len(saved["rows"]) == 1
    assert (out / "designs.md").read_text() in done.stdout

    bad = subprocess.run([sys.executable, str(STUDY / "designs.py"),
                          str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert f"{tmp_path} is not a run folder (no journal.jsonl there)" in bad.stderr
