"""Write the small fixtures of the golden-value tests (run once; the files are committed).

Jets (JetNet layout, ragged storage): 200 "real" and 200 "generated" jets of 5-30 particles with
eta_rel, phi_rel ~ N(0, 0.10) (generated: N(0.01, 0.12)), pt_rel exponential, sorted, summing to
U(0.85, 1.0) per jet (generated: U(0.75, 1.0)): the sums differ from 1, so raw and normalised EFP weights
differ.  Showers (dataset-2 geometry, sparse storage): 200 reference and 100 generated showers of 60
hits, E_inc log-uniform in [1, 100] GeV, E_tot / E_inc ~ U(0.6, 1.3) (generated U(0.55, 1.4)), a tenth of
the hits below the readout threshold; generated showers leave layers 0 and 1 empty.

    python tests/data/make_golden_fixtures.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
N_SLOTS = 30
N_LAYERS, N_ALPHA, N_R = 45, 16, 9


def _jets(
    rng: np.random.Generator, n: int, eta_mu: float, sigma: float, pt_lo: float
) -> dict[str, np.ndarray]:
    counts = rng.integers(5, N_SLOTS + 1, n).astype(np.uint8)
    rows = []
    for c in counts:
        pt = np.sort(rng.exponential(1.0, c))[::-1]
        pt = pt / pt.sum() * rng.uniform(pt_lo, 1.0)
        rows.append(np.stack([rng.normal(eta_mu, sigma, c), rng.normal(0.0, sigma, c), pt], axis=1))
    return {"counts": counts, "particles": np.concatenate(rows).astype(np.float32)}


def _showers(rng: np.random.Generator, n: int, first_layer: int, p_r: float, ratio: tuple[float, float]):
    e_inc = 10 ** rng.uniform(3.0, 5.0, n)
    counts, index, energy = [], [], []
    for e in e_inc:
        layer = rng.integers(first_layer, N_LAYERS, 60)
        alpha = rng.integers(0, N_ALPHA, 60)
        r = np.minimum(rng.geometric(p_r, 60) - 1, N_R - 1)
        w = rng.exponential(1.0, 60)
        dep = w / w.sum() * e * rng.uniform(*ratio)
        low = rng.random(60) < 0.1
        dep[low] = rng.uniform(0.0, 0.015, low.sum())  # below the 15.15 keV threshold
        voxel = (layer * N_ALPHA + alpha) * N_R + r
        uniq, inv = np.unique(voxel, return_inverse=True)
        summed = np.zeros(len(uniq))
        np.add.at(summed, inv, dep)
        counts.append(len(uniq))
        index.append(uniq)
        energy.append(summed)
    return {
        "e_inc": e_inc.astype(np.float32),
        "counts": np.array(counts, dtype=np.uint8),
        "voxel": np.concatenate(index).astype(np.uint16),
        "energy": np.concatenate(energy).astype(np.float32),
    }


def main() -> None:
    rng = np.random.default_rng(20251202)
    real = _jets(rng, 200, 0.0, 0.10, 0.85)
    gen = _jets(rng, 200, 0.01, 0.12, 0.75)
    np.savez_compressed(
        HERE / "golden_jets.npz",
        **{f"real_{k}": v for k, v in real.items()},
        **{f"gen_{k}": v for k, v in gen.items()},
    )
    ref = _showers(rng, 200, 0, 0.35, (0.6, 1.3))
    gen_s = _showers(rng, 100, 2, 0.30, (0.55, 1.4))
    np.savez_compressed(
        HERE / "golden_showers.npz",
        **{f"ref_{k}": v for k, v in ref.items()},
        **{f"gen_{k}": v for k, v in gen_s.items()},
    )


if __name__ == "__main__":
    main()
