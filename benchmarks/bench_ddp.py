"""Data-parallel training speed: seconds per step and speed-up of N processes against one.

Each process count runs as that many processes (torch.multiprocessing, NCCL on CUDA with one GPU
each, gloo on CPU with one thread each) training the family's default settings on the embedded data
(flow matching on jet-like clouds, the factorised family on GFlash showers), two warm-up steps
untimed. Default: the same global batch for every N (strong scaling: the experiment is unchanged);
``--scale-batch`` multiplies the batch by N (weak scaling: throughput per GPU).

    python benchmarks/bench_ddp.py                                   # CPU, gloo, 1 and 2 processes
    python benchmarks/bench_ddp.py --device cuda --procs 1 2 4 8 --steps 50
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from embedded_data import jet_data, shower_data

from pipelines.models.family import family_settings, get_family
from pipelines.training import distributed
from pipelines.training.distributed import World
from pipelines.training.loop import Run, seed_everything
from pipelines.training.settings import LoopSettings

DATA = {"flow-matching": "jets", "factorised": "showers"}
BATCH_KEYS = {"flow-matching": ("max_tokens",), "factorised": ("shower_batch", "point_batch")}


def worker(rank: int, size: int, port: int, args: argparse.Namespace, out: dict) -> None:
    """One rank: train args.steps timed steps; rank 0 puts the seconds per step in ``out``."""
    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    world = World(rank, size, rank, size, "127.0.0.1", port)
    distributed.local_device(device, world)  # the too-many-GPUs check
    distributed.init(world, device)
    cls = get_family(args.family)
    defaults = dataclasses.asdict(family_settings(cls, {}))
    scale = size if args.scale_batch else 1
    settings = family_settings(cls, {k: defaults[k] * scale for k in BATCH_KEYS[args.family]})
    data = jet_data(args.jets) if DATA[args.family] == "jets" else shower_data(args.showers)
    seed_everything(0)
    run = Run(cls(settings, data, device), LoopSettings(progress=False), device, world)
    for _ in range(2):
        run.train_step()
    if size > 1:
        dist.barrier()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        run.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    if rank == 0:
        out[size] = (time.perf_counter() - start) / args.steps
    distributed.teardown(world)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--family", default="flow-matching", choices=sorted(DATA))
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    p.add_argument("--steps", type=int, default=20, help="timed steps per process count")
    p.add_argument("--scale-batch", action="store_true", help="batch x N (weak scaling)")
    p.add_argument("--jets", type=int, default=1500, help="jet-like clouds (80 % train)")
    p.add_argument("--showers", type=int, default=1000, help="embedded GFlash showers (80 % train)")
    args = p.parse_args()
    out = mp.Manager().dict()
    print(f"{args.family} on {args.device}, {'weak' if args.scale_batch else 'strong'} scaling")
    print(f"{'processes':>9} {'s/step':>9} {'speed-up':>9} {'samples/s x':>12}")
    for size in args.procs:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(worker, args=(size, port, args, out), nprocs=size)
        speed_up = out[args.procs[0]] / out[size]  # against the first process count
        batch = size / args.procs[0] if args.scale_batch else 1.0
        print(f"{size:>9} {out[size]:>9.4f} {speed_up:>9.2f} {batch * speed_up:>12.2f}")


if __name__ == "__main__":
    main()
