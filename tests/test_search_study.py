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
    record = tmp_path / "record"
    argv = ["--methods", "mutator,random", "--seeds", "0", "--trainings", "2",
            "--config", str(tiny_config(tmp_path)), "--out", str(out), "--record", str(record)]
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
        assert row["best_baselines"]["bpb"]["baseline"] == "deltanet"
        assert row["best_baselines"]["mqar"]["baseline"] == "deltanet"
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
        # In the order the trainings were evaluated (the driver's scored/failed events), each
        # costing what the journal says its job's process used.
        ends = [e for e in Store.open(run).events()
                if e.get("event") in ("scored", "failed") and e.get("candidate") in proposals]
        assert ids == [e["candidate"] for e in ends]
        assert costs[-1] == pytest.approx(sum(e["cpu_hours"] for e in ends), abs=1e-5)
        for t in row["trainings"]:  # each training's own scores, from its result.json
            result = json.loads(Store.open(run).candidate(t["id"]).result.read_text())
            if t["event"] == "scored":
                assert t["bpb"] == result["metrics"]["bpb"]
        first = row["first_beat_both"]
        bars = row["best_baselines"]
        if first is not None:
            hit = row["trainings"][first["evaluations"] - 1]
            assert hit["bpb"] < bars["bpb"]["value"] and hit["mqar"] > bars["mqar"]["value"]

    # A rerun resumes the finished runs: nothing is trained again.
    journals = {m: (out / f"search-{m}-s0" / "journal.jsonl").read_text()
                for m in ("mutator", "random")}
    assert study.main(argv) == 0
    for m, before in journals.items():
        new = (out / f"search-{m}-s0" / "journal.jsonl").read_text()[len(before):]
        assert '"submitted"' not in new
    assert study.main(argv + ["--summarize-only"]) == 0
    # The committed readings alone rebuild the same summary (the run folders are not needed).
    before = json.loads((out / "summary.json").read_text())
    elsewhere = tmp_path / "elsewhere"
    assert study.main(["--methods", "mutator,random", "--seeds", "0", "--out", str(elsewhere),
                       "--record", str(record), "--summarize-only"]) == 0
    after = json.loads((elsewhere / "summary.json").read_text())
    assert after["methods"] == before["methods"] and after["runs"] == before["runs"]

    # Each method's best, exported byte for byte and re-trained by tools/study/proxy.py with
    # the baseline (one seed here), then compared seed by seed in the summary.
    confirm = tmp_path / "confirm"
    assert study.main(["--methods", "mutator,random", "--seeds", "0", "--out", str(out),
                       "--record", str(record), "--export-best", str(confirm)]) == 0
    designs = json.loads((confirm / "designs.json").read_text())
    assert designs, "no method scored a proposal"
    for method, info in designs.items():
        row = before["runs"][f"search-{method}-s0"]
        assert info["search_fitness"] == row["best"]
        source = out / info["run"] / "candidates" / info["candidate"] / "mixer.py"
        assert info["file"] == f"{method}_best_s0_{info['candidate']}.py"
        assert (confirm / info["file"]).read_bytes() == source.read_bytes()
    # Exported again from the committed readings alone (no run folders): the bests did not
    # change, so the committed copies stay; a copy whose bytes changed is refused.
    assert study.main(["--methods", "mutator,random", "--seeds", "0", "--out", str(elsewhere),
                       "--record", str(record), "--export-best", str(confirm)]) == 0
    assert json.loads((confirm / "designs.json").read_text()) == designs
    first = confirm / next(iter(designs.values()))["file"]
    code = first.read_bytes()
    first.write_bytes(code + b"# edited\n")
    with pytest.raises(SystemExit, match="is missing: exporting"):
        study.main(["--methods", "mutator,random", "--seeds", "0", "--out", str(elsewhere),
                    "--record", str(record), "--export-best", str(confirm)])
    first.write_bytes(code)
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump(yaml.safe_load(tiny_config(tmp_path).read_text())["train"]))
    proxy = load_study_tool("proxy")
    mixers = [str(confirm / info["file"]) for info in designs.values()]
    assert proxy.main(["--mixers", ",".join(mixers), "--seeds", "1", "--config", str(train),
                       "--out", str(tmp_path / "confirm-out"), "--record", str(confirm)]) == 0
    assert proxy.main(["--mixers", "deltanet", "--seeds", "1", "--config", str(train),
                       "--out", str(tmp_path / "base-out"), "--record",
                       str(tmp_path / "base")]) == 0
    assert study.main(["--methods", "mutator,random", "--seeds", "0", "--out", str(elsewhere),
                       "--record", str(record), "--summarize-only", "--confirm", str(confirm),
                       "--baseline-record", str(tmp_path / "base"), "--confirm-seeds", "1"]) == 0
    table = json.loads((elsewhere / "summary.json").read_text())["confirmation"]
    assert table["best_bpb_baseline"] == table["best_mqar_baseline"] == "deltanet"
    base = json.loads((tmp_path / "base" / "deltanet-s0.json").read_text())["metrics"]
    for method, row in table["designs"].items():
        stem = Path(designs[method]["file"]).stem
        again = json.loads((confirm / f"{stem}-s0.json").read_text())["metrics"]
        # A CPU training is deterministic per seed: the re-training gives the search's numbers
        # back, and its fitness against the baseline of the same seed is the search's fitness.
        assert row["reproduces_search"] is True
        assert row["fitness_by_seed"]["0"] == pytest.approx(row["search_fitness"], abs=1e-12)
        assert row["bpb_vs_best"]["mean"] == pytest.approx(base["bpb"] - again["bpb"])
        assert row["mqar_vs_best"]["mean"] == pytest.approx(again["mqar_acc"] - base["mqar_acc"])
        assert row["solved"] == int(again["mqar_acc"] >= 0.9)
    if set(designs) == {"mutator", "random"}:
        (c,) = table["comparisons"]
        assert (c["loop"], c["control"], c["seeds"]) == ("mutator", "random", [0])
        assert c["mean"] == pytest.approx(table["designs"]["mutator"]["fitness_by_seed"]["0"]
                                          - table["designs"]["random"]["fitness_by_seed"]["0"])
    assert "Confirmation of each method's best" in (elsewhere / "summary.md").read_text()


