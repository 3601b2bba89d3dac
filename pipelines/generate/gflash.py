"""Stage ``generate-showers``: GFlash-parametrised electromagnetic showers in the CaloChallenge geometry.

A stand-in for Geant4 with realistic structure (Grindhammer and Peters, hep-ex/0001020, as in
Geant4's GFlash), sampled into the dataset-2 (or dataset-3) readout:

- per shower, correlated log-normal fluctuations of the depth of maximum T and the shape alpha of
  the longitudinal gamma profile; the spots follow their own gamma profile (T_spot, alpha_spot) and
  carry the energy of the energy profile at their depth;
- per depth, the two-component radial profile f(r) = p f_C + (1 - p) f_T with the closed-form CDF
  F(r) = p r^2 / (r^2 + R_C^2) + (1 - p) r^2 / (r^2 + R_T^2), azimuth uniform;
- O(voxels) sampling: for every shower and layer the expected number of spots and the expected
  energy of each (layer, alpha, r) voxel are integrated over ``substeps_per_layer`` depth steps; the
  spot count of a voxel is Poisson, and the k spots of a voxel deposit Gamma(k kappa, e_spot / kappa);
- the shower's visible energy is scaled by a Gaussian of relative width a / sqrt(E / GeV), then the
  CaloChallenge voxel threshold (15.15 keV) is applied. Energy beyond the last layer or the last
  radial edge leaks out.

Units: depth t in X0 and radius r in Moliere radii inside the formulas, E in GeV in the formulas and
MeV at the interface. Effective mapping onto the detector: one readout layer = ``layer_depth_x0`` X0
(0.8) and R_M = ``moliere_radius_mm`` (9.3 mm, two dataset-2 radial bins of 4.65 mm); radii come from
the geometry's r edges in mm, so any regular geometry (datasets 2 and 3) works. Per-layer geometries
(dataset-1 photons): each layer has its own depth range (``layer_depths_x0``), r edges and alpha count;
expected spots and energies are integrated per filled layer over its own depth steps and rings (see
``DATASET_DEFAULTS`` in :mod:`pipelines.generate.gflash_settings` for the assumed depths), and each
layer's voxels are drawn in layer order from the block's stream.

Randomness: the incident energies come from the stream ``SeedSequence(seed, spawn_key=(0,))``; shower
``i`` belongs to block ``i // BLOCK_SIZE`` whose draws (profile fluctuations, spot counts, spot
energies, sampling scale) come from ``SeedSequence(seed, spawn_key=(1, block))``. The output therefore
depends on ``seed`` only, not on ``chunk_size`` (which must be a multiple of ``BLOCK_SIZE``).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from scipy.special import gammainc

from pipelines.generate.gflash_settings import GFLASH_DATASETS, GFlashSettings
from pipelines.geometry import Geometry, load_geometry
from pipelines.progress import progress as progress_bar

#: Showers per independent random stream; chunk sizes must be multiples of it.
BLOCK_SIZE = 100


# --------------------------------------------------------------------------------- parametrisation


def mean_log_parameters(energy_mev: np.ndarray, s: GFlashSettings) -> dict[str, np.ndarray]:
    """Means, widths and correlation of (ln T, ln alpha) at incident energy ``energy_mev``."""
    ln_y = np.log(np.asarray(energy_mev, dtype=np.float64) / s.critical_energy_mev)
    return {
        "mean_ln_t": np.log(ln_y - 0.812),
        "mean_ln_alpha": np.log(0.81 + (0.458 + 2.26 / s.atomic_number) * ln_y),
        "sigma_ln_t": 1.0 / (-1.4 + 1.26 * ln_y),
        "sigma_ln_alpha": 1.0 / (-0.58 + 0.86 * ln_y),
        "rho": 0.705 - 0.023 * ln_y,
    }


def longitudinal_parameters(
    energy_mev: np.ndarray, r1: np.ndarray, r2: np.ndarray, s: GFlashSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Per-shower (T in X0, alpha) from two standard normals r1, r2 (correlated log-normals).

    alpha is floored so that alpha_spot = alpha (0.639 + 0.00334 Z) >= 1.05 (a valid gamma profile
    with a maximum); at 1 GeV this touches about 2 showers in 10,000.
    """
    m = mean_log_parameters(energy_mev, s)
    c1, c2 = np.sqrt((1 + m["rho"]) / 2), np.sqrt((1 - m["rho"]) / 2)
    t_max = np.exp(m["mean_ln_t"] + m["sigma_ln_t"] * (c1 * r1 + c2 * r2))
    alpha = np.exp(m["mean_ln_alpha"] + m["sigma_ln_alpha"] * (c1 * r1 - c2 * r2))
    alpha_min = 1.05 / (0.639 + 0.00334 * s.atomic_number)
    return t_max, np.maximum(alpha, alpha_min)


