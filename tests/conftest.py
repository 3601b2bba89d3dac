"""Shared fixtures: geometries and small hand-made shower files."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pipelines.geometry import load_geometry  # noqa: E402


@pytest.fixture(scope="session")
def ds2():
    return load_geometry("2")


@pytest.fixture(scope="session")
def ds3():
    return load_geometry("3")


def random_showers(geometry, n: int, seed: int, occupancy: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Random sparse showers (n, n_voxels) in MeV with log-uniform incident energies."""
    rng = np.random.default_rng(seed)
    showers = np.zeros((n, geometry.n_voxels), dtype=np.float32)
    hit = rng.random(showers.shape) < occupancy
    showers[hit] = rng.lognormal(0.0, 2.0, hit.sum()).astype(np.float32) + 0.02
    energies = 10 ** rng.uniform(3, 6, n)
    return energies, showers