def test_beating_the_best_baselines_on_both_axes_needs_both_in_one_training() -> None:
    study = load_study_tool("search")
    trainings = [{"id": "a", "bpb": 2.80, "mqar": 0.10, "cpu_hours": 0.1},  # bits per byte only
                 {"id": "b", "bpb": 3.10, "mqar": 0.90, "cpu_hours": 0.2},  # recall only
                 {"id": "c", "bpb": None, "mqar": None, "cpu_hours": 0.3},  # failed
                 {"id": "d", "bpb": 2.90, "mqar": 0.60, "cpu_hours": 0.4}]  # both
    # The best baseline on each axis may be a different one.
    bars = study.best_baselines({"gated_deltanet": [(2.93, 0.20), (2.95, 0.28)],
                                 "deltanet": [(3.12, 0.97), (3.14, 0.93)]})
    assert bars == {"bpb": {"baseline": "gated_deltanet", "value": pytest.approx(2.94)},
                    "mqar": {"baseline": "deltanet", "value": pytest.approx(0.95)}}
    assert study.first_beating_both(trainings, bars) is None  # nothing recalls above 0.95
    bars["mqar"]["value"] = 0.24
    assert study.first_beating_both(trainings, bars) == {"id": "d", "evaluations": 4,
                                                         "cpu_hours": 0.4}
    assert study.first_beating_both(trainings[:3], bars) is None


