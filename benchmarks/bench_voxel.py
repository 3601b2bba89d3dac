"""Cost of the voxel-grid family on the dataset-2 (45 x 16 x 9) and dataset-3 (45 x 50 x 18) grids.

Prints, per geometry: trainable parameters, seconds per training step (the shared loop, EMA included)
and generation ms per shower at each batch size (ODE solve or decoder, back-transform and threshold),
with the config/voxel.yaml architecture unless --settings says otherwise. On a CPU, batch sizes above
--max-batch-cpu are timed at that size (as the sample stage does) and marked; the per-shower cost of a
CPU is flat in the batch size from about 100 on, so the marked figure stands for the requested size.

    python benchmarks/bench_voxel.py                                  # datasets 2 and 3, one thread
    python benchmarks/bench_voxel.py --datasets 3 --device cuda --max-batch-cpu 100
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from bench_train import seconds_per_step  # (its import of embedded_data puts the repository on sys.path)

from pipelines.device import resolve_device
from pipelines.generate.gflash import generate_showers
from pipelines.geometry import load_geometry
from pipelines.io.clouds import Clouds
from pipelines.models.family import TrainingData, family_settings, get_family
from pipelines.pointcloud import voxels_to_points

REPO = Path(__file__).resolve().parents[1]


def voxel_settings() -> dict:
    """The architecture of the ``voxel`` model in config/voxel.yaml."""
    config = yaml.safe_load((REPO / "config" / "voxel.yaml").read_text())
    return dict(config["models"]["voxel"]["architecture"])


def grid_data(dataset: str, n_showers: int, seed: int = 0) -> TrainingData:
    """GFlash showers of a CaloChallenge geometry as TrainingData (all for training)."""
    geometry = load_geometry(dataset)
    energies, showers = generate_showers(n_showers, geometry, seed=seed, progress=False)
    points, lengths = voxels_to_points(showers, geometry)
    clouds = Clouds(points, np.concatenate([[0], np.cumsum(lengths)]), energies[:, None], ("energy", "layer",
                    "alpha", "r"), ("incident_energy",), np.zeros(n_showers, np.int8))  # fmt: skip
    return TrainingData("showers", clouds, None, np.arange(n_showers), np.arange(0), float(lengths.mean()),
                        seed, geometry)  # fmt: skip


def ms_per_shower(sampler, energies: np.ndarray, batch: int, repeats: int, device: torch.device) -> float:
    """Median ms per shower of ``repeats`` requests of ``batch`` showers (after one warm-up request)."""
    gen = torch.Generator(device=device).manual_seed(0)
    sampler.sample_showers(energies[:batch], gen)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sampler.sample_showers(energies[:batch], gen)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)) / batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["2", "3"], choices=("2", "3"))
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100, 10_000])
    p.add_argument("--max-batch-cpu", type=int, default=1000, help="larger CPU batches are timed at this")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="timed training steps")
    p.add_argument("--settings", default=None, help="JSON voxel-grid settings (default: config/voxel.yaml)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    settings = voxel_settings() if args.settings is None else json.loads(args.settings)
    cls = get_family("voxel-grid")
    print(f"voxel-grid {settings} on {device}, {torch.get_num_threads()} thread(s)")
    for dataset in args.datasets:
        data = grid_data(dataset, 64)
        step_s, n_params = seconds_per_step("voxel-grid", data, device, args.steps, settings)
        sampler = cls(family_settings(cls, settings), data, device).sampler()
        energies = np.exp(np.random.default_rng(1).uniform(np.log(1e3), np.log(1e6), max(args.batch_sizes)))
        cells = []
        for requested in args.batch_sizes:
            batch = min(requested, args.max_batch_cpu) if device.type == "cpu" else requested
            ms = ms_per_shower(sampler, energies, batch, args.repeats, device)
            note = f" (timed at {batch:,})" if batch != requested else ""
            cells.append(f"batch {requested:,}: {ms:.3g} ms{note}")
        grid = "x".join(str(v) for v in data.geometry.grid_shape)
        print(f"dataset {dataset} ({grid} = {data.geometry.n_voxels:,} voxels): {n_params:,} parameters, "
              f"{step_s:.3f} s per training step; ms per shower: {', '.join(cells)}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
