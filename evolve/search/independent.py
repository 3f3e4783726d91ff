"""The `independent` control: the loop's own proposer with nothing to learn from.

    proposer = IndependentProposer(MutatorConfig(), base="deltanet", rng=random.Random(0))
    proposer = IndependentLLMProposer(agents, cfg, rng, describe=driver.describe)  # the model's

"Simple Baselines are Competitive with Code Evolution" (Gideoni, Risi and Gal, 2026) found that
independent sampling, each proposal made from the starting point alone, matched or beat code
evolution systems on every task it tried. This is that control for evolve, for either proposer
of the loop (`search.independent_of`): every draft is the mutator applied to the base baseline
alone (by default fitness.reference), or the researcher prompted with that baseline alone as
its parent (llm.mode's spec or code), with no archive, no parent sampling, no inspirations and
no lessons. It remembers only its own drafts, so that it does not offer one twice (the driver
never trains an archived design again either way). A slot the model cannot fill is filled by
the mutator's form, labelled as the LLM proposer labels its fallbacks (`llm_error`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from evolve.model.render import render
from evolve.search.llm_roles import Agents, LLMProposer
from evolve.search.mutator import MutatorConfig, propose
from evolve.search.proposers import ArchiveEntry, Draft


class IndependentProposer:
    """Mutations of the base baseline only: every draft independent of every result."""

    name = "independent"

    def __init__(self, mutator: MutatorConfig, base: str, rng: random.Random) -> None:
        self.mutator = mutator
        self.base = base
        """The baseline every draft starts from."""
        self.rng = rng
        self.drafted: set[str] = set()
        """Spec digests (and the model's files' code hashes) drafted so far: only its own, as
        it sees no archive."""

    def base_entry(self, archive: list[ArchiveEntry]) -> ArchiveEntry:
        """The base baseline's archive entry; ValueError when the run does not train it."""
        base = next((e for e in archive if e.name == self.base and e.spec is not None
                     and not e.parents), None)
        if base is None:
            raise ValueError(f"the independent proposer starts from baseline {self.base!r}, "
                             "which this run does not train: add it to search.baselines")
        return base

    def propose(self, archive: list[ArchiveEntry], n: int, generation: int) -> list[Draft]:
        base = self.base_entry(archive)
        assert base.spec is not None
        children = propose([base.spec], self.rng, n, archive=self.drafted,
                           parent_ids=[base.id], config=self.mutator)
        drafts = []
        for child in children:
            self.drafted.add(child.spec.digest())
            drafts.append(Draft(code=render(child.spec), motivation=child.motivation,
                                parents=[base.id], proposer=self.name, spec=child.spec,
                                extra={"operator": child.operator}))
        return drafts


class IndependentLLMProposer(LLMProposer):
    """The researcher with the base baseline alone as its parent: no inspirations, no lessons,
    no archive. Its drafts are `llm-<mode>-independent`; a slot the model cannot fill is the
    mutator's independent draft (`proposer: independent`, `llm_error`)."""

    def __init__(self, agents: Agents, cfg: Any, rng: random.Random,
                 describe: Callable[[str], dict[str, Any]]) -> None:
        super().__init__(agents, cfg, rng, describe, cognition=None, inspirations=0)
        self.name = f"llm-{self.mode}-independent"
        self.independent = IndependentProposer(cfg.mutator, cfg.fitness.reference, rng)
        self.fallback = self.independent

    def _tried(self, archive: list[ArchiveEntry]) -> dict[str, str]:
        return dict.fromkeys(self.independent.drafted, "an earlier proposal of this control")

    def _pick(self, archive: list[ArchiveEntry], generation: int) -> list[ArchiveEntry]:
        return [self.independent.base_entry(archive)]

    def _remember(self, draft: Draft, tried: dict[str, str]) -> None:
        from evolve.gates.novelty import code_hash

        super()._remember(draft, tried)
        if draft.spec is not None:
            self.independent.drafted.add(draft.spec.digest())
        self.independent.drafted.add(code_hash(draft.code))

    def revise(self, draft: Draft, nearest: ArchiveEntry | None, reason: str,
               archive: list[ArchiveEntry], generation: int) -> Draft | None:
        """A near-duplicate is answered with a fresh draft from the base, as the mutator's form
        is: showing the nearest archived design (the LLM proposer's way) would let the archive
        into the prompt."""
        return next(iter(self.propose(archive, 1, generation)), None)