def radial_parameters(
    tau: np.ndarray, energy_gev: np.ndarray, z: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R_C, R_T in R_M, core fraction p) at relative depth tau; energy_gev broadcasts against tau."""
    ln_e = np.log(energy_gev)
    z1, z2 = 0.0251 + 0.00319 * ln_e, 0.1162 - 0.000381 * z
    k1, k2, k3, k4 = 0.659 - 0.00309 * z, 0.645, -2.59, 0.3585 + 0.0421 * ln_e
    p1, p2, p3 = 2.632 - 0.00094 * z, 0.401 + 0.00187 * z, 1.313 - 0.0686 * ln_e
    r_core = z1 + z2 * tau
    r_tail = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
    x = (p2 - tau) / p3
    p = p1 * np.exp(x - np.exp(x))
    return r_core, r_tail, p


def radial_cdf(r: np.ndarray, r_core: np.ndarray, r_tail: np.ndarray, p: np.ndarray) -> np.ndarray:
    """F(r) = p r^2 / (r^2 + R_C^2) + (1 - p) r^2 / (r^2 + R_T^2), r in R_M (all arguments broadcast)."""
    r2 = np.square(r)
    return p * r2 / (r2 + np.square(r_core)) + (1 - p) * r2 / (r2 + np.square(r_tail))


def expected_voxel_spots(
    energy_mev: np.ndarray, t_max: np.ndarray, alpha: np.ndarray, geometry: Geometry, s: GFlashSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Expected spot count and expected energy (MeV) per (shower, layer, radial bin), summed over alpha.

    Returns two arrays of shape (n, n_layers, n_r). Spots beyond the last layer or radial edge are
    not counted (leakage).
    """
    z = s.atomic_number
    energy_mev = np.asarray(energy_mev, dtype=np.float64)[:, None]
    t_max, alpha = t_max[:, None], alpha[:, None]
    beta = (alpha - 1) / t_max
    alpha_spot = alpha * (0.639 + 0.00334 * z)
    beta_spot = (alpha_spot - 1) / (t_max * (0.698 + 0.00212 * z))
    n_spots = 93.0 * math.log(z) * (energy_mev / 1e3) ** 0.876

    n_steps = geometry.n_layers * s.substeps_per_layer
    t_edges = s.layer_depth_x0 * np.arange(n_steps + 1) / s.substeps_per_layer  # X0
    step_energy = energy_mev * np.diff(gammainc(alpha, beta * t_edges), axis=1)  # (n, steps) MeV
    step_spots = n_spots * np.diff(gammainc(alpha_spot, beta_spot * t_edges), axis=1)

    mean_alpha = np.exp(mean_log_parameters(energy_mev, s)["mean_ln_alpha"])
    t_mid = 0.5 * (t_edges[1:] + t_edges[:-1])
    tau = (t_mid / t_max) * ((alpha - 1) / alpha) * (mean_alpha / (mean_alpha - 1))
    r_core, r_tail, p = radial_parameters(tau, energy_mev / 1e3, z)
    r_edges = np.asarray(geometry.r_edges, dtype=np.float64) / s.moliere_radius_mm  # R_M
    frac = np.diff(radial_cdf(r_edges, r_core[..., None], r_tail[..., None], p[..., None]), axis=-1)

    shape = (len(energy_mev), geometry.n_layers, s.substeps_per_layer, geometry.n_r)
    spots = (step_spots[..., None] * frac).reshape(shape).sum(axis=2)
    energy = (step_energy[..., None] * frac).reshape(shape).sum(axis=2)
    return spots, energy


