"""Shower views of the report: per incident-energy bins and profiles, nearest-E_inc shower pairs, the
all-layers grid and the report sections that show them (hand-computed values)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from pipelines.geometry import THRESHOLD_MEV, load_geometry
from pipelines.io.calochallenge import read_rows, write_calochallenge
from pipelines.io.errors import DataError
from pipelines.metrics import shower_views as views
from pipelines.metrics.calo_features import ShowerFeatures
from pipelines.report import html as report_html
from pipelines.report import plots
from pipelines.report import shower_views as report_views

STYLE = plots.PlotStyle(dpi=30, width=3.0)


def _features(e_inc, e_layer, n_hits) -> ShowerFeatures:
    """Features with given E_inc, E_layer and hit counts (the others zero)."""
    e_layer = np.asarray(e_layer, dtype=np.float64)
    zeros = np.zeros_like(e_layer)
    return ShowerFeatures(
        e_inc=np.asarray(e_inc, dtype=np.float64),
        e_tot=e_layer.sum(axis=1),
        n_hits=np.asarray(n_hits, dtype=np.int64),
        e_layer=e_layer,
        ec_eta=zeros,
        ec_phi=zeros,
        ec_r=zeros,
        width_eta=zeros,
        width_phi=zeros,
        width_r=zeros,
        sparsity=zeros,
    )


def test_incident_energy_bins_are_the_calochallenge_decades():
    edges = views.einc_edges("2")
    np.testing.assert_array_equal(edges, [1e3, 1e4, 1e5, 1e6])  # 1-10, 10-100, 100-1000 GeV
    np.testing.assert_array_equal(views.einc_edges("3"), edges)
    e_inc = np.array([999.0, 1000.0, 9999.0, 10000.0, 5e5, 1e6, 1.5e6])
    assert views.einc_bins(e_inc, edges).tolist() == [-1, 0, 0, 1, 2, 2, -1]  # 1 TeV joins the last bin
    with pytest.raises(ValueError, match="dataset '1'"):
        views.einc_edges("1")


def test_mean_layer_profile_of_three_showers_and_per_bin_histograms():
    # three showers in 1-10 GeV, one in 10-100 GeV, none in 100-1000 GeV
    e_layer = [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [5.0, 0.0, 1.0], [10.0, 10.0, 10.0]]
    reference = _features([2e3, 5e3, 8e3, 2e4], e_layer, [10, 12, 17, 40])
    generated = _features([3e3, 3e5], [[2.0, 2.0, 2.0], [400.0, 300.0, 200.0]], [11, 90])
    arrays = views.per_energy_arrays(reference, generated, views.einc_edges("2"))
    assert arrays["per_einc__n__reference"].tolist() == [3, 1, 0]
    assert arrays["per_einc__n__generated"].tolist() == [1, 0, 1]
    mean, error = arrays["per_einc__layer_mean__reference"], arrays["per_einc__layer_error__reference"]
    np.testing.assert_allclose(mean[0], [3.0, 2.0, 3.0])  # (1+3+5)/3, (2+4+0)/3, (3+5+1)/3
    np.testing.assert_allclose(error[0], [2 / np.sqrt(3)] * 3)  # sample std 2 in each layer, n = 3
    np.testing.assert_allclose(mean[1], [10.0, 10.0, 10.0])
    assert np.isnan(error[1]).all() and np.isnan(mean[2]).all()  # one shower: no error; none: no mean
    # every shower of a bin is in its histograms; hit-count edges are half-integers spanning both samples
    assert arrays["per_einc__e_ratio__reference"].sum(axis=1).tolist() == [3, 1, 0]
    assert arrays["per_einc__n_hits__generated"].sum(axis=1).tolist() == [1, 0, 1]
    hits_edges = arrays["per_einc__n_hits_edges"]
    assert hits_edges.shape == (3, views.VIEW_BINS + 1)
    assert (hits_edges[0, 0], hits_edges[0, -1]) == (9.5, 17.5)
    e_ratio = np.array([6.0 / 2e3, 12.0 / 5e3, 6.0 / 8e3, 6.0 / 3e3])  # E_tot / E_inc of bin 0, both samples
    assert arrays["per_einc__e_ratio_edges"][0, 0] == pytest.approx(e_ratio.min())
    assert arrays["per_einc__e_ratio_edges"][0, -1] == pytest.approx(e_ratio.max())


def test_nearest_incident_energy_selection():
    generated = np.array([2000.0, 50000.0, 3000.0, 700000.0])
    reference = np.array([1900.0, 2100.0, 52000.0, 60000.0, 3100.0, 900000.0, 650000.0])
    edges = views.einc_edges("2")
    # nearest in log E: 2000 -> 2100 (|ln 1.05| < |ln 0.95|), 3000 -> 3100, 50000 -> 52000, 700000 -> 650000
    expected = {0: 1, 2: 4, 1: 2, 3: 6}
    gen, ref, bins = views.select_shower_pairs(generated, reference, edges, per_bin=2, seed=7)
    assert gen.tolist() == [0, 2, 1, 3]  # both of 1-10 GeV in increasing E_inc, then one per bin
    assert ref.tolist() == [expected[g] for g in gen] and bins.tolist() == [0, 0, 1, 2]
    picks = set()
    for seed in range(20):
        gen, ref, bins = views.select_shower_pairs(generated, reference, edges, per_bin=1, seed=seed)
        assert bins.tolist() == [0, 1, 2] and gen[1:].tolist() == [1, 3]
        assert ref.tolist() == [expected[g] for g in gen]
        again = views.select_shower_pairs(generated, reference, edges, per_bin=1, seed=seed)
        assert again[0].tolist() == gen.tolist()  # the same seed draws the same showers
        picks.add(int(gen[0]))
    assert picks == {0, 2}  # the seed decides which generated shower of a bin is drawn
    tie = views.select_shower_pairs(np.array([2000.0]), np.array([1000.0, 4000.0]), edges, 1, 0)
    assert tie[1].tolist() == [0]  # equal distance in log E: the first reference shower


def test_read_rows_and_shower_images(tmp_path):
    geometry = load_geometry("2")
    rng = np.random.default_rng(1)
    energies = np.array([1e3, 2e3, 3e3, 4e3, 5e3])
    showers = rng.exponential(0.05, (5, geometry.n_voxels)).astype(np.float32)
    path = tmp_path / "s.h5"
    write_calochallenge(path, energies, showers)
    e, s = read_rows(path, geometry, np.array([3, 1, 3]))
    np.testing.assert_allclose(e, [4e3, 2e3, 4e3])
    np.testing.assert_array_equal(s, showers[[3, 1, 3]])
    with pytest.raises(ValueError, match="outside"):
        read_rows(path, geometry, np.array([5]))
    arrays = views.shower_image_arrays(
        path, path, geometry, (np.array([0, 4]), np.array([2, 2]), np.array([0, 0]))
    )
    assert arrays["shower_images__generated"].shape == (2, 45, 16, 9)
    np.testing.assert_allclose(arrays["shower_images__e_inc__reference"], [3e3, 3e3])
    expected = np.where(showers[4] >= THRESHOLD_MEV, showers[4], 0.0).reshape(45, 16, 9)
    np.testing.assert_array_equal(arrays["shower_images__generated"][1], expected)


def _layer_entries(group: str, n_layers: int) -> list[dict]:
    return [
        {
            "name": f"{group}_{k:02d}",
            "xlabel": f"E layer {k} [MeV]",
            "logx": True,
            "logy": True,
            "group": group,
            "separation_power": 0.01 * k,
        }
        for k in range(n_layers)
    ]


def _layer_histograms(entries: list[dict]) -> dict[str, np.ndarray]:
    arrays = {}
    for k, entry in enumerate(entries):
        arrays[f"{entry['name']}__edges"] = np.logspace(-1, 3, 6)
        arrays[f"{entry['name']}__reference"] = np.array([1.0, 5.0, 9.0, 4.0, 1.0])
        arrays[f"{entry['name']}__generated"] = np.array([2.0, 4.0, 9.0, 4.0, float(k)])
    return arrays


def test_coarsened_merges_adjacent_bins():
    edges, ref, gen = report_views.coarsened(np.arange(8.0), np.arange(7.0), np.ones(7), max_bins=3)
    np.testing.assert_array_equal(edges, [0.0, 3.0, 6.0, 7.0])  # ceil(7 / 3) = 3 bins per group
    np.testing.assert_array_equal(ref, [0 + 1 + 2, 3 + 4 + 5, 6])
    np.testing.assert_array_equal(gen, [3, 3, 1])
    edges, ref, _ = report_views.coarsened(np.arange(4.0), np.array([1.0, 2.0, 3.0]), np.zeros(3))
    np.testing.assert_array_equal(edges, np.arange(4.0))  # few bins stay as they are
    np.testing.assert_array_equal(ref, [1.0, 2.0, 3.0])


def test_layer_groups_and_grid_has_one_panel_per_layer():
    entries = _layer_entries("E_layer", 45)
    listed = entries[::-1] + [
        {"name": "E_ratio", "xlabel": "E_tot / E_inc", "logx": False, "logy": True, "group": "E_ratio"},
        {"name": "elayer_3", "xlabel": "x", "logx": False, "logy": False, "group": "layers"},
    ]
    groups = report_views.layer_groups(listed)
    assert list(groups) == ["E_layer"] and [e["name"] for e in groups["E_layer"]] == [
        e["name"] for e in entries
    ]
    assert report_views.grid_shape(45) == (5, 9) and report_views.grid_shape(4) == (1, 4)
    fig = report_views.layer_grid_figure(entries, _layer_histograms(entries), xlabel="E [MeV]", style=STYLE)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(fig.axes) == 90 and len(titles) == 45  # a histogram and a ratio strip per layer
    assert [int(re.match(r"layer (\d+)", t).group(1)) for t in titles] == list(range(45))
    assert titles[2] == "layer 2, S = 0.02"


def _view_arrays(n_layers: int = 6, shape: tuple[int, int, int] = (6, 4, 3)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    reference = _features(
        10 ** rng.uniform(3, 6, 40), rng.exponential(10.0, (40, n_layers)), rng.integers(5, 50, 40)
    )
    generated = _features(
        10 ** rng.uniform(3, 6, 30), rng.exponential(11.0, (30, n_layers)), rng.integers(5, 50, 30)
    )
    arrays = views.per_energy_arrays(reference, generated, views.einc_edges("2"))
    images = rng.exponential(1.0, (4, *shape)) * (rng.random((4, *shape)) < 0.5)
    arrays |= {
        "shower_images__bin": np.array([0, 0, 2, 2]),
        "shower_images__reference": images,
        "shower_images__generated": images[::-1],
        "shower_images__e_inc__reference": np.array([2e3, 5e3, 2e5, 5e5]),
        "shower_images__e_inc__generated": np.array([2.1e3, 5e3, 2e5, 5.2e5]),
    }
    return arrays


def test_per_energy_figures_have_one_column_per_bin():
    arrays = _view_arrays()
    fig = report_views.per_energy_profile_figure(arrays, style=STYLE)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [t.splitlines()[0] for t in titles] == ["E_inc 1–10 GeV", "E_inc 10–100 GeV", "E_inc 100–1000 GeV"]
    n = arrays["per_einc__n__reference"], arrays["per_einc__n__generated"]
    assert titles[0].splitlines()[1] == f"{n[0][0]} ref. / {n[1][0]} gen. showers"
    fig = report_views.per_energy_histogram_figure(arrays, "n_hits", xlabel="hits", style=STYLE)
    assert len(fig.axes) == 6 and all(t.get_text() for t in fig.legends[0].get_texts())
    fig = report_views.shower_images_figure(
        arrays["shower_images__reference"][:2],
        arrays["shower_images__generated"][:2],
        (arrays["shower_images__e_inc__reference"][:2], arrays["shower_images__e_inc__generated"][:2]),
        style=STYLE,
    )
    assert sum(ax.name == "polar" for ax in fig.axes) == 4  # per row: the (alpha, r) slices of both showers


def test_separation_text_of_empty_and_disjoint_bins():
    assert report_views.separation_text(np.zeros(3), np.zeros(3)) == "no showers"
    assert report_views.separation_text(np.array([0, 4, 0]), np.zeros(3)) == "S = 1 (no overlap)"
    # S = 1/2 sum (p - q)^2 / (p + q), p = (1/2, 1/2, 0), q = (0, 1/2, 1/2): 1/2 (0.25/0.5 + 0 + 0.25/0.5)
    assert report_views.separation_text(np.array([2, 2, 0]), np.array([0, 3, 3])) == "S = 0.5"


def test_mean_ratio_and_error():
    ratio, error, ref_rel = report_views.mean_ratio_and_error(
        np.array([2.0, 0.0, 4.0]),
        np.array([3.0, 1.0, 2.0]),
        np.array([0.2, 0.1, 1.0]),
        np.array([0.3, 0.1, 0.5]),
    )
    np.testing.assert_allclose(ratio, [1.5, np.nan, 0.5])
    np.testing.assert_allclose(error, [0.15, np.nan, 0.125])
    np.testing.assert_allclose(ref_rel, [0.1, np.nan, 0.25])


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.headings, self.wide, self._in_h3 = [], 0, False

    def handle_starttag(self, tag, attrs):
        self._in_h3 = tag == "h3"
        self.wide += tag == "figure" and ("class", "wide") in attrs

    def handle_data(self, data):
        if self._in_h3:
            self.headings.append(data.strip())
            self._in_h3 = False


def _write_run(directory: Path, arrays: dict[str, np.ndarray]) -> tuple[Path, Path]:
    entries = _layer_entries("E_layer", 6)
    shape = (
        arrays["shower_images__reference"].shape[1:] if "shower_images__reference" in arrays else (6, 4, 3)
    )
    arrays = (
        arrays
        | _layer_histograms(entries)
        | {
            "mean_shower__reference": np.ones(shape),
            "mean_shower__generated": np.ones(shape),
            "nhits_vs_einc__edges": np.array([3.0, 4.5, 6.0]),
            "nhits_vs_einc__reference": np.array([10.0, 30.0]),
            "nhits_vs_einc__generated": np.array([11.0, 28.0]),
        }
    )
    np.savez(directory / "h.npz", **arrays)
    entry = {"value": 0.01, "error": None}
    metrics = {
        "kind": "showers",
        "dataset": "toy",
        "settings": {},
        "histograms": entries,
        "rows": {"model": {"separation_E_layer": entry}, "real_vs_real": {"separation_E_layer": entry}},
    }
    (directory / "m.json").write_text(json.dumps(metrics))
    return directory / "m.json", directory / "h.npz"


def _report(tmp_path: Path, arrays: dict[str, np.ndarray]) -> str:
    metrics, npz = _write_run(tmp_path, arrays)
    out = tmp_path / "r.html"
    argv = [
        "--metrics",
        str(metrics),
        "--histograms",
        str(npz),
        "--labels",
        "toy run",
        "--out",
        str(out),
        "--plots-dir",
        str(tmp_path / "plots"),
        "--settings",
        json.dumps({"dpi": 30, "figure_width": 3.0}),
    ]
    assert report_html.main(argv) == 0
    return out.read_text()


def test_report_shows_the_new_shower_sections(tmp_path):
    page = _report(tmp_path, _view_arrays())
    sections = _Sections()
    sections.feed(page)
    for heading in ("per incident energy", "individual showers", "E_layer"):
        assert heading in sections.headings
    assert "E_layer, all 6 layers" in page and "energy per layer per E_inc" in page
    assert "E layer [MeV]: normalised histograms of every layer" in page  # the layer number left out
    assert "individual showers, E_inc 1–10 GeV" in page and "individual showers, E_inc 100–1000 GeV" in page
    assert "individual showers, E_inc 10–100 GeV" not in page  # no shower drawn in that bin
    assert sections.wide == 3 + 1 + 2  # the small multiples span the page: per E_inc, grid, shower rows
    names = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "toy_run-per_incident_energy-n_hits_per_einc.png" in names
    assert "toy_run-E_layer-E_layer_all_layers.png" in names


def test_report_without_view_arrays_and_with_broken_ones(tmp_path):
    (tmp_path / "old").mkdir()
    page = _report(tmp_path / "old", {})  # an evaluation written before the views existed
    assert "per incident energy" not in page and "E_layer, all 6 layers" in page
    broken = _view_arrays()
    del broken["per_einc__n_hits__generated"]
    metrics, npz = _write_run(tmp_path, broken)
    with pytest.raises(DataError, match="lacks \\['per_einc__n_hits__generated'\\]"):
        report_html.load_histograms(npz, report_html.load_metrics(metrics))
