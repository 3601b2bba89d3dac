"""High-level shower features on hand-made showers, chunked file scans and the evaluate-showers stage."""

import json

import numpy as np
import pytest

from pipelines.geometry import THRESHOLD_MEV, load_geometry, parse_binning_xml
from pipelines.io.calochallenge import write_calochallenge
from pipelines.metrics import evaluate_showers as ev
from pipelines.metrics.calo_features import (
    ShowerFeatures,
    compute_features,
    histogram_specs,
    log_edges,
    scan_file,
    voxel_energy_counts,
)
from pipelines.metrics.separation import counted_separation_power

G = load_geometry("2")
DR = 4.65  # dataset-2 radial bin, mm
ALPHA = -np.pi + (np.arange(16) + 0.5) * 2 * np.pi / 16  # alpha bin centres, rad


def _shower(*voxels):
    s = np.zeros((1, G.n_voxels), np.float32)
    for layer, a, r, e in voxels:
        s[0, (layer * 16 + a) * 9 + r] = e
    return s


def test_one_voxel_shower():
    f = compute_features([1000.0], _shower((3, 5, 2, 10.0)), G)
    rc = 2.5 * DR
    assert f.e_tot[0] == pytest.approx(10.0) and f.e_ratio[0] == pytest.approx(0.01)
    assert f.e_layer[0, 3] == pytest.approx(10.0) and f.e_layer[0].sum() == pytest.approx(10.0)
    assert f.ec_eta[0, 3] == pytest.approx(rc * np.cos(ALPHA[5]))
    assert f.ec_phi[0, 3] == pytest.approx(rc * np.sin(ALPHA[5]))
    assert f.ec_r[0, 3] == pytest.approx(rc)
    for w in (f.width_eta, f.width_phi, f.width_r):
        assert w[0, 3] == pytest.approx(0.0, abs=1e-5)
    assert f.sparsity[0, 3] == pytest.approx(1 - 1 / 144) and f.sparsity[0, 0] == 1.0
    assert f.ec_eta[0, 0] == 0.0 and f.width_eta[0, 0] == 0.0  # empty layer: 0 / (0 + 1e-16)
    assert f.n_hits[0] == 1


def test_symmetric_two_voxel_shower():
    # same radius, opposite alpha bins (centres differ by pi), equal energies: centre at the axis
    f = compute_features([2000.0], _shower((7, 1, 4, 5.0), (7, 9, 4, 5.0)), G)
    rc = 4.5 * DR
    assert f.ec_eta[0, 7] == pytest.approx(0.0, abs=1e-9) and f.ec_phi[0, 7] == pytest.approx(0.0, abs=1e-9)
    assert f.width_eta[0, 7] == pytest.approx(rc * abs(np.cos(ALPHA[1])))
    assert f.width_phi[0, 7] == pytest.approx(rc * abs(np.sin(ALPHA[1])))
    assert f.ec_r[0, 7] == pytest.approx(rc) and f.width_r[0, 7] == pytest.approx(0.0, abs=1e-5)


def test_radial_two_voxel_shower():
    # r bins 0 and 2 with energies 1 and 3: EC_r = (1 * 2.325 + 3 * 11.625) / 4, width = sqrt(p(1-p)) * dr
    f = compute_features([1000.0], _shower((0, 0, 0, 1.0), (0, 0, 2, 3.0)), G)
    assert f.ec_r[0, 0] == pytest.approx((0.5 * DR + 3 * 2.5 * DR) / 4)
    assert f.width_r[0, 0] == pytest.approx(np.sqrt(0.25 * 0.75) * 2 * DR)


def test_threshold_applied_first():
    below, above = 0.9 * THRESHOLD_MEV, 1.1 * THRESHOLD_MEV
    f = compute_features([1000.0], _shower((0, 0, 0, below), (0, 0, 1, above)), G)
    assert f.e_tot[0] == pytest.approx(above) and f.n_hits[0] == 1
    assert f.ec_r[0, 0] == pytest.approx(1.5 * DR)
    assert f.sparsity[0, 0] == pytest.approx(1 - 1 / 144)


