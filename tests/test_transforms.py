"""Preprocessing transforms: exact inverses, hand-computed values, scipy agreement, JSON round trips, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.io.clouds import Clouds, read_clouds, write_clouds
from pipelines.io.errors import DataError
from pipelines.transforms import (
    BoxCox,
    Chain,
    Dequantize,
    Log,
    MinMaxLogit,
    NotFittedError,
    Periodic,
    PointTransform,
    Standardize,
    Transform,
    jet_transform,
    load_transform,
    main,
    save_transform,
    shower_transform,
)

SHOWER_NAMES = ("energy", "layer", "alpha", "r")


def random_points(geometry, n: int, seed: int) -> np.ndarray:
    """(n, 4) shower points: log-normal energies in MeV, uniform integer bins."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            rng.lognormal(0.0, 2.0, n) + 0.015,
            rng.integers(0, geometry.n_layers, n),
            rng.integers(0, geometry.n_alpha, n),
            rng.integers(0, geometry.n_r, n),
        ],
        axis=1,
    ).astype(np.float64)


@pytest.fixture(scope="module")
def fitted_shower(ds2):
    return shower_transform(ds2).fit(random_points(ds2, 20_000, 1), rng=np.random.default_rng(0))


# ------------------------------------------------------------------------------------------ Dequantize


def test_dequantize_noise_in_bin_and_redrawn():
    d = Dequantize(5)
    x = np.array([0, 1, 4, 4, 2], dtype=np.float64)
    rng = np.random.default_rng(3)
    a, b = d.transform(x, rng=rng), d.transform(x, rng=rng)
    assert np.all((a >= x) & (a < x + 1)) and np.all((b >= x) & (b < x + 1))
    assert not np.array_equal(a, b)  # fresh noise at every call
    assert np.array_equal(d.inverse_transform(a), x)
    # without rng: the seeded internal generator, still redrawn at each call
    c1, c2 = Dequantize(5, seed=9).transform(x), Dequantize(5, seed=9).transform(x)
    assert np.array_equal(c1, c2)


def test_dequantize_noise_is_uniform():
    u = Dequantize(1).transform(np.zeros(200_000), rng=np.random.default_rng(0))
    assert scipy.stats.kstest(u, "uniform").pvalue > 1e-3


def test_dequantize_inverse_floors_and_clamps():
    d = Dequantize(4)
    z = np.array([-1e6, -0.2, 0.0, 0.999, 2.5, 3.99, 4.0, 17.0, 1e6, np.inf, -np.inf, np.nan])
    assert d.inverse_transform(z).tolist() == [0, 0, 0, 0, 2, 3, 3, 3, 3, 3, 0, 0]


@pytest.mark.parametrize("bad", [[0.5], [-1.0], [4.0], [np.nan]])
def test_dequantize_rejects_non_bins(bad):
    with pytest.raises(ValueError, match="integer bin indices"):
        Dequantize(4).transform(np.array(bad), rng=np.random.default_rng(0))


# ----------------------------------------------------------------------------------------- MinMaxLogit


def test_minmaxlogit_hand_computed():
    t = MinMaxLogit(eps=1e-5, low=0.0, high=10.0)
    # x = 2.5 -> s = 0.25 -> p = 1e-5 + 0.99998 * 0.25 = 0.250005 -> log(p / (1 - p))
    expected = math.log(0.250005 / 0.749995)
    assert t.fit(np.array([100.0])).transform(np.array([2.5]))[0] == pytest.approx(expected, rel=1e-12)
    # range fixed at construction survives fit; the ends map to logit(eps) and logit(1 - eps)
    ends = t.transform(np.array([0.0, 10.0, -5.0, 99.0]))
    lo, hi = math.log(1e-5 / (1 - 1e-5)), math.log((1 - 1e-5) / 1e-5)
    assert ends == pytest.approx([lo, hi, lo, hi], rel=1e-9)  # out of range: clipped
    assert t.inverse_transform(np.array([-1e6, 1e6])).tolist() == [0.0, 10.0]


