"""The run configuration: one YAML file describes a whole search.

    cfg = load_run_config("configs/my-run.yaml")     # strict keys, errors name file and line
    cfg = default_run_config()                       # the embedded default (the demo)
    print(dump_yaml(cfg))                            # `evolve config show`

A run file names a training preset and overrides its keys under `train:`; the resolved config
(preset applied) is what `run.yaml` freezes, so a resumed run compares every key. Site settings
(partition, account, modules) come from the file named by $EVOLVE_SITE (its `launch:` section),
under the run file's own `launch:` keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.gates.check import CheckConfig
from evolve.agents.cognition import CognitionConfig
from evolve.config.loading import (ConfigError, check_keys, choice, deep_update, from_dict, positive,
                             read_yaml, to_dict)
from evolve.launch.executors import LaunchConfig
from evolve.search.fidelity import FidelityConfig
from evolve.search.followup import PromoteConfig
from evolve.agents.llm_config import LLMConfig
from evolve.search.mutator import MutatorConfig
from evolve.gates.novelty import NoveltyConfig
from evolve.train.presets import PRESETS, TrainConfig, preset
from evolve.search.sampling import SamplingConfig
from evolve.search.site_launch import check_runnable, merge_site
from evolve.state.store import StoreConfig

PROPOSERS = ("auto", "mutator", "llm", "random", "independent")
ANALYZERS = ("auto", "llm", "rules")


@dataclass(kw_only=True)
class SearchConfig:
    """How many candidates, how they are proposed, and when the run stops."""

    proposer: str = "auto"
    """mutator (no model), llm (the model server: llm.base_url, llm.endpoint_file, the run's
    llm/endpoint.json, else the packaged local model), auto (llm when one of those answers,
    else the mutator); the controls: random (uniform samples of the design space) or
    independent (proposals from the fitness.reference baseline alone: no archive, no sampling,
    no lessons; evolve/search/independent.py)."""
    independent_of: str = "mutator"
    """Which proposer the independent control uses: mutator (mutations of the base) or llm
    (the researcher prompted with the base alone, in llm.mode; it needs a model as proposer
    llm does). Only read with proposer independent."""
    serve_local: bool = True
    """With proposer llm or auto (or independent_of llm) and no server configured, start the
    packaged llama.cpp model (SmolLM2-135M, one thread) on the driver's node when it is
    installed."""
    analyzer: str = "auto"
    """Who analyses finished candidates: llm, rules (model-free), or auto (llm when a model
    serves the run)."""
    max_candidates: int = 12
    """Stop proposing after this many proposals have been trained (baselines not counted)."""
    generation_size: int = 4
    """Candidates proposed, gated and submitted together as one job array."""
    max_in_flight: int = 8
    """Cap on candidates submitted but not finished: the next generation waits below it."""
    baselines: tuple[str, ...] = ("deltanet", "gated_deltanet", "linear_attention")
    """Baselines trained first, under the same budget and seeds as the candidates."""
    baseline_seeds: int = 1
    """Seeds per baseline (search.seed, search.seed + 1, ...: the proposals' own seeds, so that
    comparisons are seed-matched); fitness uses their mean and spread."""
    confirm_top: int = 0
    """Noise-aware selection: the best this-many candidates whose one-seed fitness beats the
    reference are re-trained with confirm_seeds seeds (and every baseline too); a candidate is
    called better only when the 95% interval of its difference excludes zero."""
    confirm_seeds: int = 3
    """Seeds (including the first) a confirmed candidate is trained with."""
    ablate_best: bool = False
    """When the search is complete, revert each design choice of the best candidate that
    differs from its nearest baseline, one at a time, and train each with confirm_seeds seeds
    (the table is in the run's ablation file and the report)."""
    seed_designs: tuple[dict[str, Any], ...] = ()
    """The researcher's own designs, trained in the first generation as proposals: each a spec
    mapping, optionally `base: <baseline>` plus the fields that differ and a `motivation`, or a
    design file, `file:` a layer written against fla's layer interface (or an evolve mixer) with
    an optional `name`, `layer` and `motivation`, adapted as `evolve import` adapts it; a relative
    `file` is resolved against the run file's folder and run.yaml freezes the absolute path
    (see evolve/search/seed_designs.py). They pass the gates like any proposal and, once trained,
    count towards max_candidates."""
    promote: PromoteConfig = field(default_factory=PromoteConfig)
    """Re-training the best candidates at a larger preset when the search is complete."""
    max_repairs: int = 2
    """Engineer attempts on a candidate that fails a gate (llm proposer only)."""
    max_gpu_hours: float | None = None
    """Stop when the trainings have used this many GPU-hours (None: no limit)."""
    max_cpu_hours: float | None = None
    """Propose nothing more once the proposals' finished trainings used this many CPU-hours
    (their processes' CPU time; baselines not counted), and end when the trainings in flight
    are done (None: no limit). The search studies compare methods at equal CPU-hours with it."""
    fidelity: FidelityConfig = field(default_factory=FidelityConfig)
    """Multi-fidelity screening: rungs, eta, early termination (evolve/search/fidelity.py)."""
    max_wall_hours: float | None = None
    """Stop this long after the run first started (None: no limit)."""
    seed: int = 0
    """Seed of the search itself (parent sampling, mutations) and of every first training."""
    poll_s: float = 2.0
    """Seconds between looks at the jobs when there is nothing else to do."""

    def __post_init__(self) -> None:
        self.baselines = tuple(self.baselines)
        choice("proposer", self.proposer, PROPOSERS)
        choice("independent_of", self.independent_of, ("mutator", "llm"))
        choice("analyzer", self.analyzer, ANALYZERS)
        for name in ("max_candidates", "generation_size", "max_in_flight", "baseline_seeds",
                     "confirm_seeds"):
            positive(name, getattr(self, name))
        for name in ("max_cpu_hours", "max_gpu_hours", "max_wall_hours"):
            if getattr(self, name) is not None:
                positive(name, getattr(self, name))
        if not self.baselines:
            raise ValueError("baselines is empty: fitness is measured against baselines")
        from evolve.model.contract import BASELINE_NAMES

        for name in self.baselines:
            choice("baselines", name, BASELINE_NAMES)
        from evolve.search.seed_designs import seed_designs

        self.seed_designs = tuple(self.seed_designs)
        # Every entry a valid design, or a ValueError naming it. Design files are checked in
        # shape only: a frozen run.yaml (evolve verify, fsck) must load after the file is gone;
        # a run file's are read when it loads (_resolve).
        seed_designs(self.seed_designs)


@dataclass(kw_only=True)
class FitnessConfig:
    """Fitness: a weighted sum of improvements over the reference baseline of the same run."""

    reference: str = "deltanet"
    """The baseline whose mean scores are the zero of fitness."""
    bpb_weight: float = 1.0
    """Weight of (reference bpb - candidate bpb): lower bits per byte is better."""
    mqar_weight: float = 1.0
    """Weight of (candidate - reference) mean MQAR accuracy."""
    mqar_pairs: int | None = None
    """MQAR accuracy at this many key-value pairs (one of the evaluated counts, e.g. 16);
    None: at the training pair count."""
    benchmark_weight: float = 0.0
    """Weight of (candidate - reference) lm-eval average (0 at tiny scale, where models sit at
    chance)."""

    def __post_init__(self) -> None:
        from evolve.model.contract import BASELINE_NAMES

        choice("reference", self.reference, BASELINE_NAMES)


@dataclass(kw_only=True)
class RunConfig:
    """A whole search: what to train, how to propose, where to run, when to stop."""

    name: str = "demo"
    """Run name: its state lives in <root>/<name>/."""
    root: str = "state"
    """Folder holding runs (on the shared filesystem on a cluster)."""
    preset: str = "tiny"
    """Training preset the `train` section overrides: tiny, explore or verify."""
    train: TrainConfig = field(default_factory=lambda: preset("tiny"))
    """How each candidate is trained and scored (the preset with this section's overrides)."""
    search: SearchConfig = field(default_factory=SearchConfig)
    """Proposals, generations, stop conditions."""
    fitness: FitnessConfig = field(default_factory=FitnessConfig)
    """How a result becomes one number."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """Parent and inspiration selection."""
    mutator: MutatorConfig = field(default_factory=MutatorConfig)
    """The model-free proposer."""
    novelty: NoveltyConfig = field(default_factory=NoveltyConfig)
    """Duplicate and near-duplicate rejection."""
    checks: CheckConfig = field(default_factory=CheckConfig)
    """The gates every candidate passes before training."""
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    """Where trainings run: local subprocesses or Slurm arrays."""
    store: StoreConfig = field(default_factory=StoreConfig)
    """Locks and permissions of the state folder."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """The model server for the LLM roles (base_url or endpoint_file, sampling, retries)."""
    cognition: CognitionConfig = field(default_factory=CognitionConfig)
    """Retrieval and merging of the run's cognition base."""

    def __post_init__(self) -> None:
        choice("preset", self.preset, PRESETS)
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"name={self.name!r} must be a plain folder name")

    @property
    def run_dir(self) -> Path:
        return Path(self.root) / self.name


