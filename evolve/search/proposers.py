"""Where new candidates come from: the model-free mutator, or the LLM researcher.

    proposer = MutatorProposer(cfg.mutator, rng)
    drafts = proposer.propose(archive, n=4)        # -> [Draft(code, spec, motivation, parents)]

`archive` lists the run's candidates that have a spec and (where scored) a fitness; baselines
are in it from the start, so the first generation mutates them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from evolve.model.render import render
from evolve.model.space import MixerSpec
from evolve.search.mutator import MutatorConfig, propose
from evolve.search.sampling import SamplingConfig, sample


@dataclass
class ArchiveEntry:
    """One candidate as the proposer sees it."""

    id: str
    spec: MixerSpec | None
    fitness: float | None
    parents: list[str] = field(default_factory=list)
    name: str = ""
    motivation: str = ""
    generation: int | None = None
    island: int | None = None
    status: str = ""


@dataclass
class Draft:
    """A proposal before it becomes a candidate folder."""

    code: str
    motivation: str
    parents: list[str]
    proposer: str
    spec: MixerSpec | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """More keys for the proposal file (operator, model, edits, lessons used, ...)."""
    records: list[dict[str, Any]] = field(default_factory=list)
    """Model calls that produced it, stored in the candidate's llm/ folder."""


class Proposer(Protocol):
    name: str

    def propose(self, archive: list[ArchiveEntry], n: int, generation: int) -> list[Draft]: ...


def choose_parents(archive: list[ArchiveEntry], sampling: SamplingConfig, rng: random.Random,
                   generation: int, k: int) -> list[ArchiveEntry]:
    """Up to `k` distinct parents: sampled by fitness once scores exist, else uniformly."""
    with_spec = [e for e in archive if e.spec is not None]
    scored = [e for e in with_spec if e.fitness is not None]
    if not scored:
        return rng.sample(with_spec, min(k, len(with_spec)))
    chosen: list[ArchiveEntry] = []
    by_id = {e.id: e for e in scored}
    for _ in range(4 * k):
        picked = sample(scored, sampling, rng, generation=generation)
        for cid in [picked.parent, *picked.inspirations]:
            if cid in by_id and by_id[cid] not in chosen:
                chosen.append(by_id[cid])
        if len(chosen) >= k:
            break
    return chosen[:k]


class MutatorProposer:
    """Point mutations and crossovers of the parents' specs; never a copy of anything known."""

    name = "mutator"

    def __init__(self, mutator: MutatorConfig, sampling: SamplingConfig, rng: random.Random):
        self.mutator = mutator
        self.sampling = sampling
        self.rng = rng

    def propose(self, archive: list[ArchiveEntry], n: int, generation: int) -> list[Draft]:
        drafts: list[Draft] = []
        known = {e.spec.digest() for e in archive if e.spec is not None}
        for _ in range(n):
            parents = choose_parents(archive, self.sampling, self.rng, generation, 2)
            if not parents:
                break
            children = propose([p.spec for p in parents if p.spec is not None], self.rng, 1,
                               archive=known | {d.spec.digest() for d in drafts if d.spec},
                               parent_ids=[p.id for p in parents], config=self.mutator)
            for child in children:
                drafts.append(Draft(code=render(child.spec), motivation=child.motivation,
                                    parents=list(child.parents), proposer=self.name,
                                    spec=child.spec, extra={"operator": child.operator}))
        return drafts