def test_minmaxlogit_fits_data_range_and_inverts():
    x = np.array([3.0, 5.0, 4.0, 7.0])
    t = MinMaxLogit().fit(x)
    assert (t.low, t.high) == (3.0, 7.0)
    np.testing.assert_allclose(t.inverse_transform(t.transform(x)), x, rtol=1e-9)
    assert MinMaxLogit().fit(np.full(3, 2.0)).high == 3.0  # constant column: unit range
    with pytest.raises(ValueError, match="low < high"):
        MinMaxLogit(low=1.0, high=1.0)
    with pytest.raises(NotFittedError):
        MinMaxLogit().transform(x)


# ---------------------------------------------------------------------------- BoxCox, Log, Standardize


def test_boxcox_lambda_matches_scipy():
    x = np.random.default_rng(4).gamma(2.0, 3.0, 5000)
    _, lmbda_scipy = scipy.stats.boxcox(x)
    t = BoxCox().fit(x)
    assert t.lmbda == pytest.approx(lmbda_scipy, abs=1e-6)
    # standardised output, and the definition (x^l - 1) / l before standardisation
    z = t.transform(x)
    assert z.mean() == pytest.approx(0.0, abs=1e-10) and z.std() == pytest.approx(1.0, rel=1e-10)
    np.testing.assert_allclose(z * t.std + t.mean, (x**t.lmbda - 1) / t.lmbda, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(t.inverse_transform(z), x, rtol=1e-10)


def test_boxcox_lambda_zero_is_log():
    t = Transform.from_dict({"type": "BoxCox", "lmbda": 0.0, "mean": 1.0, "std": 2.0})
    x = np.array([0.1, 1.0, 50.0])
    np.testing.assert_allclose(t.transform(x), (np.log(x) - 1.0) / 2.0, rtol=1e-14)
    np.testing.assert_allclose(t.inverse_transform(t.transform(x)), x, rtol=1e-14)


def test_boxcox_requires_positive_data():
    with pytest.raises(ValueError, match="strictly positive"):
        BoxCox().fit(np.array([1.0, 0.0, 2.0]))
    t = BoxCox().fit(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="strictly positive"):
        t.transform(np.array([-1.0]))


@settings(max_examples=60, deadline=None)
@given(
    lmbda=st.sampled_from([-1.5, -0.3, 0.0, 0.08, 0.5, 2.0]),
    z=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20),
)
def test_boxcox_inverse_never_nan(lmbda, z):
    t = Transform.from_dict({"type": "BoxCox", "lmbda": lmbda, "mean": 0.3, "std": 1.7})
    x = t.inverse_transform(np.array(z))
    assert np.all(np.isfinite(x)) and np.all(x >= 0)


def test_boxcox_inverse_guard_clamps():
    # lambda > 0: y * lambda + 1 <= 0 has no preimage -> smallest positive value, i.e. ~0 energy
    t = Transform.from_dict({"type": "BoxCox", "lmbda": 0.5, "mean": 0.0, "std": 1.0})
    x = t.inverse_transform(np.array([-2.0, -10.0]))
    assert np.all((x >= 0) & (x <= 1e-300))


def test_log_and_standardize():
    x = np.array([0.01, 0.2, 0.5])
    np.testing.assert_allclose(Log().inverse_transform(Log().transform(x)), x, rtol=1e-15)
    with pytest.raises(ValueError, match="strictly positive"):
        Log().transform(np.array([0.0]))
    s = Standardize().fit(np.array([1.0, 3.0]))
    assert (s.mean, s.std) == (2.0, 1.0)
    assert s.transform(np.array([4.0])).tolist() == [2.0]
    assert Standardize().fit(np.full(4, 7.0)).std == 1.0  # zero spread -> 1


# ------------------------------------------------------------------------------- point transforms