def test_high_level_vector_order():
    f = compute_features([1000.0], _shower((3, 5, 2, 10.0)), G)
    v = f.high_level_vector()
    assert v.shape == (1, 362)
    assert v[0, 0] == pytest.approx(3.0)
    assert v[0, 1 + 3] == pytest.approx(1.0) and v[0, 1] == pytest.approx(-8.0)  # log10(E_layer + 1e-8)
    assert v[0, 46 + 3] == pytest.approx(f.ec_eta[0, 3] / 100)
    assert v[0, 91 + 3] == pytest.approx(f.ec_phi[0, 3] / 100)
    assert v[0, 226] == pytest.approx(1.0)  # log10(E_tot + 1e-8)
    assert v[0, 227 + 3] == pytest.approx(1 - 1 / 144)
    assert v[0, 272 + 3] == pytest.approx(2.5 * DR / 100)  # EC_r / 100
    assert v[0, 317 + 3] == pytest.approx(0.0, abs=1e-7)  # width_r / 100


def test_per_layer_geometry_features_and_bad_shape_rejected(tmp_path):
    xml = tmp_path / "b.xml"
    xml.write_text(
        '<Bins><Bin><Layer id="0" r_edges="0,1,2" n_bin_alpha="2"/>'
        '<Layer id="1" r_edges="0,1" n_bin_alpha="1"/></Bin></Bins>'
    )
    # layer 0: alpha centres -pi/2, pi/2, r centres 0.5, 1.5 (r fastest); layer 1: one voxel at r 0.5
    f = compute_features([10.0], np.array([[0.0, 3.0, 1.0, 0.0, 2.0]]), parse_binning_xml(xml))
    assert f.e_layer[0] == pytest.approx([4.0, 2.0])
    assert f.ec_phi[0, 0] == pytest.approx((-3 * 1.5 + 0.5) / 4)
    assert f.ec_eta[0, 0] == pytest.approx(0, abs=1e-12)
    assert f.ec_r[0] == pytest.approx([1.25, 0.5]) and f.sparsity[0] == pytest.approx([0.5, 0.0])
    with pytest.raises(ValueError, match="showers must be"):
        compute_features([1.0, 2.0], np.zeros((1, G.n_voxels)), G)