def test_the_loop_against_a_control_is_paired_over_shared_search_seeds() -> None:
    study = load_study_tool("search")
    methods = {"mutator": {"final_best_by_seed": {"0": 0.10, "1": 0.20, "2": 0.15}},
               "random": {"final_best_by_seed": {"0": 0.05, "1": 0.12, "2": 0.11}}}
    c = study.versus(methods, "mutator", "random")
    assert c["interval"] == "paired over 3 search seeds"
    assert c["per_seed"] == pytest.approx({"0": 0.05, "1": 0.08, "2": 0.04})
    assert c["difference"] == pytest.approx((0.05 + 0.08 + 0.04) / 3)
    assert c["verdict"] == "the loop is better"  # the per-seed differences are all positive
    methods["random"]["final_best_by_seed"] = {"3": 0.3, "4": -0.2}
    assert study.versus(methods, "mutator", "random")["interval"].startswith("Welch")


def test_the_confirmation_pairs_each_design_with_the_baselines_of_its_training_seed(
        tmp_path: Path) -> None:
    """search_confirm's table from records in tools/study/proxy.py's format: per-seed fitness
    against the reference of the same seed, t intervals of the per-seed differences, solve
    rates with Wilson intervals, and a seed not trained yet named, not averaged in."""
    from evolve.search.fitness import mean_ci

    confirm = load_study_tool("search_confirm")
    base, folder = tmp_path / "base", tmp_path / "confirm"
    base.mkdir()
    folder.mkdir()

    def write(where: Path, name: str, seed: int, bpb: float, recall: float) -> None:
        (where / f"{name}-s{seed}.json").write_text(json.dumps({
            "mixer": name, "seed": seed, "status": "ok",
            "metrics": {"bpb": bpb, "mqar_acc": recall, "mqar_acc_by_pairs": {"16": recall}}}))

    ref = {0: (3.00, 0.50), 1: (2.90, 0.10), 2: (2.95, 0.30)}
    for s, (bpb, recall) in ref.items():
        write(base, "gated_deltanet", s, bpb, recall)
        write(base, "deltanet", s, bpb + 0.2, 0.95)
    loop = {0: (2.90, 0.95), 1: (2.85, 0.80), 2: (2.99, 0.92)}
    for s, (bpb, recall) in loop.items():
        write(folder, "mutator_best_s0_c000001", s, bpb, recall)
    write(folder, "random_best_s0_c000001", 0, 3.10, 0.20)  # seeds 1 and 2 not trained yet
    (folder / "designs.json").write_text(json.dumps({
        m: {"run": f"search-{m}-s0", "search_seed": 0, "candidate": "c000001",
            "search_fitness": 0.1, "search_bpb": 2.90, "search_mqar": 0.95,
            "file": f"{m}_best_s0_c000001.py"} for m in ("mutator", "random")}))
    table = confirm.confirmation(folder, base, {"reference": "gated_deltanet", "mqar_pairs": 16},
                                 ["deltanet", "gated_deltanet"], [0, 1, 2])
    assert table["best_bpb_baseline"] == "gated_deltanet"
    assert table["best_mqar_baseline"] == "deltanet"
    row = table["designs"]["mutator"]
    fits = [ref[s][0] - loop[s][0] + loop[s][1] - ref[s][1] for s in (0, 1, 2)]
    assert [row["fitness_by_seed"][str(s)] for s in (0, 1, 2)] == pytest.approx(fits)
    mean, half = mean_ci(fits)
    assert (row["fitness"]["mean"], row["fitness"]["ci95"]) == pytest.approx((mean, half))
    assert row["bpb_vs_best"]["mean"] == pytest.approx(
        sum(ref[s][0] - loop[s][0] for s in (0, 1, 2)) / 3)
    assert row["mqar_vs_best"]["mean"] == pytest.approx(
        sum(loop[s][1] - 0.95 for s in (0, 1, 2)) / 3)
    assert row["solved"] == 2 and row["solve_rate_wilson95"][0] < 2 / 3 < \
        row["solve_rate_wilson95"][1]
    assert row["reproduces_search"] is True  # seed 0 gave the search's numbers back
    other = table["designs"]["random"]
    assert other["seeds"] == [0] and other["missing_seeds"] == [1, 2]
    assert other["reproduces_search"] is False
    (c,) = table["comparisons"]
    assert c["seeds"] == [0] and c["verdict"] == "one seed"
    assert c["mean"] == pytest.approx(fits[0] - other["fitness_by_seed"]["0"])
    text = confirm.markdown(table)
    assert "random's best: seeds failed none, not trained yet [1, 2]." in text
    assert "| mutator | search-mutator-s0 c000001 | +0.100 |" in text