def test_shower_transform_structure(ds2, fitted_shower):
    assert fitted_shower.point_names == SHOWER_NAMES
    layer = fitted_shower.columns["layer"].steps
    assert [type(s).__name__ for s in layer] == ["Dequantize", "MinMaxLogit", "Standardize"]
    assert (layer[0].n_bins, layer[1].low, layer[1].high) == (45, 0.0, 45.0)
    alpha = fitted_shower.columns["alpha"].steps
    assert [type(s).__name__ for s in alpha] == ["Dequantize", "Periodic", "Standardize"]  # no logit
    assert alpha[0].n_bins == ds2.n_alpha and alpha[1].period == ds2.n_alpha
    assert fitted_shower.columns["r"].steps[1].high == ds2.n_r
    assert type(fitted_shower.columns["energy"].steps[0]) is BoxCox
    z = fitted_shower.transform(random_points(ds2, 20_000, 2), rng=np.random.default_rng(1))
    assert np.all(np.abs(z.mean(axis=0)) < 0.05) and np.all(np.abs(z.std(axis=0) - 1) < 0.05)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_shower_round_trip_exact(ds2, fitted_shower, data):
    n = data.draw(st.integers(1, 50))
    bins = [
        st.lists(st.integers(0, m - 1) | st.sampled_from([0, m - 1]), min_size=n, max_size=n)
        for m in (ds2.n_layers, ds2.n_alpha, ds2.n_r)
    ]
    energy = st.floats(1e-6, 1e7) | st.sampled_from([1e-6, 0.015, 1e7])
    e = data.draw(st.lists(energy, min_size=n, max_size=n))
    x = np.column_stack([e, *(data.draw(b) for b in bins)]).astype(np.float64)
    z = fitted_shower.transform(x, rng=np.random.default_rng(data.draw(st.integers(0, 2**32))))
    back = fitted_shower.inverse_transform(z)
    assert np.array_equal(back[:, 1:], x[:, 1:])
    # energies come back exactly inside the fitted range and clamped to it outside
    energy = fitted_shower.columns["energy"]
    np.testing.assert_allclose(back[:, 0], np.clip(x[:, 0], energy.low, energy.high), rtol=1e-9)


def test_shower_round_trip_many_points(ds2, fitted_shower):
    x = random_points(ds2, 200_000, 5)
    back = fitted_shower.inverse_transform(fitted_shower.transform(x, rng=np.random.default_rng(8)))
    assert np.array_equal(back[:, 1:], x[:, 1:])
    energy = fitted_shower.columns["energy"]
    inside = (x[:, 0] >= energy.low) & (x[:, 0] <= energy.high)
    assert 0.99 < inside.mean() < 1.0  # a fresh sample has a few values beyond the fitted range
    np.testing.assert_allclose(back[:, 0], np.clip(x[:, 0], energy.low, energy.high), rtol=1e-10)


def test_inverse_clamps_into_grid_and_fitted_range(ds2, fitted_shower):
    z = np.array([[1e6, 1e6, 1e6, 1e6], [-1e6, -1e6, -1e6, -1e6], [0.0, 0.0, 0.0, 0.0]])
    back = fitted_shower.inverse_transform(z)
    assert back[0, [1, 3]].tolist() == [ds2.n_layers - 1, ds2.n_r - 1]
    assert back[1, [1, 3]].tolist() == [0, 0]
    assert np.all((back[:, 2] >= 0) & (back[:, 2] <= ds2.n_alpha - 1))  # alpha wraps instead
    assert np.all(np.isfinite(back)) and np.all(back[:, 0] >= 0)
    energy = fitted_shower.columns["energy"]
    train = random_points(ds2, 20_000, 1)[:, 0]  # the fitted sample
    assert (energy.low, energy.high) == (train.min(), train.max())
    assert back[:2, 0].tolist() == [energy.high, energy.low]


# ------------------------------------------------------------------------------ periodic coordinate


def test_periodic_hand_computed_and_wraps():
    p = Periodic(16)
    x = np.array([0.0, 4.0, 15.5, 16.0, 17.0, -1.0])
    assert p.transform(x).tolist() == [0.0, 0.25, 15.5 / 16, 0.0, 1 / 16, 15 / 16]
    # inverse: z * 16 wrapped into [0, 16); a whole turn either way lands on the same angle
    z = np.array([0.25, 1.25, -0.75, 3.0, -1e-20, np.nan, np.inf, -np.inf, 1e300])
    back = p.inverse_transform(z)
    assert back[:5].tolist() == [4.0, 4.0, 4.0, 0.0, 0.0]  # -1e-20 would round to 16 without the guard
    assert np.all((back >= 0) & (back < 16))
    with pytest.raises(ValueError, match="period"):
        Periodic(0)


