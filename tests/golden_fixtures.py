"""Loaders of the committed golden-value fixtures (tests/data, written by make_golden_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
N_SLOTS = 30
N_VOXELS_DS2 = 45 * 16 * 9


def _dense_jets(counts: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """JetNet particle features (N, 30, 4) float32: eta_rel, phi_rel, pt_rel, mask (1 = real)."""
    pf = np.zeros((len(counts), N_SLOTS, 4), dtype=np.float32)
    start = 0
    for j, c in enumerate(counts.astype(int)):
        pf[j, :c, :3] = flat[start : start + c]
        pf[j, :c, 3] = 1.0
        start += c
    return pf


def golden_jets() -> tuple[np.ndarray, np.ndarray]:
    """(real, generated) JetNet particle features, 200 jets each."""
    with np.load(DATA / "golden_jets.npz") as z:
        return tuple(_dense_jets(z[f"{s}_counts"], z[f"{s}_particles"]) for s in ("real", "gen"))


def golden_showers() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"ref": (E_inc (200,), showers (200, 6480)), "gen": (E_inc (100,), showers (100, 6480))}: MeV,
    float32, dataset-2 voxel order."""
    out = {}
    with np.load(DATA / "golden_showers.npz") as z:
        for s in ("ref", "gen"):
            counts = z[f"{s}_counts"].astype(int)
            showers = np.zeros((len(counts), N_VOXELS_DS2), dtype=np.float32)
            rows = np.repeat(np.arange(len(counts)), counts)
            showers[rows, z[f"{s}_voxel"].astype(int)] = z[f"{s}_energy"]
            out[s] = (z[f"{s}_e_inc"], showers)
    return out


def golden_ds1(particle: str) -> tuple[np.ndarray, np.ndarray]:
    """Dataset-1 showers of ``particle`` ("photons": 368 voxels, "pions": 533): (E_inc (40,), showers
    (40, n_voxels)), MeV, float32, CaloChallenge voxel order (make_golden_ds1.py)."""
    n_voxels = {"photons": 368, "pions": 533}[particle]
    with np.load(DATA / "golden_ds1.npz") as z:
        counts = z[f"{particle}_counts"].astype(int)
        showers = np.zeros((len(counts), n_voxels), dtype=np.float32)
        rows = np.repeat(np.arange(len(counts)), counts)
        showers[rows, z[f"{particle}_voxel"].astype(int)] = z[f"{particle}_energy"]
        return z[f"{particle}_e_inc"], showers
