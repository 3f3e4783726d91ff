"""The driver's result steps: score finished trainings against the run's baselines (with the
leakage re-check of a score too good to be true), and analyze scored candidates into lessons
merged into the cognition base.

`Driver` derives from `ScoringSteps`; these methods use the driver's store, config, agents and
candidate helpers. Fitness itself is `evolve.search.fitness`.
"""

from __future__ import annotations

from typing import Any

from evolve.gates.check import GATES, check_file, leakage_verdict
from evolve.model.render import describe
from evolve.search.fitness import Reference, fitness
from evolve.search.screening_steps import cpu_hours
from evolve.state.journal import DROPPED, TRAINED


class ScoringSteps:
    """Scoring and analysis of a run's trainings, as steps of its driver."""

    def _results_of(self, cids: list[str]) -> list[dict[str, Any]]:
        return [self.view.result(c) or {} for c in cids]

    def _baseline_ids(self, name: str, preset: str | None) -> tuple[list[str], bool]:
        """Trained candidates of baseline `name` at `preset`, and whether more of its seeds
        are still to come."""
        done, pending = [], False
        for c in self._baselines_named(name, preset):
            if c.status in TRAINED:
                done.append(c.id)
            elif c.status not in DROPPED:
                pending = True
        return done, pending

    def _baselines_named(self, name: str, preset: str | None) -> list[Any]:
        """The candidate states of baseline `name` at `preset` (its seeds)."""
        return [c for c in self.view.state.candidates.values()
                if (p := self.view.proposal(c.id)).get("kind") == "baseline"
                and p.get("name") == name and p.get("preset") == preset]

    def _reference_ids(self, preset: str | None = None) -> tuple[list[str], bool]:
        return self._baseline_ids(self.cfg.fitness.reference, preset)

    def _reference(self, preset: str | None = None) -> Reference | None:
        done, pending = self._reference_ids(preset)
        if pending or not done:
            return None
        return Reference.from_results(self._results_of(done), self.cfg.fitness.reference,
                                      self.cfg.fitness.mqar_pairs)

    def _reference_failed(self) -> str | None:
        """Why no proposal of the run can ever be scored: every seed of the reference baseline
        (at the run's own preset) failed; None while one trained or may still train."""
        seeds = self._baselines_named(self.cfg.fitness.reference, None)
        if not seeds or any(c.status not in DROPPED for c in seeds):
            return None
        errors = "; ".join(f"{c.id}: {c.error or c.status}" for c in seeds)
        return (f"the reference baseline {self.cfg.fitness.reference} (fitness.reference) failed "
                f"on every seed ({errors}): no proposal can be scored without it. See its "
                "error.json; fix the cause and start a new run, or resume with another "
                "fitness.reference (--force)")

    def _score_finished(self) -> bool:
        state = self.view.state
        done = state.with_status("done")
        progressed = False
        references: dict[str | None, Reference | None] = {}
        for c in done:
            result = self.view.result(c.id) or {}
            if result.get("status") != "ok":
                self.store.record("failed", c.id, error=result.get("reason", "no result file"),
                                  cpu_hours=cpu_hours(result),
                                  **({"stopped_early": True} if result.get("stopped_early")
                                     else {}))
                progressed = True
                continue
            if float(result.get("budget_fraction", 1.0)) < 1.0:
                progressed |= self._score_rung(c.id, result)  # a screening rung
                continue
            preset = self.view.proposal(c.id).get("preset")
            if preset not in references:
                references[preset] = self._reference(preset)
            reference = references[preset]
            if reference is None:
                continue  # the reference baseline at this preset is still training
            progressed = True
            score = fitness(result, reference, self.cfg.fitness)
            leak = self._leakage(c.id, result, reference, preset)
            if leak is not None and not leak["passed"]:
                self.store.record("failed", c.id, error=f"leakage: {leak['message']}"[:500],
                                  leakage=leak)
                continue
            if leak is not None:
                score["leakage"] = leak
            self.store.record("scored", c.id, fitness=score["fitness"], terms=score,
                              cpu_hours=cpu_hours(result))
            self._remember_result(c.id, result)
        return progressed

    def _leakage(self, cid: str, result: dict[str, Any], ref: Reference,
                 preset: str | None) -> dict[str, Any] | None:
        """The training-time leakage gate: bits per byte implausibly far below the reference's
        sends the file back to the causality gate at the training length. Baselines are
        trusted; a candidate passing that second look is kept, flagged."""
        bpb = result.get("metrics", {}).get("bpb")
        if bpb is None or not ref.bpb or self.view.kind(cid) == "baseline":
            return None
        verdict = leakage_verdict(float(bpb), ref.bpb, self.cfg.checks.leakage_threshold)
        if verdict.passed:
            return None
        from dataclasses import replace

        train = self._train_config(preset)
        length = (train.lm or train.mqar).seq_len
        recheck = check_file(self.store.candidate(cid).mixer,
                             replace(self.cfg.checks, causality_lengths=(length,)),
                             model=self._model_cfg(), gates=GATES[:5])
        causal = recheck.passed
        message = verdict.message + (
            f"; the causality gate at length {length} passes: kept, flagged" if causal else
            f"; the causality gate at length {length} fails: "
            f"{recheck.verdict(recheck.failed_gate).message}")
        return {"passed": causal, "message": message, "measured": verdict.measured}

    def describe(self, cid: str) -> dict[str, Any]:
        """A candidate as the roles see it: id, name, motivation, spec, description, code,
        metrics, status, fitness, the training curve's summary rows."""
        state = self.view.state
        p = self.view.proposal(cid)
        paths = self.store.candidate(cid)
        r = self.view.result(cid) or {}
        spec = self._spec(p)
        code = paths.mixer.read_text() if paths.mixer.exists() else ""
        cand = state.candidates.get(cid)
        return {"id": cid, "name": p.get("name", ""), "motivation": p.get("motivation", ""),
                "spec": spec, "description": describe(spec) if spec else "", "code": code,
                "metrics": r.get("metrics", {}), "status": r.get("status") or
                (cand.status if cand else None), "reason": r.get("reason"),
                "fitness": cand.fitness if cand else None}

    def _analyze_scored(self) -> bool:
        from evolve.agents.rules_analyzer import analyze

        state = self.view.state
        scored = state.with_status("scored")
        if not scored:
            return False
        ref_ids, _ = self._reference_ids()
        ref_view = self.describe(ref_ids[0]) if ref_ids else {}
        use_llm = self.agents is not None and self.cfg.search.analyzer != "rules"
        for c in scored:
            kind = self.view.kind(c.id)
            folder = self.store.candidate(c.id).dir
            if kind != "proposal":
                # Baselines, replicas, ablations: measurements, not ideas; no lessons.
                report = {"analyzer": "none", "analysis": f"{kind}: measured, not analysed",
                          "lessons": []}
            else:
                cand = self.describe(c.id)
                parents = [self.describe(p) for p in c.parents if p in state.candidates]
                report = None
                if use_llm:
                    report = self.agents.analyze(
                        {k: v for k, v in cand.items() if k != "code"},
                        parents[0] if parents else None, [ref_view] if ref_view else [],
                        self._cognition(), folder, run=self.store.name)
                if report is None:
                    report = analyze(cand, parents, ref_view, run=self.store.name)
                    if use_llm:
                        report["llm_error"] = ("the analyzer gave no usable answer (llm/ has "
                                               "the calls)")
            self.store.write_json(self.store.candidate(c.id).analysis, report)
            self._merge_lessons(c.id, report.get("lessons", []))
            self.store.record("analyzed", c.id, lessons=len(report.get("lessons", [])),
                              analyzer=report.get("analyzer"))
        return True

    def _merge_lessons(self, cid: str, lessons: list[dict[str, Any]]) -> None:
        """Fold the lessons into the run's cognition base (under its lock). A crash between
        this and the `analyzed` event merges them again: the entry gains a repeated piece of
        evidence, nothing is lost."""
        if not lessons:
            return
        outcomes = self._cognition().merge_many(lessons)
        self.store.record("lessons_merged", cid,
                          outcomes=[{"action": o.action, "id": o.id} for o in outcomes])