def test_periodic_alpha_chain_exact_and_wrapping():
    chain = Chain([Dequantize(16), Periodic(16), Standardize()])
    bins = np.tile(np.arange(16.0), 500)
    z = chain.fit_transform(bins, rng=np.random.default_rng(0))
    assert np.array_equal(chain.inverse_transform(z), bins)  # exact inverse
    assert z.std() == pytest.approx(1.0, abs=0.01) and abs(z.mean()) < 0.02  # uniform, no logit
    assert z.max() - z.min() < 3.47  # bounded: sqrt(12) = 3.46 standard deviations per turn
    # a model output one whole turn further decodes to the same bin; one bin past the top bin wraps
    # to bin 0 instead of clamping to the last bin
    turn = 1.0 / chain.steps[2].std
    assert np.array_equal(chain.inverse_transform(z + turn), bins)
    assert np.array_equal(chain.inverse_transform(z - 3 * turn), bins)
    top = chain.transform(np.array([15.0, 15.0, 15.0]), rng=np.random.default_rng(1))
    assert chain.inverse_transform(top + turn / 16).tolist() == [0.0, 0.0, 0.0]


@settings(max_examples=60, deadline=None)
@given(
    n_bins=st.integers(1, 64),
    b=st.lists(st.integers(0, 63), min_size=1, max_size=30),
    seed=st.integers(0, 2**32 - 1),
)
def test_periodic_round_trip_property(n_bins, b, seed):
    x = np.array(b, dtype=np.float64) % n_bins
    chain = Chain([Dequantize(n_bins), Periodic(n_bins), Standardize()])
    chain.fit(np.arange(float(n_bins)).repeat(2), rng=np.random.default_rng(0))
    z = chain.transform(x, rng=np.random.default_rng(seed))
    assert np.array_equal(chain.inverse_transform(z), x)
    assert np.array_equal(chain.inverse_transform_torch(torch.from_numpy(z)).numpy(), x)


# ------------------------------------------------------------------------- fitted range and torch forward


def test_chain_range_in_json_and_old_files_load_unclamped(tmp_path):
    chain = Chain([BoxCox()]).fit(np.array([1.0, 2.0, 10.0]))
    assert (chain.low, chain.high) == (1.0, 10.0)
    d = chain.to_dict()
    assert (d["low"], d["high"]) == (1.0, 10.0)
    z = chain.transform(np.array([0.5, 3.0, 40.0]))
    assert chain.inverse_transform(z) == pytest.approx([1.0, 3.0, 10.0], rel=1e-12)
    # a chain from a file written before the range was recorded: loads, inverts exactly as before
    old = {k: v for k, v in d.items() if k not in ("low", "high")}
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": "pipelines-transform", "version": 1, "transform": old}))
    legacy = load_transform(path)
    assert legacy.is_fitted and legacy.low is None
    assert legacy.inverse_transform(z) == pytest.approx([0.5, 3.0, 40.0], rel=1e-12)
    with pytest.raises(ValueError, match="both low and high"):
        Transform.from_dict({**d, "high": None})
    with pytest.raises(ValueError, match="low <= high"):
        Transform.from_dict({**d, "low": 11.0})


