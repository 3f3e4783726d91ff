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
from typing import Any, Callable

from evolve.config.loading import to_dict
from evolve.gates.novelty import code_hash
from evolve.launch.launcher import Launcher, SubmissionError
from evolve.model.contract import BASELINES_DIR
from evolve.model.space import BASELINE_SPECS
from evolve.search.check_steps import CheckSteps
from evolve.search.follow_up_steps import FollowUpSteps
from evolve.search.propose_steps import ProposeSteps
from evolve.search.reuse_steps import ReuseSteps
from evolve.search.proposers import MutatorProposer, Proposer
from evolve.search.run_config import RunConfig, run_config_from_dict
from evolve.search.scoring_steps import ScoringSteps
from evolve.search.screening_steps import ScreeningSteps
from evolve.state.journal import ACTIVE_STATUSES, COUNTED, RESUBMITTABLE_STATUSES, UNFINISHED
from evolve.state.store import Store
from evolve.state.view import RunView

log = logging.getLogger(__name__)

MODEL_RETRY_S = 120.0
"""How often a driver with proposer auto and no model looks for a model server again."""

class Driver(ProposeSteps, CheckSteps, ReuseSteps, ScoringSteps, ScreeningSteps, FollowUpSteps):
    def __init__(self, cfg: RunConfig, *, force: bool = False,
                 proposer: Proposer | None = None, train_job: Callable[..., Any] | None = None,
                 reuse_results: bool = True,
                 reuse_kinds: tuple[str, ...] | None = None) -> None:
        self.cfg = cfg
        self.store = Store.create(cfg.run_dir, to_dict(cfg), cfg=cfg.store, force=force,
                                  upgrade=lambda frozen: to_dict(run_config_from_dict(frozen)),
                                  announce=False)
        self.launcher = Launcher(self.store, cfg.launch)
        self.stop_reason: str | None = None
        self.stopped_on_error = False
        """Whether the run stopped because it cannot go on (the scheduler refused its jobs,
        its reference baseline failed), not because it was done or asked to stop: `evolve run`
        then exits 1, so that a batch job ends FAILED."""
        self.view = RunView(self.store)
        """The one read-model of the run (journal replay, proposals, results), cached."""
        self.train_job = train_job
        """What each training task runs: a picklable callable (submitit pickles it) taking the
        candidate folder and the training config; None: evolve.train.job.TrainJob."""
        self.reuse_results = reuse_results
        """Take a finished training's result from the site's result cache instead of training it
        again (`evolve run --no-cache`: False). How the run executes, not what it studies, so it
        is not part of the frozen config."""
        self.reuse_kinds = reuse_kinds
        """The kinds of candidate (baseline, proposal, ...) whose trainings may be taken from
        the cache; None: every kind. A study comparing proposers at equal compute reuses
        baselines only, so that no method gets a proposal another method paid for."""
        self._followed_size = -1
        state = self.view.state
        # Seeded by the run and by how far it got, so a resumed search does not replay the
        # same random choices as its first life.
        self.rng = random.Random(f"{cfg.search.seed}-{state.num_events}")
        self._given_proposer = proposer is not None
        self.proposer = proposer or self._default_proposer()
        self.agents: Any = None
        self.started = time.time()
        self._model_asked = time.time()  # when a model server was last looked for

    def _default_proposer(self) -> Proposer:
        if self.cfg.search.proposer == "random":
            from evolve.search.random_search import RandomProposer

            return RandomProposer(self.rng)
        if self.cfg.search.proposer == "independent":
            from evolve.search.independent import IndependentProposer

            # With independent_of llm, `run` swaps in the model's form once a model answers.
            return IndependentProposer(self.cfg.mutator, self.cfg.fitness.reference, self.rng)
        # llm/auto start with the mutator; `run` swaps in the researcher once a model answers.
        return MutatorProposer(self.cfg.mutator, self.cfg.sampling, self.rng)

    def _start_agents(self) -> None:
        """Connect to (or start) the model for proposer llm/auto or the model's independent
        control; NoModel for those that insist (llm, independent_of llm) without one."""
        from evolve.search.llm_roles import Agents, LLMProposer

        self.agents = Agents.start(self.cfg, self.store)
        if self.agents is None:
            return
        self.store.record("llm_ready", source=self.agents.source)
        if self._given_proposer:
            return
        if self.cfg.search.proposer == "independent":
            from evolve.search.independent import IndependentLLMProposer

            self.proposer = IndependentLLMProposer(self.agents, self.cfg, self.rng,
                                                   describe=self.describe)
        else:
            self.proposer = LLMProposer(self.agents, self.cfg, self.rng, describe=self.describe,
                                        cognition=self._cognition())

    def _look_for_model(self) -> None:
        """proposer auto without a model: a server that came up since (slurm/llm.sbatch writes
        endpoint.json when it answers) takes over the proposals, without a restart."""
        if self.agents is not None or self.cfg.search.proposer != "auto" \
                or time.time() - self._model_asked < MODEL_RETRY_S:
            return
        self._model_asked = time.time()
        self._start_agents()

    def _cognition(self) -> Any:
        from evolve.agents.cognition import Cognition

        return Cognition.for_store(self.store, self.cfg.cognition)

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        """Run until the search is complete or asked to stop; 0 in both cases."""
        with self.store.driver_lock():
            previous = self._install_signals()
            try:
                search = self.cfg.search
                if search.proposer in ("llm", "auto") or search.analyzer == "llm" or (
                        search.proposer == "independent" and search.independent_of == "llm"):
                    self._start_agents()
                self.store.record("driver_start", pid=os.getpid(), host=socket.gethostname(),
                                  proposer=self.proposer.name)
                if self.cfg.fitness.mqar_weight:
                    from evolve.search.recall_reach import reach_warning

                    if (warning := reach_warning(self.cfg.train)) is not None:
                        log.warning("%s", warning)
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
        progressed |= self._promote_screened()
        progressed |= self._analyze_scored()
        if self._should_stop():  # asked to stop: collect what finished, start nothing new
            return progressed
        progressed |= self._follow_up()
        self._look_for_model()
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
        if self.store.stop_path.exists():
            self.stop_reason = f"STOP file {self.store.stop_path}: remove it to go on"
            return True
        s = self.cfg.search
        if s.max_wall_hours is not None:
            first = next(iter(self.store.events()), {}).get("t", self.started)
            if time.time() - first > s.max_wall_hours * 3600:
                self.stop_reason = "max_wall_hours"
                return True
        if s.max_gpu_hours is not None:
            used = sum(c.gpu_hours for c in self.view.state.candidates.values())
            if used >= s.max_gpu_hours:
                self.stop_reason = "max_gpu_hours"
                return True
        # Without its reference a run would spend its whole budget on trainings it cannot score.
        if (failed := self._reference_failed()) is not None:
            self.stop_reason, self.stopped_on_error = failed, True
            return True
        return False

    def _complete(self) -> bool:
        state = self.view.state
        unfinished = [c for c in state.candidates.values() if c.status in UNFINISHED]
        return self._proposals_left() <= 0 and not unfinished

    def _proposals_left(self) -> int:
        """Proposals the search may still make: search.max_candidates less those counted, and
        none once the proposals' finished trainings used search.max_cpu_hours (baselines are
        not counted: a run that reuses them from the cache gets the same budget)."""
        state = self.view.state
        proposals = [c for c in state.candidates.values() if self.view.kind(c.id) == "proposal"]
        if self.cfg.search.max_cpu_hours is not None and sum(
                c.cpu_hours for c in proposals) >= self.cfg.search.max_cpu_hours:
            return 0
        return self.cfg.search.max_candidates - sum(c.status in COUNTED for c in proposals)

    # ---- candidates ----------------------------------------------------------------------

    def _new_candidate(self, code: str, proposal: dict[str, Any], generation: int,
                       records: list[dict[str, Any]] = ()) -> str:  # type: ignore[assignment]
        from evolve.agents.client import record_call

        island = self._island(proposal)
        if island is not None:
            proposal = {**proposal, "island": island}
        cid = self.store.new_candidate(generation=generation, parents=proposal.get("parents", []),
                                       **({"island": island} if island is not None else {}))
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
        for c in self.view.state.with_status("created"):
            paths = self.store.candidate(c.id)
            if paths.mixer.exists() and paths.proposal.exists():
                self.store.record("proposed", c.id)
            else:
                self.store.record("cancelled", c.id, error="interrupted before its proposal "
                                  "was written")

    def _submit_baselines(self, seeds: int | None = None, preset: str | None = None,
                          names: tuple[str, ...] | None = None) -> bool:
        """Baselines `names` (default: the configured ones) at `preset` (None: the run's own
        training), each created once per run, with the seeds the proposals train with:
        search.seed, search.seed + 1, ... (so that every comparison is seed-matched)."""
        state = self.view.state
        have = {(p.get("name"), p.get("seed"), p.get("preset")) for p in
                (self.view.proposal(c) for c in state.candidates) if p.get("kind") == "baseline"}
        made = False
        first = self.cfg.search.seed
        for seed in range(first, first + (seeds or self.cfg.search.baseline_seeds)):
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
        """search.seed_designs as first-generation proposals, each created once per run; a design
        file is adapted and screened for novelty as `evolve import` does (seed_designs.enter)."""
        from evolve.model.render import render
        from evolve.search.seed_designs import (SEED_PROPOSER, DesignFile, DuplicateDesign,
                                                enter, seed_designs)

        state = self.view.state
        have = {self.view.proposal(c).get("seed_design") for c in state.candidates}
        designs = seed_designs(self.cfg.search.seed_designs)
        if any(isinstance(d, DesignFile) for d in designs):
            # A design file refused as a duplicate stays refused: a restart neither screens it
            # nor journals its refusal again.
            have |= {e.get("seed_design") for e in self.store.events()
                     if e.get("event") == "duplicate_rejected" and "seed_design" in e}
        made = False
        for i, design in enumerate(designs):
            if i in have:
                continue
            if isinstance(design, DesignFile):
                try:
                    enter(self, design.draft(), generation=1)
                except DuplicateDesign as exc:  # journaled by _novel; the run goes on without it
                    log.warning("seed_designs[%d]: %s", i, exc)
                    continue
                made = True
                continue
            spec, motivation = design
            cid = self._new_candidate(render(spec), {
                "kind": "proposal", "proposer": SEED_PROPOSER, "seed_design": i,
                "motivation": motivation, "parents": [], "spec": spec.to_dict()}, generation=1)
            self._gate(cid)
            made = True
        return made

    def _submit_checked(self) -> bool:
        state = self.view.state
        # submit_failed: a submission the scheduler refused, or one a killed driver left without
        # its job id (Launcher.resume found no job for it): no training runs, so submit again.
        ready = [c for c in state.with_status(*RESUBMITTABLE_STATUSES)
                 if c.id not in self.launcher.active]
        if not ready:
            return False
        # One array per training config: seed, preset, fraction of the budget (screening) and
        # whether the loss ceiling applies (proposals only) are per submission.
        groups: dict[tuple[int, str, float, bool], list[str]] = {}
        for c in ready:
            p = self.view.proposal(c.id)
            key = (p.get("seed", self.cfg.search.seed), p.get("preset") or "",
                   self._fraction(c.id), p.get("kind") == "proposal")
            groups.setdefault(key, []).append(c.id)
        submitted = False
        for (seed, preset_name, fraction, ceiling), cids in sorted(groups.items()):
            train_cfg = self._submitted_config(preset_name or None, seed, fraction, ceiling)
            generation = state.candidates[cids[0]].generation
            cids = self._reuse_results(cids, train_cfg)  # trained before, here or in another run
            if not cids:
                submitted = True
                continue
            try:
                # At most max_in_flight trainings alive (locally: the free slots); the rest
                # wait as checked candidates, not as processes, for a later step.
                submitted |= bool(self.launcher.submit(
                    cids, self._training(), train_cfg, generation=generation,
                    max_alive=self.cfg.search.max_in_flight, launch=self._launch(preset_name)))
            except SubmissionError as exc:
                # Recorded by the launcher; the candidates stay submittable. Stop rather than
                # spin against a scheduler that refuses (bad partition, account).
                self.stop_reason = f"submission refused: {exc}"
                self.stopped_on_error = True
                return False
        return submitted

    def _training(self) -> Callable[..., Any]:
        if self.train_job is None:  # imported here: torch loads only when a training is sent
            from evolve.train.job import TrainJob

            self.train_job = TrainJob()
        return self.train_job

    def _launch(self, preset_name: str) -> Any:
        """Promoted trainings run with search.promote.launch over the run's launch keys."""
        if not preset_name or preset_name != self.cfg.search.promote.preset \
                or not self.cfg.search.promote.launch:
            return None
        from evolve.search.site_launch import promote_launch

        return promote_launch(self.cfg)

    def _submitted_config(self, preset_name: str | None, seed: int, fraction: float = 1.0,
                          ceiling: bool = False) -> dict[str, Any]:
        """The training config a candidate at `preset_name` with `seed`, trained to `fraction`
        of the budget, is submitted with (also what the result cache keys it by, less the loss
        ceiling); `ceiling`: with the loss ceiling of search.fidelity."""
        train_cfg = to_dict(self._train_config(preset_name))
        train_cfg["seed"] = seed
        train_cfg["budget_fraction"] = fraction
        rung_tracks = self.cfg.search.fidelity.rung_tracks
        if fraction < 1.0 and rung_tracks:
            # A rung trains only these tracks; the others start when the proposal continues.
            # (check_runnable refused a run file whose rung_tracks name no track it trains.)
            for track in ("lm", "mqar"):
                if track not in rung_tracks:
                    train_cfg[track] = None
        for track, pairs in (self._loss_ceilings(preset_name) if ceiling else {}).items():
            if train_cfg.get(track) is not None:  # a track this rung trains
                train_cfg[track]["loss_ceiling"] = pairs
        return train_cfg

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
        state = self.view.state
        return sum(c.status in (*ACTIVE_STATUSES, "checked", "proposed")
                   for c in state.candidates.values())
