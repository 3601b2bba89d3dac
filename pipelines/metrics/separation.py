"""Separation power (triangular discrimination) between two binned distributions.

CaloChallenge definition: with both histograms normalised to unit sum (equivalently density
histograms multiplied by the bin widths; out-of-range entries dropped),
S = 1/2 * sum_i (h1_i - h2_i)^2 / (h1_i + h2_i + 1e-16). S lies in [0, 1]; 0 means identical.
"""

from __future__ import annotations

import numpy as np


def separation_power(counts_1: np.ndarray, counts_2: np.ndarray) -> float | None:
    """Separation power of two histograms given as raw (non-negative) bin counts.

    Returns None when either histogram has no entries (the published code yields NaN there).
    """
    h1 = np.asarray(counts_1, dtype=np.float64)
    h2 = np.asarray(counts_2, dtype=np.float64)
    if h1.shape != h2.shape or h1.ndim != 1:
        raise ValueError(f"histograms must be 1-d of equal length, got {h1.shape} and {h2.shape}")
    if np.any(h1 < 0) or np.any(h2 < 0):
        raise ValueError("histogram counts must be non-negative")
    s1, s2 = h1.sum(), h2.sum()
    if s1 <= 0 or s2 <= 0:
        return None
    h1, h2 = h1 / s1, h2 / s2
    return float(0.5 * np.sum((h1 - h2) ** 2 / (h1 + h2 + 1e-16)))


def histogram_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Raw counts of ``values`` in bins ``edges``; entries outside [edges[0], edges[-1]] are dropped."""
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=np.asarray(edges, dtype=np.float64))
    return counts.astype(np.int64)