@pytest.mark.slow
def test_a_signal_ends_the_study_not_only_the_run_in_progress(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "search"
    script = Path(__file__).resolve().parents[1] / "tools" / "study" / "search.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--methods", "mutator,random", "--seeds", "0",
         "--trainings", "2", "--config", str(tiny_config(tmp_path)), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    journal = out / "search-mutator-s0" / "journal.jsonl"
    deadline = time.time() + 300
    while '"submitted"' not in (journal.read_text() if journal.exists() else ""):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    text = proc.communicate(timeout=300)[0]
    assert "search-mutator-s0: stopped (signal SIGTERM)" in text, text[-3000:]
    assert not (out / "search-random-s0").exists(), "the study went on to the next run"


def test_screening_costs_are_rebuilt_from_the_committed_readings(tmp_path: Path) -> None:
    """tools/study/screening.py on the committed readings gives docs/RESULTS.md part 2b's
    screening table: per-job costs are the steps of the readings' running CPU totals."""
    screening = load_study_tool("screening")
    results = Path(__file__).resolve().parents[1] / "docs" / "results"
    full = results / "search-full" / "search-mutator-s0.json"
    budgeted = results / "search-budgeted" / "search-mutator-s0.json"
    assert screening.main([str(full), str(budgeted), "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "screening.json").read_text())["rows"]
    assert [r["proposals_evaluated"] for r in rows] == [13, 24]
    assert [round(r["per_cpu_hour"], 1) for r in rows] == [47.8, 90.2]
    assert round(rows[1]["ratio"], 2) == 1.89
    assert rows[0]["jobs"]["whole"]["n"] == 13 and rows[0]["reached_rung"] == 0
    assert round(rows[0]["jobs"]["whole"]["mean_cpu_s"], 1) == 75.4
    jobs = rows[1]["jobs"]
    assert (jobs["rung"]["n"], jobs["continuation"]["n"], jobs["whole"]["n"]) == (24, 6, 0)
    assert (round(jobs["rung"]["mean_cpu_s"], 1), round(jobs["continuation"]["mean_cpu_s"], 1)) \
        == (24.4, 62.0)
    assert (rows[1]["went_on"], rows[1]["reached_rung"]) == (6, 24)
    assert rows[1]["rung_recall"] is None  # a reading from before rung scores were kept
    # What the rungs measured: recall at chance, or no recall at all (a rung of lm alone).
    later = [results / "search-study" / "search-mutator-s4.json",
             results / "search-lmrung" / "search-mutator-s5.json"]
    assert screening.main([str(full), *map(str, later), "--out", str(tmp_path)]) == 0
    recall = [r["rung_recall"] for r in
              json.loads((tmp_path / "screening.json").read_text())["rows"]]
    assert recall == [None, {"scored": 26, "at_chance": 14}, {"scored": 0, "at_chance": 0}]
    # Every job's cost is counted once: the kinds add up to the run's CPU time.
    for r, reading in zip(rows, (full, budgeted), strict=True):
        total = sum(j["n"] * (j["mean_cpu_s"] or 0.0) for j in r["jobs"].values())
        assert abs(total / 3600 - json.loads(reading.read_text())["proposal_cpu_hours"]) < 1e-5