def test_torch_forward_matches_numpy_and_is_differentiable(fitted_shower):
    energy = fitted_shower.columns["energy"]
    x = np.random.default_rng(3).lognormal(0.0, 2.0, 1000) + 0.015
    xt = torch.from_numpy(x).requires_grad_(True)
    got = energy.transform_torch(xt)
    np.testing.assert_allclose(got.detach().numpy(), energy.transform(x), rtol=1e-12, atol=1e-12)
    got.sum().backward()
    bc = energy.steps[0]  # d/dx of (x^l - 1) / l / std = x^(l - 1) / std
    np.testing.assert_allclose(xt.grad.numpy(), x ** (bc.lmbda - 1) / bc.std, rtol=1e-10)
    # from log x: exact where x itself would underflow (a tiny share of a shower's energy)
    log_x = torch.tensor([-800.0, 0.0, 5.0], dtype=torch.float64)
    via_log = energy.transform_log_torch(log_x)
    assert torch.isfinite(via_log).all()
    np.testing.assert_allclose(via_log[1:].numpy(), energy.transform(np.exp([0.0, 5.0])), rtol=1e-12)
    jets = jet_transform().fit(np.abs(np.random.default_rng(1).normal(0.1, 0.05, (500, 3))) + 1e-3)
    pt = jets.columns["pt_rel"]
    v = np.array([0.01, 0.2])
    np.testing.assert_allclose(pt.transform_torch(torch.from_numpy(v)).numpy(), pt.transform(v), rtol=1e-12)
    with pytest.raises(NotImplementedError, match="Dequantize"):
        fitted_shower.columns["layer"].transform_torch(torch.zeros(2))
    with pytest.raises(NotImplementedError, match="log input"):
        fitted_shower.columns["layer"].transform_log_torch(torch.zeros(2))


def test_jet_transform_round_trip():
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.normal(0, 0.2, 3000), rng.uniform(-0.5, 0.5, 3000), rng.lognormal(-4, 1, 3000)])
    t = jet_transform().fit(x)
    assert [type(s).__name__ for s in t.columns["pt_rel"].steps] == ["Log", "Standardize"]
    np.testing.assert_allclose(t.inverse_transform(t.transform(x)), x, rtol=1e-12, atol=1e-15)


def test_point_transform_checks_shape_and_empty(fitted_shower):
    with pytest.raises(ValueError, match=r"expected \(P, 4\)"):
        fitted_shower.transform(np.zeros((3, 3)))
    assert fitted_shower.transform(np.zeros((0, 4)), rng=np.random.default_rng(0)).shape == (0, 4)
    with pytest.raises(NotFittedError):
        jet_transform().transform(np.ones((2, 3)))


# ------------------------------------------------------------------------ torch inverse (sampling)

#: latent values: any float64 (NaN, +-inf and +-1e308 included) with the extremes drawn often
LATENT = st.floats(width=64) | st.sampled_from([1e6, -1e6, np.nan, np.inf, -np.inf, 0.0, 40.0, -40.0])
ELEMENTARY = {
    "Dequantize": Dequantize(7),
    "MinMaxLogit": MinMaxLogit(eps=1e-5, low=0.0, high=16.0),
    "Periodic": Periodic(16),
    "Standardize": Transform.from_dict({"type": "Standardize", "mean": 0.7, "std": 2.5}),
    "Log": Log(),
    **{
        f"BoxCox({lm})": Transform.from_dict({"type": "BoxCox", "lmbda": lm, "mean": 0.3, "std": 1.7})
        for lm in (-1.5, -0.3, 0.0, 0.08, 0.5, 2.0)
    },
}


def _torch_inverse(t: Transform, z: np.ndarray) -> np.ndarray:
    out = t.inverse_transform_torch(torch.from_numpy(z))
    assert out.dtype == torch.float64
    return out.numpy()


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(ELEMENTARY)), z=st.lists(LATENT, min_size=1, max_size=30))
def test_torch_inverse_matches_numpy(name, z):
    t, z = ELEMENTARY[name], np.array(z)
    expected, got = t.inverse_transform(z), _torch_inverse(t, z)
    if name in ("Dequantize", "Periodic"):
        assert np.array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)  # NaN only where numpy has NaN
    if name not in ("Standardize", "Log"):  # the guarded inverses: never NaN, inside their range
        assert not np.any(np.isnan(got))


