"""Trainings of several processes: ranks set before use, the data sharded by rank, and the same
loss at every step whether one process or two train a candidate on the same global batch.

The two-rank trainings run for real: DeepSpeed (the GPU path's engine) on CPU over gloo, as
submitit tasks, through the local executor and through the local Slurm cluster (`slurm`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from evolve.config.loading import to_dict
from evolve.launch.executors import LaunchConfig, make_executor
from evolve.model.contract import BASELINES_DIR
from evolve.train.config import RuntimeConfig
from evolve.train.job import TrainJob
from evolve.train.presets import tiny

STEPS = 6


def mqar_config(engine: str = "deepspeed", zero_stage: int = 0) -> dict:
    """The tiny preset's recall track, a few logged steps, scored on a small eval set."""
    cfg = tiny().only_tracks(["mqar"])
    assert cfg.mqar is not None
    track = replace(cfg.mqar, batch_size=8, max_steps=STEPS, log_every=1, checkpoint_every=100,
                    optim=replace(cfg.mqar.optim, warmup_steps=2))
    return to_dict(replace(
        cfg, mqar=track, mqar_task=replace(cfg.mqar_task, num_eval_examples=32,
                                           eval_num_kv_pairs=(8,)),
        runtime=RuntimeConfig(device="cpu", precision="fp32", engine=engine,
                              zero_stage=zero_stage, num_threads=1)))


def candidate(tmp: Path, name: str, mixer: str = "deltanet") -> Path:
    folder = tmp / name
    folder.mkdir(parents=True)
    shutil.copyfile(BASELINES_DIR / f"{mixer}.py", folder / "mixer.py")
    return folder


def losses(folder: Path) -> list[float]:
    rows = [json.loads(line) for line in (folder / "train" / "metrics.jsonl").read_text()
            .splitlines()]
    steps = [r for r in rows if r.get("track") == "mqar" and "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1)), steps
    return [r["loss"] for r in steps]


def train(tmp: Path, name: str, executor: str, tasks: int, cfg: dict) -> dict:
    folder = candidate(tmp, name)
    launch = LaunchConfig(executor=executor, tasks_per_node=tasks, cpus_per_task=1,
                          timeout_min=15, **({"partition": "debug"} if executor == "slurm"
                                             else {}))
    ex = make_executor(launch, tmp / f"jobs-{name}", f"ranks-{name}")
    job = ex.submit(TrainJob(), str(folder), cfg)
    result = job.results()[0]  # rank 0's; every task returns what it trained
    written = json.loads((folder / "result.json").read_text())
    assert written["status"] == "ok", written.get("traceback") or written
    assert written["world_size"] == tasks
    assert result["world_size"] == tasks
    return written


def assert_same_curve(one: list[float], two: list[float]) -> None:
    # Two ranks reduce the gradient in another order than one process (a sum of two halves):
    # float32 rounding, ~1e-7 relative per step, grown by a few Adam steps; 1e-4 relative is
    # far below the 1e-2 a wrong shard gives (other rows, another loss from the first step).
    assert len(one) == len(two)
    worst = max(abs(a - b) / abs(a) for a, b in zip(one, two))
    print(f"1 vs 2 ranks over {len(one)} steps: max relative loss difference {worst:.2e}")
    for step, (a, b) in enumerate(zip(one, two), start=1):
        assert abs(a - b) <= 1e-4 * abs(a), f"step {step}: 1 rank {a}, 2 ranks {b}"


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [0, 2])
def test_two_local_ranks_train_as_one_process(tmp_path: Path, zero_stage: int) -> None:
    cfg = mqar_config(zero_stage=zero_stage)
    one = train(tmp_path, "one", "local", 1, cfg)
    two = train(tmp_path, "two", "local", 2, cfg)
    assert_same_curve(losses(tmp_path / "one"), losses(tmp_path / "two"))
    assert two["kernel_backends"] == {"delta_rule": ["chunk"], "short_conv": ["chunk"]}
    assert one["tracks"]["mqar"]["steps"] == two["tracks"]["mqar"]["steps"] == STEPS