def layer_depth_edges(geometry: Geometry, s: GFlashSettings) -> np.ndarray:
    """(n_layers + 1,) depth of the layer boundaries in X0: ``layer_depths_x0`` or ``layer_depth_x0`` each."""
    if not s.layer_depths_x0:
        return s.layer_depth_x0 * np.arange(geometry.n_layers + 1, dtype=np.float64)
    depths = np.asarray(s.layer_depths_x0, dtype=np.float64)
    if len(depths) != geometry.n_layers:
        raise ValueError(
            f"layer_depths_x0 has {len(depths)} values, {geometry.name} has {geometry.n_layers} layers"
        )
    if np.any(depths[geometry.filled_layers] <= 0):
        raise ValueError(
            f"layer_depths_x0 must be positive for the layers with voxels of dataset {geometry.name}"
        )
    return np.concatenate([[0.0], np.cumsum(depths)])


def expected_layer_spots(
    energy_mev: np.ndarray, t_max: np.ndarray, alpha: np.ndarray, geometry: Geometry, s: GFlashSettings
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per filled layer of a per-layer geometry: expected spot count and energy (MeV) per (shower, ring),
    summed over alpha, integrated over ``substeps_per_layer`` steps of the layer's own depth range
    (:func:`layer_depth_edges`) and over its own r edges. Energy outside every layer leaks."""
    z = s.atomic_number
    energy_mev = np.asarray(energy_mev, dtype=np.float64)[:, None]
    t_max, alpha = t_max[:, None], alpha[:, None]
    beta = (alpha - 1) / t_max
    alpha_spot = alpha * (0.639 + 0.00334 * z)
    beta_spot = (alpha_spot - 1) / (t_max * (0.698 + 0.00212 * z))
    n_spots = 93.0 * math.log(z) * (energy_mev / 1e3) ** 0.876
    mean_alpha = np.exp(mean_log_parameters(energy_mev, s)["mean_ln_alpha"])
    depth = layer_depth_edges(geometry, s)
    out = []
    for layer in geometry.filled_layers:
        t_edges = np.linspace(depth[layer], depth[layer + 1], s.substeps_per_layer + 1)
        step_energy = energy_mev * np.diff(gammainc(alpha, beta * t_edges), axis=1)
        step_spots = n_spots * np.diff(gammainc(alpha_spot, beta_spot * t_edges), axis=1)
        t_mid = 0.5 * (t_edges[1:] + t_edges[:-1])
        tau = (t_mid / t_max) * ((alpha - 1) / alpha) * (mean_alpha / (mean_alpha - 1))
        r_core, r_tail, p = radial_parameters(tau, energy_mev / 1e3, z)
        r_edges = geometry.layer_r_edges[layer] / s.moliere_radius_mm
        frac = np.diff(radial_cdf(r_edges, r_core[..., None], r_tail[..., None], p[..., None]), axis=-1)
        out.append(((step_spots[..., None] * frac).sum(axis=1), (step_energy[..., None] * frac).sum(axis=1)))
    return out


def _sample_voxels(
    rng: np.random.Generator, spots: np.ndarray, energy: np.ndarray, n_alpha: int, s: GFlashSettings
) -> np.ndarray:
    """Deposits (n, n_alpha, n_r) float64 MeV from expected spots / energy per (shower, ring): Poisson spot
    counts per voxel (alpha uniform), Gamma(k kappa, e_spot / kappa) for the k spots of a voxel."""
    e_spot = np.divide(energy, spots, out=np.zeros_like(energy), where=spots > 0)
    grid = (len(spots), n_alpha, spots.shape[-1])
    counts = rng.poisson(np.broadcast_to((spots / n_alpha)[:, None, :], grid))
    hit = counts > 0
    deposits = np.zeros(grid, dtype=np.float64)
    e_hit = np.broadcast_to(e_spot[:, None, :], grid)[hit]
    deposits[hit] = rng.standard_gamma(counts[hit] * s.kappa) * (e_hit / s.kappa)
    return deposits


def _sample_layers(
    rng: np.random.Generator,
    layers: list[tuple[np.ndarray, np.ndarray]],
    scale: np.ndarray,
    geometry: Geometry,
    s: GFlashSettings,
) -> np.ndarray:
    """Voxel energies (n, n_voxels) float32 MeV of one block of a per-layer geometry, layers in order."""
    parts = []
    for layer, (spots, energy) in zip(geometry.filled_layers, layers, strict=True):
        deposits = _sample_voxels(rng, spots, energy, geometry.layer_n_alpha[layer], s)
        parts.append(deposits.reshape(len(spots), -1))
    out = np.concatenate(parts, axis=1) * scale[:, None]
    out[out < s.threshold_mev] = 0.0
    return out.astype(np.float32)


def _sample_block(
    rng: np.random.Generator,
    spots: np.ndarray,
    energy: np.ndarray,
    scale: np.ndarray,
    geometry: Geometry,
    s: GFlashSettings,
) -> np.ndarray:
    """Voxel energies (n, n_voxels) float32 MeV of one block from expected spots/energy per (layer, r)."""
    n = len(spots)
    grid = (n, geometry.n_layers, geometry.n_alpha, geometry.n_r)
    e_spot = np.divide(energy, spots, out=np.zeros_like(energy), where=spots > 0)
    lam = np.broadcast_to((spots / geometry.n_alpha)[:, :, None, :], grid)
    counts = rng.poisson(lam)
    hit = counts > 0
    k = counts[hit]
    deposits = np.zeros(grid, dtype=np.float64)
    e_hit = np.broadcast_to(e_spot[:, :, None, :], grid)[hit]
    deposits[hit] = rng.standard_gamma(k * s.kappa) * (e_hit / s.kappa)
    deposits *= scale[:, None, None, None]
    deposits[deposits < s.threshold_mev] = 0.0
    return deposits.reshape(n, -1).astype(np.float32)


def _block_rng(seed: int, block: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, block)))


def sample_incident_energies(n_showers: int, seed: int, settings: GFlashSettings | None = None) -> np.ndarray:
    """Incident energies (n,) MeV from stream (seed, 0): log-uniform in [e_min_mev, e_max_mev], or
    (``incident_energies: powers-of-two``) one of the powers of two in that range, each equally likely."""
    s = settings or GFlashSettings()
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    if s.incident_energies == "powers-of-two":
        return rng.choice(s.powers_of_two(), size=n_showers)
    return np.exp(rng.uniform(math.log(s.e_min_mev), math.log(s.e_max_mev), size=n_showers))


def simulate_showers(
    incident_energies_mev: np.ndarray,
    geometry: Geometry,
    seed: int,
    settings: GFlashSettings | None = None,
    chunk_size: int = 1000,
    progress: bool = True,
) -> np.ndarray:
    """GFlash showers (n, n_voxels) float32 MeV for given incident energies (n,) MeV.

    Shower i's randomness comes from block i // BLOCK_SIZE of ``seed``, so the result does not depend
    on ``chunk_size`` (a multiple of BLOCK_SIZE bounding the memory of the vectorised profile step).
    """
    s = settings or GFlashSettings()
    energies = np.asarray(incident_energies_mev, dtype=np.float64).reshape(-1)
    if not isinstance(chunk_size, int) or chunk_size < 1 or chunk_size % BLOCK_SIZE:
        raise ValueError(f"chunk_size must be a positive multiple of {BLOCK_SIZE}, got {chunk_size!r}")
    if not np.all(np.isfinite(energies)) or np.any(energies < 100.0):
        raise ValueError("incident energies must be finite and >= 100 MeV")
    if geometry.name not in GFLASH_DATASETS and not geometry.is_regular:
        raise ValueError(
            f"GFlash makes electromagnetic showers; dataset {geometry.name} is not one of {GFLASH_DATASETS}"
        )
    if not geometry.is_regular and not s.layer_depths_x0:
        raise ValueError(
            f"the per-layer geometry of dataset {geometry.name} needs layer_depths_x0 "
            "(GFlashSettings.from_json(text, dataset) starts from the dataset's defaults)"
        )
    if s.layer_depths_x0:
        layer_depth_edges(geometry, s)  # checks layer_depths_x0 against the geometry
    n = len(energies)
    showers = np.empty((n, geometry.n_voxels), dtype=np.float32)
    with progress_bar(total=n, desc="gflash showers", unit="shower", disable=not progress) as bar:
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            blocks = range(start // BLOCK_SIZE, (stop - 1) // BLOCK_SIZE + 1)
            rngs = [_block_rng(seed, b) for b in blocks]
            sizes = [min(BLOCK_SIZE, stop - b * BLOCK_SIZE) for b in blocks]
            draws = [rng.standard_normal((3, k)) for rng, k in zip(rngs, sizes, strict=True)]
            normals = np.concatenate(draws, axis=1)  # per shower: r1, r2 (T, alpha), sampling scale
            e = energies[start:stop]
            t_max, alpha = longitudinal_parameters(e, normals[0], normals[1], s)
            scale = np.maximum(0.0, 1.0 + s.sampling_term / np.sqrt(e / 1e3) * normals[2])
            regular = geometry.is_regular and not s.layer_depths_x0
            if regular:
                spots, energy = expected_voxel_spots(e, t_max, alpha, geometry, s)
            else:
                layers = expected_layer_spots(e, t_max, alpha, geometry, s)
            for rng, b in zip(rngs, blocks, strict=True):
                lo, hi = b * BLOCK_SIZE - start, min((b + 1) * BLOCK_SIZE, stop) - start
                if regular:
                    block = _sample_block(rng, spots[lo:hi], energy[lo:hi], scale[lo:hi], geometry, s)
                else:
                    part = [(sp[lo:hi], en[lo:hi]) for sp, en in layers]
                    block = _sample_layers(rng, part, scale[lo:hi], geometry, s)
                showers[start + lo : start + hi] = block
                bar.update(hi - lo)
    return showers


def generate_showers(
    n_showers: int,
    geometry: Geometry,
    seed: int,
    settings: GFlashSettings | None = None,
    chunk_size: int = 1000,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_showers`` GFlash showers with log-uniform energies: (incident_energies (n,) float64 MeV,
    showers (n, n_voxels) float32 MeV). Same seed -> identical output, whatever ``chunk_size``."""
    if not isinstance(n_showers, int) or n_showers < 1:
        raise ValueError(f"n_showers must be a positive integer, got {n_showers!r}")
    s = settings or GFlashSettings()
    energies = sample_incident_energies(n_showers, seed, s)
    return energies, simulate_showers(energies, geometry, seed, s, chunk_size, progress)


# --------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``generate-showers``: write GFlash showers in the CaloChallenge HDF5 layout."""
    from pipelines.io.calochallenge import write_calochallenge

    p = argparse.ArgumentParser(prog="generate-showers", description=main.__doc__)
    p.add_argument("--dataset", default="2", choices=GFLASH_DATASETS,
                   help="CaloChallenge geometry (1-photons: own defaults, gflash_settings)")  # fmt: skip
    p.add_argument("--n-showers", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--settings", default="{}", help="JSON object of GFlashSettings keys, e.g. "
                   '{"e_min_mev": 1000, "sampling_term": 0.15, "kappa": 1.0}')  # fmt: skip
    p.add_argument("--chunk-size", type=int, default=1000,
                   help=f"showers per vectorised chunk (multiple of {BLOCK_SIZE})")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="CaloChallenge HDF5 file to write")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    settings = GFlashSettings.from_json(args.settings, args.dataset)
    geometry = load_geometry(args.dataset)
    energies, showers = generate_showers(
        args.n_showers, geometry, args.seed, settings, args.chunk_size, progress=not args.no_progress
    )
    write_calochallenge(args.out, energies, showers)
    hits = (showers > 0).sum(axis=1)
    print(f"wrote {args.out}: {len(energies)} GFlash showers (dataset {args.dataset}, seed {args.seed}), "
          f"mean hits {hits.mean():.0f}, mean E_vis/E_inc {(showers.sum(axis=1) / energies).mean():.3f}",
          file=sys.stderr)  # fmt: skip
    return 0
