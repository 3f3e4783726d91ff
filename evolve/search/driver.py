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

from evolve.config.loading import to_dict
from evolve.gates.check import check_candidate, check_file
from evolve.gates.novelty import NoveltyIndex, code_hash
from evolve.launch.launcher import Launcher, SubmissionError
from evolve.model.contract import BASELINES_DIR
from evolve.model.space import BASELINE_SPECS, MixerSpec
from evolve.search.follow_up_steps import FollowUpSteps
from evolve.search.proposers import ArchiveEntry, Draft, MutatorProposer, Proposer
from evolve.search.run_config import RunConfig, run_config_from_dict
from evolve.search.scoring_steps import ScoringSteps
from evolve.state.fsio import read_json
from evolve.state.journal import ACTIVE_STATUSES, COUNTED, UNFINISHED
from evolve.state.store import Store

log = logging.getLogger(__name__)

class Driver(ScoringSteps, FollowUpSteps):
    def __init__(self, cfg: RunConfig, *, force: bool = False,
                 proposer: Proposer | None = None) -> None:
        self.cfg = cfg
        self.store = Store.create(cfg.run_dir, to_dict(cfg), cfg=cfg.store, force=force,
                                  upgrade=lambda frozen: to_dict(run_config_from_dict(frozen)),
                                  announce=False)
        self.launcher = Launcher(self.store, cfg.launch)
        self.stop_reason: str | None = None
        self._proposals: dict[str, dict[str, Any]] = {}
        self._replayed_size = -1
        self._replayed: Any = None
        self._followed_size = -1
        state = self._state()
        # Seeded by the run and by how far it got, so a resumed search does not replay the
        # same random choices as its first life.
        self.rng = random.Random(f"{cfg.search.seed}-{state.num_events}")
        self._given_proposer = proposer is not None
        self.proposer = proposer or self._default_proposer()
        self.agents: Any = None
        self.started = time.time()

    def _default_proposer(self) -> Proposer:
        if self.cfg.search.proposer == "random":
            from evolve.search.random_search import RandomProposer

            return RandomProposer(self.rng)
        # llm/auto start with the mutator; `run` swaps in the researcher once a model answers.
        return MutatorProposer(self.cfg.mutator, self.cfg.sampling, self.rng)

    def _start_agents(self) -> None:
        """Connect to (or start) the model for proposer llm/auto; NoModel for llm without one."""
        from evolve.search.llm_roles import Agents, LLMProposer

        self.agents = Agents.start(self.cfg, self.store)
        if self.agents is None:
            return
        self.store.record("llm_ready", source=self.agents.source)
        if not self._given_proposer:
            self.proposer = LLMProposer(self.agents, self.cfg, self.rng, describe=self.view,
                                        cognition=self._cognition())

    def _cognition(self) -> Any:
        from evolve.agents.cognition import Cognition

        return Cognition.for_store(self.store, self.cfg.cognition)

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run until the search is complete or asked to stop; 0 in both cases."""
        with self.store.driver_lock():
            previous = self._install_signals()
            try:
                if self.cfg.search.proposer in ("llm", "auto") or self.cfg.search.analyzer == "llm":
                    self._start_agents()
                self.store.record("driver_start", pid=os.getpid(), host=socket.gethostname(),
                                  proposer=self.proposer.name)
                self.launcher.resume()
                self._recover_created()
                if not self._should_stop():
                    self._submit_baselines()
                    self._propose_seed_designs()
                while not self._should_stop():
                    progressed = self.step()
                    if self._complete():
                        self.stop_reason = self.stop_reason or "complete"
                        break
                    if not progressed:
                        time.sleep(self.cfg.search.poll_s)
            finally:
                if self.agents is not None:
                    self.agents.close()
                self.store.record("driver_stop", reason=self.stop_reason or "error")
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
        return 0

    def step(self) -> bool:
        """One pass: collect, score, analyze, propose. True if anything happened."""
        progressed = bool(self.launcher.poll())
        progressed |= self._score_finished()
        progressed |= self._analyze_scored()
        if self._should_stop():  # asked to stop: collect what finished, start nothing new
            return progressed
        progressed |= self._follow_up()
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
            self.stop_reason = f"STOP file {self.cfg.run_dir / 'STOP'}: remove it to go on"
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
        unfinished = [c for c in state.candidates.values() if c.status in UNFINISHED]
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

    def _new_candidate(self, code: str, proposal: dict[str, Any], generation: int,
                       records: list[dict[str, Any]] = ()) -> str:  # type: ignore[assignment]
        from evolve.agents.client import record_call

        cid = self.store.new_candidate(generation=generation, parents=proposal.get("parents", []))
        paths = self.store.candidate(cid)
        self.store.write_text(paths.mixer, code)
        for record in records:
            record_call(paths.dir, record)
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

    def _submit_baselines(self, seeds: int | None = None, preset: str | None = None,
                          names: tuple[str, ...] | None = None) -> bool:
        """Baselines `names` (default: the configured ones) with seeds 0..seeds-1 at `preset`
        (None: the run's own training), each created once per run."""
        state = self._state()
        have = {(p.get("name"), p.get("seed"), p.get("preset")) for p in
                (self._proposal(c) for c in state.candidates) if p.get("kind") == "baseline"}
        made = False
        for seed in range(seeds or self.cfg.search.baseline_seeds):
            new = []
            for name in names or self.cfg.search.baselines:
                if (name, seed, preset) in have:
                    continue
                code = (BASELINES_DIR / f"{name}.py").read_text()
                new.append(self._new_candidate(code, {
                    "kind": "baseline", "name": name, "seed": seed, "preset": preset,
                    "proposer": "baseline", "motivation": f"baseline {name}", "parents": [],
                    "spec": BASELINE_SPECS[name].to_dict()}, generation=0))
            for cid in new:
                # Baselines are trusted package files: record them as checked without gates.
                self.store.record("checked", cid, passed=True, gates="baseline")
                made = True
        return made

    def _propose_seed_designs(self) -> bool:
        """search.seed_designs as first-generation proposals, each created once per run."""
        from evolve.model.render import render
        from evolve.search.seed_designs import seed_designs

        state = self._state()
        have = {self._proposal(c).get("seed_design") for c in state.candidates}
        made = False
        for i, (spec, motivation) in enumerate(seed_designs(self.cfg.search.seed_designs)):
            if i in have:
                continue
            cid = self._new_candidate(render(spec), {
                "kind": "proposal", "proposer": "researcher's seed design", "seed_design": i,
                "motivation": motivation, "parents": [], "spec": spec.to_dict()}, generation=1)
            self._gate(cid)
            made = True
        return made

    def _submit_checked(self) -> bool:
        state = self._state()
        # submit_failed: a submission the scheduler refused, or one a killed driver left without
        # its job id (Launcher.resume found no job for it): no training runs, so submit again.
        ready = [c for c in state.with_status("checked", "lost", "submit_failed")
                 if c.id not in self.launcher.active]
        if not ready:
            return False
        # One array per (seed, preset): the seed and the training settings are per submission.
        groups: dict[tuple[int, str], list[str]] = {}
        for c in ready:
            p = self._proposal(c.id)
            key = (p.get("seed", self.cfg.search.seed), p.get("preset") or "")
            groups.setdefault(key, []).append(c.id)
        for (seed, preset_name), cids in sorted(groups.items()):
            train_cfg = to_dict(self._train_config(preset_name or None))
            train_cfg["seed"] = seed
            generation = state.candidates[cids[0]].generation
            try:
                from evolve.train.job import TrainJob

                self.launcher.submit(cids, TrainJob(), train_cfg, generation=generation)
            except SubmissionError as exc:
                # Recorded by the launcher; the candidates stay submittable. Stop rather than
                # spin against a scheduler that refuses (bad partition, account).
                self.stop_reason = f"submission refused: {exc}"
                return False
        return True

    def _train_config(self, preset_name: str | None) -> Any:
        """The run's training settings, or those of a promotion preset."""
        if preset_name is None:
            return self.cfg.train
        promote = self.cfg.search.promote
        if preset_name == promote.preset:
            return promote.train_config()
        from evolve.train.presets import preset

        return preset(preset_name)

    def _in_flight(self) -> int:
        state = self._state()
        return sum(c.status in (*ACTIVE_STATUSES, "checked", "proposed")
                   for c in state.candidates.values())

    def _archive(self) -> list[ArchiveEntry]:
        state = self._state()
        entries = []
        for c in state.candidates.values():
            prop = self._proposal(c.id)
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
        # Designs by their digest with "the run's conv width" pinned, so that a spec naming the
        # width and one leaving it to the run are seen as the same design.
        designs = {e.spec.digest(): e.id for e in archive if e.spec is not None}
        made = 0
        for draft in drafts:
            pinned = self._spec({"spec": draft.spec.to_dict()}) if draft.spec else None
            same = designs.get(pinned.digest()) if pinned else None
            if same is not None:
                self.store.record("duplicate_rejected", nearest=same,
                                  reason=f"the same design as {same}")
                continue
            verdict = novelty.check(source=draft.code, motivation=draft.motivation, spec=draft.spec)
            if verdict.kind == "duplicate_code":
                self.store.record("duplicate_rejected", nearest=verdict.nearest_id,
                                  reason=verdict.reason)
                continue
            cid = self._new_candidate(draft.code, self._draft_record(draft, verdict), generation,
                                      records=draft.records)
            novelty.add(cid, source=draft.code, motivation=draft.motivation, spec=draft.spec)
            if pinned is not None:
                designs[pinned.digest()] = cid
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
        report = check_candidate(folder, self.cfg.checks, model=self._model_cfg())
        if report.sandbox.get("incomplete"):
            # The sandbox itself failed (not the candidate): leave it proposed, retry later.
            self.store.record("gate_incomplete", cid, detail=str(report.sandbox)[:500])
            return
        failed = report.verdict(report.failed_gate) if report.failed_gate else None
        if failed is not None and self._repairable(cid):
            # The engineer gets the failing gate's message; a verified fix replaces mixer.py
            # (a crash mid-repair leaves the candidate proposed: it is gated, and repaired, again).
            outcome = self.agents.repair(folder, report.failed_gate, failed.message,
                                         self._check_scratch)
            self.store.record("repair", cid, ok=outcome["ok"], attempts=outcome["attempts"],
                              gate=report.failed_gate, error=outcome["error"][:500] or None)
            if outcome["ok"]:
                report = check_candidate(folder, self.cfg.checks, model=self._model_cfg())
                failed = report.verdict(report.failed_gate) if report.failed_gate else None
        self.store.record("checked", cid, passed=report.passed,
                          failed_gate=report.failed_gate,
                          error=failed.message[:500] if failed else None)

    def _model_cfg(self) -> Any:
        track = self.cfg.train.lm or self.cfg.train.mqar
        assert track is not None
        return track.model

    def _repairable(self, cid: str) -> bool:
        """Only whole files the model wrote are repaired: a spec-mode file is a rendering of
        its spec, and editing the code would make the two disagree."""
        if self.agents is None or self.cfg.search.max_repairs < 1:
            return False
        prop = self._proposal(cid)
        repairs = sum(1 for e in self.store.events()
                      if e.get("event") == "repair" and e.get("candidate") == cid)
        return prop.get("proposer") == "llm-code" and repairs < self.cfg.search.max_repairs

    def _check_scratch(self, folder: Any) -> tuple[bool, str, str]:
        report = check_file(folder / "mixer.py", self.cfg.checks, model=self._model_cfg())
        gate = report.failed_gate
        return report.passed, gate or "", report.verdict(gate).message if gate else ""
