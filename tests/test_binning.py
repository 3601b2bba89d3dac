"""Bin indices by table lookup against np.histogram, value by value."""

import numpy as np
import pytest

from pipelines.metrics.binning import bin_indices, search_bins


def _histogram_bin(value: float, edges: np.ndarray) -> int:
    """The bin np.histogram puts one value in, -1 for none."""
    counts, _ = np.histogram(np.array([value], dtype=np.float64), edges)
    return int(np.argmax(counts)) if counts.any() else -1


@pytest.mark.parametrize(
    "edges",
    [
        np.logspace(np.log10(0.5e-3 / 0.033), np.log10(812.3), 50),  # the voxel-energy binning
        np.linspace(-30.0, 30.0, 101),  # negative edges, zero inside
        np.array([1.0, 1.0000001, 2.0]),  # two edges within one table interval
    ],
)
def test_bins_equal_np_histogram_at_and_around_every_edge(edges):
    rng = np.random.default_rng(0)
    at_edges = edges.astype(np.float32)
    values = np.concatenate(
        [
            at_edges,
            np.nextafter(at_edges, np.float32(np.inf)),
            np.nextafter(at_edges, np.float32(-np.inf)),
            rng.uniform(edges[0] - 1, edges[-1] * 1.5, 3000).astype(np.float32),
            np.float32(10) ** rng.uniform(-3, 4, 3000).astype(np.float32),
            np.array([0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 1e-45, 3e38], np.float32),
        ]
    )
    expected = [_histogram_bin(v, edges) if np.isfinite(v) else -1 for v in values]
    assert bin_indices(values, edges).tolist() == expected
    assert search_bins(values, edges).tolist() == expected
    assert bin_indices(values.astype(np.float64), edges).tolist() == expected  # the search path
