"""Training data for the benchmarks: embedded GFlash showers and jet-like clouds, held in memory."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.generate.gflash import generate_showers  # noqa: E402
from pipelines.geometry import load_geometry  # noqa: E402
from pipelines.io.clouds import Clouds, assign_split  # noqa: E402
from pipelines.models.family import TrainingData  # noqa: E402
from pipelines.pointcloud import voxels_to_points  # noqa: E402
from pipelines.transforms import fit_point_transform  # noqa: E402


def shower_data(n_showers: int, seed: int = 0) -> TrainingData:
    """GFlash showers in the dataset-2 geometry as TrainingData (80/10/10 split, fitted transform)."""
    geometry = load_geometry("2")
    energies, showers = generate_showers(n_showers, geometry, seed=seed, progress=False)
    points, lengths = voxels_to_points(showers, geometry)
    clouds = Clouds(points, np.concatenate([[0], np.cumsum(lengths)]), energies[:, None],
                    ("energy", "layer", "alpha", "r"), ("incident_energy",),
                    assign_split(n_showers, (0.8, 0.1, 0.1), seed), {"dataset": "2"})  # fmt: skip
    transform = fit_point_transform(clouds, "showers", geometry, seed=seed)
    return _data("showers", clouds, transform, seed, geometry)


def jet_data(n_jets: int, n_slots: int = 30, seed: int = 0) -> TrainingData:
    """Jet-like clouds for speed figures (not physics: Gaussian eta_rel, phi_rel, Dirichlet pt_rel shares)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(n_slots // 2, n_slots + 1, n_jets)
    shares = [np.sort(rng.dirichlet(np.ones(k)))[::-1] for k in lengths]
    p = int(lengths.sum())
    points = np.stack([rng.normal(0, 0.15, p), rng.normal(0, 0.15, p), np.concatenate(shares)], axis=1)
    clouds = Clouds(points, np.concatenate([[0], np.cumsum(lengths)]), np.ones((n_jets, 3)),
                    ("eta_rel", "phi_rel", "pt_rel"), ("jet_pt", "jet_eta", "jet_mass"),
                    assign_split(n_jets, (0.8, 0.1, 0.1), seed))  # fmt: skip
    return _data("jets", clouds, fit_point_transform(clouds, "jets", seed=seed), seed, None)


def _data(kind: str, clouds: Clouds, transform, seed: int, geometry) -> TrainingData:
    train, val = np.flatnonzero(clouds.split == 0), np.flatnonzero(clouds.split == 1)
    return TrainingData(
        kind, clouds, transform, train, val, float(clouds.lengths[train].mean()), seed, geometry
    )
