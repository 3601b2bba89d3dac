"""CaloChallenge dataset 1 (photons, pions): per-layer binnings through conversion, features and checks.

Golden values: ``HighLevelFeatures("photon" | "pion", "binning_dataset_1_<particle>.xml")`` of the
CaloChallenge code (github.com/CaloChallenge/homepage, code/ at commit 9b41df72) run once on the
thresholded showers of tests/data/golden_ds1.npz (make_golden_ds1.py) as float64, pinned per (particle,
feature) by three sums over showers n and the feature's layers l (the official dicts in layer order):
sum v, sum (v * w) with w = (L n + l) mod 11 + 1, and sum |v|; the high-level classifier vector is that
of evaluate.py's prepare_high_data_for_classifier, built from the same HighLevelFeatures object.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from golden_fixtures import golden_ds1

from pipelines.geometry import load_geometry
from pipelines.metrics.calo_features import angular_columns, compute_features, histogram_specs
from pipelines.pointcloud import points_to_voxels, voxels_to_points

GEOMETRY = {"photons": "1-photons", "pions": "1-pions"}
OFFICIAL_SUMS = {
    ("photons", "e_tot"): (17521094.6372229, 80230545.18372044, 17521094.6372229),
    ("photons", "e_layer"): (17521094.6372229, 89904705.04298332, 17521094.6372229),
    ("photons", "ec_eta"): (-271.95162519343376, -514.3097159016652, 1802.723114119591),
    ("photons", "ec_phi"): (34.480687914189474, 1309.3557214620355, 1666.4689845291773),
    ("photons", "width_eta"): (5671.596057833622, 32690.301593979613, 5671.596057833622),
    ("photons", "width_phi"): (5727.997253623167, 32399.105958592834, 5727.997253623167),
    ("photons", "sparsity"): (181.35394736842107, 1083.05, 181.35394736842107),
    ("photons", "ec_r"): (25122.988078328675, 146245.35180121084, 25122.988078328675),
    ("photons", "width_r"): (7201.805312200877, 43566.803330499286, 7201.805312200877),
    ("pions", "e_tot"): (19111635.018749394, 100333861.14274327, 19111635.018749394),
    ("pions", "e_layer"): (19111635.018749394, 115045817.00837314, 19111635.018749394),
    ("pions", "ec_eta"): (668.484305333029, 7762.3128752829825, 8914.150833973294),
    ("pions", "ec_phi"): (-2644.2783307252444, -15585.32183380226, 10570.921634775623),
    ("pions", "width_eta"): (24279.47517872896, 150267.4129246178, 24279.47517872896),
    ("pions", "width_phi"): (23897.72809303573, 142505.26142766583, 23897.72809303573),
    ("pions", "sparsity"): (259.82958333333335, 1548.3066666666666, 259.82958333333335),
    ("pions", "ec_r"): (43247.489780852105, 249939.49150967965, 43247.489780852105),
    ("pions", "width_r"): (30297.83362027557, 180647.2931607974, 30297.83362027557),
}
# prepare_high_data_for_classifier (label column dropped): (dimension, sum, weighted sum, sum of |v|)
OFFICIAL_VECTOR = {
    "photons": (30, 930.5530887550715, 5590.7705759300625, 2039.6197191143515),
    "pions": (46, 2092.1871746395063, 12623.307257675999, 3365.145515736629),
}
ANGULAR = ("ec_eta", "ec_phi", "width_eta", "width_phi")


def _sums(v: np.ndarray) -> tuple[float, float, float]:
    n, k = v.shape
    w = (np.arange(n)[:, None] * k + np.arange(k)[None, :]) % 11 + 1.0
    return float(v.sum()), float((w * v).sum()), float(np.abs(v).sum())


@pytest.mark.parametrize("particle", ["photons", "pions"])
def test_features_match_official_high_level_features(particle):
    geometry = load_geometry(GEOMETRY[particle])
    e_inc, showers = golden_ds1(particle)
    f = compute_features(e_inc, showers, geometry)
    angular = angular_columns(geometry)
    for name in ("e_tot", "e_layer", "sparsity", "ec_r", "width_r", *ANGULAR):
        v = f.e_tot[:, None] if name == "e_tot" else getattr(f, name)
        if name in ANGULAR:
            v = v[:, angular]  # the official code has x/y centres and widths for alpha-binned layers only
        rel = 1e-8 if name.startswith("width") else 1e-12
        assert _sums(v) == pytest.approx(OFFICIAL_SUMS[(particle, name)], rel=rel, abs=1e-9), name
    vector = f.high_level_vector(angular)
    dim, *sums = OFFICIAL_VECTOR[particle]
    assert vector.shape == (len(e_inc), dim)
    assert _sums(vector) == pytest.approx(tuple(sums), rel=1e-10)


def test_photon_features_by_hand():
    """One shower: 2 MeV at (layer 1, alpha bin 0, r bin 0) and 6 MeV at (layer 1, alpha bin 5, r bin 1);
    alpha centres -0.9 pi and 0.1 pi, r centres 1 and 3 mm; 4 MeV in layer 12's first ring (centre 50 mm)."""
    geometry = load_geometry("1-photons")
    shower = np.zeros((1, 368), dtype=np.float32)
    start1 = 8  # layer 0 has 8 voxels; layer 1: 10 alpha x 16 r, r fastest
    shower[0, start1 + 0 * 16 + 0] = 2.0
    shower[0, start1 + 5 * 16 + 1] = 6.0
    start12 = 8 + 160 + 190 + 5
    shower[0, start12] = 4.0
    f = compute_features(np.array([1024.0]), shower, geometry)
    x = np.array([np.cos(-0.9 * np.pi), 3 * np.cos(0.1 * np.pi)])
    y = np.array([np.sin(-0.9 * np.pi), 3 * np.sin(0.1 * np.pi)])
    w = np.array([2.0, 6.0]) / 8.0
    assert list(geometry.filled_layers) == [0, 1, 2, 3, 12]
    assert f.e_layer[0] == pytest.approx([0, 8, 0, 0, 4])
    assert f.ec_eta[0, 1] == pytest.approx((w * x).sum())
    assert f.ec_phi[0, 1] == pytest.approx((w * y).sum())
    assert f.width_eta[0, 1] == pytest.approx(np.sqrt((w * x * x).sum() - (w * x).sum() ** 2))
    assert f.ec_r[0, 1] == pytest.approx(2.5) and f.width_r[0, 1] == pytest.approx(np.sqrt(0.75))  # <r^2> = 7
    assert f.ec_r[0, 4] == pytest.approx(50.0) and f.width_r[0, 4] == 0.0
    assert f.sparsity[0] == pytest.approx([1.0, 1 - 2 / 160, 1.0, 1.0, 1 - 1 / 5])


