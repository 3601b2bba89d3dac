"""High-level shower features: the project against the official CaloChallenge code, side by side.

Data: N embedded GFlash dataset-2 showers (default 20,000, seed 0), held in memory and written with the
project's writer (gzip, HDF5 chunks of 161 showers). Two comparisons, both on one BLAS thread,
alternating project and official, best of --repeats (goals: >= 5x in memory, >= 3x on the whole path):

* in memory: ``compute_features`` (thresholding included) against the official
  ``HighLevelFeatures.CalculateFeatures`` on the showers already thresholded as evaluate.py does;
* whole file path: ``scan_file`` (validated chunked read, features, per-shower voxel-energy histograms)
  against the official evaluate.py steps: h5py read of the whole file, np.where threshold,
  ``CalculateFeatures`` and np.histogram of all voxel energies with the logspace binning that
  evaluate_plotting_helper.plot_cell_dist hands to plt.hist (the plot itself is not drawn).

The official code is timed from a scratch copy of CaloChallenge/homepage ``code/`` (commit 9b41df72:
HighLevelFeatures.py, XMLHandler.py, binning_dataset_2.xml) given by ``--official DIR``; it is imported
here only, never by the project. Without it only the project's figures are printed. Also printed: the
largest difference between the two codes' features (official on float64 input, as in the golden tests)
and the peak traced memory of ``scan_file``.

    python benchmarks/bench_calo_features.py --official /tmp/cc [--n 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from threadpoolctl import threadpool_limits

from pipelines.generate.gflash import generate_showers
from pipelines.geometry import THRESHOLD_MEV, load_geometry
from pipelines.io.calochallenge import write_calochallenge
from pipelines.metrics.calo_features import ShowerFeatures, compute_features, scan_file, voxel_energy_edges

#: Official feature dictionaries (per layer) and the project's arrays holding the same values.
OFFICIAL_NAMES = {
    "E_layers": "e_layer",
    "EC_etas": "ec_eta",
    "EC_phis": "ec_phi",
    "EC_r": "ec_r",
    "width_etas": "width_eta",
    "width_phis": "width_phi",
    "width_r": "width_r",
    "sparsity": "sparsity",
}


def load_official(directory: Path):
    """The official HighLevelFeatures class for dataset 2, from the scratch copy in ``directory``."""
    for name in ("HighLevelFeatures.py", "XMLHandler.py", "binning_dataset_2.xml"):
        if not (directory / name).exists():
            raise SystemExit(f"--official {directory}: {name} is missing")
    sys.path.insert(0, str(directory))
    from HighLevelFeatures import HighLevelFeatures  # noqa: PLC0415

    return HighLevelFeatures("electron", filename=str(directory / "binning_dataset_2.xml"))


def official_whole_path(hlf, path: Path, edges: np.ndarray) -> np.ndarray:
    """evaluate.py's steps for one file: read, threshold, features, voxel-energy histogram."""
    with h5py.File(path, "r") as f:
        shower = f["showers"][:]
        energy = f["incident_energies"][:]
    shower = np.where(shower < THRESHOLD_MEV, np.zeros_like(shower), shower)
    hlf.CalculateFeatures(shower)
    hlf.Einc = energy
    counts, _ = np.histogram(shower.flatten(), bins=edges)
    return counts


def max_difference(hlf, features: ShowerFeatures) -> float:
    """Largest |official - project| over the per-layer features, relative to the feature's largest |value|."""
    worst = 0.0
    for official, project in OFFICIAL_NAMES.items():
        mine = getattr(features, project)
        theirs = np.stack([getattr(hlf, official)[layer] for layer in range(mine.shape[1])], axis=1)
        scale = max(float(np.abs(theirs).max()), 1e-300)
        worst = max(worst, float(np.abs(theirs - mine).max()) / scale)
    return worst


def best_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each run over ``repeats`` rounds, the runs alternating within a round."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="showers")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--official", type=Path, help="scratch copy of the official CaloChallenge code/")
    args = parser.parse_args()
    geometry = load_geometry("2")
    hlf = load_official(args.official) if args.official else None
    energies, showers = generate_showers(args.n, geometry, seed=0, progress=False)
    edges = voxel_energy_edges(float(showers.max()))
    print(f"dataset 2, {args.n} embedded GFlash showers, one BLAS thread, best of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        path = Path(tmp) / "showers.h5"
        write_calochallenge(path, energies, showers)
        thresholded = np.where(showers < THRESHOLD_MEV, np.zeros_like(showers), showers)
        memory = {"project": lambda: compute_features(energies, showers, geometry)}
        whole = {"project": lambda: scan_file(path, geometry, edges, chunk_size=args.chunk_size)}
        if hlf is not None:
            memory["official"] = lambda: hlf.CalculateFeatures(thresholded)
            whole["official"] = lambda: official_whole_path(hlf, path, edges)
        for label, runs in (("in memory", memory), ("whole file path", whole)):
            best = best_times(runs, args.repeats)
            per_shower = 1e3 * best["project"] / args.n
            line = f"{label}: project {best['project']:.2f} s ({per_shower:.3f} ms/shower)"
            if hlf is not None:
                line += f", official {best['official']:.2f} s: {best['official'] / best['project']:.1f}x"
            print(line)
        if hlf is not None:  # on float64 input: the official sums of float32 input round to float32
            hlf.CalculateFeatures(thresholded[:2000].astype(np.float64))
            difference = max_difference(hlf, compute_features(energies[:2000], showers[:2000], geometry))
            print(f"largest feature difference (2,000 showers, float64), relative: {difference:.1e}")
        tracemalloc.start()
        scan_file(path, geometry, edges, chunk_size=args.chunk_size)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"scan_file peak traced memory (chunk {args.chunk_size}): {peak / 2**20:.0f} MiB")
    if hlf is None:
        print("official code not timed (no --official DIR)")


if __name__ == "__main__":
    main()
