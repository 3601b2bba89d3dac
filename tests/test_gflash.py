"""Physics and behaviour of the GFlash shower generator (pipelines.generate.gflash).

The reference numbers come from the parametrisation itself, re-derived here independently of the
generator's code: the depth of maximum ln y - 0.812 X0 at 0.8 X0 per layer, the mean depth of a gamma
profile T alpha / (alpha - 1), an explicit spot-by-spot Monte Carlo (spots drawn from the spot profile
and the radial inverse CDF, energy weighted by energy / spot profile) against which the O(voxels)
sampler must agree, and the resolution sqrt(a^2 / E + (1 + 1 / kappa) / N_spot).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from pipelines.generate.gflash import (
    BLOCK_SIZE,
    GFlashSettings,
    generate_showers,
    radial_cdf,
    simulate_showers,
)
from pipelines.geometry import THRESHOLD_MEV, load_geometry

Z, A, X0_G_CM2 = 74.0, 183.84, 6.76
EC_MEV = 2.66 * (X0_G_CM2 * Z / A) ** 1.1
LAYER_X0 = 0.8
RM_MM = 9.3
ENERGIES_MEV = (1e3, 1e4, 1e5, 1e6)
N_PER_ENERGY = 300


@pytest.fixture(scope="module")
def geo2():
    return load_geometry("2")


@pytest.fixture(scope="module")
def fixed_energy_showers(geo2):
    """{E_MeV: (N, 45, 16, 9) voxel energies} for N_PER_ENERGY showers at each fixed energy."""
    return {
        e: simulate_showers(np.full(N_PER_ENERGY, e), geo2, seed=11, progress=False).reshape(-1, 45, 16, 9)
        for e in ENERGIES_MEV
    }


def _draw_t_alpha(energy_mev: float, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Independent implementation of the correlated (ln T, ln alpha) draw of hep-ex/0001020."""
    ln_y = math.log(energy_mev / EC_MEV)
    cov_rho = 0.705 - 0.023 * ln_y
    s_t, s_a = 1 / (-1.4 + 1.26 * ln_y), 1 / (-0.58 + 0.86 * ln_y)
    cov = [[s_t**2, cov_rho * s_t * s_a], [cov_rho * s_t * s_a, s_a**2]]
    mean = [math.log(ln_y - 0.812), math.log(0.81 + (0.458 + 2.26 / Z) * ln_y)]
    ln_t, ln_a = rng.multivariate_normal(mean, cov, size=n).T
    return np.exp(ln_t), np.exp(ln_a)


def _spot_monte_carlo(energy_mev: float, n_showers: int, rng: np.random.Generator):
    """Explicit spot-level GFlash: mean energy fraction per layer (45,) and per dataset-2 radial bin (9,)."""
    t_max, alpha = _draw_t_alpha(energy_mev, n_showers, rng)
    mean_alpha = 0.81 + (0.458 + 2.26 / Z) * math.log(energy_mev / EC_MEV)
    n_spots = int(round(93 * math.log(Z) * (energy_mev / 1e3) ** 0.876))
    beta = (alpha - 1) / t_max
    t_spot, a_spot = t_max * (0.698 + 0.00212 * Z), alpha * (0.639 + 0.00334 * Z)
    b_spot = (a_spot - 1) / t_spot
    depth = rng.gamma(a_spot[:, None], 1 / b_spot[:, None], size=(n_showers, n_spots))
    weight = np.exp(
        stats.gamma.logpdf(depth, alpha[:, None], scale=1 / beta[:, None])
        - stats.gamma.logpdf(depth, a_spot[:, None], scale=1 / b_spot[:, None])
    )
    spot_energy = energy_mev * weight / n_spots
    tau = depth / t_max[:, None] * ((alpha - 1) / alpha)[:, None] * mean_alpha / (mean_alpha - 1)
    ln_e = math.log(energy_mev / 1e3)
    r_core = 0.0251 + 0.00319 * ln_e + (0.1162 - 0.000381 * Z) * tau
    k4 = 0.3585 + 0.0421 * ln_e
    r_tail = (0.659 - 0.00309 * Z) * (np.exp(-2.59 * (tau - 0.645)) + np.exp(k4 * (tau - 0.645)))
    x = (0.401 + 0.00187 * Z - tau) / (1.313 - 0.0686 * ln_e)
    p = (2.632 - 0.00094 * Z) * np.exp(x - np.exp(x))
    u = rng.uniform(size=depth.shape)
    radius = np.where(rng.uniform(size=depth.shape) < p, r_core, r_tail) * np.sqrt(u / (1 - u))
    layer = np.floor(depth / LAYER_X0).astype(int)
    rbin = np.floor(radius * RM_MM / 4.65).astype(int)
    inside = (layer < 45) & (rbin < 9)
    per_layer = np.bincount(layer[inside], spot_energy[inside], minlength=45) / (n_showers * energy_mev)
    per_rbin = np.bincount(rbin[inside], spot_energy[inside], minlength=9) / (n_showers * energy_mev)
    return per_layer, per_rbin