def test_histograms_cover_filled_layers_with_official_ranges():
    geometry = load_geometry("1-pions")
    e_inc, showers = golden_ds1("pions")
    features = compute_features(e_inc, showers, geometry)
    specs = {s.name: s for s in histogram_specs(features, 1e3, geometry=geometry)}
    assert sorted(n for n in specs if n.startswith("E_layer")) == [
        f"E_layer_{i:02d}" for i in (0, 1, 2, 3, 12, 13, 14)
    ]
    assert sorted(n for n in specs if n.startswith("EC_eta")) == [f"EC_eta_{i:02d}" for i in (1, 2, 12, 13)]
    assert (specs["EC_eta_12"].edges[0], specs["EC_eta_02"].edges[-1]) == (-500.0, 100.0)
    assert (specs["EC_r_14"].edges[-1], specs["width_r_03"].edges[-1], specs["width_eta_13"].edges[-1]) == (
        1500.0,
        500.0,
        400.0,
    )
    assert specs["E_layer_13"].column == 5


@pytest.mark.parametrize(("name", "n_voxels"), [("1-photons", 368), ("1-pions", 533)])
def test_voxels_points_voxels_exact_round_trip(name, n_voxels):
    geometry = load_geometry(name)
    assert geometry.n_voxels == n_voxels
    rng = np.random.default_rng(3)
    showers = np.where(rng.random((30, n_voxels)) < 0.2, rng.exponential(5.0, (30, n_voxels)), 0.0)
    showers = showers.astype(np.float32)
    showers[4] = 0.0  # an empty shower
    points, lengths = voxels_to_points(showers, geometry)
    assert set(np.unique(points[:, 1]).astype(int)) <= set(geometry.filled_layers.tolist())
    per_layer_r = np.array([len(e) - 1 for e in geometry.layer_r_edges])
    assert np.all(points[:, 3] < per_layer_r[points[:, 1].astype(int)])
    back, collided = points_to_voxels(points, lengths, geometry)
    assert collided == 0
    np.testing.assert_array_equal(back, showers)