@pytest.mark.slow
@pytest.mark.slurm
def test_two_slurm_tasks_train_as_one_process(tmp_path: Path) -> None:
    if shutil.which("sbatch") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but sbatch is not on PATH: run `bash tools/slurm-local.sh start`")
        pytest.skip("no Slurm here (tools/slurm-local.sh start)")
    cfg = mqar_config()
    train(tmp_path, "one", "slurm", 1, cfg)
    train(tmp_path, "two", "slurm", 2, cfg)
    assert_same_curve(losses(tmp_path / "one"), losses(tmp_path / "two"))


def test_ranks_come_from_slurm_and_are_set_before_use() -> None:
    code = ("from evolve.train.distributed import setup_ranks; import os, json; r = setup_ranks(); "
            "print(json.dumps([r.rank, r.world_size, r.local_rank, os.environ['RANK'], "
            "os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK'], os.environ['MASTER_PORT']]))")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "SUBMITIT_EXECUTOR")}
    env.update(SLURM_PROCID="3", SLURM_NTASKS="4", SLURM_LOCALID="1", SLURM_JOB_ID="1234")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    rank, world, local, *exported = json.loads(out.stdout)
    assert (rank, world, local) == (3, 4, 1)
    assert exported[:3] == ["3", "4", "1"] and exported[3] == str(20000 + 1234 % 20000)


def test_a_batch_that_does_not_split_over_the_ranks_is_refused() -> None:
    track = tiny().mqar
    assert track is not None
    assert track.accumulation(2) == (32, 1)
    assert replace(track, micro_batch_size=8).accumulation(2) == (8, 4)
    with pytest.raises(ValueError, match="batch_size=64 does not split over 3 ranks"):
        track.accumulation(3)
    with pytest.raises(ValueError, match="micro_batch_size=5 does not divide"):
        replace(track, micro_batch_size=5).accumulation(2)


@pytest.mark.slow
def test_an_explore_run_on_shakespeare_is_refused_before_anything_is_submitted(
        tmp_path: Path) -> None:
    run_file = tmp_path / "explore.yaml"
    run_file.write_text(f"name: big\nroot: {tmp_path / 'state'}\npreset: explore\n"
                        "search: {proposer: mutator}\nlaunch: {executor: local}\n")
    out = subprocess.run([sys.executable, "-m", "evolve.cli.main", "run", str(run_file)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "would read corpus 'shakespeare'" in out.stderr
    assert "data.max_epochs=4 is allowed" in out.stderr and "train.data.corpus" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "state").exists(), "a refused run must not create its folder"


@pytest.fixture
def own_dist_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A training in this process exports RANK & co.; take them back afterwards."""
    from evolve.train.distributed import DIST_VARS

    for key in DIST_VARS:
        monkeypatch.setenv(key, "unset")
        monkeypatch.delenv(key)


def test_a_training_writes_tensorboard_curves_beside_its_metrics(tmp_path: Path,
                                                                  own_dist_env: None) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = candidate(tmp_path, "tb")
    result = TrainJob()(str(folder), mqar_config(engine="torch"))
    assert result["status"] == "ok", result.get("traceback")
    board = EventAccumulator(str(folder / "train" / "tensorboard"))
    board.Reload()
    curve = [(e.step, e.value) for e in board.Scalars("mqar/loss")]
    written = [(r["step"], r["loss"]) for r in (json.loads(line) for line in
               (folder / "train" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert [s for s, _ in curve] == [s for s, _ in written] == list(range(1, STEPS + 1))
    assert all(abs(a - b) < 1e-5 * abs(b) for (_, a), (_, b) in zip(curve, written))
    assert result["kernel_backends"] == {"delta_rule": ["chunk"], "short_conv": ["chunk"]}


def test_concurrent_local_trainings_get_disjoint_gpus(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The slots hand out CUDA_VISIBLE_DEVICES; no GPU is needed to see which ones.
    import jobs_for_tests
    from evolve.launch.executors import SlotLimited

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    ex = make_executor(LaunchConfig(executor="local", timeout_min=5), tmp_path / "jobs", "gpus")
    call = SlotLimited(jobs_for_tests.visible_gpus, str(tmp_path / "slots"), 2,
                       gpus_per_slot=2)
    jobs = ex.map_array(call, [str(tmp_path / "c000000"), str(tmp_path / "c000001")])
    assert sorted(job.result() for job in jobs) == ["0,1", "2,3"]
