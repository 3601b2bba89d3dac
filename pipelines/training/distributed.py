"""Data-parallel training: the launch (torchrun or srun), the process group and the gradient all-reduce.

One process per GPU (or per CPU share with the gloo backend). Every rank draws the same global batch
from the shared seed, works on its rows (:func:`pipelines.batching.shard_rows`), and the gradients
are summed over the ranks: a family scales its local loss so that these sums are the gradient of the
global batch's loss (:func:`shard_weight`). World size 1 touches nothing (no process group).

Launches recognised: torchrun (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT) and
an srun job step with several tasks (SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID,
SLURM_STEP_TASKS_PER_NODE; MASTER_ADDR from the environment or the step's first node).
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

#: port of the rendezvous of an srun launch without MASTER_PORT (offset by the job id)
SRUN_BASE_PORT = 20000


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect_world(env: Mapping[str, str] | None = None) -> World:
    """The launch that ``env`` (default os.environ) describes: torchrun, a multi-task srun step or none."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        size = int(env["WORLD_SIZE"])
        local = (int(env.get("LOCAL_RANK", "0")), int(env.get("LOCAL_WORLD_SIZE", str(size))))
        addr, port = env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", "29500"))
        return _checked(World(int(env["RANK"]), size, *local, addr, port))
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", "1"))
    if tasks > 1 and "SLURM_PROCID" in env:
        per_node = int(env.get("SLURM_STEP_TASKS_PER_NODE", str(tasks)).split("(")[0].split(",")[0])
        port = int(env.get("MASTER_PORT", str(SRUN_BASE_PORT + int(env.get("SLURM_JOB_ID", "0")) % 10000)))
        addr = env.get("MASTER_ADDR") or _first_node(env.get("SLURM_STEP_NODELIST", ""))
        return _checked(World(int(env["SLURM_PROCID"]), tasks, int(env.get("SLURM_LOCALID", "0")), per_node,
                              addr, port))  # fmt: skip
    return World()


def _checked(world: World) -> World:
    if not (0 <= world.rank < world.size and 0 <= world.local_rank < world.local_size <= world.size):
        raise ValueError(f"inconsistent launch environment: {world}")
    return world


def _first_node(nodelist: str) -> str:
    """The first host of a SLURM node list (``scontrol show hostnames`` expands ranges)."""
    if not nodelist:
        return "127.0.0.1"
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        out = []
    return out[0] if out else nodelist.split(",")[0]


def local_device(device: torch.device, world: World, visible_gpus: int | None = None) -> torch.device:
    """The device of this rank: ``cuda:<local rank>`` on CUDA (ValueError when the node runs more ranks than
    it sees GPUs), the CPU otherwise."""
    if device.type != "cuda" or world.size == 1:
        return device
    visible = torch.cuda.device_count() if visible_gpus is None else visible_gpus
    if world.local_size > visible:
        raise ValueError(
            f"data-parallel training runs {world.local_size} processes on this node but it sees {visible} "
            f"GPU(s) (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}): ask the job for "
            f"{world.local_size} GPUs or lower the model's training setting gpus"
        )
    return torch.device("cuda", world.local_rank)


def init(world: World, device: torch.device, timeout_s: float = 1800) -> None:
    """Join the process group (nccl on CUDA, gloo on CPU); nothing for world size 1."""
    if world.size == 1:
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://{world.master_addr}:{world.master_port}",
        rank=world.rank, world_size=world.size, timeout=datetime.timedelta(seconds=timeout_s),
    )  # fmt: skip


def teardown(world: World) -> None:
    """Leave the process group (if joined)."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def shard_weight(local: float, total: float, world_size: int) -> float | None:
    """Factor of a rank's mean loss over ``local`` of ``total`` items so that the summed gradients are those
    of the global mean (None at world size 1: leave the loss as it is)."""
    if world_size == 1:
        return None
    return float(local) / max(float(total), 1.0)


def all_reduce_grads(params: list[torch.nn.Parameter], device: torch.device) -> None:
    """Sum the gradients of ``params`` over the ranks (one flat buffer; a gradient that some rank lacks
    counts as zeros there, one that no rank has stays None)."""
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    used = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    if not used:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in used])
    dist.all_reduce(flat)
    offset = 0
    for p in used:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def sum_figures(figures: dict[str, float], device: torch.device) -> dict[str, float]:
    """The figures of a step summed over the ranks (each rank's share of the batch's; same keys on all)."""
    if not figures:
        return figures
    values = torch.tensor(list(figures.values()), dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return {k: float(v) for k, v in zip(figures, values.tolist(), strict=True)}


def broadcast_int(value: int, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank."""
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def all_agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. whether the time budget is left)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item() > 0)


def broadcast_modules(modules: Mapping[str, torch.nn.Module]) -> None:
    """Rank 0's parameters and buffers on every rank (the ranks start from identical weights)."""
    for m in modules.values():
        for t in [*m.parameters(), *m.buffers()]:
            dist.broadcast(t.data, src=0)
