"""Cost of the energy mover's distance and of one COV/MMD evaluation row on one CPU core.

Prints the microseconds per EMD between two 30-particle jets (unequal pt totals, so the dummy particle
is in every problem) and the seconds (wall clock, and CPU time of this process, which a busy machine
inflates less) of one COV/MMD row at the default sample size (jetnet's 10
batches of 100 real and 100 generated jets, drawn from two samples of ``--jets`` jets as the
evaluation's halves are).  The evaluate stage computes two such rows (model and real vs real).
Jets are random (eta_rel, phi_rel ~ N(0, 0.1), pt_rel exponential summing to 0.6-1.0, every slot
filled), or the first ``2 --jets`` jets of a JetNet file (``--file``: e.g. the workflow's
``results/jets-top30/data/reference.h5``).

    python benchmarks/bench_cov_mmd.py                  # random jets, 750 per sample
    python benchmarks/bench_cov_mmd.py --file results/jets-top30/data/reference.h5
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy loads its BLAS

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.io.jetnet import read_jetnet  # noqa: E402
from pipelines.metrics import emd, jet_metrics  # noqa: E402


def random_particle_features(n_jets: int, n_particles: int = 30, seed: int = 0) -> np.ndarray:
    """JetNet particle features (n_jets, n_particles, 4) with every slot real."""
    rng = np.random.default_rng(seed)
    pf = np.ones((n_jets, n_particles, 4))
    pf[..., :2] = rng.normal(0.0, 0.1, (n_jets, n_particles, 2))
    pt = np.sort(rng.exponential(1.0, (n_jets, n_particles)), axis=1)[:, ::-1]
    pf[..., 2] = pt / pt.sum(axis=1, keepdims=True) * rng.uniform(0.6, 1.0, (n_jets, 1))
    return pf


def us_per_emd(clouds: list[emd.Cloud], n_pairs: int, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` (wall, CPU) microseconds per EMD over ``n_pairs`` pairs of distinct jets."""
    pairs = [(clouds[2 * k % len(clouds)], clouds[(2 * k + 1) % len(clouds)]) for k in range(n_pairs)]
    best_wall = best_cpu = np.inf
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for a, b in pairs:
            emd.emd(a, b)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return 1e6 * best_wall / n_pairs, 1e6 * best_cpu / n_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=750, help="jets per sample (the default run's half)")
    parser.add_argument("--file", type=Path, help="JetNet file to take the jets from instead")
    parser.add_argument("--pairs", type=int, default=2000, help="EMDs timed for the per-EMD figure")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.file is not None:
        pf, _ = read_jetnet(args.file)
        pf = pf[: 2 * args.jets].astype(np.float64)
        source = f"{args.file} ({len(pf)} jets, mean {pf[..., 3].sum(1).mean():.1f} particles)"
    else:
        pf = random_particle_features(2 * args.jets)
        source = f"random jets, 30 particles each ({len(pf)} jets)"
    real = jet_metrics.make_sample(pf[: len(pf) // 2], np.zeros((len(pf) // 2, 36)))
    gen = jet_metrics.make_sample(pf[len(pf) // 2 :], np.zeros((len(pf) - len(pf) // 2, 36)))
    settings = jet_metrics.JetMetricSettings()
    print(f"{source}; 1 thread")
    clouds = emd.clouds(real.particles, real.mask)
    emd.emd(clouds[0], clouds[1])  # warm-up
    wall_us, cpu_us = us_per_emd(clouds, args.pairs, args.repeats)
    print(f"EMD: {wall_us:.0f} us per pair wall, {cpu_us:.0f} us CPU (best of {args.repeats})")
    batches = jet_metrics.cov_mmd_batch_indices(len(real), len(gen), settings)
    distinct = sum(len(np.unique(r)) * len(np.unique(g)) for r, g in batches)
    wall, cpu = time.perf_counter(), time.process_time()
    per_batch = jet_metrics.cov_mmd(real, gen, settings)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    size = len(batches[0][0])
    print(
        f"COV/MMD, {settings.cov_mmd_num_batches} batches of {size} vs {size} jets ({distinct} distinct "
        f"pairs solved): {wall:.1f} s per row wall, {cpu:.1f} s CPU (COV {per_batch[:, 0].mean():.3f} "
        f"+- {per_batch[:, 0].std():.3f}, MMD {per_batch[:, 1].mean():.4f} +- {per_batch[:, 1].std():.4f})"
    )


if __name__ == "__main__":
    main()
