"""The long-running loop: baselines, then learn -> design -> check -> experiment -> analyze.

    Driver(load_run_config("my-run.yaml")).run()        # `evolve run my-run.yaml`

Every step is journaled after its files are written, so a driver killed at any moment and
started again on the same run folder replays the journal and goes on: running jobs are
reattached by id (never submitted twice), interrupted gates and analyses are redone, lost jobs
are resubmitted. SIGTERM or SIGUSR1 (Slurm's pre-timeout signal in slurm/driver.sbatch), or a
file STOP in the run folder, end the loop at the next safe point with exit status 0.

Pipelining: the next generation is proposed and gated while the trainings of the previous ones
run (up to search.max_in_flight), so the workers never wait for the proposer.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import time
from typing import Any

from evolve.checks import check_candidate
from evolve.config import RunConfig
from evolve.configio import to_dict
from evolve.fitness import Reference, fitness
from evolve.fsio import read_json
from evolve.journal import ACTIVE_STATUSES
from evolve.launch import Launcher, SubmissionError
from evolve.model.contract import BASELINES_DIR
from evolve.model.space import BASELINE_SPECS, MixerSpec
from evolve.novelty import NoveltyIndex, code_hash
from evolve.proposers import ArchiveEntry, Draft, MutatorProposer, Proposer
from evolve.store import Store

log = logging.getLogger(__name__)

TRAINED = ("done", "scored", "analyzed")
"""Statuses of candidates whose training finished with a result."""
COUNTED = ("submitted", "running", *TRAINED, "failed", "lost", "submit_failed", "checked")
"""Statuses of proposals that count towards search.max_candidates."""


class Driver:
    def __init__(self, cfg: RunConfig, *, force: bool = False,
                 proposer: Proposer | None = None) -> None:
        self.cfg = cfg
        self.store = Store.create(cfg.run_dir, to_dict(cfg), cfg=cfg.store, force=force)
        self.launcher = Launcher(self.store, cfg.launch)
        self.stop_reason: str | None = None
        self._proposals: dict[str, dict[str, Any]] = {}
        self._replayed_size = -1
        self._replayed: Any = None
        state = self._state()
        # Seeded by the run and by how far it got, so a resumed search does not replay the
        # same random choices as its first life.
        self.rng = random.Random(f"{cfg.search.seed}-{state.num_events}")
        self.proposer = proposer or self._default_proposer()
        self.started = time.time()

    def _default_proposer(self) -> Proposer:
        if self.cfg.search.proposer == "llm":
            raise ValueError("search.proposer=llm: the LLM researcher is not wired into the "
                             "driver yet; use proposer: mutator or auto")
        return MutatorProposer(self.cfg.mutator, self.cfg.sampling, self.rng)

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run until the search is complete or asked to stop; 0 in both cases."""
        with self.store.lock("driver", timeout_s=0):
            previous = self._install_signals()
            try:
                self.store.record("driver_start", pid=os.getpid(), host=socket.gethostname(),
                                  proposer=self.proposer.name)
                self.launcher.resume()
                self._recover_created()
                self._submit_baselines()
                while not self._should_stop():
                    progressed = self.step()
                    if self._complete():
                        self.stop_reason = self.stop_reason or "complete"
                        break
                    if not progressed:
                        time.sleep(self.cfg.search.poll_s)
            finally:
                self.store.record("driver_stop", reason=self.stop_reason or "error")
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
        return 0

    def step(self) -> bool:
        """One pass: collect, score, analyze, propose. True if anything happened."""
        progressed = bool(self.launcher.poll())
        progressed |= self._score_finished()
        progressed |= self._analyze_scored()
        progressed |= self._propose_if_room()
        progressed |= self._submit_checked()
        return progressed

    def _install_signals(self) -> dict[int, Any]:
        def request_stop(signum: int, frame: Any) -> None:
            self.stop_reason = f"signal {signal.Signals(signum).name}"

        previous = {}
        for signum in (signal.SIGTERM, signal.SIGUSR1):
            previous[signum] = signal.signal(signum, request_stop)
        return previous

    def _should_stop(self) -> bool:
        if self.stop_reason:
            return True
        if (self.cfg.run_dir / "STOP").exists():
            self.stop_reason = "STOP file"
            return True
        s = self.cfg.search
        if s.max_wall_hours is not None:
            first = next(iter(self.store.events()), {}).get("t", self.started)
            if time.time() - first > s.max_wall_hours * 3600:
                self.stop_reason = "max_wall_hours"
                return True
        if s.max_gpu_hours is not None:
            used = sum(c.gpu_hours for c in self._state().candidates.values())
            if used >= s.max_gpu_hours:
                self.stop_reason = "max_gpu_hours"
                return True
        return False

    def _complete(self) -> bool:
        state = self._state()
        proposals = [c for c in state.candidates.values() if self._kind(c.id) == "proposal"]
        counted = sum(c.status in COUNTED for c in proposals)
        unfinished = [c for c in state.candidates.values()
                      if c.status in ("created", "proposed", "checked", "submitted", "running",
                                      "done", "scored", "lost", "submit_failed")]
        return counted >= self.cfg.search.max_candidates and not unfinished

    # ---- candidates ----------------------------------------------------------------------

    def _state(self) -> Any:
        """The journal's replay, recomputed only when the journal grew (it is append-only, so
        its size identifies its content); the loop asks for it several times per pass."""
        size = self.store.journal_path.stat().st_size
        if size != self._replayed_size:
            self._replayed = self.store.replay()
            self._replayed_size = size
        return self._replayed

    def _proposal(self, cid: str) -> dict[str, Any]:
        # proposal.json is written once, before the candidate is journaled as proposed, and
        # never changed: cache it (the loop reads it for every candidate on every pass).
        cached = self._proposals.get(cid)
        if cached is None:
            cached = read_json(self.store.candidate(cid).proposal, {}) or {}
            if cached:
                self._proposals[cid] = cached
        return cached

    def _kind(self, cid: str) -> str:
        return self._proposal(cid).get("kind", "proposal")

    def _new_candidate(self, code: str, proposal: dict[str, Any], generation: int) -> str:
        cid = self.store.new_candidate(generation=generation, parents=proposal.get("parents", []))
        paths = self.store.candidate(cid)
        self.store.write_text(paths.mixer, code)
        self.store.write_json(paths.proposal, {**proposal, "id": cid, "generation": generation,
                                               "code_hash": code_hash(code)})
        self.store.record("proposed", cid, generation=generation,
                          parents=proposal.get("parents", []))
        return cid

    def _recover_created(self) -> None:
        """Candidates whose creation a crash interrupted: keep them if their files exist."""
        for c in self._state().with_status("created"):
            paths = self.store.candidate(c.id)
            if paths.mixer.exists() and paths.proposal.exists():
                self.store.record("proposed", c.id)
            else:
                self.store.record("cancelled", c.id, error="interrupted before its proposal "
                                  "was written")

    def _submit_baselines(self) -> None:
        state = self._state()
        have = {(p.get("name"), p.get("seed")) for p in
                (self._proposal(c) for c in state.candidates) if p.get("kind") == "baseline"}
        for seed in range(self.cfg.search.baseline_seeds):
            new = []
            for name in self.cfg.search.baselines:
                if (name, seed) in have:
                    continue
                code = (BASELINES_DIR / f"{name}.py").read_text()
                new.append(self._new_candidate(code, {
                    "kind": "baseline", "name": name, "seed": seed, "proposer": "baseline",
                    "motivation": f"baseline {name}", "parents": [],
                    "spec": BASELINE_SPECS[name].to_dict()}, generation=0))
            for cid in new:
                # Baselines are trusted package files: record them as checked without gates.
                self.store.record("checked", cid, passed=True, gates="baseline")

    def _submit_checked(self) -> bool:
        state = self._state()
        ready = [c for c in state.with_status("checked", "lost")
                 if c.id not in self.launcher.active]
        if not ready:
            return False
        by_seed: dict[int, list[str]] = {}
        for c in ready:
            by_seed.setdefault(self._proposal(c.id).get("seed", self.cfg.search.seed), []).append(c.id)
        for seed, cids in sorted(by_seed.items()):
            train_cfg = to_dict(self.cfg.train)
            train_cfg["seed"] = seed
            generation = state.candidates[cids[0]].generation
            try:
                from evolve.train import TrainJob

                self.launcher.submit(cids, TrainJob(), train_cfg, generation=generation)
            except SubmissionError as exc:
                # Recorded by the launcher; the candidates stay submittable. Stop rather than
                # spin against a scheduler that refuses (bad partition, account).
                self.stop_reason = f"submission refused: {exc}"
                return False
        return True

    def _in_flight(self) -> int:
        state = self._state()
        return sum(c.status in (*ACTIVE_STATUSES, "checked", "proposed")
                   for c in state.candidates.values())

    def _archive(self) -> list[ArchiveEntry]:
        state = self._state()
        entries = []
        for c in state.candidates.values():
            prop = self._proposal(c.id)
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
        state = self._state()
        proposals = [c for c in state.candidates.values() if self._kind(c.id) == "proposal"]
        remaining = self.cfg.search.max_candidates - sum(c.status in COUNTED for c in proposals)
        room = self.cfg.search.max_in_flight - self._in_flight()
        n = min(remaining, room, self.cfg.search.generation_size)
        # Redo gates interrupted by a crash before anything new is proposed.
        for c in state.with_status("proposed"):
            self._gate(c.id)
        if n <= 0 or self.stop_reason:
            return False
        generation = 1 + max((c.generation or 0) for c in state.candidates.values())
        archive = self._archive()
        drafts = self.proposer.propose(archive, n, generation)
        novelty = NoveltyIndex(self.cfg.novelty)
        for e in archive:
            code = self.store.candidate(e.id).mixer
            if code.exists():
                novelty.add(e.id, source=code.read_text(), motivation=e.motivation, spec=e.spec)
        made = 0
        for draft in drafts:
            verdict = novelty.check(source=draft.code, motivation=draft.motivation, spec=draft.spec)
            if verdict.kind == "duplicate_code":
                self.store.record("duplicate_rejected", nearest=verdict.nearest_id,
                                  reason=verdict.reason)
                continue
            cid = self._new_candidate(draft.code, self._draft_record(draft, verdict), generation)
            novelty.add(cid, source=draft.code, motivation=draft.motivation, spec=draft.spec)
            self._gate(cid)
            made += 1
        return made > 0

    def _draft_record(self, draft: Draft, verdict: Any) -> dict[str, Any]:
        return {"kind": "proposal", "proposer": draft.proposer, "motivation": draft.motivation,
                "parents": draft.parents, "spec": draft.spec.to_dict() if draft.spec else None,
                "seed": self.cfg.search.seed, "novelty": {"kind": verdict.kind,
                                                           "nearest": verdict.nearest_id,
                                                           "similarity": verdict.similarity},
                **draft.extra}

    def _gate(self, cid: str) -> None:
        folder = self.store.candidate(cid).dir
        model = self.cfg.train.lm.model if self.cfg.train.lm else self.cfg.train.mqar.model  # type: ignore[union-attr]
        report = check_candidate(folder, self.cfg.checks, model=model)
        if report.sandbox.get("incomplete"):
            # The sandbox itself failed (not the candidate): leave it proposed, retry later.
            self.store.record("gate_incomplete", cid, detail=str(report.sandbox)[:500])
            return
        failed = report.verdict(report.failed_gate) if report.failed_gate else None
        self.store.record("checked", cid, passed=report.passed,
                          failed_gate=report.failed_gate,
                          error=failed.message[:500] if failed else None)

    # ---- results -------------------------------------------------------------------------

    def _reference(self) -> Reference | None:
        state = self._state()
        ref = self.cfg.fitness.reference
        results = []
        pending = False
        for c in state.candidates.values():
            p = self._proposal(c.id)
            if p.get("kind") == "baseline" and p.get("name") == ref:
                if c.status in TRAINED:
                    results.append(read_json(self.store.candidate(c.id).result, {}))
                elif c.status not in ("failed", "rejected", "cancelled"):
                    pending = True
        if pending or not results:
            return None
        return Reference.from_results(results, ref)

    def _score_finished(self) -> bool:
        state = self._state()
        done = state.with_status("done")
        if not done:
            return False
        reference = self._reference()
        if reference is None:
            return False  # the reference baseline is still training
        for c in done:
            result = read_json(self.store.candidate(c.id).result, {}) or {}
            if result.get("status") != "ok":
                self.store.record("failed", c.id, error=result.get("reason", "no result.json"))
                continue
            score = fitness(result, reference, self.cfg.fitness)
            self.store.record("scored", c.id, fitness=score["fitness"], terms=score)
        return True

    def _analyze_scored(self) -> bool:
        from evolve.analysis import analyze

        state = self._state()
        scored = state.with_status("scored")
        if not scored:
            return False
        ref_id = next((c.id for c in state.candidates.values()
                       if self._proposal(c.id).get("kind") == "baseline"
                       and self._proposal(c.id).get("name") == self.cfg.fitness.reference
                       and c.status in ("scored", "analyzed")), None)

        def view(cid: str) -> dict[str, Any]:
            p = self._proposal(cid)
            r = read_json(self.store.candidate(cid).result, {}) or {}
            return {"id": cid, "name": p.get("name", ""), "metrics": r.get("metrics", {}),
                    "status": r.get("status"), "reason": r.get("reason"),
                    "fitness": state.candidates[cid].fitness if cid in state.candidates else None,
                    "spec": self._spec(p)}

        for c in scored:
            parents = [view(p) for p in c.parents if p in state.candidates]
            report = analyze(view(c.id), parents, view(ref_id) if ref_id else {},
                             run=self.store.name)
            self.store.write_json(self.store.candidate(c.id).analysis, report)
            self._merge_lessons(c.id, report.get("lessons", []))
            self.store.record("analyzed", c.id, lessons=len(report.get("lessons", [])))
        return True

    def _merge_lessons(self, cid: str, lessons: list[dict[str, Any]]) -> None:
        """Fold the lessons into the run's cognition base (under its lock). A crash between
        this and the `analyzed` event merges them again: the entry gains a repeated piece of
        evidence, nothing is lost."""
        if not lessons:
            return
        from evolve.cognition import Cognition

        outcomes = Cognition.for_store(self.store, self.cfg.cognition).merge_many(lessons)
        self.store.record("lessons_merged", cid,
                          outcomes=[{"action": o.action, "id": o.id} for o in outcomes])

