"""Training speed of every model family: seconds per step at 1 and 2 torch threads, CPU or GPU.

Each family trains with its default settings (those of config.yaml) on embedded GFlash showers
(dataset-2 geometry) and, for the families that model jets, on jet-like clouds of 30 slots. Two
warm-up steps are not timed. On a 2-core machine whose cores are shared with other work (the
workflow runs several jobs at once), the thread count that is fastest here is the one the
workflow's ``train`` rule asks for.

    python benchmarks/bench_train.py                         # CPU, all families, 1 and 2 threads
    python benchmarks/bench_train.py --device cuda --threads 4 --steps 50
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from embedded_data import jet_data, shower_data

from pipelines.device import resolve_device
from pipelines.models.family import count_parameters, family_settings, get_family
from pipelines.training.loop import Run, seed_everything
from pipelines.training.settings import LoopSettings

FAMILIES = ("factorised", "flow-matching", "mdma-gan", "mpgan")


def seconds_per_step(
    family: str, data, device: torch.device, steps: int, settings: dict | None = None
) -> tuple[float, int]:
    """(median-free mean seconds per training step after two warm-up steps, trainable parameters)."""
    cls = get_family(family)
    seed_everything(0)
    run = Run(cls(family_settings(cls, settings or {}), data, device), LoopSettings(progress=False), device)
    for _ in range(2):
        run.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        run.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps, count_parameters(run.modules)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="torch CPU thread counts to compare"
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps per family and thread count")
    p.add_argument("--showers", type=int, default=1000, help="embedded GFlash showers (80 % train)")
    p.add_argument("--jets", type=int, default=1500, help="jet-like clouds (80 % train)")
    args = p.parse_args()
    device = resolve_device(args.device)
    showers, jets = shower_data(args.showers), jet_data(args.jets)
    print(f"device {device}, torch {torch.__version__}; {len(showers.train_idx)} training showers "
          f"(mean {showers.mean_n:.0f} hits), {len(jets.train_idx)} training jets")  # fmt: skip
    print(f"{'family':<15} {'data':<8} {'threads':>7} {'s/step':>9} {'parameters':>11}")
    for family in args.families:
        for data in (showers, jets):
            if data.kind not in get_family(family).kinds:
                continue
            for threads in args.threads:
                torch.set_num_threads(threads)
                sec, n_params = seconds_per_step(family, data, device, args.steps)
                print(f"{family:<15} {data.kind:<8} {threads:>7} {sec:>9.4f} {n_params:>11}")
    print(f"peak process RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
