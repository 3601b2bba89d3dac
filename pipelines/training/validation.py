"""Cheap validation figures computed during training (lower is better).

Showers: W1 of E_tot / E_inc plus W1 of the energy-weighted mean layer (shower depth), each divided
by the validation sample's standard deviation so that the two add up on one scale.
Jets: W1 of the relative jet mass m_jet / pt_jet (W1M, JetNet's definition on massless constituents).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance


def layer_energies(energy: np.ndarray, layer: np.ndarray, lengths: np.ndarray, n_layers: int) -> np.ndarray:
    """Energy per (shower, layer) (N, n_layers) float64 from ragged point energies and layer indices."""
    lengths = np.asarray(lengths, dtype=np.int64)
    shower = np.repeat(np.arange(len(lengths)), lengths)
    flat = shower * n_layers + np.asarray(layer, dtype=np.int64)
    out = np.bincount(flat, weights=np.asarray(energy, dtype=np.float64), minlength=len(lengths) * n_layers)
    return out.reshape(len(lengths), n_layers)


def _shower_summaries(e_inc: np.ndarray, per_layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e_tot = per_layer.sum(axis=1)
    depth = (per_layer * np.arange(per_layer.shape[1])).sum(axis=1) / np.where(e_tot > 0, e_tot, 1.0)
    return e_tot / np.asarray(e_inc, dtype=np.float64), depth


def _scaled_w1(gen: np.ndarray, ref: np.ndarray) -> float:
    gen, ref = gen[np.isfinite(gen)], ref[np.isfinite(ref)]
    if len(gen) == 0 or len(ref) == 0:
        return float("inf")
    return float(wasserstein_distance(gen, ref) / max(float(np.std(ref)), 1e-12))


def shower_figures(
    gen_e_inc: np.ndarray, gen_layers: np.ndarray, ref_e_inc: np.ndarray, ref_layers: np.ndarray
) -> dict[str, float]:
    """{"figure", "w1_eratio", "w1_depth"}: scaled W1 of E_tot/E_inc and of the shower depth."""
    g_ratio, g_depth = _shower_summaries(gen_e_inc, gen_layers)
    r_ratio, r_depth = _shower_summaries(ref_e_inc, ref_layers)
    w_ratio, w_depth = _scaled_w1(g_ratio, r_ratio), _scaled_w1(g_depth, r_depth)
    return {"figure": w_ratio + w_depth, "w1_eratio": w_ratio, "w1_depth": w_depth}


def relative_jet_mass(points: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """m_jet / pt_jet (N,) from (eta_rel, phi_rel, pt_rel) of massless constituents."""
    lengths = np.asarray(lengths, dtype=np.int64)
    jet = np.repeat(np.arange(len(lengths)), lengths)
    eta, phi, pt = (np.asarray(points[:, k], dtype=np.float64) for k in range(3))
    n = len(lengths)
    px = np.bincount(jet, pt * np.cos(phi), n)
    py = np.bincount(jet, pt * np.sin(phi), n)
    pz = np.bincount(jet, pt * np.sinh(eta), n)
    e = np.bincount(jet, pt * np.cosh(eta), n)
    return np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))


def jet_figures(
    gen_points: np.ndarray, gen_lengths: np.ndarray, ref_points: np.ndarray, ref_lengths: np.ndarray
) -> dict[str, float]:
    """{"figure", "w1m"}: W1 of the relative jet mass (the JetNet W1M without its bootstrap)."""
    gen = relative_jet_mass(gen_points, gen_lengths)
    ref = relative_jet_mass(ref_points, ref_lengths)
    w1m = float(wasserstein_distance(gen[np.isfinite(gen)], ref)) if np.isfinite(gen).any() else float("inf")
    return {"figure": w1m, "w1m": w1m}