@settings(max_examples=40, deadline=None)
@given(z=st.lists(st.tuples(LATENT, LATENT, LATENT, LATENT), min_size=1, max_size=40))
def test_torch_inverse_of_fitted_shower_transform_matches_numpy(ds2, fitted_shower, z):
    z = np.array(z, dtype=np.float64)
    expected, got = fitted_shower.inverse_transform(z), _torch_inverse(fitted_shower, z)
    assert np.array_equal(got[:, 1:], expected[:, 1:])  # bin indices: exactly
    np.testing.assert_allclose(got[:, 0], expected[:, 0], rtol=1e-12, atol=0)
    assert np.all(np.isfinite(got)) and np.all(got[:, 0] >= 0)
    assert np.all(got[:, 1:] <= [ds2.n_layers - 1, ds2.n_alpha - 1, ds2.n_r - 1]) and got[:, 1:].min() >= 0


def test_torch_inverse_many_points_and_jets(fitted_shower):
    z = np.random.default_rng(6).normal(0.0, 4.0, (100_000, 4))
    expected, got = fitted_shower.inverse_transform(z), _torch_inverse(fitted_shower, z)
    assert np.array_equal(got[:, 1:], expected[:, 1:])
    np.testing.assert_allclose(got[:, 0], expected[:, 0], rtol=1e-12, atol=0)
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.normal(0, 0.2, 3000), rng.uniform(-0.5, 0.5, 3000), rng.lognormal(-4, 1, 3000)])
    jets = jet_transform().fit(x)
    zj = np.concatenate([jets.transform(x), [[1e6, -1e6, 1e6], [np.nan, np.inf, -np.inf], [0.0, 0.0, -1e6]]])
    np.testing.assert_allclose(_torch_inverse(jets, zj), jets.inverse_transform(zj), rtol=1e-12, atol=0)
    # float32 input (the generator's output) is computed and returned in float64
    z32 = torch.from_numpy(z[:100]).float()
    got32 = fitted_shower.inverse_transform_torch(z32)
    assert got32.dtype == torch.float64
    expected32 = fitted_shower.inverse_transform(z32.numpy())
    assert np.array_equal(got32[:, 1:].numpy(), expected32[:, 1:])
    np.testing.assert_allclose(got32[:, 0].numpy(), expected32[:, 0], rtol=1e-12, atol=0)


def test_torch_inverse_checks_its_input(fitted_shower):
    with pytest.raises(ValueError, match=r"expected \(P, 4\)"):
        fitted_shower.inverse_transform_torch(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="expected a torch tensor"):
        fitted_shower.inverse_transform_torch(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="1-d column"):
        Dequantize(3).inverse_transform_torch(torch.zeros(2, 2))
    with pytest.raises(NotFittedError):
        BoxCox().inverse_transform_torch(torch.zeros(2))


# ------------------------------------------------------------------------------------- serialisation


def test_json_round_trip_bit_for_bit(tmp_path, ds2, fitted_shower):
    path = tmp_path / "t.json"
    save_transform(path, fitted_shower)
    loaded = load_transform(path)
    assert isinstance(loaded, PointTransform) and loaded.to_dict() == fitted_shower.to_dict()
    x = random_points(ds2, 5000, 3)
    a = fitted_shower.transform(x, rng=np.random.default_rng(11))
    b = loaded.transform(x, rng=np.random.default_rng(11))
    assert np.array_equal(a, b)
    z = np.random.default_rng(0).normal(0, 3, (5000, 4))
    assert np.array_equal(fitted_shower.inverse_transform(z), loaded.inverse_transform(z))
    assert json.loads(path.read_text())["format"] == "pipelines-transform"


def test_from_dict_data_range_stays_refittable():
    t = Transform.from_dict(Chain([MinMaxLogit()]).fit(np.array([0.0, 2.0])).to_dict())
    assert t.steps[0].fit(np.array([5.0, 9.0])).high == 9.0
    assert Transform.from_dict(MinMaxLogit(low=0, high=4).to_dict()).fit(np.array([9.0, 10.0])).high == 4.0


def test_load_transform_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_transform(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "pipelines-transform", "transform": {"type": "Pickle"}}))
    with pytest.raises(DataError, match=r"other.json.*unknown transform type"):
        load_transform(other)
    with pytest.raises(ValueError):
        nan_t = Transform.from_dict({"type": "Standardize", "mean": 0.0, "std": 1.0})
        nan_t.mean = float("nan")
        save_transform(tmp_path / "nan.json", nan_t)
    assert not (tmp_path / "nan.json").exists()


