"""Energy mover's distance between jets and the coverage / minimum matching distance built on it.

EMD (Komiske, Metodiev, Thaler, arXiv:1902.02346; energyflow's ``emd`` / ``emds`` with ``norm=False``,
``beta=1``): with particle weights pt_rel and ground distance theta_ij = the Euclidean distance in
(eta_rel, phi_rel) (phi not periodic, as energyflow's default for jets),

    EMD_R = min_f sum_ij f_ij theta_ij / R + |sum_i pt_i - sum_j pt'_j|,

the flows f_ij >= 0 moving at most each particle's pt and in all the smaller of the two totals.  It is
solved exactly as a balanced transport problem: the lighter jet gets a dummy particle carrying the
difference of the totals at distance R from every particle (cost 1), and POT's network simplex
(``ot.emd2``) finds the optimal flow.  R defaults to 1, energyflow's default and jetnet's call.

COV and MMD (MPGAN, Kansal et al. arXiv:2106.11535; jetnet 0.2.5 ``cov_mmd``), per batch of N real and
N generated jets with the EMD matrix D[gen, real]:

* COV = (number of distinct real jets that are the nearest real jet of some generated jet) / N: the
  fraction of the real batch that the generated jets cover; higher is better.
* MMD = mean over the real jets of the EMD to their nearest generated jet; lower is better.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import ot
from numpy.typing import NDArray

#: one jet for the EMD: (pt weights (n,), coordinates (n, 2) in (eta_rel, phi_rel))
Cloud = tuple[NDArray[np.float64], NDArray[np.float64]]


def convention(radius: float) -> str:
    """The sentence that names the EMD and COV/MMD convention in metrics.json."""
    return (
        "EMD as energyflow's emds (pt_rel weights, Euclidean (eta_rel, phi_rel) distance / R, "
        f"R = {radius:g}, beta = 1, phi not periodic, plus |difference of the sum pt_rel|), solved "
        "exactly (POT network simplex); COV and MMD as jetnet 0.2.5 cov_mmd on the EMD matrix of each "
        "batch, mean +- std over batches"
    )


def clouds(particles: NDArray[np.floating], mask: NDArray[np.bool_]) -> list[Cloud]:
    """Per jet the real particles' pt_rel and (eta_rel, phi_rel) from particles (N, n, 3) ordered
    (eta_rel, phi_rel, pt_rel) and the padding mask (N, n) (True = padding); a negative pt is a
    ValueError (the EMD needs non-negative weights)."""
    p = np.asarray(particles, dtype=np.float64)
    real = ~np.asarray(mask, dtype=bool)
    if p.ndim != 3 or p.shape[2] < 3 or real.shape != p.shape[:2]:
        raise ValueError(f"particles (N, n, 3) and mask (N, n) expected, got {p.shape} and {real.shape}")
    negative = (p[:, :, 2] < 0) & real
    if negative.any():
        jet = int(np.flatnonzero(negative.any(axis=1))[0])
        raise ValueError(f"jet {jet} has a particle with negative pt_rel: the EMD needs pt >= 0")
    return [(p[j, real[j], 2].copy(), p[j, real[j], :2].copy()) for j in range(len(p))]


def ground_distances(coords0: NDArray[np.float64], coords1: NDArray[np.float64], radius: float) -> NDArray:
    """theta_ij / R: Euclidean distances between two sets of (eta, phi) points, (n0, n1)."""
    diff = coords0[:, None, :] - coords1[None, :, :]
    return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff)) / radius


def emd_from_costs(pt0: NDArray[np.float64], pt1: NDArray[np.float64], costs: NDArray[np.float64]) -> float:
    """EMD of two weighted point sets given the scaled ground distances ``costs`` (n0, n1): the
    difference of the totals rides on a dummy particle at cost 1 on the lighter side."""
    excess = float(pt0.sum() - pt1.sum())
    if len(pt0) == 0 or len(pt1) == 0:
        return abs(excess)
    if excess > 0:
        pt1 = np.append(pt1, excess)
        costs = np.hstack([costs, np.ones((len(pt0), 1))])
    elif excess < 0:
        pt0 = np.append(pt0, -excess)
        costs = np.vstack([costs, np.ones((1, len(pt1)))])
    value, log = ot.emd2(pt0, pt1, costs, log=True, check_marginals=False, center_dual=False)
    if log["warning"] is not None:
        raise RuntimeError(f"optimal transport did not converge: {log['warning']}")
    return float(value)


def emd(cloud0: Cloud, cloud1: Cloud, radius: float = 1.0) -> float:
    """The EMD_R between two jets (module docstring)."""
    if radius <= 0:
        raise ValueError(f"the EMD radius R must be > 0, got {radius}")
    (pt0, xy0), (pt1, xy1) = cloud0, cloud1
    return emd_from_costs(pt0, pt1, ground_distances(xy0, xy1, radius))


def emd_matrix(rows: Sequence[Cloud], columns: Sequence[Cloud], radius: float = 1.0) -> NDArray[np.float64]:
    """EMD_R of every pair: (len(rows), len(columns)).  The ground distances of a row jet to the
    particles of all column jets are computed at once."""
    if radius <= 0:
        raise ValueError(f"the EMD radius R must be > 0, got {radius}")
    out = np.empty((len(rows), len(columns)))
    if len(columns) == 0:
        return out
    bounds = np.cumsum([0] + [len(pt) for pt, _ in columns])
    all_xy = np.concatenate([xy.reshape(-1, 2) for _, xy in columns])
    for i, (pt0, xy0) in enumerate(rows):
        costs = ground_distances(xy0, all_xy, radius)
        for j, (pt1, _) in enumerate(columns):
            out[i, j] = emd_from_costs(pt0, pt1, costs[:, bounds[j] : bounds[j + 1]])
    return out


def coverage_mmd(distances: NDArray[np.floating]) -> tuple[float, float]:
    """(COV, MMD) of one batch from its EMD matrix D[gen, real] (module docstring)."""
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or 0 in d.shape:
        raise ValueError(f"distances must be a non-empty (n_gen, n_real) matrix, got shape {d.shape}")
    cov = np.unique(np.argmin(d, axis=1)).size / d.shape[1]
    mmd = float(np.mean(np.min(d, axis=0)))
    return float(cov), mmd


def batch_emd_matrix(
    real: Sequence[Cloud], gen: Sequence[Cloud], real_idx: NDArray[np.integer], gen_idx: NDArray[np.integer],
    radius: float = 1.0,
) -> NDArray[np.float64]:  # fmt: skip
    """D[gen, real] of a batch drawn with replacement: each distinct pair of jets is solved once."""
    real_u, real_inv = np.unique(real_idx, return_inverse=True)
    gen_u, gen_inv = np.unique(gen_idx, return_inverse=True)
    distinct = emd_matrix([gen[i] for i in gen_u], [real[i] for i in real_u], radius)
    return distinct[np.ix_(gen_inv.ravel(), real_inv.ravel())]


def cov_mmd_per_batch(
    real: Sequence[Cloud],
    gen: Sequence[Cloud],
    batches: Sequence[tuple[NDArray[np.integer], NDArray[np.integer]]],
    radius: float = 1.0,
) -> NDArray[np.float64]:
    """(COV, MMD) of every batch of (real indices, generated indices): (num_batches, 2)."""
    return np.array(
        [coverage_mmd(batch_emd_matrix(real, gen, ir, ig, radius)) for ir, ig in batches]
    ).reshape(len(batches), 2)
