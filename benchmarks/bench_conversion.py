"""Conversion throughput, voxelisation speed and peak memory of the shower data path.

Prints: showers/s and points/s of `convert` on N dataset-2 showers and its time relative to a
plain h5py read of the same file (target <= 2x); voxelisation ms per shower with `sum` and `shift`
(the configured method marked; target <= 0.05 ms on one core for clouds without collisions), wall and
CPU time on one BLAS thread, best of 5; peak resident memory of converting the file (target < 4 GB
for 100,000 showers).

    OMP_NUM_THREADS=1 python benchmarks/bench_conversion.py --n 20000
    OMP_NUM_THREADS=1 python benchmarks/bench_conversion.py --n 100000 --memory-only
    python benchmarks/bench_conversion.py --voxelisation-only
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import yaml
from threadpoolctl import threadpool_limits

from pipelines.geometry import load_geometry
from pipelines.pointcloud import points_to_voxels, voxels_to_points

REPO = Path(__file__).resolve().parents[1]


def realistic_showers(n: int, seed: int, chunk: int = 5000):
    """Sparse dataset-2-like showers: about 1,600 hits, energies log-normal, in chunks."""
    geometry = load_geometry("2")
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        occupancy = np.clip(rng.lognormal(np.log(0.25), 0.5, (m, 1)), 0.02, 0.85)
        showers = np.where(
            rng.random((m, geometry.n_voxels)) < occupancy,
            rng.lognormal(0.0, 2.0, (m, geometry.n_voxels)),
            0.0,
        ).astype(np.float32)
        yield 10 ** rng.uniform(3, 6, m), showers


def write_file(path: Path, n: int) -> None:
    geometry = load_geometry("2")
    with h5py.File(path, "w") as f:
        e = f.create_dataset("incident_energies", shape=(n, 1), dtype=np.float32)
        s = f.create_dataset(
            "showers",
            shape=(n, geometry.n_voxels),
            dtype=np.float32,
            chunks=(100, geometry.n_voxels),
            compression="gzip",
        )
        start = 0
        for energies, showers in realistic_showers(n, seed=0):
            e[start : start + len(energies), 0] = energies
            s[start : start + len(energies)] = showers
            start += len(energies)


def plain_read_seconds(path: Path, chunk: int = 2000) -> float:
    t = time.perf_counter()
    with h5py.File(path) as f:
        for start in range(0, len(f["showers"]), chunk):
            f["showers"][start : start + chunk]
            f["incident_energies"][start : start + chunk]
    return time.perf_counter() - t


def convert_in_subprocess(path: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of `python -m pipelines convert` on the file."""
    code = (
        "import resource, sys, time; from pipelines.convert import main; t = time.perf_counter();"
        f"main(['--kind', 'showers', '--input', '{path}', '--out', '{out}']);"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, rss_gb = res.stdout.split()
    return float(seconds), float(rss_gb)


def voxelisation_ms(collisions: str, colliding: float = 0.0, n: int = 2000) -> tuple[float, float]:
    """Wall and CPU ms per shower of points_to_voxels on one thread, best of 5 each; ``colliding``:
    fraction of points moved onto another's voxel. The CPU time is the figure to read on a busy machine
    (the wall time then includes waiting for a core)."""
    geometry = load_geometry("2")
    energies, showers = next(realistic_showers(n, seed=1, chunk=n))
    points, lengths = voxels_to_points(showers, geometry)
    if colliding > 0:
        rng = np.random.default_rng(2)
        movers = rng.random(len(points)) < colliding
        points[movers, 1:] = points[np.flatnonzero(movers) - 1, 1:]  # onto the previous point's voxel
    wall = cpu = np.inf
    with threadpool_limits(1):
        for _ in range(5):
            t, c = time.perf_counter(), time.process_time()
            points_to_voxels(points, lengths, geometry, collisions=collisions)
            wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall / n * 1e3, cpu / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--voxelisation-only", action="store_true")
    args = parser.parse_args()
    if not args.voxelisation_only:
        convert_figures(args.n, args.memory_only)
    if not args.memory_only:
        configured = yaml.safe_load((REPO / "config.yaml").read_text())["sampling"]["settings"]["collisions"]
        for method in ("sum", "shift"):
            tag = " (configured)" if method == configured else ""
            clean, colliding = voxelisation_ms(method), voxelisation_ms(method, 0.01)
            print(
                f"voxelisation {method}{tag}, ms per shower on 1 thread, wall / CPU: "
                f"{clean[0]:.4f} / {clean[1]:.4f} without collisions (target <= 0.05), "
                f"{colliding[0]:.4f} / {colliding[1]:.4f} with 1 % of points colliding"
            )


def convert_figures(n: int, memory_only: bool) -> None:
    """Print the conversion figures of N showers (and the plain read unless ``memory_only``)."""
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "showers.h5", Path(tmp) / "clouds.h5"
        write_file(path, n)
        seconds, rss = convert_in_subprocess(path, out)
        with h5py.File(out) as f:
            n_points = len(f["points"]["energy"])
        print(
            f"convert {n} dataset-2 showers ({n_points / n:.0f} hits each): {seconds:.1f} s, "
            f"{n / seconds:.0f} showers/s, {n_points / seconds / 1e6:.2f} M points/s, "
            f"peak RSS {rss:.2f} GB"
        )
        if not memory_only:
            read = plain_read_seconds(path)
            print(
                f"plain h5py read of the same file: {read:.1f} s -> "
                f"convert / read = {seconds / read:.2f} (target <= 2)"
            )


if __name__ == "__main__":
    main()
