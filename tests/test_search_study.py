"""tools/study/search.py end to end on a tiny config: real searches, then the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import run_config_dict

from evolve.state.store import Store
from study_tools import load_study_tool

def tiny_config(tmp_path: Path) -> Path:
    cfg = run_config_dict(tmp_path / "ignored", name="ignored", steps=5, checkpoint_every=5,
                          log_every=5, search={"proposer": "auto", "max_in_flight": 2,
                                               "baselines": ["deltanet"]})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_method_the_driver_refuses_is_recorded_and_the_rest_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = load_study_tool("search")
    calls = []

    def fake_run(cfg, method: str, seed: int, force: bool) -> None:
        calls.append((cfg.name, cfg.search.seed, cfg.search.max_candidates, str(cfg.root)))
        if method == "llm":
            raise ValueError("search.proposer=llm: not wired")

    monkeypatch.setattr(study, "run_search", fake_run)
    out = tmp_path / "search"
    argv = ["--methods", "llm,mutator", "--seeds", "3", "--trainings", "7",
            "--config", str(tiny_config(tmp_path)), "--out", str(out)]
    assert study.main(argv) == 0
    assert calls == [("search-llm-s3", 3, 7, str(out)), ("search-mutator-s3", 3, 7, str(out))]
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["errors"]) == ["search-llm-s3"]
    assert "not wired" in summary["errors"]["search-llm-s3"]
    assert summary["methods"]["llm"]["seeds"] == [] and summary["runs"] == {}
    assert "| llm | 0 (1 failed) |" in (out / "summary.md").read_text()
    # The error survives a summary-only pass, and a later success clears it.
    assert study.main(argv + ["--summarize-only"]) == 0
    assert "search-llm-s3" in json.loads((out / "summary.json").read_text())["errors"]
    monkeypatch.setattr(study, "run_search", lambda *a: None)
    assert study.main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["errors"] == {}


def test_run_config_names_the_method() -> None:
    study = load_study_tool("search")
    from evolve.search.run_config import default_run_config

    base = default_run_config()
    for method in ("mutator", "llm", "random"):
        cfg = study.run_config(base, method, 2, 5, Path("out"))
        assert (cfg.name, cfg.root, cfg.search.seed, cfg.search.max_candidates) == \
            (f"search-{method}-s2", "out", 2, 5)
        assert cfg.search.proposer in (method, "mutator")
        assert cfg.train == base.train and cfg.launch == base.launch


@pytest.mark.slow
def test_study_runs_each_method_and_summarizes_consistently(tmp_path: Path) -> None:
    study = load_study_tool("search")
    out = tmp_path / "search"
    argv = ["--methods", "mutator,random", "--seeds", "0", "--trainings", "2",
            "--config", str(tiny_config(tmp_path)), "--out", str(out)]
    assert study.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    for png in ("best_vs_trainings.png", "best_vs_cpu_hours.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "summary.md").read_text()
    assert "| mutator | 1 |" in md and "| random | 1 |" in md
    assert summary["errors"] == {}

    for method in ("mutator", "random"):
        run = out / f"search-{method}-s0"
        row = summary["runs"][f"search-{method}-s0"]
        state = Store.open(run).replay()
        proposals = {}
        for cid in state.candidates:
            prop = json.loads(Store.open(run).candidate(cid).proposal.read_text())
            if prop.get("kind", "proposal") == "proposal":
                proposals[cid] = prop
        assert {p["proposer"] for p in proposals.values()} == {method}
        trained = [c for c in proposals if state.candidates[c].status in
                   ("analyzed", "failed")]
        ids = [t["id"] for t in row["trainings"]]
        assert len(set(ids)) == len(ids)  # a training counted once
        assert sorted(t["id"] for t in row["trainings"]) == sorted(trained)
        assert len(trained) == 2
        fits = [state.candidates[c].fitness for c in trained]
        scored = [f for f in fits if f is not None]
        assert row["best"] == (max(scored) if scored else None)
        assert row["trainings"][-1]["best"] == row["best"]
        costs = [t["cpu_hours"] for t in row["trainings"]]
        assert costs == sorted(costs) and costs[-1] > 0
        assert row["baselines"] == {"deltanet": 0.0}
        # The runs of one study share the site's result cache: the first trains the baseline,
        # the second reuses it (seed 0 both) and spends no CPU on it.
        reused = [e["candidate"] for e in Store.open(run).events() if e.get("event") == "reused"]
        if method == "mutator":
            assert row["baseline_cpu_hours"] > 0 and not reused
        else:
            assert row["baseline_cpu_hours"] == 0 and reused == [
                c for c in state.candidates if c not in proposals]
        agg = summary["methods"][method]
        assert agg["seeds"] == [0] and len(agg["by_trainings"]) == 2
        assert agg["final_best"]["mean"] == row["best"]
        # In the order the trainings finished (the launcher's done/failed events).
        ends = [e["candidate"] for e in Store.open(run).events()
                if e.get("event") in ("done", "failed") and e.get("candidate") in proposals]
        assert ids == list(dict.fromkeys(ends))
        for t in row["trainings"]:  # each training's own scores, from its result.json
            result = json.loads(Store.open(run).candidate(t["id"]).result.read_text())
            assert t["bpb"] == result["metrics"]["bpb"]
        first = row["first_beat"]["reference"]
        before = [t["fitness"] for t in row["trainings"][:(first or 3) - 1]]
        assert all(f is None or f <= 0 for f in before)
        if first is not None:
            assert row["trainings"][first - 1]["fitness"] > 0

    # A rerun resumes the finished runs: nothing is trained again.
    journals = {m: (out / f"search-{m}-s0" / "journal.jsonl").read_text()
                for m in ("mutator", "random")}
    assert study.main(argv) == 0
    for m, before in journals.items():
        new = (out / f"search-{m}-s0" / "journal.jsonl").read_text()[len(before):]
        assert '"submitted"' not in new
    assert study.main(argv[:-2] + ["--out", str(out), "--summarize-only"]) == 0


def test_beating_gated_deltanet_on_both_axes_needs_both_in_one_training() -> None:
    study = load_study_tool("search")
    trainings = [{"bpb": 2.80, "mqar": 0.10},   # better bits per byte only
                 {"bpb": 3.10, "mqar": 0.90},   # better recall only
                 {"bpb": None, "mqar": None},   # failed
                 {"bpb": 2.90, "mqar": 0.60}]   # both
    assert study.first_beating_both(trainings, bpb=2.93, mqar=0.24) == 4
    assert study.first_beating_both(trainings[:3], bpb=2.93, mqar=0.24) is None
