"""Random search: the control that the mutator and the LLM researcher are compared with.

    proposer = RandomProposer(random.Random(0))
    drafts = proposer.propose(archive, n=4, generation=1)   # -> [Draft(code, spec, ...)]
    Driver(cfg, proposer=proposer).run()

Each draft is a spec drawn with every field uniform over its choices in
`evolve.model.space.OPTIONS`, redrawn until `MixerSpec` accepts the combination (rejection
sampling, so the valid specs keep the product distribution restricted to them), and new: its
digest is in neither the archive nor this proposer's earlier drafts. Softmax attention is left
out unless asked for: the cost gate rejects it, so drawing it would only waste proposals.
It ignores fitness and parents altogether.
"""

from __future__ import annotations

import random

from evolve.model.render import describe, render
from evolve.model.space import FIELDS, OPTIONS, MixerSpec, SpecError
from evolve.search.proposers import ArchiveEntry, Draft


class RandomProposer:
    """Uniform draws from the design space, never a spec seen before."""

    name = "random"

    def __init__(self, rng: random.Random, *, allow_quadratic: bool = False,
                 attempts_per_draft: int = 1000) -> None:
        self.rng = rng
        self.allow_quadratic = allow_quadratic
        self.attempts_per_draft = attempts_per_draft
        self.drafted: set[str] = set()
        """Digests drafted so far: a draft the driver rejected is not offered again."""

    def sample(self) -> MixerSpec:
        """One valid spec, every field uniform over its choices (invalid combinations redrawn)."""
        while True:
            values = {name: self.rng.choice(list(OPTIONS[name])) for name in FIELDS}
            try:
                spec = MixerSpec(**values)
            except SpecError:
                continue
            if self.allow_quadratic or not spec.is_quadratic:
                return spec

    def propose(self, archive: list[ArchiveEntry], n: int, generation: int) -> list[Draft]:
        known = {e.spec.digest() for e in archive if e.spec is not None} | self.drafted
        drafts: list[Draft] = []
        for _ in range(n * self.attempts_per_draft):
            if len(drafts) == n:
                break
            spec = self.sample()
            digest = spec.digest()
            if digest in known:
                continue
            known.add(digest)
            self.drafted.add(digest)
            drafts.append(Draft(code=render(spec), parents=[], proposer=self.name, spec=spec,
                                motivation=f"Random sample of the design space: "
                                           f"{describe(spec)}.",
                                extra={"operator": "random"}))
        return drafts
