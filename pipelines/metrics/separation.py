"""Separation power (triangular discrimination) between two binned distributions.

CaloChallenge definition: with both histograms normalised to unit sum (equivalently density
histograms multiplied by the bin widths; out-of-range entries dropped),
S = 1/2 * sum_i (h1_i - h2_i)^2 / (h1_i + h2_i + 1e-16). S lies in [0, 1]; 0 means identical.

Undefined case (the published code gives NaN): a histogram in whose range one sample has entries and the
other none is counted as S = 1 (no overlap) by :func:`counted_separation_power`, so that it is not
dropped from a mean; one in whose range neither sample has an entry counts as 0 (they agree).
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


#: the convention of :func:`counted_separation_power`, as metrics.json names it
UNDEFINED_CONVENTION = (
    "a histogram in whose range one sample has entries and the other none counts as separation power 1 "
    "(no overlap; the CaloChallenge code gives NaN) and enters the group mean; one in whose range neither "
    "sample has an entry counts as 0"
)


def counted_separation_power(counts_ref: np.ndarray, counts_gen: np.ndarray) -> tuple[float, bool]:
    """(S, no_overlap) of two histograms of raw counts, undefined cases counted (module docstring):
    S = 1 and no_overlap = True when exactly one histogram is empty, S = 0 when both are."""
    s = separation_power(counts_ref, counts_gen)
    if s is not None:
        return s, False
    empty_ref = not np.asarray(counts_ref).sum() > 0
    empty_gen = not np.asarray(counts_gen).sum() > 0
    if empty_ref and empty_gen:
        return 0.0, False
    return 1.0, True


def histogram_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Raw counts of ``values`` in bins ``edges``; entries outside [edges[0], edges[-1]] are dropped."""
    counts, _ = np.histogram(np.asarray(values, dtype=np.float64), bins=np.asarray(edges, dtype=np.float64))
    return counts.astype(np.int64)
