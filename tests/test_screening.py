"""Multi-fidelity screening (search.fidelity): a rung training continued from its checkpoint
repeats no step and ends where an uninterrupted training ends; a training above the loss ceiling
stops early with its curve; a real driver run screens its proposals with ASHA's rule."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import run_config_dict

from evolve.config.loading import ConfigError
from evolve.search.driver import Driver
from evolve.search.fidelity import FidelityConfig, promotable
from evolve.search.run_config import load_run_config
from evolve.state.layout import CandidatePaths
from evolve.train.job import train_candidate
from evolve.train.loop import DeferredSignals
from evolve.train.presets import tiny
from evolve.views.board import leaderboard, print_status, status


def small(steps: int = 8):
    """The tiny preset cut to `steps` steps per track, a loss row per step, no lm-eval."""
    cfg = tiny()
    lm = replace(cfg.lm, max_steps=steps, log_every=1, checkpoint_every=100,
                 optim=replace(cfg.lm.optim, warmup_steps=2))
    mqar = replace(cfg.mqar, max_steps=steps, batch_size=16, log_every=1, checkpoint_every=100,
                   optim=replace(cfg.mqar.optim, warmup_steps=2))
    return replace(cfg, lm=lm, mqar=mqar, eval=replace(cfg.eval, bpb_windows=4, lm_eval_tasks=()),
                   mqar_task=replace(cfg.mqar_task, num_eval_examples=32),
                   runtime=replace(cfg.runtime, num_threads=1))


def loss_rows(folder: Path) -> list[tuple[str, int, float]]:
    rows = [json.loads(line) for line in CandidatePaths.of(folder).metrics.read_text().splitlines()]
    return [(r["track"], r["step"], r["loss"]) for r in rows if "loss" in r]


def test_a_rung_training_continues_from_its_checkpoint_repeating_no_step(tmp_path: Path) -> None:
    cfg = small(8)
    whole = train_candidate("deltanet", cfg, tmp_path / "whole", DeferredSignals())
    screened = tmp_path / "screened"
    rung = train_candidate("deltanet", replace(cfg, budget_fraction=0.5), screened,
                           DeferredSignals())
    assert rung["status"] == "ok" and rung["budget_fraction"] == 0.5
    assert {t["steps"] for t in rung["tracks"].values()} == {4}
    assert {t["status"] for t in rung["tracks"].values()} == {"rung"}
    assert rung["metrics"]["bpb"] is not None and rung["cpu_s"] > 0
    final = train_candidate("deltanet", cfg, screened, DeferredSignals())
    rows = loss_rows(screened)
    for track in ("lm", "mqar"):
        assert [s for t, s, _ in rows if t == track] == list(range(1, 9))  # each step once
    # The same steps on the same schedule: the continuation ends where one training ends
    # (the rung trained lm to 4, then mqar to 4; the continuation lm, then mqar, to 8).
    assert sorted(rows) == sorted(loss_rows(tmp_path / "whole"))
    assert final["metrics"]["bpb"] == pytest.approx(whole["metrics"]["bpb"], abs=1e-6)
    assert final["metrics"]["mqar_acc"] == pytest.approx(whole["metrics"]["mqar_acc"], abs=1e-6)


def test_a_training_above_the_loss_ceiling_stops_early_and_keeps_its_curve(
        tmp_path: Path) -> None:
    cfg = small(8)
    cfg = replace(cfg, lm=replace(cfg.lm, loss_ceiling=((3, 0.5),)))  # far below any loss at 3
    result = train_candidate("deltanet", cfg, tmp_path, DeferredSignals())
    assert result["status"] == "failed" and result["stopped_early"] is True
    assert "lm track stopped early: loss" in result["reason"] and "step 3" in result["reason"]
    assert [s for t, s, _ in loss_rows(tmp_path)] == [1, 2, 3]  # the curve up to the stop
    assert "mqar" not in result["tracks"]


def test_asha_promotes_the_best_third_of_those_that_reached_the_rung() -> None:
    scores = {"a": 0.3, "b": -0.2, "c": 0.1, "d": -0.5, "e": 0.0, "f": -0.1}
    assert promotable(scores, 3, set()) == ["a", "c"]
    assert promotable(scores, 3, {"a"}) == ["c"]
    assert promotable({"a": 0.3, "b": 0.1}, 3, set()) == []  # too few yet: wait for more
    # A later arrival can lift an earlier one into the top third (asynchronous promotion).
    assert promotable({**scores, "g": -0.6, "h": -0.7, "i": -0.8}, 3, {"a", "c"}) == ["e"]


def test_a_promotion_budget_keeps_asha_to_one_in_eta() -> None:
    # "b" was promoted while it was the best of the first three; "a" and "c" arrived better.
    scores = {"a": 0.3, "b": -0.2, "c": 0.1, "d": -0.5, "e": 0.0, "f": -0.1}
    assert promotable(scores, 3, {"b"}) == ["a", "c"]  # ASHA alone: 3 of 6 promoted
    assert promotable(scores, 3, {"b"}, budget=True) == ["a"]  # at most floor(6 / 3) = 2
    assert promotable(scores, 3, {"b", "a"}, budget=True) == []  # "c" waits for a slot
    assert promotable({**scores, "g": -0.6, "h": -0.7, "i": -0.8}, 3, {"b", "a"},
                      budget=True) == ["c"]  # three more arrivals open one


@pytest.mark.parametrize("fields, key", [({"rungs": [0.5, 0.25]}, "fidelity.rungs"),
                                          ({"rungs": [1.0]}, "fidelity.rungs"),
                                          ({"eta": 1}, "fidelity.eta"),
                                          ({"rung_tracks": ["lm", "recall"]},
                                           "fidelity.rung_tracks"),
                                          ({"rung_tracks": ["lm", "lm"]},
                                           "fidelity.rung_tracks")])
def test_bad_fidelity_settings_are_named(fields: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        FidelityConfig(**fields)


def test_a_bad_fidelity_setting_in_a_run_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(tmp_path / "state",
                                                   search={"fidelity": {"rungs": [2]}})))
    with pytest.raises((ConfigError, ValueError), match="fidelity.rungs"):
        load_run_config(path)


def test_rung_tracks_that_name_no_track_of_the_run_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "lm-only.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(
        tmp_path / "state", train={"mqar": None},
        search={"fidelity": {"rungs": [0.5], "rung_tracks": ["mqar"]}})))
    with pytest.raises(ConfigError, match=r"rung_tracks=\['mqar'\] names no track the run "
                                          r"trains \(lm\)"):
        load_run_config(path)


@pytest.mark.slow
def test_a_rung_of_the_lm_track_alone_scores_on_bpb_and_trains_recall_when_going_on(
        tmp_path: Path) -> None:
    path = tmp_path / "lm-rung.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(
        tmp_path / "state", steps=8, checkpoint_every=100, log_every=1,
        launch={"executor": "debug"}, fitness={"mqar_pairs": 8},
        search={"max_candidates": 2, "generation_size": 2, "baselines": ["deltanet"],
                "fidelity": {"rungs": [0.5], "eta": 2, "stop_margin": 20.0, "stop_after": 0.0,
                             "rung_tracks": ["lm"]}})))
    driver = Driver(load_run_config(path))
    assert driver.run() == 0 and driver.stop_reason == "complete"
    events = list(driver.store.events())
    promoted = {e["candidate"] for e in events if e["event"] == "promoted"}
    rung_fitness = {e["candidate"]: e["rung_fitness"] for e in events if e["event"] == "rung"}
    proposals = [c.id for c in driver.view.candidates("proposal")]
    assert proposals and promoted & set(proposals)
    for cid in [c.id for c in driver.view.candidates()]:
        paths = driver.store.candidate(cid)
        rung = json.loads(paths.rung_result(0.5).read_text())
        assert list(rung["tracks"]) == ["lm"] and "mqar_acc" not in rung["metrics"]
        if cid in proposals:
            assert rung_fitness[cid] is not None  # bits per byte against the reference's rung
        if cid in promoted:
            whole = driver.view.result(cid)
            assert whole["budget_fraction"] == 1.0 and whole["metrics"]["mqar_acc"] is not None
            rows = loss_rows(paths.dir)
            # lm went on from its rung checkpoint; mqar trained only now, from its first step.
            assert [s for t, s, _ in rows if t == "lm"] == list(range(1, 9))
            assert [s for t, s, _ in rows if t == "mqar"] == list(range(1, 9))
        else:
            assert driver.view.state.candidates[cid].status == "paused"
    # A rung's config: the lm track with its loss ceiling, no mqar track (and its ceiling,
    # from the baselines' whole curves, kept for the continuation).
    rung_cfg = driver._submitted_config(None, 0, 0.5, ceiling=True)
    assert rung_cfg["mqar"] is None and rung_cfg["lm"]["loss_ceiling"]
    assert driver._submitted_config(None, 0, 1.0, ceiling=True)["mqar"]["loss_ceiling"]


@pytest.mark.slow
def test_a_screened_search_pauses_most_proposals_and_continues_the_best(tmp_path: Path) -> None:
    path = tmp_path / "screened.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(
        tmp_path / "state", steps=8, checkpoint_every=100, log_every=1,
        launch={"executor": "debug"},
        search={"max_candidates": 4, "generation_size": 2, "baselines": ["deltanet"],
                "fidelity": {"rungs": [0.5], "eta": 2, "stop_margin": None}})))
    driver = Driver(load_run_config(path))
    assert driver.run() == 0 and driver.stop_reason == "complete"
    events = list(driver.store.events())
    rungs = [e for e in events if e["event"] == "rung"]
    promoted = {e["candidate"]: e for e in events if e["event"] == "promoted"}
    proposals = [c.id for c in driver.view.candidates("proposal")]
    (base,) = [c.id for c in driver.view.candidates("baseline")]
    assert {e["candidate"] for e in rungs} == {base, *proposals}
    assert base in promoted and driver.view.state.candidates[base].status == "analyzed"
    went_on = [c for c in proposals if c in promoted]
    # ASHA: when the last proposal reached the rung, at least the best half went on.
    assert len(went_on) >= len(proposals) // 2 and len(went_on) < len(proposals)
    for cid in proposals:
        c = driver.view.state.candidates[cid]
        paths = driver.store.candidate(cid)
        assert json.loads(paths.rung_result(0.5).read_text())["budget_fraction"] == 0.5
        assert c.cpu_hours > 0
        if cid in went_on:
            assert c.status == "analyzed" and driver.view.result(cid)["budget_fraction"] == 1.0
            steps = [s for t, s, _ in loss_rows(paths.dir) if t == "lm"]
            assert steps == list(range(1, 9))  # continued from the rung's checkpoint
        else:
            assert c.status == "paused" and c.fitness is None
            assert driver.view.result(cid)["budget_fraction"] == 0.5
    screening = status(driver.store.root)["screening"]
    assert screening["rungs"]["0.5"] == {"reached": len(proposals), "went_on": len(went_on)}
    assert print_status(driver.store.root) == 0
    board = {row["id"]: row for row in leaderboard(driver.store.root)}
    assert all(board[c]["status"] == "paused" for c in proposals if c not in went_on)
    # A deleted journal is rebuilt from the folders (the rung results and the jobs' history);
    # the resumed driver re-scores what the rebuild cannot know and trains nothing again.
    before = {c.id: (c.status, round(c.cpu_hours, 5)) for c in driver.view.candidates()}
    driver.store.journal_path.unlink()
    fixed = subprocess.run([sys.executable, "-m", "evolve.cli.main", "fsck",
                            str(driver.store.root), "--fix"], capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    again = Driver(load_run_config(path))
    assert again.run() == 0 and again.stop_reason == "complete"
    assert not [e for e in again.store.events() if e["event"] == "submitted"
                and e.get("t", 0) > max(e2.get("t", 0) for e2 in events)]
    assert {c.id: (c.status, round(c.cpu_hours, 5)) for c in again.view.candidates()} == before


def test_the_loss_ceiling_is_every_baselines_loss_plus_the_margin(tmp_path: Path) -> None:
    """Two baselines train to their rung for real; a proposal submitted then gets, per track,
    the larger of their losses at each step both logged, plus stop_margin, from stop_after of
    the track on, and the result cache's key leaves the ceiling out."""
    path = tmp_path / "ceiling.yaml"
    path.write_text(yaml.safe_dump(run_config_dict(
        tmp_path / "state", steps=8, checkpoint_every=100, log_every=1,
        launch={"executor": "debug"},
        search={"max_candidates": 1, "baselines": ["deltanet", "linear_attention"],
                "fidelity": {"rungs": [0.5], "eta": 2, "stop_margin": 0.25,
                             "stop_after": 0.25}})))
    driver = Driver(load_run_config(path))
    with driver.store.driver_lock():
        driver._submit_baselines()
        driver._submit_checked()
        for _ in range(100):
            driver.launcher.poll()
            if len(driver.view.state.with_status("done")) == 2:
                break
    curves = [{(t, s): loss for t, s, loss in loss_rows(driver.store.candidate(c.id).dir)}
              for c in driver.view.candidates("baseline")]
    ceilings = driver._loss_ceilings(None)
    assert sorted(ceilings) == ["lm", "mqar"]
    for track, pairs in ceilings.items():
        # Steps 2-4: the baselines stopped at their rung (4 of 8); stop_after 0.25 of 8 is 2.
        assert [s for s, _ in pairs] == [2, 3, 4]
        for step, ceiling in pairs:
            assert ceiling == pytest.approx(max(c[(track, step)] for c in curves) + 0.25,
                                            abs=1e-5)
    submitted = driver._submitted_config(None, 0, 0.5, ceiling=True)
    assert submitted["lm"]["loss_ceiling"] == ceilings["lm"]
    assert submitted["budget_fraction"] == 0.5
    cid = driver.view.candidates("baseline")[0].id
    assert driver._training_key(cid, submitted) == driver._training_key(
        cid, driver._submitted_config(None, 0, 0.5))
