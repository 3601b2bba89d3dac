"""Write the dataset-1 fixture of the golden-value tests (run once; the file is committed).

Showers in the dataset-1 photon (368 voxels) and pion (533 voxels) geometries, sparse storage: 40 each,
E_inc a power of two 2^8 ... 2^22 MeV, 40 hits per shower on voxels drawn uniformly over the flattened
voxel index (so every filled layer, binned in alpha or not, is hit), energies exponential scaled to
E_tot / E_inc ~ U(0.6, 1.2), a tenth of the hits below the readout threshold.

    python tests/data/make_golden_ds1.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
N_VOXELS = {"photons": 368, "pions": 533}


def _showers(rng: np.random.Generator, n: int, n_voxels: int) -> dict[str, np.ndarray]:
    e_inc = 2.0 ** rng.integers(8, 23, n)
    counts, index, energy = [], [], []
    for e in e_inc:
        voxel = np.unique(rng.integers(0, n_voxels, 40))
        w = rng.exponential(1.0, len(voxel))
        dep = w / w.sum() * e * rng.uniform(0.6, 1.2)
        low = rng.random(len(voxel)) < 0.1
        dep[low] = rng.uniform(0.0, 0.015, low.sum())  # below the 15.15 keV threshold
        counts.append(len(voxel))
        index.append(voxel)
        energy.append(dep)
    return {
        "e_inc": e_inc.astype(np.float32),
        "counts": np.array(counts, dtype=np.uint8),
        "voxel": np.concatenate(index).astype(np.uint16),
        "energy": np.concatenate(energy).astype(np.float32),
    }


def main() -> None:
    rng = np.random.default_rng(20261202)
    arrays = {}
    for particle, n_voxels in N_VOXELS.items():
        arrays |= {f"{particle}_{k}": v for k, v in _showers(rng, 40, n_voxels).items()}
    np.savez_compressed(HERE / "golden_ds1.npz", **arrays)


if __name__ == "__main__":
    main()
