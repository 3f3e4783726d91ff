"""Choosing the parent (and inspirations) of the next candidate from the scored archive.

Usage::

    state = store.replay()
    pick = sample(state.candidates.values(), SamplingConfig(strategy="ucb1"), random.Random(7))
    pick.parent, pick.inspirations      # "c000042", ["c000017", "c000003"]

Strategies (higher fitness is better; only candidates with a fitness take part):

- ``ucb1`` (default): each candidate is a bandit arm whose reward is its fitness, rescaled to
  [0, 1] over the archive, and whose pull count is 1 + the number of children it already has:
  score = reward + exploration * sqrt(ln(total pulls) / pulls). Good parents are reused, and
  parents that were rarely tried get their turn.
- ``greedy``: the fittest candidate, ties broken at random.
- ``uniform``: any scored candidate, equally likely.
- ``islands``: the archive is split into `num_islands` islands (a candidate's ``island`` field,
  else its generation modulo the count); the parent comes from the given island by UCB1, so
  lineages evolve apart. Every `migration_interval` generations the inspirations may come from
  the other islands.

Inspirations: half the slots go to the fittest other candidates, the rest are drawn uniformly,
so the proposer sees both the state of the art and some variety.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

from evolve.config.loading import choice, positive

STRATEGIES = ("ucb1", "greedy", "uniform", "islands")


class Scored(Protocol):
    """What sampling reads from a candidate (evolve.state.journal.CandidateState has it)."""

    id: str
    fitness: float | None
    parents: list[str]
    generation: int | None
    island: int | None


@dataclass(kw_only=True)
class SamplingConfig:
    """How parents and inspirations are chosen."""

    strategy: str = "ucb1"
    """ucb1, greedy, uniform or islands (see evolve/search/sampling.py)."""
    exploration: float = 1.0
    """UCB1's exploration weight: 0 is greedy; larger values favour rarely used parents."""
    num_inspirations: int = 2
    """Other candidates shown to the proposer besides the parent."""
    num_islands: int = 4
    """islands only: how many separate sub-populations."""
    migration_interval: int = 10
    """islands only: every this many generations, inspirations may come from other islands."""

    def __post_init__(self) -> None:
        choice("sampling.strategy", self.strategy, STRATEGIES)
        positive("sampling.exploration", self.exploration, allow_zero=True)
        positive("sampling.num_inspirations", self.num_inspirations, allow_zero=True)
        positive("sampling.num_islands", self.num_islands)
        positive("sampling.migration_interval", self.migration_interval)


@dataclass
class Sample:
    """A sampling decision, recorded in the child's proposal file."""

    parent: str
    inspirations: list[str]
    strategy: str
    island: int | None = None
    scores: dict[str, float] = field(default_factory=dict)
    """The parent's fitness, reward, pulls and UCB score (for the record)."""


def island_of(c: Scored, num_islands: int) -> int:
    """The island of a candidate: its own field, else its generation modulo `num_islands`."""
    if c.island is not None:
        return c.island % num_islands
    return (c.generation or 0) % num_islands


def sample(candidates: Iterable[Scored], cfg: SamplingConfig, rng: random.Random, *,
           island: int | None = None, generation: int = 0) -> Sample:
    """Choose a parent and inspirations; raises ValueError when no candidate has a fitness."""
    everyone = list(candidates)
    scored = [c for c in everyone if c.fitness is not None and math.isfinite(c.fitness)]
    if not scored:
        raise ValueError("no candidate has a fitness yet: train and score the baselines first")
    pool = scored
    if cfg.strategy == "islands":
        island = island if island is not None else generation % cfg.num_islands
        local = [c for c in scored if island_of(c, cfg.num_islands) == island]
        pool = local or scored  # an empty island starts from the whole archive (the baselines)
    scores: dict[str, float] = {}
    if cfg.strategy == "uniform":
        parent = rng.choice(pool)
    elif cfg.strategy == "greedy":
        best = max(c.fitness for c in pool)  # type: ignore[type-var]
        parent = rng.choice([c for c in pool if c.fitness == best])
    else:
        parent, scores = _ucb1(pool, everyone, cfg.exploration, rng)
    others = pool if cfg.strategy == "islands" and generation % cfg.migration_interval else scored
    return Sample(parent=parent.id, inspirations=_inspirations(others, parent.id,
                                                               cfg.num_inspirations, rng),
                  strategy=cfg.strategy, island=island if cfg.strategy == "islands" else None,
                  scores=scores)


def _ucb1(pool: Sequence[Scored], everyone: Sequence[Scored], exploration: float,
          rng: random.Random) -> tuple[Scored, dict[str, float]]:
    children: dict[str, int] = {}
    for c in everyone:
        for p in c.parents:
            children[p] = children.get(p, 0) + 1
    fits = [c.fitness for c in pool]
    lo, hi = min(fits), max(fits)  # type: ignore[type-var]
    span = (hi - lo) or 1.0  # type: ignore[operator]
    total = sum(1 + children.get(c.id, 0) for c in pool)
    log_total = math.log(total)
    best_score, best = -math.inf, []
    for c, f in zip(pool, fits):
        pulls = 1 + children.get(c.id, 0)
        score = (f - lo) / span + exploration * math.sqrt(log_total / pulls)  # type: ignore[operator]
        if score > best_score:
            best_score, best = score, [c]
        elif score == best_score:
            best.append(c)
    parent = rng.choice(best)
    pulls = 1 + children.get(parent.id, 0)
    return parent, {"fitness": float(parent.fitness), "pulls": pulls,  # type: ignore[arg-type]
                    "reward": (parent.fitness - lo) / span, "ucb": best_score}  # type: ignore[operator]


def _inspirations(pool: Sequence[Scored], parent: str, n: int, rng: random.Random) -> list[str]:
    others = [c for c in pool if c.id != parent]
    if n <= 0 or not others:
        return []
    if n >= len(others):
        return [c.id for c in sorted(others, key=lambda c: c.fitness, reverse=True)]  # type: ignore[arg-type, return-value]
    # nlargest, not a full sort: the archive may hold 10^4 candidates and n is small.
    best = heapq.nlargest((n + 1) // 2, others, key=lambda c: c.fitness)  # type: ignore[arg-type, return-value]
    chosen = [c.id for c in best]
    while len(chosen) < n:
        pick = rng.choice(others).id
        if pick not in chosen:
            chosen.append(pick)
    return chosen