# --------------------------------------------------------------------------------------------- CLI


def _clouds_file(path, ds2, seed=0) -> Clouds:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 60, 80)
    lengths[:2] = 0
    pts = random_points(ds2, int(lengths.sum()), seed + 1)
    split = np.zeros(80, np.int8)
    split[60:70], split[70:] = 1, 2
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    pts[offsets[60] :, 0] *= 1e4  # validation/test energies far off: fitting on them would show
    clouds = Clouds(pts, offsets, 10 ** rng.uniform(3, 6, (80, 1)), SHOWER_NAMES, ("incident_energy",), split)
    write_clouds(path, clouds)
    return clouds


def test_cli_fits_on_train_split_only(tmp_path, ds2):
    src = tmp_path / "clouds.h5"
    clouds = _clouds_file(src, ds2)
    out = tmp_path / "transforms.json"
    assert main(["--clouds", str(src), "--kind", "showers", "--dataset", "2", "--seed", "3",
                 "--out", str(out)]) == 0  # fmt: skip
    t = load_transform(out)
    train_energy = clouds.select(np.flatnonzero(clouds.split == 0)).points[:, 0].astype(np.float64)
    _, lmbda = scipy.stats.boxcox(train_energy)
    assert t.columns["energy"].steps[0].lmbda == pytest.approx(lmbda, abs=1e-6)
    # seeded: the same command writes the same file; a different seed changes the fitted noise stats
    out2, out3 = tmp_path / "again.json", tmp_path / "seed4.json"
    main(["--clouds", str(src), "--kind", "showers", "--dataset", "2", "--seed", "3", "--out", str(out2)])
    main(["--clouds", str(src), "--kind", "showers", "--dataset", "2", "--seed", "4", "--out", str(out3)])
    assert out.read_text() == out2.read_text() != out3.read_text()
    assert read_clouds(src).points.shape == clouds.points.shape


def test_cli_jets_and_errors(tmp_path, ds2):
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.normal(0, 0.1, 500), rng.normal(0, 0.1, 500), rng.lognormal(-3, 1, 500)])
    split = np.array([0] * 8 + [1] * 2, np.int8)
    pts[400:, 0] += 5.0  # clouds 8, 9 (validation) are shifted in eta_rel
    clouds = Clouds(pts, np.arange(0, 501, 50), np.ones((10, 3)), ("eta_rel", "phi_rel", "pt_rel"),
                    ("jet_pt", "jet_eta", "jet_mass"), split)  # fmt: skip
    src = tmp_path / "jets.h5"
    write_clouds(src, clouds)
    out = tmp_path / "jt.json"
    assert main(["--clouds", str(src), "--kind", "jets", "--out", str(out)]) == 0
    eta = load_transform(out).columns["eta_rel"].steps[0]
    assert eta.mean == pytest.approx(pts[:400, 0].astype(np.float32).astype(np.float64).mean(), rel=1e-12)
    with pytest.raises(DataError, match="jets.h5.*do not match"):
        main(["--clouds", str(src), "--kind", "showers", "--dataset", "2", "--out", str(out)])
    with pytest.raises(ValueError, match="unknown fit-transforms settings"):
        main(["--clouds", str(src), "--kind", "jets", "--out", str(out), "--settings", '{"bogus": 1}'])


def test_cli_subsamples_to_max_fit_points(tmp_path, ds2):
    src = tmp_path / "clouds.h5"
    _clouds_file(src, ds2)
    out = tmp_path / "sub.json"
    main(["--clouds", str(src), "--kind", "showers", "--dataset", "2", "--out", str(out),
          "--settings", '{"max_fit_points": 200}'])  # fmt: skip
    full = tmp_path / "full.json"
    main(["--clouds", str(src), "--kind", "showers", "--dataset", "2", "--out", str(full),
          "--settings", '{"max_fit_points": 0}'])  # fmt: skip
    assert load_transform(out).to_dict() != load_transform(full).to_dict()