def _resolve(data: dict[str, Any], source: str, lines: dict[str, int]) -> RunConfig:
    data = dict(data)
    preset_name = data.get("preset", "tiny")
    if preset_name not in PRESETS:
        where = f"{source}:{lines['preset']}" if "preset" in lines else source
        raise ConfigError(f"{where}: unknown preset {preset_name!r}; valid presets: "
                          f"{', '.join(PRESETS)}")
    train_over = data.pop("train", None) or {}
    search = data.get("search")
    if isinstance(search, dict) and "seed_designs" in search:
        from evolve.search.seed_designs import resolve_files

        data["search"] = {**search, "seed_designs": resolve_files(search["seed_designs"],
                                                                  Path(source).parent)}
    base = to_dict(preset(preset_name))
    check_keys(TrainConfig, train_over, source, lines, "train")
    data["train"] = deep_update(base, train_over)
    cfg = from_dict(RunConfig, merge_site(data), source=source, lines=lines)
    check_runnable(cfg, source)  # a run file, not a frozen run.yaml: refuse what cannot run
    _check_seed_files(cfg, source, lines)
    return cfg


def _check_seed_files(cfg: RunConfig, source: str, lines: dict[str, int]) -> None:
    """The run file's design files (search.seed_designs) read and adapted now: a missing file or
    one that is not a layer is a config error naming the run file's line and the entry."""
    from evolve.search.seed_designs import check_files

    try:
        check_files(cfg.search.seed_designs)
    except ValueError as exc:
        line = lines.get("search.seed_designs")
        raise ConfigError(f"{source}{f':{line}' if line else ''}: invalid 'search': {exc}"
                          ) from None


def load_run_config(path: str | Path) -> RunConfig:
    data, lines = read_yaml(path)
    return _resolve(data, str(path), lines)


def run_config_from_dict(data: dict[str, Any], source: str = "<run config>") -> RunConfig:
    """Rebuild a resolved config (as frozen in run.yaml) without re-applying the preset."""
    return from_dict(RunConfig, data, source=source)


DEFAULT_CONFIG = Path(__file__).parents[1] / "configs" / "demo.yaml"


def default_run_config() -> RunConfig:
    """The embedded default: the laptop demo (tiny preset, local executor)."""
    return load_run_config(DEFAULT_CONFIG)
