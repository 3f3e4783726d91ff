"""The training job end to end: real corpus, real MQAR, real checkpoints, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from evolve.config.loading import to_dict
from evolve.model.contract import BASELINE_NAMES
from evolve.train.presets import TrainConfig, load_train_config, tiny
from evolve.train.job import TrainJob, train_candidate
from evolve.train.loop import DeferredSignals

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def short(cfg: TrainConfig, lm_steps: int = 12, mqar_steps: int = 12) -> TrainConfig:
    """The tiny preset cut to a few steps and a small evaluation, for fast tests."""
    assert cfg.lm is not None and cfg.mqar is not None
    lm = replace(cfg.lm, max_steps=lm_steps, log_every=2, checkpoint_every=4,
                 optim=replace(cfg.lm.optim, warmup_steps=2))
    mqar = replace(cfg.mqar, max_steps=mqar_steps, batch_size=16, log_every=2,
                   checkpoint_every=4, optim=replace(cfg.mqar.optim, warmup_steps=2))
    ev = replace(cfg.eval, bpb_windows=8, lm_eval_tasks=("piqa",), lm_eval_limit=8)
    task = replace(cfg.mqar_task, num_eval_examples=64)
    return replace(cfg, lm=lm, mqar=mqar, eval=ev, mqar_task=task)


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train" / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", BASELINE_NAMES)
def test_every_baseline_trains_and_writes_a_complete_result(name: str, tmp_path: Path) -> None:
    cfg = short(tiny())
    result = train_candidate(name, cfg, tmp_path, DeferredSignals())
    assert result["status"] == "ok", result.get("traceback")
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert on_disk["status"] == "ok"
    m = on_disk["metrics"]
    assert 0 < m["bpb"] < 9
    assert 0 <= m["mqar_acc"] <= 1
    assert set(m["mqar_acc_by_pairs"]) == {"4", "8", "16"}
    assert 0 <= m["benchmark_avg"] <= 1
    assert m["tokens_per_s"] > 0 and m["peak_mem_mb"] > 0 and m["num_params"] > 0
    steps = [r["step"] for r in metrics(tmp_path) if r.get("track") == "lm" and "step" in r]
    assert steps == list(range(2, 13, 2))


def test_mixer_given_as_a_file_path(tmp_path: Path) -> None:
    mixer = tmp_path / "cand" / "mixer.py"
    mixer.parent.mkdir()
    mixer.write_text((REPO / "evolve/model/baselines/deltanet.py").read_text())
    result = train_candidate(mixer, short(tiny()).only_tracks(["mqar"]), mixer.parent,
                             DeferredSignals())
    assert result["status"] == "ok"
    assert result["metrics"]["mqar_acc"] is not None and "bpb" not in result["metrics"]


def test_a_failing_mixer_is_recorded_not_raised(tmp_path: Path) -> None:
    mixer = tmp_path / "mixer.py"
    mixer.write_text("import torch.nn as nn\n\nclass Mixer(nn.Module):\n"
                     "    def __init__(self, cfg):\n        super().__init__()\n"
                     "    def forward(self, x):\n        return x[:, :-1]\n")
    result = train_candidate(mixer, short(tiny()), tmp_path, DeferredSignals())
    assert result["status"] == "failed"
    assert "Traceback" in result["traceback"]
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "failed"


def test_divergence_stops_with_a_reason(tmp_path: Path) -> None:
    cfg = short(tiny()).only_tracks(["lm"])
    assert cfg.lm is not None
    cfg = replace(cfg, lm=replace(cfg.lm, diverge_loss=0.5))  # any real loss exceeds it
    result = train_candidate("deltanet", cfg, tmp_path, DeferredSignals())
    assert result["status"] == "failed" and "diverged" in result["reason"]


def test_unknown_preset_and_key_name_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny, explore, verify"):
        load_train_config("huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nlm:\n  max_stepz: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml:3: unknown key 'lm.max_stepz'.*max_steps"):
        load_train_config("tiny", bad)


def _train_cmd(out: Path, cfg_file: Path) -> list[str]:
    return [PYTHON, "-m", "evolve.cli.main", "train", "--mixer", "deltanet", "--preset", "tiny",
            "--config", str(cfg_file), "--out", str(out), "--json"]


def test_sigterm_checkpoints_and_a_rerun_resumes_without_repeating_steps(tmp_path: Path) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(
        "lm:\n  max_steps: 150\n  log_every: 1\n  checkpoint_every: 1000\n"
        "eval:\n  bpb_windows: 4\n  lm_eval_tasks: []\n"
        "mqar: null\n")
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(out, cfg_file), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = out / "train" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 5):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "checkpoint is saved" in err, err
    first = metrics(out)
    stopped_at = first[-1]["step"]
    assert 5 <= stopped_at < 150

    # Second run: resumes at the saved step and finishes.
    done = subprocess.run(_train_cmd(out, cfg_file), cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = metrics(out)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 151)), "every step trained exactly once"
    assert any(r.get("event") == "resume" and r["step"] == stopped_at for r in rows)
    assert json.loads(done.stdout)["status"] == "ok"


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
def test_train_job_under_submitit_requeues_on_usr2(tmp_path: Path) -> None:
    submitit = pytest.importorskip("submitit")
    cfg = short(tiny(), lm_steps=200).only_tracks(["lm"])
    assert cfg.lm is not None
    cfg = replace(cfg, lm=replace(cfg.lm, log_every=1, checkpoint_every=10_000))
    cand = tmp_path / "c000001"
    cand.mkdir()
    (cand / "mixer.py").write_text((REPO / "evolve/model/baselines/deltanet.py").read_text())
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="local")
    executor.update_parameters(timeout_min=10)
    job = executor.submit(TrainJob(), str(cand), to_dict(cfg))
    log = cand / "train" / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 10):
        time.sleep(0.3)
    # USR2, as Slurm sends before the time limit. A local job's id is its controller process;
    # the training runs in a child whose command line names the jobs folder.
    tasks = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
             and _cmdline(p).count("submitit.core._submit") and str(tmp_path) in _cmdline(p)]
    assert tasks
    for pid in tasks:
        os.kill(pid, signal.SIGUSR2)
    result = job.result()
    assert result["status"] == "ok"
    rows = metrics(cand)
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 201))
    assert any(r.get("event") == "resume" for r in rows)
    assert os.path.exists(cand / "result.json")


@pytest.mark.slow
def test_bf16_training_through_the_cli(tmp_path: Path) -> None:
    # issue 14: precision bf16 on CPU (autocast in the torch engine) failed in the delta rule's
    # triangular solve ("triangular_solve_cpu" not implemented for 'BFloat16')
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(
        "runtime:\n  precision: bf16\n"
        "mqar:\n  max_steps: 4\n  batch_size: 16\n  log_every: 2\n  checkpoint_every: 1000\n"
        "mqar_task:\n  num_eval_examples: 64\n")
    out = tmp_path / "run"
    done = subprocess.run(
        [PYTHON, "-m", "evolve.cli.main", "train", "--mixer", "deltanet", "--preset", "tiny",
         "--tracks", "mqar", "--config", str(cfg_file), "--out", str(out), "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ok", result.get("traceback")
    assert result["config"]["runtime"]["precision"] == "bf16"
    assert 0 <= result["metrics"]["mqar_acc"] <= 1
    losses = [r["loss"] for r in metrics(out) if "loss" in r]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses), losses