def test_points_in_empty_layers_go_to_the_nearest_filled_layer():
    geometry = load_geometry("1-photons")  # filled: 0, 1, 2, 3, 12
    points = np.array([[1.0, 5.0, 0.0, 0.0], [2.0, 9.0, 0.0, 0.0], [4.0, 23.0, 0.0, 7.0]], dtype=np.float32)
    voxels, _ = points_to_voxels(points, np.array([3]), geometry)
    start12 = 8 + 160 + 190 + 5
    assert voxels[0, 8 + 160 + 190] == 1.0  # layer 5 -> 3 (first voxel of layer 3)
    assert voxels[0, start12] == 2.0  # layer 9 -> 12
    assert voxels[0, start12 + 4] == 4.0  # layer 23 -> 12, r clamped to its last bin


def test_compact_grid_holds_every_voxel_once():
    geometry = load_geometry("1-pions")
    assert geometry.compact_shape == (7, 10, 16)
    values = np.arange(1, geometry.n_voxels + 1, dtype=np.float64)
    grid = geometry.to_compact(values)
    assert grid.sum() == values.sum() and np.count_nonzero(grid) == geometry.n_voxels
    assert grid[4, 0, 14] == values[8 + 100 + 100 + 5 + 14]  # layer 12, alpha 0, last r bin


# ------------------------------------------------------------------ GFlash photons in the photon geometry


def _photons(n: int, energy_mev: float) -> np.ndarray:
    from pipelines.generate.gflash import simulate_showers
    from pipelines.generate.gflash_settings import GFlashSettings

    settings = GFlashSettings.from_json("{}", "1-photons")
    return simulate_showers(np.full(n, energy_mev), load_geometry("1-photons"), 7, settings, progress=False)


def _layer_fractions(showers: np.ndarray, energy_mev: float) -> np.ndarray:
    geometry = load_geometry("1-photons")
    starts = np.concatenate([[0], np.cumsum(geometry.layer_n_voxels)])
    return (
        np.stack([showers[:, starts[i] : starts[i + 1]].sum(axis=1) for i in geometry.filled_layers], 1)
        / energy_mev
    )


@pytest.mark.parametrize("energy_mev", [256.0, 65536.0])
def test_gflash_photons_conserve_energy_within_sampling_fluctuations(energy_mev):
    showers = _photons(300, energy_mev)
    ratio = showers.sum(axis=1) / energy_mev
    sampling = 0.10 / np.sqrt(energy_mev / 1e3)  # the Gaussian sampling term alone
    assert sampling < ratio.std() < 3 * sampling
    # leakage beyond layer 12 (43.8 X0) and 2 m is negligible: the mean is 1 within its standard error
    assert abs(ratio.mean() - 1.0) < 4 * ratio.std() / np.sqrt(len(ratio))


