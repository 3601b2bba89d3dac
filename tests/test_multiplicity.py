"""Multiplicity models p(n | E) / p(n): fit known distributions, bounds, zeros, persistence, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from pipelines.io.clouds import Clouds, read_clouds, write_clouds
from pipelines.io.errors import DataError
from pipelines.models.multiplicity import (
    CategoricalMultiplicity,
    MixtureMultiplicity,
    MultiplicitySettings,
    fit_multiplicity,
    load_multiplicity,
    main,
    save_multiplicity,
)

N_MAX = 600
FAST = MultiplicitySettings(steps=400, batch_size=1024, seed=3)


def true_mean(e: np.ndarray) -> np.ndarray:
    """Poisson mean of the synthetic truth: 20 (E / GeV)^0.5."""
    return 20.0 * (np.asarray(e) / 1e3) ** 0.5


def synthetic_showers(m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """E log-uniform in [1, 1000] GeV; n ~ Poisson(20 (E/GeV)^0.5), 20 % zeros below 3 GeV, n <= N_MAX."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e6), m))
    n = rng.poisson(true_mean(e))
    n[(e < 3e3) & (rng.random(m) < 0.2)] = 0
    return e, np.minimum(n, N_MAX)


@pytest.fixture(scope="module")
def fitted() -> tuple[MixtureMultiplicity, np.ndarray, np.ndarray]:
    e, n = synthetic_showers(3000, seed=1)
    model = fit_multiplicity(n, "showers", N_MAX, e, FAST)
    assert isinstance(model, MixtureMultiplicity)
    return model, e, n


def test_generated_n_follows_training_distribution_overall_and_in_energy_bins(fitted) -> None:
    model, _, _ = fitted
    e, n = synthetic_showers(3000, seed=2)  # an independent sample of the same truth
    gen = model.sample(np.random.default_rng(5), conditions=e)
    assert gen.dtype == np.int64 and gen.shape == n.shape
    assert stats.ks_2samp(n, gen).pvalue > 1e-3
    for lo, hi in [(1e3, 3e3), (3e3, 3e4), (3e4, 1e6)]:
        sel = (e >= lo) & (e < hi)
        assert stats.ks_2samp(n[sel], gen[sel]).pvalue > 1e-3, (lo, hi)
    low = e < 3e3  # zero-hit showers are represented, at the right rate (20 % of this bin)
    assert abs(np.mean(gen[low] == 0) - np.mean(n[low] == 0)) < 0.06
    assert np.mean(gen[~low] == 0) < 0.01


def test_conditional_mean_tracks_energy(fitted) -> None:
    model, _, _ = fitted
    energies = np.array([5e3, 2e4, 1e5, 4e5])
    pmf = model.pmf(energies)
    np.testing.assert_allclose(pmf.sum(axis=1), 1.0, atol=1e-9)
    mean = pmf @ np.arange(N_MAX + 1)
    np.testing.assert_allclose(mean, true_mean(energies), rtol=0.08)
    assert np.all(np.diff(mean) > 0)


def test_samples_never_exceed_n_max_and_are_non_negative_integers(fitted) -> None:
    model, _, _ = fitted
    gen = model.sample(np.random.default_rng(0), conditions=np.full(20000, 1e6))  # truth mean 632 > N_MAX
    assert gen.min() >= 0 and gen.max() <= N_MAX
    assert np.mean(gen == N_MAX) > 0.05  # the mass above n_max is folded into the allowed range's top


def test_save_load_round_trip_gives_identical_samples(fitted, tmp_path) -> None:
    model, e, _ = fitted
    path = tmp_path / "mult.json"
    save_multiplicity(path, model)
    loaded = load_multiplicity(path)
    a = model.sample(np.random.default_rng(11), conditions=e)
    b = loaded.sample(np.random.default_rng(11), conditions=e)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, model.sample(np.random.default_rng(12), conditions=e))


def test_fit_is_seeded() -> None:
    e, n = synthetic_showers(500, seed=4)
    s = MultiplicitySettings(steps=30, batch_size=256, seed=1)
    a = fit_multiplicity(n, "showers", N_MAX, e, s).to_dict()
    b = fit_multiplicity(n, "showers", N_MAX, e, s).to_dict()
    assert a == b


def test_all_zero_training_set_gives_zero_hit_showers() -> None:
    e = np.geomspace(1e3, 1e6, 200)
    model = fit_multiplicity(np.zeros(200, int), "showers", N_MAX, e, MultiplicitySettings(steps=200))
    assert np.mean(model.sample(np.random.default_rng(0), conditions=e) == 0) > 0.97


def test_jet_categorical_is_the_exact_frequency_and_respects_slots(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = np.minimum(rng.poisson(25, 4000), 30)  # a spike at the 30-slot limit, like JetNet30
    model = fit_multiplicity(n, "jets", 30)
    assert isinstance(model, CategoricalMultiplicity)
    np.testing.assert_allclose(model.probs, np.bincount(n, minlength=31) / len(n))
    gen = model.sample(np.random.default_rng(1), size=4000)
    assert gen.max() <= 30 and stats.ks_2samp(n, gen).pvalue > 1e-3
    path = tmp_path / "jets.json"
    save_multiplicity(path, model)
    np.testing.assert_array_equal(
        load_multiplicity(path).sample(np.random.default_rng(2), size=50),
        model.sample(np.random.default_rng(2), size=50),
    )


def test_bad_inputs_raise_clear_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown multiplicity settings"):
        MultiplicitySettings.from_json('{"stepz": 3}')
    with pytest.raises(ValueError, match="counts must be integers"):
        fit_multiplicity(np.array([1, 2, 700]), "jets", 30)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_multiplicity(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DataError, match="not a multiplicity model"):
        load_multiplicity(bad)


def _clouds(e: np.ndarray, n: np.ndarray, split: np.ndarray, dataset: str = "2") -> Clouds:
    points = np.zeros((int(n.sum()), 4), dtype=np.float32)
    points[:, 0] = 1.0
    return Clouds(points, np.concatenate([[0], np.cumsum(n)]), e[:, None], ("energy", "layer", "alpha", "r"),
                  ("incident_energy",), split, {"dataset": dataset})  # fmt: skip


def test_cli_fits_on_the_train_split_only(tmp_path) -> None:
    e, n = synthetic_showers(600, seed=7)
    n = np.maximum(n, 1)
    split = np.zeros(len(n), dtype=np.int8)
    split[400:] = 1
    n[400:] = 0  # validation clouds are all empty: the fit must not see them
    write_clouds(tmp_path / "c.h5", _clouds(e, n, split))
    out = tmp_path / "m.json"
    settings = json.dumps({"steps": 150, "batch_size": 512})
    args = [
        "--clouds",
        str(tmp_path / "c.h5"),
        "--kind",
        "showers",
        "--settings",
        settings,
        "--out",
        str(out),
    ]
    assert main([*args, "--out-plot", str(tmp_path / "m.png")]) == 0
    model = load_multiplicity(out)
    assert model.n_max == 6480 and model.conditional  # dataset 2 voxel count from the clouds attrs
    assert model.pmf(np.array([1e4]))[0, 0] < 0.05
    assert (tmp_path / "m.png").stat().st_size > 0
    assert read_clouds(tmp_path / "c.h5").attrs["dataset"] == "2"
