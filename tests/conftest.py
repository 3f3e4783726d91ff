"""Shared test helpers: the demo-size run config that the driver, report and study tests start
from (tests/test_driver.py, tests/test_report.py, tests/test_search_study.py), and trained
candidates written straight into a store for the view tests (tests/test_report.py,
tests/test_views.py).

    cfg = run_config_dict(tmp_path / "state", search={"max_candidates": 2})
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(cfg))
    cid = trained_candidate(store, {"kind": "proposal", ...}, fitness=0.1, bpb=1.4, generation=1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_config_dict(root: Path, *, steps: int = 6, checkpoint_every: int = 3, log_every: int = 2,
                    **overrides: Any) -> dict[str, Any]:
    """A run config as a dict: the tiny preset, LM and MQAR trainings of `steps` steps, no
    lm-eval, one thread, the mutator against DeltaNet and linear attention on the local executor,
    its state folder at `root`. A dict in `overrides` updates that section (`search={...}`,
    `launch={...}`); any other value replaces the key (`name="study"`)."""
    cfg: dict[str, Any] = {
        "name": "mini", "root": str(root), "preset": "tiny",
        "train": {"lm": {"max_steps": steps, "checkpoint_every": checkpoint_every,
                         "log_every": log_every},
                  "mqar": {"max_steps": steps, "batch_size": 16,
                           "checkpoint_every": checkpoint_every, "log_every": log_every},
                  "eval": {"lm_eval_tasks": [], "bpb_windows": 4},
                  "mqar_task": {"num_eval_examples": 32},
                  "runtime": {"num_threads": 1}},
        "search": {"proposer": "mutator", "generation_size": 2, "max_in_flight": 4,
                   "baselines": ["deltanet", "linear_attention"], "poll_s": 0.3},
        "launch": {"executor": "local", "array_parallelism": 2, "timeout_min": 20,
                   "poll_s": 0.5},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def trained_candidate(store: Any, proposal: dict, *, fitness: float, bpb: float, generation: int,
                      parents: tuple[str, ...] | list[str] = (), status_event: str = "scored"
                      ) -> str:
    """A candidate as the driver leaves it: files written and events journaled up to
    `status_event` (scored, or running: submitted and running, no result)."""
    cid = store.new_candidate(generation=generation, parents=list(parents))
    paths = store.candidate(cid)
    store.write_text(paths.mixer, "# mixer\n")
    store.write_json(paths.proposal, {**proposal, "id": cid})
    store.record("proposed", cid)
    store.record("checked", cid, passed=True)
    if status_event in ("scored", "analyzed"):
        store.write_json(paths.result, {"status": "ok", "metrics": {
            "bpb": bpb, "mqar_acc": 0.5, "tokens_per_s": 1000.0}})
        store.record("done", cid, gpu_hours=0.01)
        store.record("scored", cid, fitness=fitness)
    elif status_event == "running":
        store.record("submitted", cid, job_id="1")
        store.record("running", cid)
    return cid
