"""Histogram bin indices of many values at once, exact, with a lookup table for float32 values.

Bins follow np.histogram: [e_i, e_{i+1}), the last one closed on the right; values outside the edges
and NaN get no bin. The bit pattern of a non-negative float32 orders like its value, so its top 20 bits
(sign, exponent and 11 mantissa bits) name an interval of 2^12 consecutive floats. A table over the 2^20
prefixes holds the bin of every such interval that lies within one bin (or wholly outside the edges);
the few intervals that contain an edge are marked, and only their values are binned by a search.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Low bits of a float32 pattern dropped to form its table key (2^20 keys).
_SHIFT = 12
#: Table entry of a key interval that contains an edge: its values are binned by search.
_STRADDLES = -2


def _search(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index (int64) of every value compared in float64: -1 below the edges, len(edges) - 1 above them
    or NaN."""
    v = np.asarray(values, dtype=np.float64)
    b = np.searchsorted(edges, v, side="right") - 1
    b[v == edges[-1]] = len(edges) - 2
    return b


def search_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index (int64) of every value compared in float64, -1 where it falls in no bin."""
    b = _search(values, edges)
    b[b >= len(edges) - 1] = -1
    return b


@lru_cache(maxsize=8)
def _table(edges: tuple[float, ...]) -> np.ndarray:
    """(2^20,) int16 bin of every float32 key interval, -1 outside the edges, ``_STRADDLES`` across one."""
    edges_array = np.array(edges, dtype=np.float64)
    low_bits = np.arange(1 << (32 - _SHIFT), dtype=np.uint32) << _SHIFT
    with np.errstate(invalid="ignore"):  # the keys include signalling NaN patterns
        low = _search(low_bits.view(np.float32), edges_array)
        high = _search((low_bits | ((1 << _SHIFT) - 1)).view(np.float32), edges_array)
    within_one = low == high
    low[low >= len(edges) - 1] = -1
    return np.where(within_one, low, _STRADDLES).astype(np.int16)


def bin_indices(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of every value of a 1-d array, -1 where it falls in no bin; the same as
    :func:`search_bins`, by table lookup for float32 values."""
    values = np.asarray(values)
    edges = np.asarray(edges, dtype=np.float64)
    if values.dtype != np.float32 or len(edges) - 1 > np.iinfo(np.int16).max:
        return search_bins(values, edges)
    b = _table(tuple(edges.tolist()))[np.ascontiguousarray(values).view(np.uint32) >> _SHIFT]
    straddles = np.flatnonzero(b == _STRADDLES)
    if len(straddles):
        b[straddles] = search_bins(values[straddles], edges)
    return b
