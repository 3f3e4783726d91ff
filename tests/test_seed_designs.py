"""search.seed_designs: the researcher's own designs enter the run as gated, trained proposals."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evolve.views.board import leaderboard
from evolve.search.run_config import load_run_config
from evolve.config.loading import ConfigError
from evolve.search.driver import Driver
from evolve.model.space import BASELINE_SPECS
from evolve.search.seed_designs import seed_design
from evolve.state.store import Store, read_json
from test_driver import mini_config

GDN_VARIANT = {"base": "gated_deltanet", "decay_param": "logsigmoid", "out_gate": "none",
               "value_ratio": 2}


def test_a_design_is_its_base_with_the_fields_that_differ() -> None:
    spec, motivation = seed_design(GDN_VARIANT, 0)
    assert spec == BASELINE_SPECS["gated_deltanet"].replace(
        decay_param="logsigmoid", out_gate="none", value_ratio=2.0)
    assert "gated_deltanet" in motivation and "value_ratio=2" in motivation
    spec, motivation = seed_design({**GDN_VARIANT, "motivation": "why not"}, 3)
    assert motivation == "why not"


@pytest.mark.parametrize("entry,message", [
    ({"base": "mamba"}, r"seed_designs\[0\]\.base is 'mamba'; valid bases: linear_attention"),
    ({"base": "deltanet", "decay_rate": 1}, r"unknown key\(s\) 'decay_rate'; valid keys: base"),
    ({"update_rule": "hebbian"}, r"(?s)seed_designs\[0\]: invalid mixer spec.*update_rule"),
    ("gated_deltanet", r"seed_designs\[0\] must be a mapping"),
])
def test_a_bad_design_is_refused_when_the_run_file_loads(tmp_path: Path, entry, message) -> None:
    path = mini_config(tmp_path, seed_designs=[entry])
    with pytest.raises(ConfigError, match=message) as err:
        load_run_config(path)
    assert str(path) in str(err.value)  # the file is named


def test_seed_designs_are_gated_trained_and_made_once(tmp_path: Path) -> None:
    rejected = {"base": "softmax", "motivation": "quadratic: the cost gate says no"}
    cfg = load_run_config(mini_config(tmp_path, executor="debug", max_candidates=2,
                                      seed_designs=[GDN_VARIANT, rejected]))
    driver = Driver(cfg)
    assert driver.run() == 0 and driver.stop_reason == "complete"
    store = Store.open(cfg.run_dir)
    state = store.replay()
    seeds = {read_json(store.candidate(c).proposal)["seed_design"]: state.candidates[c]
             for c in state.candidates
             if "seed_design" in read_json(store.candidate(c).proposal)}
    assert set(seeds) == {0, 1}
    assert seeds[0].status == "analyzed" and seeds[0].fitness is not None
    assert seeds[1].status == "rejected" and "quadratic" in (seeds[1].error or "").lower()
    board = {r["id"]: r for r in leaderboard(cfg.run_dir)}
    assert board[seeds[0].id]["kind"] == "proposal"
    # The trained one counts towards max_candidates (2) like any proposal, the rejected one
    # does not (gates are cheap, trainings are what the budget counts): the mutator made one.
    proposals = [state.candidates[c] for c in state.candidates
                 if read_json(store.candidate(c).proposal).get("kind") == "proposal"]
    assert len(proposals) == 3 and sum(c.status == "analyzed" for c in proposals) == 2

    # A restart makes no second copy of a seed design.
    Driver(cfg).run()
    again = Store.open(cfg.run_dir).replay()
    assert len(again.candidates) == len(state.candidates)
    frozen = yaml.safe_load((cfg.run_dir / "run.yaml").read_text())
    assert frozen["search"]["seed_designs"][0] == GDN_VARIANT  # resumable from the run's own copy
