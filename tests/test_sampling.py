"""Parent and inspiration sampling over the scored archive."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from evolve.state.journal import CandidateState
from evolve.search.sampling import SamplingConfig, island_of, sample


def archive(fits: list[float | None], **kw: object) -> list[CandidateState]:
    return [CandidateState(id=f"c{i:06d}", fitness=f, generation=i, **kw)  # type: ignore[arg-type]
            for i, f in enumerate(fits)]


def test_greedy_takes_the_fittest_and_skips_unscored() -> None:
    cands = archive([0.1, None, 0.9, 0.5])
    pick = sample(cands, SamplingConfig(strategy="greedy", num_inspirations=2), random.Random(0))
    assert pick.parent == "c000002"
    assert pick.inspirations[0] == "c000003" and "c000001" not in pick.inspirations
    assert len(set(pick.inspirations)) == 2 and pick.parent not in pick.inspirations


def test_ucb1_moves_on_from_a_parent_with_many_children() -> None:
    cands = archive([1.0, 0.9, 0.0])
    assert sample(cands, SamplingConfig(), random.Random(0)).parent == "c000000"
    # Twenty children of the best: exploration now favours the untried runner-up.
    cands += [CandidateState(id=f"c{i:06d}", parents=["c000000"]) for i in range(3, 23)]
    pick = sample(cands, SamplingConfig(), random.Random(0))
    assert pick.parent == "c000001" and pick.scores["pulls"] == 1
    assert sample(cands, SamplingConfig(exploration=0.0), random.Random(0)).parent == "c000000"


def test_uniform_reaches_everyone() -> None:
    cands = archive([0.1, 0.2, 0.3])
    rng = random.Random(1)
    seen = Counter(sample(cands, SamplingConfig(strategy="uniform"), rng).parent for _ in range(300))
    assert set(seen) == {"c000000", "c000001", "c000002"} and min(seen.values()) > 50


def test_islands_keep_lineages_apart_until_migration() -> None:
    cfg = SamplingConfig(strategy="islands", num_islands=2, migration_interval=5, num_inspirations=3)
    cands = archive([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])  # generation i -> island i % 2
    for gen in (1, 3):  # island 1, no migration
        pick = sample(cands, cfg, random.Random(gen), generation=gen)
        assert pick.island == 1
        assert all(island_of(c, 2) == 1 for c in cands if c.id in [pick.parent, *pick.inspirations])
    pick = sample(cands, cfg, random.Random(0), generation=5)  # migration: inspirations from all
    assert pick.island == 1 and pick.inspirations[0] == "c000004"


def test_no_scored_candidate_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no candidate has a fitness"):
        sample(archive([None, float("nan")]), SamplingConfig(), random.Random(0))
    with pytest.raises(ValueError, match="ucb1, greedy, uniform, islands"):
        SamplingConfig(strategy="best")
