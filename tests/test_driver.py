"""The driver end to end on a demo-size run: real trainings, real gates, real restarts."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import run_config_dict

from evolve.views.board import leaderboard, status
from evolve.search.run_config import load_run_config
from evolve.search.driver import Driver
from evolve.state.store import Store
from evolve.train.job import TrainJob

REPO = Path(__file__).resolve().parents[1]


def mini_config(tmp_path: Path, executor: str = "local", **search) -> Path:
    launch = {"executor": executor}
    if executor == "slurm":
        launch.update(cpus_per_task=1, mem_gb=2, python=sys.executable)
    cfg = run_config_dict(tmp_path / "state", search={"max_candidates": 4, **search},
                          launch=launch)
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def check_invariants(run: Path, min_proposals: int) -> None:
    """Every candidate finished with a result or a reason; none trained twice; JSON valid."""
    store = Store.open(run)
    state = store.replay()
    terminal = {"analyzed", "rejected", "failed", "cancelled"}
    for c in state.candidates.values():
        assert c.status in terminal, (c.id, c.status)
        if c.status in ("rejected", "failed"):
            assert c.error, (c.id, "no reason recorded")
    submits = Counter(e["candidate"] for e in store.events() if e.get("event") == "submitted")
    for cid, n in submits.items():
        events = [e["event"] for e in store.events() if e.get("candidate") == cid]
        # A second submission is allowed only after the first attempt was lost or failed.
        assert n == 1 or any(ev in ("lost", "failed") for ev in events), (cid, events)
        metrics = store.candidate(cid).metrics
        if metrics.exists():
            rows = [json.loads(line) for line in metrics.read_text().splitlines()]
            for track in ("lm", "mqar"):
                steps = [r["step"] for r in rows if r.get("track") == track and "loss" in r]
                assert steps == sorted(set(steps)), (cid, track, "a step trained twice")
    for path in run.rglob("*.json"):
        json.loads(path.read_text())  # every JSON file parses
    # Every lesson of every analysis is in the cognition base, as an entry or as evidence.
    sources = set()
    for entry in (run / "cognition").glob("*.json"):
        data = json.loads(entry.read_text())
        if isinstance(data, dict) and "id" in data:
            sources.add(data.get("source"))
            sources.update(e.get("source") for e in data.get("supporting", []))
            sources.update(e.get("source") for e in data.get("contradicting", []))
    for analysis in run.glob("candidates/*/analysis.json"):
        for lesson in json.loads(analysis.read_text()).get("lessons", []):
            assert lesson["source"] in sources, (analysis, lesson["source"])
    proposals = [r for r in leaderboard(run) if r["kind"] == "proposal"]
    assert len(proposals) + sum(c.status == "failed" for c in state.candidates.values()) \
        >= min_proposals


def test_demo_size_search_completes_and_reports(tmp_path: Path) -> None:
    cfg = load_run_config(mini_config(tmp_path))
    driver = Driver(cfg)
    assert driver.run() == 0 and driver.stop_reason == "complete"
    check_invariants(cfg.run_dir, min_proposals=4)
    board = leaderboard(cfg.run_dir)
    ref = next(r for r in board if r["label"] == "deltanet")
    assert ref["fitness"] == 0.0  # the reference is the zero of fitness
    assert all(r["fitness"] is not None for r in board if r["status"] == "analyzed")
    s = status(cfg.run_dir)
    assert s["driver"] == "stopped (complete)" and s["in_flight"] == 0
    analysis = json.loads(next(cfg.run_dir.glob("candidates/*/analysis.json")).read_text())
    assert analysis["analyzer"] == "rules" and analysis["analysis"]

    # Starting the driver again on a complete run trains nothing more.
    before = len(list(Store.open(cfg.run_dir).events()))
    assert Driver(cfg).run() == 0
    events = list(Store.open(cfg.run_dir).events())
    assert not [e for e in events[before:] if e.get("event") == "submitted"]


def test_resume_with_a_changed_config_is_refused_listing_keys(tmp_path: Path) -> None:
    path = mini_config(tmp_path, max_candidates=2)
    Driver(load_run_config(path))  # creates the run and freezes its config
    changed = load_run_config(mini_config(tmp_path, max_candidates=3))
    with pytest.raises(Exception, match="search.max_candidates"):
        Driver(changed)


def test_a_run_frozen_by_an_older_evolve_resumes_when_new_keys_keep_their_defaults(
        tmp_path: Path) -> None:
    # An older evolve froze run.yaml without the keys added since (search.seed_designs came in
    # session 3); resuming or `evolve verify` on such a run must not call that a change.
    path = mini_config(tmp_path, max_candidates=2)
    cfg = load_run_config(path)
    Driver(cfg)
    frozen = yaml.safe_load((cfg.run_dir / "run.yaml").read_text())
    del frozen["search"]["seed_designs"]
    del frozen["fitness"]["mqar_pairs"]
    (cfg.run_dir / "run.yaml").write_text(yaml.safe_dump(frozen))
    Driver(load_run_config(path))  # the defaults: no error
    # A new key set to something else than its default is still a change, named.
    data = yaml.safe_load(path.read_text())
    data["search"]["seed_designs"] = [{"base": "deltanet", "out_norm": "none"}]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(Exception, match="search.seed_designs") as err:
        Driver(load_run_config(path))
    assert "fitness.mqar_pairs" not in str(err.value)


def test_stop_file_ends_the_loop_cleanly(tmp_path: Path) -> None:
    cfg = load_run_config(mini_config(tmp_path))
    driver = Driver(cfg)
    (cfg.run_dir / "STOP").touch()
    assert driver.run() == 0 and driver.stop_reason.startswith("STOP file ")


def test_a_run_whose_recall_a_window_can_answer_is_warned_about_at_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The tiny preset's 64-token MQAR: the design space's 128-token window sees every key
    # (evolve/search/recall_reach.py; tests/test_recall_reach.py for the arithmetic).
    cfg = load_run_config(mini_config(tmp_path))
    driver = Driver(cfg)
    (cfg.run_dir / "STOP").touch()
    with caplog.at_level(logging.WARNING, logger="evolve"):
        assert driver.run() == 0
    (warning,) = [r.getMessage() for r in caplog.records
                  if r.getMessage().startswith("recall (MQAR) cannot tell")]
    assert "set train.mqar_task.query_gap >= " in warning


def _driver_proc(config: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evolve.cli.main", "run", str(config)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=False)


def chaos(tmp_path: Path, executor: str, kills: int) -> None:
    config = mini_config(tmp_path, executor)
    run = load_run_config(config).run_dir
    rng = random.Random(int(os.environ.get("EVOLVE_CHAOS_SEED", "7")))
    for _ in range(kills):
        proc = _driver_proc(config, tmp_path)
        time.sleep(rng.uniform(1.0, 8.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    final = _driver_proc(config, tmp_path)
    _, err = final.communicate(timeout=900)
    assert final.returncode == 0, err[-3000:]
    check_invariants(run, min_proposals=4)
    restarts = [e for e in Store.open(run).events() if e.get("event") == "driver_start"]
    assert len(restarts) >= 2


@pytest.mark.slow
def test_chaos_sigkill_restarts_local(tmp_path: Path) -> None:
    chaos(tmp_path, "local", kills=int(os.environ.get("EVOLVE_CHAOS_KILLS", "10")))


@pytest.mark.slurm
@pytest.mark.slow
def test_chaos_sigkill_restarts_slurm(tmp_path: Path, slurm_cluster: None) -> None:
    chaos(tmp_path, "slurm", kills=int(os.environ.get("EVOLVE_CHAOS_KILLS", "10")))


@pytest.mark.slurm
@pytest.mark.slow
def test_driver_sbatch_runs_a_search_and_survives_its_pre_timeout_signal(
        tmp_path: Path, slurm_cluster: None) -> None:
    config = mini_config(tmp_path, "slurm", max_candidates=4)
    run = load_run_config(config).run_dir
    site = tmp_path / "site.yaml"
    site.write_text(f"python: {sys.executable}\n")
    env = dict(os.environ, EVOLVE_SITE=str(site))
    out = subprocess.run(["sbatch", "--parsable", f"--chdir={REPO}", "--cpus-per-task=1",
                          f"--output={tmp_path}/driver-%j.out", str(REPO / "slurm/driver.sbatch"),
                          str(config)], capture_output=True, text=True, env=env, check=True)
    job = out.stdout.strip().split(";")[0]
    journal = run / "journal.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (journal.exists() and
                                          '"submitted"' in journal.read_text()):
        time.sleep(1)
    assert journal.exists(), "the driver job never started the run"
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    deadline = time.time() + 900
    while time.time() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout
        if not q.strip():
            break
        time.sleep(2)
    logs = "".join(p.read_text() for p in tmp_path.glob("driver-*.out"))
    events = [json.loads(line) for line in journal.read_text().splitlines()]
    stops = [e.get("reason") for e in events if e.get("event") == "driver_stop"]
    assert any(str(r).startswith("signal") for r in stops), (stops, logs[-2000:])
    assert stops[-1] == "complete", (stops, logs[-2000:])
    check_invariants(run, min_proposals=4)


@pytest.fixture
def slurm_cluster() -> None:
    if shutil.which("sbatch") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but sbatch is missing: run tools/slurm-local.sh start")
        pytest.skip("no Slurm here (tools/slurm-local.sh start)")


class ListingTrainJob(TrainJob):
    """The real training job, which also lists the candidates it trained in a file: shows that
    the driver ran the training callable it was given."""

    def __init__(self, listing: Path) -> None:
        super().__init__()
        self.listing = listing

    def __call__(self, candidate_dir: str, train_cfg: dict) -> dict:
        with open(self.listing, "a") as f:
            f.write(Path(candidate_dir).name + "\n")
        return super().__call__(candidate_dir, train_cfg)


def test_the_driver_runs_the_training_callable_it_is_given(tmp_path: Path) -> None:
    path = tmp_path / "debug.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(
        tmp_path / "state", steps=2, checkpoint_every=2, launch={"executor": "debug"},
        search={"max_candidates": 1, "generation_size": 1, "baselines": ["deltanet"]})))
    cfg = load_run_config(path)
    listing = tmp_path / "trained.txt"
    driver = Driver(cfg, train_job=ListingTrainJob(listing))
    assert driver.run() == 0 and driver.stop_reason == "complete"
    trained = [c.id for c in driver.view.candidates() if driver.view.result(c.id)]
    assert sorted(listing.read_text().split()) == sorted(trained) and len(trained) == 2


def test_baselines_train_with_the_seeds_the_proposals_train_with(tmp_path: Path) -> None:
    """Search seed 3: baselines get seeds 3 and 4 (baseline_seeds 2), not 0 and 1, so that a
    proposal (seed 3) is compared with baselines trained under its own seed."""
    path = tmp_path / "seeded.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(
        tmp_path / "state", search={"seed": 3, "baseline_seeds": 2, "max_candidates": 1})))
    driver = Driver(load_run_config(path))
    with driver.store.driver_lock():
        driver._submit_baselines()
    seeds = sorted(driver.view.proposal(c.id)["seed"] for c in driver.view.candidates("baseline"))
    assert seeds == [3, 3, 4, 4]


def test_with_islands_a_proposal_is_placed_on_its_first_parents_island(tmp_path: Path) -> None:
    path = tmp_path / "islands.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(
        tmp_path / "state", sampling={"strategy": "islands", "num_islands": 2},
        search={"max_candidates": 4})))
    driver = Driver(load_run_config(path))
    code = "# not trained in this test\n"
    with driver.store.driver_lock():
        driver._submit_baselines()
        base = driver.view.candidates("baseline")[0].id
        first = [driver._new_candidate(code, {"kind": "proposal", "parents": [base]}, 1)
                 for _ in range(3)]
        child = driver._new_candidate(code, {"kind": "proposal", "parents": [first[1], base]}, 2)
    islands = {c: driver.view.state.candidates[c].island for c in [*first, child]}
    # Children of a baseline go round the islands; a lineage stays on its island.
    assert [islands[c] for c in first] == [0, 1, 0] and islands[child] == 1
    assert driver.view.proposal(child)["island"] == 1
    assert all(c.island is None for c in driver.view.candidates("baseline"))


class ScriptedProposer:
    """A proposer that hands out prepared drafts in order (a real Proposer, scripted so that the
    test controls how close each draft is to the archive)."""

    name = "scripted"

    def __init__(self, drafts: list) -> None:
        self.drafts = list(drafts)

    def propose(self, archive: list, n: int, generation: int) -> list:
        out, self.drafts = self.drafts[:n], self.drafts[n:]
        return out


def test_a_near_duplicate_draft_goes_back_to_its_proposer_once(tmp_path: Path) -> None:
    from evolve.model.render import render
    from evolve.model.space import BASELINE_SPECS
    from evolve.search.proposers import Draft

    path = tmp_path / "novelty.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(
        tmp_path / "state", search={"max_candidates": 1, "generation_size": 1,
                                    "baselines": ["deltanet"]})))
    base = BASELINE_SPECS["deltanet"]
    near = base.replace(value_ratio=2)  # the same idea text as deltanet but for one field
    far = BASELINE_SPECS["gla"].replace(value_ratio=2)
    drafts = [Draft(code=render(near), motivation="baseline deltanet", parents=[],
                    proposer="scripted", spec=near),
              Draft(code=render(far), motivation="a gated linear attention with wider values",
                    parents=[], proposer="scripted", spec=far)]
    driver = Driver(load_run_config(path), proposer=ScriptedProposer(drafts))
    with driver.store.driver_lock():
        driver._submit_baselines()
        assert driver._propose_if_room()
    events = [e for e in driver.store.events() if e["event"] == "novelty_returned"]
    assert len(events) == 1 and events[0]["similarity"] >= 0.92
    (proposal,) = [driver.view.proposal(c.id) for c in driver.view.candidates("proposal")]
    assert proposal["motivation"].startswith("a gated linear") \
        and proposal["returned_for"] == events[0]["nearest"]
    assert status(driver.store.root)["novelty_returned"] == 1


@pytest.mark.slow
def test_a_second_run_reuses_the_baselines_the_first_one_trained(tmp_path: Path) -> None:
    """Two runs under one root with the same seed: the second trains nothing (its baseline, and
    its proposal, which the seeded mutator proposes again, are cache hits journaled as
    `reused`); with reuse off a third trains them again."""
    def run(name: str, reuse: bool = True) -> tuple[Driver, list[str]]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(run_config_dict(
            tmp_path / "state", name=name, steps=2, checkpoint_every=2,
            launch={"executor": "debug"},
            search={"max_candidates": 1, "generation_size": 1, "baselines": ["deltanet"],
                    "seed": 0})))
        listing = tmp_path / f"{name}.trained"
        driver = Driver(load_run_config(path), train_job=ListingTrainJob(listing),
                        reuse_results=reuse)
        assert driver.run() == 0 and driver.stop_reason == "complete"
        return driver, listing.read_text().split() if listing.exists() else []

    first, trained_first = run("first")
    second, trained_second = run("second")
    (base1,) = [c.id for c in first.view.candidates("baseline")]
    (base2,) = [c.id for c in second.view.candidates("baseline")]
    assert base1 in trained_first and len(trained_first) == 2 and trained_second == []
    reused = {e["candidate"]: e for e in second.store.events() if e["event"] == "reused"}
    assert sorted(reused) == sorted(c.id for c in second.view.candidates())
    assert reused[base2]["source"] == str(first.store.candidate(base1).dir)
    assert second.view.result(base2)["metrics"] == first.view.result(base1)["metrics"]
    board = {r["id"]: r for r in leaderboard(second.store.root)}
    assert board[base2]["label"] == "(reused) deltanet" and board[base2]["fitness"] == 0.0
    third, trained_third = run("third", reuse=False)
    assert len(trained_third) == 2


def test_a_run_whose_reference_baseline_failed_stops_and_says_why(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every training diverges at once (train.lm.diverge_loss below any loss): the reference
    baseline fails, and the run stops with exit 1 naming it instead of spending its budget on
    proposals it could never score."""
    from evolve.cli.main import main

    cfg = run_config_dict(tmp_path / "state", search={"max_candidates": 4},
                          fitness={"reference": "deltanet"})
    cfg["train"]["lm"]["diverge_loss"] = 0.01
    path = tmp_path / "diverging.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert "stopped (the reference baseline deltanet (fitness.reference) failed on every seed" \
        in err, err[-2000:]
    run = tmp_path / "state" / "mini"
    state = Store.open(run).replay()
    reference = [c for c in state.candidates.values()
                 if json.loads(Store.open(run).candidate(c.id).proposal.read_text()).get("name")
                 == "deltanet"]
    assert [c.status for c in reference] == ["failed"]
    assert f"{reference[0].id}: lm track diverged" in err
    assert not any(c.status == "scored" for c in state.candidates.values())
