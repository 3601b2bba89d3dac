"""Time and peak memory of the chunked high-level feature scan on N reference + N generated dataset-2 showers.

Writes two temporary CaloChallenge files of random sparse showers (~1,600 hits each, like real
dataset-2 showers) and times ``scan_file`` (features + per-shower voxel-energy histograms) over both.
Usage: python benchmarks/bench_calo_features.py [--n 10000 | --full (100,000)] [--chunk-size 2000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np

from pipelines.geometry import THRESHOLD_MEV, load_geometry
from pipelines.metrics.calo_features import scan_file, voxel_energy_edges


def write_random(path: Path, n: int, seed: int, n_vox: int, block: int = 5000) -> None:
    """Random sparse showers written block by block (bounded memory)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("incident_energies", data=10 ** rng.uniform(3, 6, (n, 1)), compression="gzip")
        ds = f.create_dataset("showers", (n, n_vox), np.float32, compression="gzip", chunks=(100, n_vox))
        for start in range(0, n, block):
            m = min(block, n - start)
            s = np.zeros((m, n_vox), np.float32)
            hit = rng.random((m, n_vox)) < 1600 / n_vox
            s[hit] = THRESHOLD_MEV * rng.pareto(1.0, hit.sum()) + THRESHOLD_MEV
            ds[start : start + m] = s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="showers per file")
    parser.add_argument("--full", action="store_true", help="100,000 + 100,000 showers")
    parser.add_argument("--chunk-size", type=int, default=2000)
    args = parser.parse_args()
    n = 100_000 if args.full else args.n
    geometry = load_geometry("2")
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / "ref.h5", Path(tmp) / "gen.h5"]
        for seed, path in enumerate(files):
            write_random(path, n, seed, geometry.n_voxels)
        edges = voxel_energy_edges(1e3)
        tracemalloc.start()
        t0 = time.perf_counter()
        for path in files:
            scan = scan_file(path, geometry, edges, chunk_size=args.chunk_size)
            vec = scan.features.high_level_vector()
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"dataset 2, {n} + {n} showers, chunk {args.chunk_size}: high-level vector {vec.shape}")
    print(f"time {elapsed:.1f} s ({1e3 * elapsed / (2 * n):.3f} ms per shower, incl. HDF5 gzip decode)")
    print(f"peak traced numpy/python memory {peak / 2**20:.0f} MiB; process max RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
