"""The driver's follow-up steps: confirmation of claims with more seeds, promotion to a larger
preset, ablation of the best design, and `evolve verify` requests.

`Driver` derives from `FollowUpSteps`; the loop calls `_follow_up()` once per pass. These
methods use the driver's store, its read-model (`view`) and candidate helpers (`_new_candidate`, `_submit_baselines`, `_reference_ids`, `_results_of`, ...); the statistics
they rest on are pure functions in `evolve.search.followup`.
"""

from __future__ import annotations

from typing import Any

from evolve.model.render import render
from evolve.model.space import BASELINE_SPECS
from evolve.search.followup import (ablation_table, ablation_variants, confirm,
                                    nearest_baseline, versus)
from evolve.state.requests import pending_requests, settle
from evolve.state.journal import COUNTED, TRAINED, UNFINISHED


class FollowUpSteps:
    """Follow-ups of a run, as steps of its driver (see the module docstring)."""

    def _follow_up(self) -> bool:
        made = self._take_requests()
        # Everything else depends on the journal alone: while it has not grown since the last
        # look, there is nothing to do (this keeps idle polls cheap in a large archive).
        size = self.store.journal_path.stat().st_size
        if size == self._followed_size and not made:
            return False
        made |= self._confirm_claims()
        made |= self._settle_confirmations()
        if self._search_done():
            made |= self._promote()
            made |= self._ablate()
        if not made:
            self._followed_size = size
        return made

    def _derived(self) -> dict[tuple[Any, ...], str]:
        """Replicas and ablations by what they re-train, so none is created twice."""
        out = {}
        for cid in self.view.state.candidates:
            p = self.view.proposal(cid)
            if p.get("kind") == "replica":
                out[("replica", p.get("of"), p.get("seed"), p.get("preset"))] = cid
            elif p.get("kind") == "ablation":
                out[("ablation", p.get("of"), p.get("revert"), p.get("seed"))] = cid
        return out

    def _replicate(self, cid: str, seeds: int, preset: str | None, why: str) -> bool:
        """Train `cid`'s file again with its seed + 1, ... (and with its own seed at another
        preset), plus the reference baseline with as many seeds at that preset."""
        p = self.view.proposal(cid)
        first = p.get("seed", self.cfg.search.seed)
        have = self._derived()
        code = self.store.candidate(cid).mixer.read_text()
        made = False
        wanted = range(first, first + seeds) if preset else range(first + 1, first + seeds)
        for seed in wanted:
            if ("replica", cid, seed, preset) in have:
                continue
            new = self._new_candidate(code, {
                "kind": "replica", "of": cid, "seed": seed, "preset": preset,
                "proposer": "replica", "motivation": f"{why}: {cid} with seed {seed}",
                "parents": [cid], "spec": p.get("spec"), "name": p.get("name", "")},
                generation=self.view.state.candidates[cid].generation or 0)
            self.store.record("checked", new, passed=True, gates=f"replica of {cid}")
            made = True
        made |= self._submit_baselines(seeds=max(seeds, self.cfg.search.baseline_seeds),
                                       preset=preset, names=self._baselines_for(preset))
        return made

    def _baselines_for(self, preset: str | None) -> tuple[str, ...]:
        # At the run's preset every baseline gets the seeds (the board compares with all);
        # at a promotion preset only the reference is needed, and it is expensive there.
        return self.cfg.search.baselines if preset is None else (self.cfg.fitness.reference,)

    def _group(self, cid: str, preset: str | None = None) -> list[str]:
        """`cid` (at the run's preset) or its replicas at `preset`, trained or not."""
        members = [cid] if preset is None else []
        for key, rid in self._derived().items():
            if key[0] == "replica" and key[1] == cid and key[3] == preset:
                members.append(rid)
        return members

    def _ranked(self) -> list[Any]:
        state = self.view.state
        scored = [c for c in state.candidates.values() if self.view.kind(c.id) == "proposal"
                  and c.status in ("scored", "analyzed") and c.fitness is not None]
        return sorted(scored, key=lambda c: -c.fitness)

    def _confirm_claims(self) -> bool:
        s = self.cfg.search
        if s.confirm_top < 1:
            return False
        claims = [c for c in self._ranked() if c.fitness > 0][:s.confirm_top]
        made = False
        for c in claims:
            made |= self._replicate(c.id, s.confirm_seeds, None, "confirmation")
        return made

    def _verdicts(self) -> dict[tuple[str, str | None], dict[str, Any]]:
        out = {}
        for e in self.store.events():
            if e.get("event") == "confirmed":
                out[(e["candidate"], e.get("preset"))] = e
        return out

    def _settle_confirmations(self) -> bool:
        """Write the confirmation file (and a `confirmed` event) for every replicated candidate
        whose seeds, and the reference's seeds at the same preset, have all finished."""
        state = self.view.state
        done = self._verdicts()
        groups: dict[tuple[str, str | None], list[str]] = {}
        for key in self._derived():
            if key[0] == "replica":
                groups[(key[1], key[3])] = self._group(key[1], key[3])
        made = False
        for (cid, preset), members in groups.items():
            statuses = [state.candidates[m].status for m in members if m in state.candidates]
            if any(st in UNFINISHED for st in statuses):
                continue
            trained = [m for m in members if state.candidates[m].status in TRAINED]
            ref_ids, pending = self._reference_ids(preset)
            if pending or not ref_ids:
                continue
            # The trainings the verdict rests on: a later seed of any side (e.g. of a baseline
            # it is compared with) makes a new verdict.
            others = {name: self._baseline_ids(name, preset)[0]
                      for name in self.cfg.search.baselines
                      if name != self.cfg.fitness.reference}
            basis = len(trained) + len(ref_ids) + sum(len(ids) for ids in others.values())
            prev = done.get((cid, preset))
            if prev is not None and prev.get("basis", prev.get("seeds")) == basis:
                continue
            verdict = confirm(self._results_of(trained), self._results_of(ref_ids),
                              self.cfg.fitness, self.cfg.fitness.reference)
            verdict.update(candidate=cid, preset=preset, members=members,
                           failed=len(members) - len(trained))
            # Against every other baseline trained with several seeds at this preset.
            verdict["versus"] = {}
            for name, other in others.items():
                if len(other) > 1:
                    verdict["versus"][name] = versus(
                        self._results_of(trained), self._results_of(other),
                        self._results_of(ref_ids), self.cfg.fitness, self.cfg.fitness.reference)
            self.store.write_json(self.store.candidate(cid).confirmation(preset), verdict)
            f = verdict.get("fitness", {})
            self.store.record("confirmed", cid, preset=preset, better=verdict["better"],
                              basis=basis,
                              seeds=verdict["seeds"], mean=f.get("mean"), ci95=f.get("ci95"))
            made = True
        return made

    def _search_done(self) -> bool:
        """All proposals counted and trained, and every confirmation settled."""
        state = self.view.state
        counted = sum(c.status in COUNTED for c in state.candidates.values()
                      if self.view.kind(c.id) == "proposal")
        if counted < self.cfg.search.max_candidates:
            return False
        return not any(c.status in UNFINISHED for c in state.candidates.values()
                       if self.view.kind(c.id) in ("proposal", "replica", "baseline")
                       and not self.view.proposal(c.id).get("preset"))

    def _best(self) -> list[str]:
        """Proposals best first: confirmed-better ones by their mean when confirmation is on,
        else by one-seed fitness."""
        ranked = self._ranked()
        if self.cfg.search.confirm_top < 1:
            return [c.id for c in ranked]
        verdicts = self._verdicts()
        better = [(verdicts[(c.id, None)].get("mean") or 0.0, c.id) for c in ranked
                  if verdicts.get((c.id, None), {}).get("better")]
        return [cid for _, cid in sorted(better, reverse=True)]

    def _promote(self) -> bool:
        promote = self.cfg.search.promote
        if promote.top < 1:
            return False
        made = False
        for cid in self._best()[:promote.top]:
            made |= self._replicate(cid, 1, promote.preset, f"promotion to {promote.preset}")
        return made

    def _ablate(self) -> bool:
        requested = self.store.ablation_path.exists()  # `evolve verify --ablate`
        if not (self.cfg.search.ablate_best or requested):
            return False
        # The target is chosen once (the ablation file keeps it): more seeds of another candidate
        # must not start a second ablation.
        pinned = self.view.ablation() or {}
        if pinned.get("candidate"):
            best = pinned["candidate"]
            why = pinned.get("chosen") or "named in the ablation file (`evolve verify --ablate`)"
        else:
            best, why = self._ablation_target()
        if best is None:
            return False
        spec = self._spec(self.view.proposal(best))
        baselines = {n: self._spec({"spec": BASELINE_SPECS[n].to_dict()})
                     for n in self.cfg.search.baselines}
        base_name, _ = nearest_baseline(spec, baselines)
        seeds = int(pinned.get("seeds") or self.cfg.search.confirm_seeds)
        made = self._replicate(best, seeds, None, "ablation reference")
        have = self._derived()
        first = self.view.proposal(best).get("seed", self.cfg.search.seed)
        plan = []
        for field_name, variant, note in ablation_variants(spec, baselines[base_name]):
            plan.append({"field": field_name, "from": getattr(spec, field_name),
                         "to": getattr(baselines[base_name], field_name), "note": note})
            if variant is None:
                continue
            for seed in range(first, first + seeds):
                if ("ablation", best, field_name, seed) in have:
                    continue
                code = render(variant, title=f"{best} without its {field_name} change")
                new = self._new_candidate(code, {
                    "kind": "ablation", "of": best, "revert": field_name, "seed": seed,
                    "proposer": "ablation", "parents": [best], "spec": variant.to_dict(),
                    "motivation": f"ablation of {best}: {field_name} back to "
                                  f"{base_name}'s {getattr(baselines[base_name], field_name)!r}"},
                    generation=self.view.state.candidates[best].generation or 0)
                self._gate(new)
                made = True
        self._write_ablation(best, base_name, plan, seeds, why)
        return made

    def _ablation_target(self) -> tuple[str | None, str]:
        """The candidate to ablate and why it: the best confirmed better than the reference;
        with none confirmed, the best by its mean over the seeds it has (one-seed fitness
        without replicas), since what each change contributes is worth knowing either way."""
        with_spec = lambda ids: [c for c in ids if self._spec(self.view.proposal(c))]
        confirmed = with_spec(self._best()) if self.cfg.search.confirm_top >= 1 else []
        if confirmed:
            return confirmed[0], "the best candidate confirmed better than the reference"
        verdicts = self._verdicts() if self.cfg.search.confirm_top >= 1 else {}
        fitness = {c.id: c.fitness for c in self._ranked()}
        ranked = with_spec(list(fitness))
        if not ranked:
            return None, ""
        mean = lambda cid: (verdicts.get((cid, None)) or {}).get("mean", fitness[cid])
        best = max(ranked, key=mean)
        if self.cfg.search.confirm_top >= 1:
            return best, ("the best candidate by mean fitness; none was confirmed better than "
                          "the reference, so the table says what each change does, not why "
                          "a confirmed winner wins")
        return best, "the best candidate by fitness (confirmation is off: search.confirm_top 0)"

    def _write_ablation(self, best: str, base_name: str, plan: list[dict[str, Any]],
                        seeds: int, why: str) -> None:
        """The ablation file: the plan, and the table once every training of it has finished."""
        state = self.view.state
        by_field: dict[str, list[str]] = {}
        for key, cid in self._derived().items():
            if key[0] == "ablation" and key[1] == best:
                by_field.setdefault(key[2], []).append(cid)
        members = [m for ms in by_field.values() for m in ms] + self._group(best)
        finished = all(state.candidates[m].status not in UNFINISHED for m in members)
        out: dict[str, Any] = {"candidate": best, "chosen": why, "baseline": base_name,
                               "seeds": seeds, "plan": plan, "complete": finished}
        if finished:
            ref_ids, _ = self._reference_ids()
            trained = lambda ids: [m for m in ids if state.candidates[m].status in TRAINED]
            out["table"] = ablation_table(
                self._results_of(trained(self._group(best))),
                {f: self._results_of(ids) for f, ids in by_field.items()},
                self._results_of(ref_ids), self.cfg.fitness, self.cfg.fitness.reference)
        if self.view.ablation() != out:
            self.store.write_json(self.store.ablation_path, out)

    def _take_requests(self) -> bool:
        """Requests from `evolve verify` (evolve.state.requests): replicas of a candidate with
        more seeds and/or at another preset, and an ablation."""
        made = False
        for req in pending_requests(self.store):
            cid = req.candidate
            state = self.view.state
            if cid not in state.candidates or state.candidates[cid].status not in TRAINED:
                error = f"{cid} is not a trained candidate of this run"
                self.store.record("request_refused", cid if cid in state.candidates else None,
                                  request=req.path.name, error=error)
                settle(req, accepted=False)
                continue
            made |= self._replicate(cid, req.seeds, req.preset, f"verify request {req.path.stem}")
            if req.ablate and not self.store.ablation_path.exists():
                if self._spec(self.view.proposal(cid)) is None:
                    self.store.record("request_refused", cid, request=req.path.name,
                                      error="ablation needs a spec (a code-mode file has none)")
                else:
                    self.store.write_json(self.store.ablation_path,
                                          {"candidate": cid, "plan": [], "seeds": req.seeds,
                                           "complete": False})
            settle(req, accepted=True)
        return made
