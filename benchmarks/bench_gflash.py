"""Throughput of the GFlash shower generator: showers per second on one thread (dataset 2 by default;
``--dataset 1-photons``: photons in the dataset-1 photon geometry with that data set's defaults).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_gflash.py [--n 20000] [--dataset 2] [--chunk-size 1000]``
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from pipelines.generate.gflash import GFlashSettings, generate_showers  # noqa: E402
from pipelines.generate.gflash_settings import GFLASH_DATASETS  # noqa: E402
from pipelines.geometry import load_geometry  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=2000, help="number of showers (20000 for the full figure)")
    p.add_argument("--dataset", default="2", choices=GFLASH_DATASETS)
    p.add_argument("--chunk-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    geometry = load_geometry(args.dataset)
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    settings = GFlashSettings.from_json(None, args.dataset)
    energies, showers = generate_showers(
        args.n, geometry, args.seed, settings, chunk_size=args.chunk_size, progress=False
    )
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
    hits = (showers > 0).sum(axis=1)
    print(f"dataset {args.dataset}: {args.n} showers in {wall:.2f} s wall ({cpu:.2f} s CPU), "
          f"{args.n / wall:.0f} showers/s wall, {args.n / cpu:.0f} showers/s CPU "
          f"(OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})")  # fmt: skip
    print(
        f"mean hits {hits.mean():.0f} (min {hits.min()}, max {hits.max()}), "
        f"mean E_vis/E_inc {np.mean(showers.sum(axis=1) / energies):.4f}, "
        f"output {showers.nbytes / 2**20:.0f} MiB float32"
    )


if __name__ == "__main__":
    main()