def test_gflash_photon_layer_profile_peaks_at_the_shower_maximum():
    """Median depth of maximum ln(E / Ec) - 0.812 X0 (Ec = 8.0 MeV): 2.6 X0 at 256 MeV, inside the strips
    (layer 1, 1.5 to 5.8 X0); 8.2 X0 at 64 GeV, inside the middle layer (layer 2, 5.8 to 21.8 X0)."""
    low, high = (_layer_fractions(_photons(200, e), e).mean(axis=0) for e in (256.0, 65536.0))
    assert np.argmax(low) == 1 and np.argmax(high) == 2  # columns: layers 0, 1, 2, 3, 12
    assert low[0] > 5 * high[0]  # the presampler sees the low-energy showers' start
    assert low[3] + low[4] < high[3] + high[4]  # and the back layers the high-energy showers' tail


def test_gflash_photon_energies_and_settings():
    from pipelines.generate.gflash import generate_showers, sample_incident_energies
    from pipelines.generate.gflash_settings import GFlashSettings

    s = GFlashSettings.from_json('{"sampling_term": 0.2}', "1-photons")
    assert (s.sampling_term, s.moliere_radius_mm, s.e_min_mev) == (0.2, 45.0, 256.0)
    energies = sample_incident_energies(3000, 5, s)
    assert set(np.unique(energies)) == {2.0**k for k in range(8, 23)}
    with pytest.raises(ValueError, match="electromagnetic"):
        generate_showers(10, load_geometry("1-pions"), 1, s, progress=False)
    with pytest.raises(ValueError, match="layer_depths_x0 has 3 values"):
        generate_showers(10, load_geometry("1-photons"), 1, GFlashSettings(layer_depths_x0=(1.0, 2.0, 3.0)))
    with pytest.raises(ValueError, match="incident_energies"):
        GFlashSettings(incident_energies="uniform")


def test_gflash_photon_file_passes_the_input_checks(tmp_path):
    from pipelines.generate import gflash
    from pipelines.validate import main as validate

    data = tmp_path / "photons.h5"
    gflash.main(
        ["--dataset", "1-photons", "--n-showers", "300", "--seed", "2", "--out", str(data), "--no-progress"]
    )
    summary = tmp_path / "s.json"
    assert (
        validate(["--kind", "showers", "--dataset", "1-photons", f"--input={data}", "--out", str(summary)])
        == 0
    )
    doc = json.loads(summary.read_text())
    assert doc["showers"] == 300 and doc["warnings"] == []


@pytest.mark.parametrize(
    ("dataset", "geant4_auc_high", "best"),
    [("1-photons", "0.4995 ± 0.0030", "CaloDiffusion"), ("1-pions", "0.5579 ± 0.0024", "CaloDiffusion")],
)
def test_report_shows_published_dataset1_rows_for_real_files(dataset, geant4_auc_high, best):
    """The rows of published_results_ds1_*.csv (arXiv:2410.21611): Geant4 vs Geant4, and the submission
    whose high-level AUC is closest to 0.5 (CaloDiffusion: 0.5364 photons, 0.6524 pions)."""
    from pipelines.report import html, published

    runs = [{"metrics": {"kind": "showers", "dataset": dataset}, "label": "run"}]
    (table,), notes = html._published_tables(runs, published.DEFAULT_MODELS)
    assert notes == [] and table["source"] == f"published_results_ds1_{dataset[2:]}.csv"
    rows = {row["name"]: row for row in table["rows"]}
    assert list(rows) == ["GEANT4", best]
    assert rows["GEANT4"]["cells"][1] == geant4_auc_high


def test_report_labels_compact_grid_rows_with_layer_ids():
    from pipelines.report.plots import filled_layer_ids

    assert filled_layer_ids("1-pions", 7).tolist() == [0, 1, 2, 3, 12, 13, 14]
    assert filled_layer_ids("calochallenge_dataset_1-photons", 5).tolist() == [0, 1, 2, 3, 12]
    assert filled_layer_ids("2", 45) is None and filled_layer_ids("1-photons", 24) is None
