"""tools/study/proxy.py: real trainings (a few steps each), their records, and the tables rebuilt
from the records alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from study_tools import load_study_tool


def test_the_tables_are_rebuilt_from_the_committed_records_alone(tmp_path: Path) -> None:
    proxy = load_study_tool("proxy")
    overrides = tmp_path / "short.yaml"
    overrides.write_text(yaml.safe_dump({
        "lm": {"max_steps": 4, "log_every": 2, "checkpoint_every": 4},
        "mqar": {"max_steps": 4, "batch_size": 16, "log_every": 2, "checkpoint_every": 4},
        "eval": {"lm_eval_tasks": [], "bpb_windows": 4},
        "mqar_task": {"num_eval_examples": 32}, "runtime": {"num_threads": 1}}))
    mixers = f"deltanet,{Path(__file__).parents[1] / 'evolve/model/baselines/gla.py'}"
    record = tmp_path / "record"
    argv = ["--mixers", mixers, "--seeds", "2", "--config", str(overrides), "--train-pairs", "16",
            "--out", str(tmp_path / "out"), "--record", str(record), "--workers", "2"]
    assert proxy.main(argv) == 0
    assert sorted(p.name for p in record.iterdir()) == [
        "deltanet-s0.json", "deltanet-s1.json", "gla-s0.json", "gla-s1.json"]
    kept = json.loads((record / "deltanet-s1.json").read_text())
    assert kept["seed"] == 1 and kept["status"] == "ok" and kept["cpu_s"] > 0
    assert set(kept["versions"]) >= {"torch", "evolve"} and kept["torch_threads"] == 1
    trained = json.loads((tmp_path / "out" / "summary.json").read_text())
    rebuilt_out = tmp_path / "rebuilt"
    assert proxy.main(["--summarize-only", "--mixers", mixers, "--seeds", "2",
                       "--train-pairs", "16", "--record", str(record),
                       "--out", str(rebuilt_out)]) == 0
    rebuilt = json.loads((rebuilt_out / "summary.json").read_text())
    for name in ("deltanet", "gla"):  # a mixer file is named by its stem
        for key in ("bpb", "mqar", "mqar_solved", "solve_rate"):
            assert rebuilt["table"][name][key] == trained["table"][name][key]
    assert (rebuilt_out / "summary.md").read_text() == \
        (tmp_path / "out" / "summary.md").read_text()


def test_a_solve_rate_gets_a_wilson_interval() -> None:
    proxy = load_study_tool("proxy")
    low, high = proxy.wilson(3, 5)
    assert low == pytest.approx(0.2307, abs=1e-3) and high == pytest.approx(0.8824, abs=1e-3)
    assert proxy.wilson(0, 5)[0] == 0.0 and proxy.wilson(5, 5)[1] == 1.0


def test_summarize_only_names_a_missing_record(tmp_path: Path) -> None:
    proxy = load_study_tool("proxy")
    with pytest.raises(SystemExit, match="deltanet-s0.json is missing"):
        proxy.main(["--summarize-only", "--mixers", "deltanet", "--seeds", "1",
                    "--record", str(tmp_path), "--out", str(tmp_path / "out")])
