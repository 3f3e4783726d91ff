"""The processes of one training: who this process is, set up before anything reads it.

    ranks = setup_ranks()          # first thing in a job: before a device, a data shard or a
                                   # micro-batch size is chosen
    ranks.rank, ranks.world_size, ranks.local_rank, ranks.is_main
    group = init_process_group(ranks, device)   # None for one process
    stop = agree_to_stop(local_stop, group, device)   # every rank stops at the same step

A training may run as N processes (one per GPU; `launch.tasks_per_node` x `launch.nodes`
tasks, started by srun on Slurm or by submitit's local executor). Inside a submitit job the ranks
come from submitit's job environment (`submitit.helpers.TorchDistributedEnvironment`), which
also picks the rendezvous address and a port derived from the job id; outside one (`evolve
train`, a bare `srun`) from Slurm's variables, else a single process. The variables are written
to the environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
as torch.distributed's env:// initialisation and DeepSpeed read them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
             "MASTER_PORT")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one training."""

    rank: int = 0
    """Global rank, 0 .. world_size - 1; rank 0 writes the metrics, checkpoints and result."""
    world_size: int = 1
    """Number of processes training this candidate together (data parallel)."""
    local_rank: int = 0
    """Rank on this node: the index of this process's GPU among the node's visible GPUs."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_rows(global_batch: int, rank: int, world_size: int) -> slice:
    """The rows of a global batch of `global_batch` rows that rank `rank` of `world_size` trains
    on: N ranks together cover the batch one process would."""
    per_rank = global_batch // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank)


def _port_for(job_id: str) -> int:
    # Derived from the job id, so the N processes of one job agree on it without talking, and
    # concurrent jobs on one node stay apart.
    digits = "".join(ch for ch in job_id if ch.isdigit()) or "0"
    return 20000 + int(digits) % 20000


def setup_ranks() -> Ranks:
    """Export torch.distributed's variables for this process and return its ranks.

    In a submitit job its environment decides (overwriting values inherited from whatever
    submitted the job); elsewhere values already set win (torchrun, DeepSpeed's launcher), then
    Slurm's task variables, else one process.
    """
    env = os.environ
    from_job = _from_submitit()
    if from_job is not None:
        env.update(from_job)
    elif "RANK" not in env or "WORLD_SIZE" not in env:
        values = _from_slurm() or {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                                   "LOCAL_WORLD_SIZE": "1"}
        for key, value in values.items():
            env.setdefault(key, value)
    env.setdefault("LOCAL_RANK", "0")
    env.setdefault("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", str(_port_for(env.get("SLURM_JOB_ID", str(os.getpid())))))
    return Ranks(rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]),
                 local_rank=int(env["LOCAL_RANK"]))


def _from_submitit() -> dict[str, str] | None:
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    job = submitit.JobEnvironment()
    hosts = list(job.hostnames) or ["127.0.0.1"]
    addr = "127.0.0.1" if hosts[0] in ("localhost", "") else hosts[0]
    return {"RANK": str(job.global_rank), "WORLD_SIZE": str(job.num_tasks),
            "LOCAL_RANK": str(job.local_rank),
            "LOCAL_WORLD_SIZE": str(max(1, job.num_tasks // max(1, job.num_nodes))),
            "MASTER_ADDR": addr, "MASTER_PORT": str(_port_for(str(job.job_id)))}


def _from_slurm() -> dict[str, str] | None:
    env = os.environ
    if "SLURM_PROCID" not in env or "SLURM_NTASKS" not in env:
        return None
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_NTASKS"],
            "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "LOCAL_WORLD_SIZE": env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0]}


def init_process_group(ranks: Ranks, device_type: str) -> Any:
    """torch.distributed's default group (nccl on CUDA, gloo on CPU) for N > 1 processes;
    None for one process. Idempotent."""
    if ranks.world_size == 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo",
                                rank=ranks.rank, world_size=ranks.world_size)
    return dist.group.WORLD


def agree_to_stop(stop: bool, group: Any, device: Any = "cpu") -> bool:
    """True on every rank when any rank wants to stop (a pre-emption signal reached it):
    the checkpoint that follows is collective, so all ranks must take it at the same step."""
    if group is None:
        return stop
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if stop else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    return bool(flag.item())


def mean_over_ranks(value: float, group: Any, device: Any = "cpu") -> float:
    """The mean of a float over all ranks (the loss of the global batch from the shards')."""
    if group is None:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return float(t.item()) / dist.get_world_size(group)
