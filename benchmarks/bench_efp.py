"""Milliseconds per jet for all 36 EFPs (d <= 4) on one CPU core, for 30- and 150-particle jets.

Random jets with every slot filled (the worst case: no padding to trim).  Best of ``--repeats`` runs.
    python benchmarks/bench_efp.py                      # small default: 2,000 and 200 jets
    python benchmarks/bench_efp.py --jets-30 20000 --jets-150 2000 --repeats 5
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy loads its BLAS

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from pipelines.metrics.efp import GRAPHS, efps  # noqa: E402


def random_jets(n_jets: int, n_particles: int, seed: int = 0) -> np.ndarray:
    """(n_jets, n_particles, 3) jets: eta_rel, phi_rel ~ N(0, 0.1), pt_rel exponential."""
    rng = np.random.default_rng(seed)
    jets = np.empty((n_jets, n_particles, 3))
    jets[..., :2] = rng.normal(0.0, 0.1, (n_jets, n_particles, 2))
    jets[..., 2] = rng.exponential(1.0, (n_jets, n_particles))
    return jets


def ms_per_jet(n_jets: int, n_particles: int, repeats: int) -> float:
    jets = random_jets(n_jets, n_particles)
    efps(jets[: min(n_jets, 64)])  # warm-up
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        efps(jets)
        best = min(best, time.perf_counter() - start)
    return 1e3 * best / n_jets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets-30", type=int, default=2000, help="jets with 30 particles")
    parser.add_argument("--jets-150", type=int, default=200, help="jets with 150 particles")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{len(GRAPHS)} EFPs (d <= 4), 1 thread, best of {args.repeats}")
    for n_particles, n_jets in ((30, args.jets_30), (150, args.jets_150)):
        ms = ms_per_jet(n_jets, n_particles, args.repeats)
        print(f"{n_particles:4d} particles, {n_jets:6d} jets: {ms:.4f} ms/jet")


if __name__ == "__main__":
    main()