# ------------------------------------------------------------------------------------ closed forms


def test_radial_cdf_is_the_integral_of_the_two_component_profile():
    r_core, r_tail, p = 0.3, 1.7, 0.8

    def density(r: float) -> float:
        core = 2 * r * r_core**2 / (r**2 + r_core**2) ** 2
        tail = 2 * r * r_tail**2 / (r**2 + r_tail**2) ** 2
        return p * core + (1 - p) * tail

    for r in (0.1, 0.5, 1.0, 4.5):
        expected = integrate.quad(density, 0, r)[0]
        assert radial_cdf(np.array(r), r_core, r_tail, p) == pytest.approx(expected, rel=1e-9)
    assert radial_cdf(np.array(0.0), r_core, r_tail, p) == 0.0
    assert radial_cdf(np.array(1e6), r_core, r_tail, p) == pytest.approx(1.0, abs=1e-9)
    # median of one component: r = R sqrt(u / (1 - u)) at u = 1/2 is R
    assert radial_cdf(np.array(r_core), r_core, r_tail, 1.0) == pytest.approx(0.5)


# ---------------------------------------------------------------------------------- longitudinal


def test_shower_maximum_follows_ln_y_minus_0812(fixed_energy_showers):
    layers = {}
    for e, grid in fixed_energy_showers.items():
        profile = grid.sum(axis=(2, 3)).mean(axis=0)
        predicted = (math.log(e / EC_MEV) - 0.812) / LAYER_X0  # depth of maximum in layers
        layers[e] = int(np.argmax(profile))
        assert abs(layers[e] - (predicted - 0.5)) <= 1.0, (e, layers[e], predicted)
    # 1 GeV -> layer 5, 1 TeV -> layer 14 (gflash.md): slope ln(1000) / 0.8 = 8.6 layers
    assert 7 <= layers[1e6] - layers[1e3] <= 10


def test_mean_depth_matches_gamma_profile_mean(fixed_energy_showers):
    rng = np.random.default_rng(3)
    for e, grid in fixed_energy_showers.items():
        profile = grid.sum(axis=(2, 3)).mean(axis=0)
        measured = (profile * np.arange(45)).sum() / profile.sum()
        t_max, alpha = _draw_t_alpha(e, 200_000, rng)
        predicted = np.mean(t_max * alpha / (alpha - 1)) / LAYER_X0 - 0.5  # layer index of the mean depth
        assert measured == pytest.approx(predicted, abs=0.25), (e, measured, predicted)


def test_voxel_sampler_agrees_with_explicit_spot_monte_carlo(geo2, fixed_energy_showers):
    rng = np.random.default_rng(5)
    for e in (1e3, 1e4):
        per_layer, per_rbin = _spot_monte_carlo(e, 400, rng)
        grid = fixed_energy_showers[e]
        gen_layer = grid.sum(axis=(2, 3)).mean(axis=0) / e
        gen_rbin = grid.sum(axis=(1, 2)).mean(axis=0) / e
        assert np.abs(gen_layer - per_layer).max() < 0.01, (e, gen_layer - per_layer)
        assert np.abs(gen_rbin - per_rbin).max() < 0.015, (e, gen_rbin - per_rbin)
        assert gen_layer.sum() == pytest.approx(per_layer.sum(), abs=0.02)


# ---------------------------------------------------------------------------------------- radial