def _random_showers(n, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    e = 10 ** rng.uniform(3, 5, n)
    s = np.zeros((n, G.n_voxels), np.float32)
    hit = rng.random((n, G.n_voxels)) < 0.1
    s[hit] = rng.exponential(0.3 * scale, hit.sum())
    return e, s


def test_voxel_counts_and_chunked_scan_match_direct(tmp_path):
    e, s = _random_showers(7, 0)
    path = tmp_path / "s.h5"
    write_calochallenge(path, e, s)
    edges = np.logspace(np.log10(THRESHOLD_MEV), 0.5, 50)
    counts = voxel_energy_counts(s, edges)
    for i in range(7):
        assert counts[i].tolist() == np.histogram(s[i][s[i] >= THRESHOLD_MEV], edges)[0].tolist()
    rows = np.array([True, False] * 3 + [True])
    scan = scan_file(path, G, edges, chunk_size=3, rows=rows)
    direct = compute_features(e.astype(np.float32), s, G)  # the file stores E_inc as float32
    for k, v in direct.to_arrays().items():
        np.testing.assert_allclose(scan.features.to_arrays()[k], v, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(scan.voxel_counts, counts)
    np.testing.assert_allclose(scan.voxel_sum, np.where(s >= THRESHOLD_MEV, s, 0)[rows].sum(0), rtol=1e-6)
    assert scan.max_voxel == pytest.approx(np.where(s >= THRESHOLD_MEV, s, 0)[rows].max())  # selected rows


def test_histogram_specs_published_binnings():
    f = compute_features(*_random_showers(5, 1), G)
    specs = histogram_specs(f, 2.0)
    assert len(specs) == 1 + 45 * 8 + 1 and len({sp.name for sp in specs}) == len(specs)
    by = {sp.name: sp for sp in specs}
    np.testing.assert_allclose(by["E_ratio"].edges, np.linspace(0.5, 1.5, 101))
    np.testing.assert_allclose(by["EC_eta_10"].edges, np.linspace(-30, 30, 101))
    np.testing.assert_allclose(by["sparsity_44"].edges, np.linspace(0, 1, 21))
    assert by["E_layer_02"].edges[-1] == pytest.approx(f.e_layer[:, 2].max())
    assert len(by["E_layer_02"].edges) == 40 and len(by["voxel_energy"].edges) == 50
    assert by["voxel_energy"].edges[0] == pytest.approx(THRESHOLD_MEV) and by["voxel_energy"].edges[-1] == 2.0


def test_comparison_rows():
    a, b, g = ev.comparison_rows(10, 10)
    assert a.tolist() == [0, 2, 4, 6, 8] and b.tolist() == [1, 3, 5, 7, 9] and g.tolist() == [1, 3, 5, 7, 9]
    a, b, g = ev.comparison_rows(10, 3)
    assert len(b) == len(g) == 3 and set(b) <= {1, 3, 5, 7, 9} and g.tolist() == [0, 1, 2]
    with pytest.raises(ValueError):
        ev.EvaluateShowersSettings.from_json('{"nope": 1}')
    with pytest.raises(ValueError):
        ev.EvaluateShowersSettings.from_json('{"classifier_hidden": "big"}')


def test_evaluate_showers_stage(tmp_path):
    ref, gen = tmp_path / "ref.h5", tmp_path / "gen.h5"
    e_ref, s_ref = _random_showers(60, 2)
    s_ref[1, 5] = 10 * s_ref.max()  # the largest voxel of the file lies in half B (odd rows)
    write_calochallenge(ref, e_ref, s_ref)
    e_gen, s_gen = _random_showers(30, 3, scale=2.0)
    s_gen[:, : G.n_voxels // 45] = 0.0  # layer 0 empty: its E_layer histogram has no generated entry
    write_calochallenge(gen, e_gen, s_gen)
    settings = json.dumps(
        {
            "classifier_hidden": 8,
            "classifier_layers": 1,
            "classifier_epochs": 1,
            "fpd_n_sizes": 3,
            "fpd_n_draws": 2,
            "kpd_n_batches": 2,
            "chunk_size": 16,
        }
    )
    argv = [
        "--reference",
        str(ref),
        "--generated",
        str(gen),
        "--dataset",
        "2",
        "--settings",
        settings,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out-metrics",
        str(tmp_path / "m.json"),
        "--out-histograms",
        str(tmp_path / "h.npz"),
    ]
    assert ev.main(argv) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["kind"] == "showers" and m["dataset"] == "2" and m["settings"]["classifier_hidden"] == 8
    assert set(m["rows"]) == {"model", "real_vs_real"} and m["settings"]["n_compared"] == 30
    for row in m["rows"].values():
        for key in (
            "fpd",
            "kpd",
            "cls_low_auc",
            "cls_low_jsd",
            "cls_high_auc",
            "cls_high_jsd",
            "cls_trees_high_auc",
            "cls_trees_high_jsd",
        ):
            assert set(row[key]) == {"value", "error"}
        for key in (k for k in row if k.startswith("separation_")):
            assert set(row[key]) == {"value", "error", "n_histograms", "n_no_overlap"}
        assert (
            row["separation_E_layer"]["n_histograms"] == 45
            and row["separation_voxel_energy"]["n_histograms"] == 1
        )
    # the empty generated layer 0 counts as separation power 1 (no overlap), and enters the mean
    model, listing = m["rows"]["model"], {h["name"]: h for h in m["histograms"]}
    assert listing["E_layer_00"]["separation_power"] == 1.0 and listing["E_layer_00"]["no_overlap"] is True
    assert model["separation_E_layer"]["n_no_overlap"] == 1
    assert m["rows"]["real_vs_real"]["separation_E_layer"]["n_no_overlap"] == 0
    e_layer = [listing[f"E_layer_{k:02d}"]["separation_power"] for k in range(45)]
    assert model["separation_E_layer"]["value"] == pytest.approx(np.mean(e_layer), rel=1e-12)
    assert set(m["conventions"]) == {"separation_edges", "separation_undefined", "threshold"}
    # the tree test compares 30 vs 30 showers in each row; its settings are recorded
    assert (
        m["tree_classifier"]["model"]["n_per_class"]
        == m["tree_classifier"]["real_vs_real"]["n_per_class"]
        == 30
    )
    assert (
        "5-fold" in m["settings"]["classifier_trees"]
        and "not the published" in m["settings"]["classifier_network"]
    )
    # generated voxels are twice as energetic: the voxel spectrum separates more than real vs real
    assert (
        m["rows"]["model"]["separation_voxel_energy"]["value"]
        > 3 * m["rows"]["real_vs_real"]["separation_voxel_energy"]["value"]
    )
    with np.load(tmp_path / "h.npz") as h:
        for entry in m["histograms"]:
            n = entry["name"]
            assert len(h[f"{n}__edges"]) == len(h[f"{n}__reference"]) + 1
            counted = counted_separation_power(h[f"{n}__reference"], h[f"{n}__generated"])
            assert counted == (entry["separation_power"], entry["no_overlap"])
        assert h["mean_shower__reference"].shape == (45, 16, 9)
        assert h["nhits_vs_einc__reference"].shape == (15,)
        # per-E_inc views: half A (30 showers) and the 30 compared generated ones, all within 1-100 GeV
        assert h["per_einc__n__reference"].tolist() == list(np.histogram(e_ref[::2], [1e3, 1e4, 1e5, 1e6])[0])
        assert h["per_einc__n__generated"].sum() == 30 and h["per_einc__layer_mean__reference"].shape == (
            3,
            45,
        )
        gen_e, ref_e = h["shower_images__e_inc__generated"], h["shower_images__e_inc__reference"]
        assert (
            h["shower_images__generated"].shape == (len(gen_e), 45, 16, 9) and len(gen_e) == len(ref_e) == 4
        )
        nearest = [e_ref[::2][np.argmin(np.abs(np.log(e_ref[::2] / e)))] for e in gen_e]
        np.testing.assert_allclose(ref_e, nearest, rtol=1e-6)  # the reference shower nearest in E_inc
        half_a = np.where(s_ref[::2] >= THRESHOLD_MEV, s_ref[::2], 0.0)  # reference = even rows
        np.testing.assert_allclose(h["mean_shower__reference"].ravel(), half_a.mean(0), rtol=1e-5, atol=1e-9)
        assert h["voxel_energy__reference"].sum() == np.count_nonzero(half_a)  # top edge = max voxel
        # data-dependent edges come from half A, not from the whole reference file
        assert h["voxel_energy__edges"][-1] == pytest.approx(half_a.max(), rel=1e-6)
        e_layer_3 = half_a[:, 3 * G.n_voxels // 45 : 4 * G.n_voxels // 45].sum(axis=1)
        assert h["E_layer_03__edges"][-1] == pytest.approx(e_layer_3.max(), rel=1e-5)
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1
    with np.load(cached[0]) as z:  # the cache holds the reference features of all 60 showers
        assert ShowerFeatures.from_arrays(dict(z), "f_").e_inc.shape == (60,)
    first = (tmp_path / "m.json").read_text()
    assert ev.main(argv) == 0 and (tmp_path / "m.json").read_text() == first  # cached run: same numbers
    write_calochallenge(ref, *_random_showers(60, 4))  # new reference content: new cache entry
    assert ev.main(argv) == 0 and len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_log_edges_keep_the_largest_reference_value_inside():
    # values whose 10**log10(x) rounds below x: the published logspace binning drops that entry
    tops = [5022.323127746582, 3584.2357482910156, 6565.282302856445]
    assert any(np.logspace(np.log10(THRESHOLD_MEV), np.log10(t), 40)[-1] < t for t in tops)
    for t in tops:
        edges = log_edges(THRESHOLD_MEV, t, 40)
        assert edges[0] == THRESHOLD_MEV and edges[-1] == t and np.all(np.diff(edges) > 0)
        assert np.histogram([t], edges)[0].sum() == 1
        np.testing.assert_allclose(edges, np.logspace(np.log10(THRESHOLD_MEV), np.log10(t), 40), rtol=1e-14)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxel_energies_are_named(bad):
    showers = np.concatenate([_shower((3, 5, 2, 10.0)), _shower((4, 0, 0, 10.0), (6, 1, 1, bad))])
    with pytest.raises(ValueError, match="shower 1 has NaN or infinite voxel energies"):
        compute_features([1000.0, 1000.0], showers, G)
