"""FPD / KPD / W1 against closed forms and brute force."""

import numpy as np
import pytest

from pipelines.metrics.distances import (
    fpd_sample_sizes,
    frechet_distance,
    frechet_physics_distance,
    kernel_physics_distance,
    mmd2_unbiased_poly,
    normalise_features,
    wasserstein_1d,
)


def _closed_form(mu1, s1, mu2, s2):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), independent eigen-route."""
    w, v = np.linalg.eigh(s1)
    h = v @ np.diag(np.sqrt(w)) @ v.T
    lam = np.linalg.eigvalsh(h @ s2 @ h)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(lam)))


def test_frechet_1d_and_diagonal_closed_forms():
    for method in ("eigh", "sqrtm"):
        # 1-d: (m1 - m2)^2 + (s1 - s2)^2
        assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]], method) == pytest.approx(4.0 + 1.0)
        # diagonal: sum (sqrt a - sqrt b)^2 + ||dmu||^2
        fd = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.ones(2), np.diag([9.0, 1.0]), method)
        assert fd == pytest.approx(2.0 + 4.0 + 1.0)


def test_frechet_general_covariances_both_methods_agree():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + np.eye(5), b @ b.T + 0.5 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    truth = _closed_form(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2, "eigh") == pytest.approx(truth, rel=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2, "sqrtm") == pytest.approx(truth, rel=1e-7)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_fpd_matches_closed_form_of_two_gaussians():
    rng = np.random.default_rng(2)
    n = 40_000
    real = rng.normal(size=(n, 3))
    gen = rng.normal(size=(n, 3)) * np.array([1.5, 1.0, 0.8]) + np.array([0.3, 0.0, -0.2])
    value, err = frechet_physics_distance(real, gen, seed=3, n_draws=5, min_samples=4000, max_samples=20000)
    scale = np.abs(real).max(axis=0)  # features are normalised by max |real|
    truth = _closed_form(
        np.zeros(3),
        np.diag(1 / scale**2),
        np.array([0.3, 0.0, -0.2]) / scale,
        np.diag(np.array([1.5, 1.0, 0.8]) ** 2 / scale**2),
    )
    assert value == pytest.approx(truth, rel=0.1)
    assert 0 <= err < 0.1 * truth


def test_fpd_same_distribution_is_small_and_sizes():
    rng = np.random.default_rng(4)
    value, _ = frechet_physics_distance(rng.normal(size=(5000, 4)), rng.normal(size=(5000, 4)), n_draws=4)
    assert 0 <= value < 2e-3
    sizes = fpd_sample_sizes(10**6, 10, 20000, 50000)
    # published: int(1 / linspace(1/20000, 1/50000, 10)); float truncation makes the last 49999
    assert sizes[0] == 20000 and sizes[-1] in (49999, 50000) and np.all(np.diff(sizes) > 0)
    small = fpd_sample_sizes(1000, 10, 20000, 50000)
    assert small[0] == 400 and small[-1] in (999, 1000)


def test_mmd_matches_brute_force():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(25, 4)) + 0.5
    k = lambda a, b: (a @ b.T / 4 + 1) ** 4  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    truth = (kxx.sum() - np.trace(kxx)) / (30 * 29) + (kyy.sum() - np.trace(kyy)) / (25 * 24) - 2 * kxy.mean()
    assert mmd2_unbiased_poly(x, y) == pytest.approx(truth, rel=1e-10)


def test_kpd_identical_near_zero_shifted_positive():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(4000, 5))
    same, same_err = kernel_physics_distance(real, rng.normal(size=(4000, 5)), n_batches=6, batch_size=1000)
    shifted, shifted_err = kernel_physics_distance(
        real, rng.normal(size=(4000, 5)) + 0.5, n_batches=6, batch_size=1000
    )
    assert abs(same) < max(3 * same_err, 1e-3)
    assert shifted > 10 * shifted_err > 0


def test_normalise_zero_feature_and_bad_input():
    x, y = normalise_features(np.array([[0.0, 2.0], [0.0, -4.0]]), np.array([[1.0, 2.0], [0.0, 4.0]]))
    assert np.all(np.isfinite(x)) and y.tolist() == [[1.0, 0.5], [0.0, 1.0]]
    with pytest.raises(ValueError):
        frechet_physics_distance(np.ones((10, 2)), np.ones((10, 3)))
    with pytest.raises(ValueError):
        kernel_physics_distance(np.full((10, 2), np.nan), np.ones((10, 2)))


def test_wasserstein_1d():
    assert wasserstein_1d([0.0, 1.0], [1.0, 2.0]) == pytest.approx(1.0)
    assert wasserstein_1d([0.0, 0.0, 3.0], [0.0, 0.0, 3.0]) == 0.0