def test_radial_profile_core_dominates_and_narrows_toward_the_maximum(fixed_energy_showers):
    for e, grid in fixed_energy_showers.items():
        layer_energy = grid.sum(axis=(0, 2))  # (45, 9)
        inner = layer_energy[:, 0] / np.maximum(layer_energy.sum(axis=1), 1e-30)
        l_max = int(np.argmax(layer_energy.sum(axis=1)))
        assert inner[l_max] > 0.6, (e, inner[l_max])  # the core dominates at the maximum
        assert inner[0] < inner[max(1, l_max // 2)], (e, inner[: l_max + 1])  # narrows before the maximum
        assert inner[min(44, 2 * l_max + 2)] < inner[l_max] - 0.15  # and widens in the tail
        # about 90% of an electromagnetic shower's energy lies within one Moliere radius (2 bins)
        radial = layer_energy.sum(axis=0)
        assert 0.85 < radial[:2].sum() / radial.sum() < 0.95


def test_azimuthal_symmetry(fixed_energy_showers):
    for grid in fixed_energy_showers.values():
        per_alpha = grid.sum(axis=(1, 3))  # (N, 16)
        frac = per_alpha / per_alpha.sum(axis=1, keepdims=True)
        mean, err = frac.mean(axis=0), frac.std(axis=0) / math.sqrt(len(frac))
        chi2 = np.sum(((mean - 1 / 16) / err) ** 2)
        assert stats.chi2.sf(chi2, 15) > 1e-4, chi2


# -------------------------------------------------------------------------- totals and multiplicity


def test_visible_fraction_and_hit_multiplicity(fixed_energy_showers):
    hits, visible = [], []
    for e, grid in fixed_energy_showers.items():
        flat = grid.reshape(len(grid), -1)
        visible.append(flat.sum(axis=1).mean() / e)
        hits.append((flat > 0).sum(axis=1).mean())
    # leakage (radial beyond 4.5 R_M, longitudinal beyond 36 X0) removes about 1%
    assert all(0.95 < v < 1.02 for v in visible), visible
    assert all(np.diff(hits) > 0), hits
    # dataset 2: ~120 hits at 1 GeV up to ~5,600 at 1 TeV
    assert 100 < hits[0] < 500 and 2500 < hits[-1] < 6000, hits


def test_resolution_combines_spot_and_sampling_fluctuations(geo2):
    e = 1e4
    n_spots = 93 * math.log(Z) * (e / 1e3) ** 0.876
    for a, kappa in ((0.0, 1.0), (0.0, 4.0), (0.3, 1.0)):
        s = GFlashSettings(sampling_term=a, kappa=kappa)
        total = simulate_showers(np.full(600, e), geo2, seed=2, settings=s, progress=False).sum(axis=1)
        predicted = math.sqrt(a**2 / (e / 1e3) + (1 + 1 / kappa) / n_spots)
        assert total.std() / total.mean() == pytest.approx(predicted, rel=0.15), (a, kappa)


def test_log_uniform_incident_energies(geo2):
    energies, showers = generate_showers(400, geo2, seed=4, progress=False)
    assert energies.min() >= 1e3 and energies.max() <= 1e6
    assert stats.kstest(np.log(energies), stats.uniform(math.log(1e3), math.log(1e3)).cdf).pvalue > 1e-3
    narrow = GFlashSettings(e_min_mev=2e4, e_max_mev=5e4)
    energies, _ = generate_showers(100, geo2, seed=4, settings=narrow, progress=False)
    assert energies.min() >= 2e4 and energies.max() <= 5e4
    hits = (showers > 0).sum(axis=1)
    assert 800 < hits.mean() < 2500  # dataset 2: about 1,600 on average


# -------------------------------------------------------------------------------- output contract


def test_output_values_threshold_and_types(geo2):
    energies, showers = generate_showers(200, geo2, seed=7, progress=False)
    assert showers.dtype == np.float32 and showers.shape == (200, 6480)
    assert energies.dtype == np.float64 and energies.shape == (200,)
    assert np.all(np.isfinite(showers)) and np.all(showers >= 0)
    assert not np.any((showers > 0) & (showers < THRESHOLD_MEV))
    assert np.any((showers > THRESHOLD_MEV) & (showers < 3 * THRESHOLD_MEV))  # threshold is the cut-off
    assert np.all(showers.sum(axis=1) > 0)


def test_determinism_independent_of_chunk_size(geo2):
    a = generate_showers(250, geo2, seed=9, chunk_size=BLOCK_SIZE, progress=False)
    b = generate_showers(250, geo2, seed=9, chunk_size=3 * BLOCK_SIZE, progress=False)
    c = generate_showers(250, geo2, seed=10, progress=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_dataset3_has_the_same_radial_profile_in_mm(geo2):
    geo3 = load_geometry("3")
    e = np.full(100, 3e4)
    s2 = simulate_showers(e, geo2, seed=12, progress=False).reshape(100, 45, 16, 9)
    s3 = simulate_showers(e, geo3, seed=12, progress=False).reshape(100, 45, 50, 18)
    assert s3.shape == (100, 45, 50, 18)
    r2 = s2.sum(axis=(0, 1, 2))
    r3 = s3.sum(axis=(0, 1, 2))
    np.testing.assert_allclose(r3[0::2] + r3[1::2], r2, rtol=0.03, atol=1e-3 * r2.sum())
    layers2, layers3 = s2.sum(axis=(0, 2, 3)), s3.sum(axis=(0, 2, 3))
    np.testing.assert_allclose(layers3, layers2, rtol=0.03, atol=1e-3 * r2.sum())


# ------------------------------------------------------------------------------------- bad input


def test_bad_settings_raise_value_error(geo2):
    with pytest.raises(ValueError, match="unknown generate-showers settings"):
        GFlashSettings.from_json('{"kapa": 1.0}')
    with pytest.raises(ValueError, match="JSON object"):
        GFlashSettings.from_json("[1, 2]")
    with pytest.raises(ValueError, match="kappa"):
        GFlashSettings(kappa=0.0)
    with pytest.raises(ValueError, match="e_max_mev"):
        GFlashSettings(e_min_mev=1e4, e_max_mev=1e3)
    with pytest.raises(ValueError, match="e_min_mev"):
        GFlashSettings(e_min_mev=10.0)
    with pytest.raises(ValueError, match="chunk_size"):
        generate_showers(10, geo2, seed=0, chunk_size=150, progress=False)
    with pytest.raises(ValueError, match="per-layer geometry of dataset 1-photons needs layer_depths_x0"):
        generate_showers(10, load_geometry("1-photons"), seed=0, progress=False)
    assert GFlashSettings.from_json('{"sampling_term": 0.1}') == GFlashSettings(sampling_term=0.1)


def test_cli_writes_a_calochallenge_file(tmp_path, geo2):
    from pipelines.generate.gflash import main
    from pipelines.io.calochallenge import read_calochallenge

    out = tmp_path / "gflash.h5"
    settings = '{"e_min_mev": 5000, "e_max_mev": 20000}'
    assert main(["--dataset", "2", "--n-showers", "120", "--seed", "3", "--settings", settings,
                 "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    energies, showers = read_calochallenge(out, geo2)
    ref_e, ref_s = generate_showers(
        120, geo2, seed=3, settings=GFlashSettings(e_min_mev=5000, e_max_mev=20000), progress=False
    )
    np.testing.assert_allclose(energies, ref_e, rtol=1e-6)
    np.testing.assert_array_equal(showers, ref_s)
    with pytest.raises(ValueError, match="unknown"):
        main(["--n-showers", "10", "--seed", "0", "--settings", '{"x": 1}', "--out", str(tmp_path / "x.h5")])
    assert not (tmp_path / "x.h5").exists()


def test_generated_showers_pass_the_input_checks_without_warnings(tmp_path, geo2, fixed_energy_showers):
    """The embedded data meet the documented physics contract, including at 1 GeV and 1 TeV."""
    from pipelines.cli import main as cli
    from pipelines.io.calochallenge import write_calochallenge
    from pipelines.io.physics import ShowerChecks

    checks = ShowerChecks("fixed")
    for i, (energy, showers) in enumerate(fixed_energy_showers.items()):
        checks.update(i * N_PER_ENERGY, np.full(N_PER_ENERGY, energy), showers.reshape(N_PER_ENERGY, -1))
    assert checks.finish() == []
    path, out = tmp_path / "gflash.h5", tmp_path / "summary.json"
    write_calochallenge(path, *generate_showers(400, geo2, seed=3, progress=False))
    assert cli(["validate", "--kind", "showers", "--input", str(path), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["warnings"] == []
