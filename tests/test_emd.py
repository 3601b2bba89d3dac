"""Energy mover's distance and COV / MMD against hand-computed values and an independent linear program."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linprog

from pipelines.metrics import emd


def _jet(pt, coords) -> emd.Cloud:
    return np.asarray(pt, dtype=np.float64), np.asarray(coords, dtype=np.float64).reshape(-1, 2)


def test_one_particle_jets_hand_computed():
    a = _jet([0.6], [[0.0, 0.0]])
    b = _jet([0.6], [[0.3, 0.4]])  # 0.5 apart
    assert emd.emd(a, b) == pytest.approx(0.6 * 0.5, rel=1e-14)
    assert emd.emd(a, b, radius=0.4) == pytest.approx(0.6 * 0.5 / 0.4, rel=1e-14)
    # unequal totals: 0.5 moves 0.5 far, the 0.1 left over costs itself (not divided by R)
    heavier = _jet([0.6], [[0.0, 0.0]])
    lighter = _jet([0.5], [[0.3, 0.4]])
    assert emd.emd(heavier, lighter) == pytest.approx(0.5 * 0.5 + 0.1, rel=1e-14)
    assert emd.emd(lighter, heavier) == pytest.approx(0.5 * 0.5 + 0.1, rel=1e-14)
    assert emd.emd(heavier, lighter, radius=2.0) == pytest.approx(0.5 * 0.25 + 0.1, rel=1e-14)
    # a jet against itself, and against a jet without particles (the whole pt is the difference)
    assert emd.emd(a, a) == pytest.approx(0.0, abs=1e-15)
    assert emd.emd(a, _jet([], [])) == pytest.approx(0.6, rel=1e-15)


def test_two_particle_jets_hand_computed():
    # (0.5 at x = 0, 0.5 at x = 1) vs (0.5 at x = 0.1, 0.5 at x = 1.3): move each to its neighbour
    a = _jet([0.5, 0.5], [[0.0, 0.0], [1.0, 0.0]])
    b = _jet([0.5, 0.5], [[0.1, 0.0], [1.3, 0.0]])
    assert emd.emd(a, b) == pytest.approx(0.5 * 0.1 + 0.5 * 0.3, rel=1e-13)
    # b's second particle lighter by 0.2: 0.3 moves 0.3 far, the 0.2 left over costs 0.2
    c = _jet([0.5, 0.3], [[0.1, 0.0], [1.3, 0.0]])
    assert emd.emd(a, c) == pytest.approx(0.5 * 0.1 + 0.3 * 0.3 + 0.2, rel=1e-13)


def _emd_linprog(a: emd.Cloud, b: emd.Cloud, radius: float) -> float:
    """energyflow's definition as a linear program without a dummy particle: min sum f theta / R +
    |E - E'| over f >= 0 with row sums <= pt_i, column sums <= pt'_j and total flow min(E, E')."""
    (pa, xa), (pb, xb) = a, b
    theta = np.sqrt(((xa[:, None, :] - xb[None, :, :]) ** 2).sum(-1)) / radius
    n, m = theta.shape
    rows = np.kron(np.eye(n), np.ones(m))
    cols = np.kron(np.ones(n), np.eye(m))
    res = linprog(theta.ravel(), A_ub=np.vstack([rows, cols]), b_ub=np.concatenate([pa, pb]),
                  A_eq=np.ones((1, n * m)), b_eq=[min(pa.sum(), pb.sum())], method="highs")  # fmt: skip
    assert res.status == 0
    return float(res.fun) + abs(pa.sum() - pb.sum())


def test_random_jets_match_an_independent_linear_program():
    rng = np.random.default_rng(3)
    for trial in range(12):
        n, m = rng.integers(1, 12, 2)
        a = _jet(rng.exponential(0.1, n), rng.normal(0, 0.3, (n, 2)))
        b = _jet(rng.exponential(0.1, m), rng.normal(0.05, 0.3, (m, 2)))
        radius = (1.0, 0.8)[trial % 2]
        assert emd.emd(a, b, radius) == pytest.approx(_emd_linprog(a, b, radius), rel=1e-7, abs=1e-12)
        # a metric: symmetric
        assert emd.emd(a, b, radius) == pytest.approx(emd.emd(b, a, radius), rel=1e-12, abs=1e-15)


def test_clouds_drop_padding_and_reject_negative_pt():
    particles = np.array([[[0.1, 0.2, 0.5], [9.0, 9.0, 9.0]], [[0.0, 0.0, 0.3], [0.1, 0.0, 0.2]]])
    mask = np.array([[False, True], [False, False]])
    (pt0, xy0), (pt1, xy1) = emd.clouds(particles, mask)
    assert pt0.tolist() == [0.5] and xy0.tolist() == [[0.1, 0.2]]
    assert pt1.tolist() == [0.3, 0.2] and xy1.shape == (2, 2)
    particles[1, 1, 2] = -0.1
    with pytest.raises(ValueError, match="jet 1 has a particle with negative pt_rel"):
        emd.clouds(particles, mask)
    with pytest.raises(ValueError, match="radius"):
        emd.emd(_jet([1.0], [[0, 0]]), _jet([1.0], [[0, 0]]), radius=0.0)


def test_coverage_and_mmd_hand_computed():
    # D[gen, real]: gen 0 and gen 1 both nearest to real 0, gen 2 nearest to real 2; real 1 uncovered
    d = np.array([[0.1, 0.5, 0.9], [0.2, 0.4, 0.8], [0.7, 0.6, 0.3]])
    cov, mmd = emd.coverage_mmd(d)
    assert cov == pytest.approx(2 / 3)
    # nearest generated jet per real jet: 0.1, 0.4, 0.3
    assert mmd == pytest.approx((0.1 + 0.4 + 0.3) / 3, rel=1e-15)
    with pytest.raises(ValueError, match="non-empty"):
        emd.coverage_mmd(np.zeros((0, 3)))


def _sample(rng: np.random.Generator, n_jets: int) -> list[emd.Cloud]:
    out = []
    for _ in range(n_jets):
        n = rng.integers(3, 15)
        out.append(_jet(rng.dirichlet(np.ones(n)) * rng.uniform(0.8, 1.0), rng.normal(0, 0.2, (n, 2))))
    return out


def test_a_sample_against_itself_in_the_same_batch_covers_everything_at_distance_zero():
    jets = _sample(np.random.default_rng(4), 30)
    same = [(np.arange(30), np.arange(30)), (np.arange(30)[::-1], np.arange(30)[::-1])]
    per_batch = emd.cov_mmd_per_batch(jets, jets, same)
    assert per_batch[:, 0] == pytest.approx([1.0, 1.0])
    assert per_batch[:, 1] == pytest.approx([0.0, 0.0], abs=1e-12)
    # independent draws from the same sample are not the same batch: COV well below 1, MMD above 0
    rng = np.random.default_rng(5)
    drawn = [(rng.integers(0, 30, 30), rng.integers(0, 30, 30)) for _ in range(3)]
    per_batch = emd.cov_mmd_per_batch(jets, jets, drawn)
    assert np.all(per_batch[:, 0] < 0.9) and np.all(per_batch[:, 1] > 0)


def test_mode_collapse_covers_one_real_jet():
    """Every generated jet a copy of real jet 3: all are nearest to it, COV = 1 / N; MMD = the mean
    EMD of the real jets to jet 3."""
    real = _sample(np.random.default_rng(7), 10)
    batch = [(np.arange(10), np.full(10, 3))]
    (cov, mmd), *_ = emd.cov_mmd_per_batch(real, real, batch)
    assert cov == pytest.approx(0.1)
    assert mmd == pytest.approx(np.mean([emd.emd(real[3], jet) for jet in real]), rel=1e-12)


def test_a_batch_with_repeated_jets_equals_the_full_matrix():
    rng = np.random.default_rng(6)
    real, gen = _sample(rng, 8), _sample(rng, 7)
    ir, ig = rng.integers(0, 8, 12), rng.integers(0, 7, 12)
    full = emd.emd_matrix([gen[i] for i in ig], [real[i] for i in ir])
    assert np.array_equal(emd.batch_emd_matrix(real, gen, ir, ig), full)
    assert full.shape == (12, 12) and full[0, 0] == emd.emd(gen[ig[0]], real[ir[0]])
