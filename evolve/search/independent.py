"""The `independent` control: the loop's own proposer with nothing to learn from.

    proposer = IndependentProposer(MutatorConfig(), base="deltanet", rng=random.Random(0))

"Simple Baselines are Competitive with Code Evolution" (Gideoni, Risi and Gal, 2026) found that
independent sampling, each proposal made from the starting point alone, matched or beat code
evolution systems on every task it tried. This is that control for evolve: every draft is the
mutator applied to the base baseline alone (by default fitness.reference), with no archive, no
parent sampling, no inspirations and no lessons. It remembers only its own drafts, so that it
does not offer one twice (the driver never trains an archived design again either way).
For the model's proposer the same control is the researcher prompted with the base alone; it is
not built yet (the study runs the mutator's pair: loop vs independent vs random).
"""

from __future__ import annotations

import random

from evolve.model.render import render
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
        """Digests drafted so far (only its own: it sees no archive)."""

    def propose(self, archive: list[ArchiveEntry], n: int, generation: int) -> list[Draft]:
        base = next((e for e in archive if e.name == self.base and e.spec is not None
                     and not e.parents), None)
        if base is None or base.spec is None:
            raise ValueError(f"the independent proposer starts from baseline {self.base!r}, "
                             "which this run does not train: add it to search.baselines")
        children = propose([base.spec], self.rng, n, archive=self.drafted,
                           parent_ids=[base.id], config=self.mutator)
        drafts = []
        for child in children:
            self.drafted.add(child.spec.digest())
            drafts.append(Draft(code=render(child.spec), motivation=child.motivation,
                                parents=[base.id], proposer=self.name, spec=child.spec,
                                extra={"operator": child.operator}))
        return drafts
