"""Where a run executes: the site file's `launch:` defaults under the run file's own keys, and
the combinations of preset and launch section that cannot run.

    data = merge_site(data, source, lines)   # $EVOLVE_SITE's launch: under the run file's launch:
    notes = site_notes(path)                 # what `evolve config show/validate` warns about
    check_runnable(cfg)                      # ConfigError naming the keys and the fix

A GPU preset (train.runtime.device: cuda) on Slurm needs launch.gpus_per_task >= 1, else every
training lands on a node without a GPU and fails there, hours later; promotion re-trains at
another preset, so `search.promote.launch` overrides the run's launch keys for those trainings
(a CPU search promoting to a GPU preset). DeepSpeed on CPU is allowed: it is a tested path
(tests/test_slurm.py trains two CPU ranks with it; bf16 on CPU is autocast).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from evolve.config.loading import ConfigError, check_keys, deep_update, from_dict, read_yaml
from evolve.launch.executors import LaunchConfig

SITE_VAR = "EVOLVE_SITE"
SCRIPTS_SITE = Path("slurm") / "site.yaml"
"""The site file slurm/*.sbatch read when $EVOLVE_SITE is unset (relative to the submit folder)."""


def _site_launch() -> tuple[str, dict[str, Any]] | None:
    """($EVOLVE_SITE, its launch: mapping), None when no YAML site file is named."""
    site = os.environ.get(SITE_VAR)
    if not site or Path(site).suffix not in (".yaml", ".yml"):
        return None
    data, lines = read_yaml(site)
    launch = data.get("launch")
    if launch is None:
        return site, {}
    if not isinstance(launch, dict):
        raise ConfigError(f"{site}:{lines.get('launch', '?')}: 'launch' is {launch!r}; in a site "
                          "file it must be a mapping of LaunchConfig keys "
                          "(slurm/site.example.yaml)")
    check_keys(LaunchConfig, launch, site, lines, "launch")
    return site, launch


def merge_site(data: dict[str, Any]) -> dict[str, Any]:
    """The run file's data with the site's launch defaults under its own `launch:` keys; a
    `launch:` that is not a mapping is left for from_dict to refuse with its line."""
    site = _site_launch()
    own = data.get("launch")
    if site is None or not (own is None or isinstance(own, dict)):
        return data
    return {**data, "launch": deep_update(site[1], own or {})}


def site_notes(path: str | Path | None) -> list[str]:
    """Lines for the user: launch keys of the run file that override the site file, and a
    site file the Python side does not read because $EVOLVE_SITE is unset."""
    own: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None:
        data, lines = read_yaml(path)
        own = data.get("launch") if isinstance(data.get("launch"), dict) else {}
    site = _site_launch()
    if site is None:
        if SCRIPTS_SITE.is_file():
            return [f"note: {SITE_VAR} is not set, so {SCRIPTS_SITE}'s launch: defaults are not "
                    f"shown here (slurm/driver.sbatch sets it); export {SITE_VAR}={SCRIPTS_SITE}"]
        return []
    name, launch = site
    return [f"note: {path}:{lines.get(f'launch.{key}', '?')}: launch.{key}={own[key]!r} "
            f"overrides the site file's {launch[key]!r} ({name})"
            for key in sorted(own) if key in launch and own[key] != launch[key]]


def _gpu_less(launch: LaunchConfig) -> bool:
    return launch.executor == "slurm" and launch.gpus_per_task == 0


def check_runnable(cfg: Any, source: str = "run file") -> None:
    """Refuse a run config whose trainings cannot run where it sends them (a RunConfig read
    from `source`)."""
    if cfg.train.runtime.device == "cuda" and _gpu_less(cfg.launch):
        raise ConfigError(
            f"{source}: preset {cfg.preset!r} trains on CUDA (train.runtime.device: cuda) but "
            "launch.gpus_per_task is 0 under executor slurm, so its trainings get no GPU: set "
            "launch.gpus_per_task: 1 and a GPU launch.partition (in the run file or the site "
            "file's launch:), or train on CPU (train.runtime.device: cpu)")
    fid = cfg.search.fidelity
    if fid.rung_tracks and not set(fid.rung_tracks) & set(cfg.train.tracks()):
        raise ConfigError(
            f"{source}: search.fidelity.rung_tracks={list(fid.rung_tracks)} names no track the "
            f"run trains ({', '.join(cfg.train.tracks())}): name one of them, or leave it empty "
            "(a rung trains every track)")
    promote = cfg.search.promote
    check_keys(LaunchConfig, promote.launch, source, {}, "search.promote.launch")
    if promote.top and promote.train_config().runtime.device == "cuda" \
            and _gpu_less(promote_launch(cfg)):
        raise ConfigError(
            f"{source}: search.promote re-trains at preset {promote.preset!r}, which trains on "
            "CUDA, but the launch section it would use gives no GPU (launch.gpus_per_task: 0 "
            "under executor slurm): give the promotion its own launch keys, e.g. "
            "search.promote.launch: {partition: gpu, gpus_per_task: 1}")


def promote_launch(cfg: Any) -> LaunchConfig:
    """The launch settings of promoted trainings: the run's, with search.promote.launch over."""
    from evolve.config.loading import to_dict

    return from_dict(LaunchConfig, deep_update(to_dict(cfg.launch), cfg.search.promote.launch),
                     source="search.promote.launch", prefix="search.promote.launch")
