"""Separation power against hand-computed values."""

import numpy as np
import pytest

from pipelines.metrics.separation import counted_separation_power, histogram_counts, separation_power


def test_identical_histograms_give_zero():
    h = np.array([3, 0, 7, 1])
    assert separation_power(h, h) == 0.0
    assert separation_power(h, 5 * h) == pytest.approx(0.0, abs=1e-15)  # normalisation removes the scale


def test_disjoint_histograms_give_one():
    assert separation_power([4, 0], [0, 9]) == pytest.approx(1.0)


def test_hand_computed_value():
    # h1 = (1/2, 1/2), h2 = (1/4, 3/4): 1/2 * (0.0625/0.75 + 0.0625/1.25) = 1/15
    assert separation_power([2, 2], [1, 3]) == pytest.approx(1.0 / 15.0, rel=1e-12)
    assert separation_power([1, 3], [2, 2]) == pytest.approx(1.0 / 15.0, rel=1e-12)


def test_empty_histogram_is_none_and_bad_input_raises():
    assert separation_power([0, 0], [1, 2]) is None
    with pytest.raises(ValueError):
        separation_power([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        separation_power([-1, 2], [1, 2])


def test_counted_separation_power_counts_no_overlap_as_one():
    # defined: the same value as the published formula, not flagged
    assert counted_separation_power([2, 2], [1, 3]) == (pytest.approx(1.0 / 15.0, rel=1e-12), False)
    # the generated sample has no entry in range (the published code gives NaN): 1, flagged
    assert counted_separation_power([3, 1, 0], [0, 0, 0]) == (1.0, True)
    # nor has the reference: the symmetric case
    assert counted_separation_power([0, 0], [5, 1]) == (1.0, True)
    # neither has an entry in range: they agree
    assert counted_separation_power([0, 0], [0, 0]) == (0.0, False)
    # disjoint but both filled: 1 by the formula itself, not an undefined case
    s, flag = counted_separation_power([4, 0], [0, 9])
    assert s == pytest.approx(1.0) and not flag


def test_shifted_gaussian_grows_with_shift():
    rng = np.random.default_rng(0)
    edges = np.linspace(-5, 6, 56)
    ref = histogram_counts(rng.normal(size=200_000), edges)
    s = [
        separation_power(ref, histogram_counts(rng.normal(size=200_000) + d, edges)) for d in (0.0, 0.2, 1.0)
    ]
    # small d: 1/2 sum (d p')^2 / (2 p) -> d^2 / 4 * Fisher information (= 1 for N(0, 1))
    assert s[0] < 2e-3
    assert s[1] == pytest.approx(0.2**2 / 4, rel=0.15)
    assert s[1] < s[2] < 1


def test_histogram_counts_drop_out_of_range():
    counts = histogram_counts(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), np.array([0.0, 0.5, 1.0]))
    assert counts.tolist() == [1, 2]
