"""The driver's DESIGN step: proposals from the archive, screened for novelty before they
become candidates.

`Driver` derives from `ProposeSteps`; these methods use its store, config, read-model (`view`),
proposer and `_new_candidate` / `_gate`. A design already in the archive (same spec, or the same
file) is never trained again; a draft closer than `novelty.similarity_threshold` to an archived
design goes back to its proposer once, naming the nearest design.
"""

from __future__ import annotations

from typing import Any

from evolve.gates.novelty import NoveltyIndex
from evolve.model.space import MixerSpec
from evolve.search.proposers import ArchiveEntry, Draft


class ProposeSteps:
    """Proposing, as steps of the driver (see the module docstring)."""

    def _archive(self) -> list[ArchiveEntry]:
        state = self.view.state
        entries = []
        for c in state.candidates.values():
            prop = self.view.proposal(c.id)
            if prop.get("kind") in ("replica", "ablation") or prop.get("preset"):
                continue  # re-trainings of a design already in the archive
            spec = self._spec(prop)
            entries.append(ArchiveEntry(id=c.id, spec=spec, fitness=c.fitness,
                                        parents=list(c.parents), name=prop.get("name", ""),
                                        motivation=prop.get("motivation", ""),
                                        generation=c.generation, island=c.island,
                                        status=c.status))
        return entries

    def _spec(self, proposal: dict[str, Any]) -> MixerSpec | None:
        if not proposal.get("spec"):
            return None
        spec = MixerSpec.from_dict(proposal["spec"])
        if spec.conv_size is None:
            # Pin "the run's conv width" to its value, so that settings which only matter
            # without a convolution are seen as inert and their mutations as duplicates.
            track = self.cfg.train.lm or self.cfg.train.mqar
            assert track is not None
            spec = spec.replace(conv_size=track.model.conv_size)
        return spec

    def _propose_if_room(self) -> bool:
        state = self.view.state
        remaining = self._proposals_left()
        room = self.cfg.search.max_in_flight - self._in_flight()
        n = min(remaining, room, self.cfg.search.generation_size)
        # Redo gates interrupted by a crash before anything new is proposed.
        for c in state.with_status("proposed"):
            self._gate(c.id)
        if n <= 0 or self.stop_reason:
            return False
        generation = 1 + max((c.generation or 0) for c in state.candidates.values())
        archive = self._archive()
        novelty, designs = self._novelty_index(archive)
        made = 0
        for draft in self.proposer.propose(archive, n, generation):
            verdict = self._novel(draft, novelty, designs)
            if verdict is not None and verdict.kind == "near_duplicate":
                draft, verdict = self._returned(draft, verdict, archive, generation, novelty,
                                                designs)
            if verdict is None:
                continue
            cid = self._new_candidate(draft.code, self._draft_record(draft, verdict), generation,
                                      records=draft.records)
            pinned = self._pinned(draft)
            novelty.add(cid, source=draft.code, motivation=draft.motivation, spec=pinned)
            if pinned is not None:
                designs[pinned.digest()] = cid
            self._gate(cid)
            made += 1
        return made > 0

    def _pinned(self, draft: Draft) -> MixerSpec | None:
        """A draft's spec with the run's conv width pinned, as archived specs are compared."""
        return self._spec({"spec": draft.spec.to_dict()}) if draft.spec else None

    def _novelty_index(self, archive: list[ArchiveEntry]
                       ) -> tuple[NoveltyIndex, dict[str, str]]:
        """What drafts are screened against: every archived candidate's code and idea, and the
        designs by their digest with "the run's conv width" pinned (so that a spec naming the
        width and one leaving it to the run are seen as the same design)."""
        novelty = NoveltyIndex(self.cfg.novelty)
        for e in archive:
            code = self.store.candidate(e.id).mixer
            if code.exists():
                novelty.add(e.id, source=code.read_text(), motivation=e.motivation, spec=e.spec)
        return novelty, {e.spec.digest(): e.id for e in archive if e.spec is not None}

    def _novel(self, draft: Draft, novelty: NoveltyIndex, designs: dict[str, str]) -> Any:
        """The novelty verdict on a draft; None (journaled) for a design or file already in the
        archive, which is never trained again."""
        pinned = self._pinned(draft)
        same = designs.get(pinned.digest()) if pinned else None
        # A seed design's refusal names its entry, so that a restarted run does not screen it
        # (and journal its refusal) again.
        entry = ({"seed_design": draft.extra["seed_design"]} if "seed_design" in draft.extra
                 else {})
        if same is not None:
            self.store.record("duplicate_rejected", nearest=same,
                              reason=f"the same design as {same}", **entry)
            return None
        # Compared as archived: with the run's conv width pinned (else a width left to the run
        # reads as a difference and lowers the similarity).
        verdict = novelty.check(source=draft.code, motivation=draft.motivation, spec=pinned)
        if verdict.kind == "duplicate_code":
            self.store.record("duplicate_rejected", nearest=verdict.nearest_id,
                              reason=verdict.reason, **entry)
            return None
        return verdict

    def _returned(self, draft: Draft, verdict: Any, archive: list[ArchiveEntry], generation: int,
                  novelty: NoveltyIndex, designs: dict[str, str]) -> tuple[Draft, Any]:
        """A draft closer than novelty.similarity_threshold to an archived design goes back to
        its proposer once, naming the nearest design (`revise`, where the proposer has one; else
        a fresh draft). The second answer is taken whatever its similarity (labelled in its
        the proposal file); a duplicate second answer is dropped."""
        nearest = next((e for e in archive if e.id == verdict.nearest_id), None)
        self.store.record("novelty_returned", nearest=verdict.nearest_id,
                          similarity=verdict.similarity, proposer=self.proposer.name)
        revise = getattr(self.proposer, "revise", None)
        again = (revise(draft, nearest, verdict.reason, archive, generation) if revise
                 else next(iter(self.proposer.propose(archive, 1, generation)), None))
        if again is None:
            return draft, verdict  # the proposer had nothing else: keep the labelled first
        again.extra = {**again.extra, "returned_for": verdict.nearest_id}
        return again, self._novel(again, novelty, designs)

    def _draft_record(self, draft: Draft, verdict: Any) -> dict[str, Any]:
        return {"kind": "proposal", "proposer": draft.proposer, "motivation": draft.motivation,
                "parents": draft.parents, "spec": draft.spec.to_dict() if draft.spec else None,
                "seed": self.cfg.search.seed, "novelty": {"kind": verdict.kind,
                                                           "nearest": verdict.nearest_id,
                                                           "similarity": verdict.similarity},
                **draft.extra}

    def _island(self, proposal: dict[str, Any]) -> int | None:
        """With sampling: islands, a proposal's island: its first parent's, so that a lineage
        stays on its island (parents are sampled from one island, inspirations migrate); a
        child of a baseline (which belongs to every island) goes to the next island in turn."""
        if self.cfg.sampling.strategy != "islands" or proposal.get("kind") != "proposal":
            return None
        cands = self.view.state.candidates
        parents = [p for p in proposal.get("parents", []) if p in cands]
        if parents and cands[parents[0]].island is not None:
            return cands[parents[0]].island
        placed = sum(c.island is not None for c in cands.values())
        return placed % self.cfg.sampling.num_islands
