"""Tests of the report stage: plots (ratio panel numbers), published CaloChallenge rows, HTML content."""

from __future__ import annotations

import base64
import csv
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from pipelines.io.errors import DataError
from pipelines.metrics import calo_features, jet_metrics
from pipelines.report import html as report_html
from pipelines.report import metric_catalogue, plots, published

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CSV_DIR = Path(__file__).resolve().parents[1] / "pipelines" / "data" / "published"
SMALL = json.dumps({"dpi": 30, "figure_width": 4.0, "title": "Test <report> & co"})


# ---------------------------------------------------------------- fixtures built by hand (contract format)
def _write_shower_run(directory: Path, *, dataset: str = "2", label_note: str = "plain") -> tuple[Path, Path]:
    """metrics.json + histograms.npz for a shower run, following the evaluation output contract."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "etot__edges": np.array([0.5, 0.75, 1.0, 1.25, 1.5]),
        "etot__reference": np.array([10.0, 40.0, 40.0, 10.0]),
        "etot__generated": np.array([5.0, 45.0, 35.0, 15.0]),
        "elayer_3__edges": np.array([0.01, 0.1, 1.0, 10.0, 100.0]),
        "elayer_3__reference": np.array([0.0, 30.0, 50.0, 20.0]),
        "elayer_3__generated": np.array([3.0, 27.0, 50.0, 0.0]),
        "sparsity_3__edges": np.linspace(0.0, 1.0, 6),
        "sparsity_3__reference": np.array([1.0, 2.0, 3.0, 2.0, 1.0]),
        "sparsity_3__generated": np.array([1.0, 3.0, 3.0, 1.0, 1.0]),
    }
    shape = (45, 16, 9) if dataset == "2" else (6, 4, 3)
    layer = np.exp(-0.5 * ((np.arange(shape[0]) - shape[0] / 3) / 3.0) ** 2)
    radial = np.exp(-np.arange(shape[2]) / 2.0)
    mean = 50.0 * layer[:, None, None] * np.ones(shape[1])[None, :, None] * radial[None, None, :]
    arrays["mean_shower__reference"] = mean
    arrays["mean_shower__generated"] = mean * 1.1
    arrays["nhits_vs_einc__edges"] = np.linspace(
        3.0, 6.0, 5
    )  # log10(E_inc / MeV), as evaluate-showers writes
    arrays["nhits_vs_einc__reference"] = np.array([100.0, 200.0, 300.0, 400.0])
    arrays["nhits_vs_einc__generated"] = np.array([110.0, 190.0, 330.0, 400.0])
    npz = directory / "histograms.npz"
    np.savez(npz, **arrays)
    metrics = {
        "kind": "showers",
        "dataset": dataset,
        "rows": {
            "model": {
                "separation_E_ratio": {"value": 0.0123, "error": None},
                "fpd": {"value": 0.864978, "error": 0.0051452},
                "kpd": {"value": -0.000012, "error": None},
                "cls_low_auc": {"value": 0.61234, "error": 0.0123},
                "cls_trees_high_auc": {"value": 0.9917, "error": 0.0012},
                "mystery_score": {"value": 7.5, "error": None},
            },
            "real_vs_real": {
                "separation_E_ratio": {"value": 0.002, "error": None},
                "fpd": {"value": 0.0107, "error": 0.0008},
                "kpd": {"value": 0.0000004, "error": 0.0000021},
                "cls_low_auc": {"value": 0.5012, "error": 0.004},
                "cls_trees_high_auc": {"value": 0.5068, "error": 0.0043},
                "mystery_score": {"value": 1.25, "error": None},
            },
        },
        "settings": {
            "n_showers": 20000,
            "classifier": {"hidden": [64, 64]},
            "note": label_note,
            "classifier_network": "2 x 128 LeakyReLU MLP (not the published setting)",
            "classifier_trees": "HistGradientBoostingClassifier, 5-fold",
        },
        "histograms": [
            {
                "name": "etot",
                "xlabel": "E_tot / E_inc",
                "logx": False,
                "logy": False,
                "group": "energy",
                "separation_power": 0.0123,
            },
            {
                "name": "elayer_3",
                "xlabel": "E_layer 3 [MeV]",
                "logx": True,
                "logy": True,
                "group": "layers",
                "separation_power": 0.25,
            },
            {
                "name": "sparsity_3",
                "xlabel": "sparsity layer 3",
                "logx": False,
                "logy": False,
                "group": "layers",
                "separation_power": None,
            },
        ],
    }
    path = directory / "metrics.json"
    path.write_text(json.dumps(metrics))
    return path, npz


def _write_curve_and_timing(directory: Path) -> tuple[Path, Path]:
    curve = directory / "curve.csv"
    lines = ["step,loss_critic,loss_generator,phase"]
    lines += [f"{10 * i},{-1.0 + 0.01 * i},{1.0 - 0.01 * i},train" for i in range(40)]
    lines[5] = "40,,0.96,train"  # an empty cell
    curve.write_text("\n".join(lines) + "\n")
    timing = directory / "timing.json"
    timing.write_text(
        json.dumps(
            {
                "device": "cpu",
                "n_parameters": 66416,
                "batch_sizes": {
                    "1": {"ms_per_shower": 14.25, "ms_per_shower_with_voxelisation": 15.5},
                    "100": {"ms_per_shower": 1.125, "ms_per_shower_with_voxelisation": 2.5},
                },
            }
        )
    )
    return curve, timing


class _Collector(HTMLParser):
    """Collects <img> sources and the cell texts of every table row with its class and table id/class."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.rows: list[tuple[str, str, list[str]]] = []
        self._table = ""
        self._row: list[str] | None = None
        self._row_class = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "table":
            self._table = attrs.get("id") or attrs.get("class") or ""
        elif tag == "tr":
            self._row, self._row_class = [], attrs.get("data-metric") or attrs.get("class") or ""
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append((self._table, self._row_class, self._row))
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(page: str) -> _Collector:
    collector = _Collector()
    collector.feed(page)
    return collector


def _run_report(tmp: Path, *extra: str, label: str = "MDMA run", dataset: str = "2") -> tuple[str, Path]:
    metrics, npz = _write_shower_run(tmp / "run", dataset=dataset)
    curve, timing = _write_curve_and_timing(tmp / "run")
    out, plots_dir = tmp / "report.html", tmp / "plots"
    argv = [
        "--metrics",
        str(metrics),
        "--histograms",
        str(npz),
        "--labels",
        label,
        "--training-curve",
        str(curve),
        "--timing",
        str(timing),
        "--settings",
        SMALL,
        "--out",
        str(out),
        "--plots-dir",
        str(plots_dir),
        *extra,
    ]
    assert report_html.main(argv) == 0
    return out.read_text(encoding="utf-8"), plots_dir


def _write_export(directory: Path) -> Path:
    """An export.json (stage export) with the timing rows the report shows beside timing.json's."""
    path = directory / "export.json"
    rows = [(1, 22.5, 6.5), (100, 2.75, 4.5)]
    keys = ("batch_size", "ms_per_shower_torch", "ms_per_shower_onnxruntime")
    timing = [dict(zip(keys, row, strict=True)) for row in rows]
    path.write_text(json.dumps({"family": "factorised", "timing": timing}))
    return path


@pytest.fixture(scope="module")
def plain_report(tmp_path_factory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("plain")
    return _run_report(tmp, "--export", str(_write_export(tmp)))


@pytest.fixture(scope="module")
def real_report(tmp_path_factory) -> tuple[str, Path]:
    return _run_report(tmp_path_factory.mktemp("real"), "--real-data", dataset="gflash-2")


# ---------------------------------------------------------------- plots
def test_ratio_and_error_hand_values():
    ratio, error = plots.ratio_and_error(np.array([10, 20, 30, 40]), np.array([20, 10, 30, 40]))
    np.testing.assert_allclose(ratio, [2.0, 0.5, 1.0, 1.0])
    expected = [
        2 * math.sqrt(1 / 20 + 1 / 10),
        0.5 * math.sqrt(1 / 10 + 1 / 20),
        math.sqrt(2 / 30),
        math.sqrt(2 / 40),
    ]
    np.testing.assert_allclose(error, expected)
    # unequal totals: normalised ref (0.5, 0, 0.5), gen (0.25, 0.25, 0.5); empty reference bin -> NaN
    ratio, error = plots.ratio_and_error(np.array([10, 0, 10]), np.array([5, 5, 10]))
    np.testing.assert_allclose(ratio, [0.5, np.nan, 1.0])
    assert np.isnan(error[1])


def test_histogram_figure_draws_ratio_density_and_separation_power():
    edges = np.array([0.0, 1.0, 2.0, 3.0, 5.0])
    fig = plots.histogram_figure(
        edges,
        np.array([10, 20, 30, 40]),
        np.array([20, 10, 30, 40]),
        xlabel="x [mm]",
        separation_power=0.0123,
        label="gen",
    )
    ax, ax_ratio = fig.axes
    drawn = [p for p in ax_ratio.patches if p.get_gid() == "ratio"]
    assert len(drawn) == 1
    np.testing.assert_allclose(drawn[0].get_data().values, [2.0, 0.5, 1.0, 1.0])
    steps = [p.get_data().values for p in ax.patches if hasattr(p, "get_data")]
    # 1/N dN/dx by hand: counts / 100 / widths (1, 1, 1, 2)
    assert any(np.allclose(v, [0.2, 0.1, 0.3, 0.2]) for v in steps)
    assert any(np.allclose(v, [0.1, 0.2, 0.3, 0.2]) for v in steps)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "gen (S = 0.0123)" in legend
    assert ax_ratio.get_xlabel() == "x [mm]"
    assert plots.png_bytes(fig, 30).startswith(PNG_SIGNATURE)


def test_histogram_figure_says_when_a_sample_has_no_entries_in_range():
    edges = np.array([0.0, 1.0, 2.0])
    fig = plots.histogram_figure(edges, np.array([3, 4]), np.zeros(2), xlabel="x", label="gen", logy=True)
    texts = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "empty"]
    assert texts == ["gen: no entries within the histogram range"]
    full = plots.histogram_figure(edges, np.array([3, 4]), np.array([1, 1]), xlabel="x", label="gen")
    assert not [t for t in full.axes[0].texts if t.get_gid() == "empty"]


def test_profile_and_default_layers():
    fig = plots.profile_figure(
        np.arange(4.0), np.array([1.0, 2.0, 4.0]), np.array([2.0, 2.0, 2.0]), xlabel="l", ylabel="E [MeV]"
    )
    drawn = [p for p in fig.axes[1].patches if p.get_gid() == "ratio"]
    np.testing.assert_allclose(drawn[0].get_data().values, [2.0, 1.0, 0.5])
    mean = np.zeros((5, 2, 2))
    mean[:, 0, 0] = [1.0, 1.0, 6.0, 1.0, 1.0]  # cumulative fractions 0.1 0.2 0.8 0.9 1.0
    assert plots.default_layers(mean) == [1, 2]


def test_smooth_is_trailing_mean():
    np.testing.assert_allclose(
        plots.smooth(np.array([1.0, 3.0, 5.0, np.nan, 9.0]), 2), [1.0, 2.0, 4.0, 5.0, 9.0]
    )


# ---------------------------------------------------------------- formatting and settings
@pytest.mark.parametrize(
    ("value", "error", "text"),
    [
        (0.61234, 0.0123, "0.612 \u00b1 0.012"),
        (864.978, 5.1452, "865.0 \u00b1 5.1"),
        (0.98673, 0.000605062, "0.98673 \u00b1 0.00061"),
        (133549.0, 5285.89, "133500 \u00b1 5300"),
        (-0.012, None, "-0.012"),
        (None, 0.1, "\u2014"),
        (1.5e-9, 2.3e-11, "(1.500 \u00b1 0.023)e-09"),
    ],
)
def test_format_value_error(value, error, text):
    assert report_html.format_value_error(value, error) == text


def test_settings_defaults_types_and_unknown_keys():
    assert report_html.parse_settings("{}") == report_html.ReportSettings()
    s = report_html.parse_settings('{"ratio_range": [0.8, 1.2], "shower_layers": [1, 5], "dpi": 72}')
    assert s.ratio_range == (0.8, 1.2) and s.shower_layers == (1, 5) and s.dpi == 72
    with pytest.raises(ValueError, match="unknown report settings"):
        report_html.parse_settings('{"colour": "red"}')
    with pytest.raises(ValueError, match="dpi"):
        report_html.parse_settings('{"dpi": 1.5}')
    with pytest.raises(ValueError, match="ratio_range"):
        report_html.parse_settings('{"ratio_range": [1.5, 0.5]}')


SHOWER_GROUPS = (
    "E_ratio", "E_layer", "EC_eta", "EC_phi", "EC_r", "width_eta", "width_phi", "width_r", "sparsity",
    "voxel_energy",
)  # fmt: skip


def _jet_metric_names() -> list[str]:
    """Every name evaluate-jets writes (raw and published-unit copies), from the producer's constants."""
    bases = ["W1M", "W1PT", "W1P", "W1EFP", "FPD", "KPD"]
    bases += [f"W1P_{f}" for f in jet_metrics.PARTICLE_FEATURES]
    bases += [f"W1EFP_{g}" for g in jet_metrics.PRIME_EFP_NAMES]
    power = {"W1M": 3, "W1PT": 3, "W1P": 3, "W1EFP": 5, "FPD": 3, "KPD": 3}
    return (
        bases
        + [f"{b}_x1e{power[b.split('_')[0]]}" for b in bases]
        + ["COV", "MMD", "cls_trees_jet_auc", "cls_trees_jet_jsd"]
    )


def test_every_evaluated_metric_name_has_a_description():
    # the shower groups listed here are the ones evaluate-showers histograms (independent check)
    produced = {"E_ratio", "E_layer", "voxel_energy"} | {v[0] for v in calo_features._LAYER_HIST.values()}
    assert produced == set(SHOWER_GROUPS)
    shower_names = [f"separation_{g}" for g in SHOWER_GROUPS] + ["fpd", "kpd"]
    shower_names += [
        f"cls_{level}_{score}" for level in ("low", "high", "trees_high") for score in ("auc", "jsd")
    ]
    for kind, names in (("showers", shower_names), ("jets", _jet_metric_names())):
        for name in names:
            info = metric_catalogue.metric_info(name, kind)
            assert info.group != metric_catalogue.GROUP_OTHER, name
            assert info.meaning and "no description" not in info.meaning, name
    # scales: raw fpd/kpd shown x 10^3; jet copies stored scaled are shown as stored
    assert metric_catalogue.metric_info("fpd", "showers").factor == 1e3
    assert metric_catalogue.metric_info("kpd", "showers").unit == "× 10³"
    assert metric_catalogue.metric_info("cls_high_auc", "showers").factor == 1.0
    assert metric_catalogue.metric_info("W1EFP_x1e5", "jets").factor == 1.0
    assert metric_catalogue.metric_info("W1EFP_x1e5", "jets").unit == "× 10⁵"
    assert metric_catalogue.metric_info("W1EFP", "jets").factor == 1e5  # raw only: scaled by the report
    unknown = metric_catalogue.metric_info("odd_x1e2", "jets")
    assert unknown.group == metric_catalogue.GROUP_OTHER and unknown.unit == "× 10²"


def test_jet_metrics_show_published_units_and_skip_raw_duplicates():
    names = _jet_metric_names()
    shown = [info.key for info in metric_catalogue.select_metrics(names, "jets")]
    expected = ["W1M_x1e3", "W1PT_x1e3", "W1P_x1e3"]
    expected += [f"W1P_{f}_x1e3" for f in ("eta_rel", "phi_rel", "pt_rel")]
    expected += ["W1EFP_x1e5"] + [f"W1EFP_{g}_x1e5" for g in jet_metrics.PRIME_EFP_NAMES]
    expected += ["FPD_x1e3", "KPD_x1e3", "COV", "MMD", "cls_trees_jet_auc", "cls_trees_jet_jsd"]
    assert shown == expected
    # COV and MMD are shown as stored (no published scale); only COV grows with quality
    assert metric_catalogue.metric_info("MMD", "jets").factor == 1.0
    assert metric_catalogue.metric_info("COV", "jets").group == metric_catalogue.GROUP_COV_MMD
    assert metric_catalogue.higher_is_better("COV") and not metric_catalogue.higher_is_better("MMD")
    assert not metric_catalogue.higher_is_better("W1PT_x1e3")
    # without the scaled copies the raw names are shown (and scaled by the report)
    raw = [info.key for info in metric_catalogue.select_metrics(["KPD", "W1M"], "jets")]
    assert raw == ["W1M", "KPD"]


def _fake_run(label: str, kind: str, model: dict, rvr: dict) -> dict:
    return {"label": label, "kind": kind, "metrics": {"rows": {"model": model, "real_vs_real": rvr}}}


def test_metrics_tables_transposed_and_scaled_from_the_file_values():
    def entry(value, error=None):
        return {"value": value, "error": error}

    raw_w1m, raw_err = 0.13159812953279865, 0.0007193946261238315
    jets = _fake_run(
        "jets",
        "jets",
        {"W1M": entry(raw_w1m, raw_err), "W1M_x1e3": entry(raw_w1m * 1e3, raw_err * 1e3)},
        {"W1M": entry(0.0247, 0.008), "W1M_x1e3": entry(24.7, 8.0)},
    )
    a = _fake_run("A", "showers", {"kpd": entry(0.0020739, 0.0000918)}, {"kpd": entry(3e-6, 9.6e-6)})
    b = _fake_run("B", "showers", {"fpd": entry(0.15324, 0.01164)}, {"fpd": entry(0.012279, 0.000052)})
    tables = report_html.metrics_tables([a, jets, b])
    assert [t["kind"] for t in tables] == ["showers", "jets"]
    showers, jet_table = tables
    assert showers["runs"] == ["A", "B"]
    rows = {row["key"]: row for group in showers["groups"] for row in group["rows"]}
    assert list(rows) == ["fpd", "kpd"]
    # columns: A model, A real-vs-real, B model, B real-vs-real; raw values x 10^3, formatted by hand
    assert [c["text"] for c in rows["fpd"]["cells"]] == ["\u2014", "\u2014", "153 ± 12", "12.279 ± 0.052"]
    kpd = ["2.074 ± 0.092", "0.0030 ± 0.0096", "\u2014", "\u2014"]
    assert [c["text"] for c in rows["kpd"]["cells"]] == kpd
    assert [c["rvr"] for c in rows["kpd"]["cells"]] == [False, True, False, True]
    (group,) = jet_table["groups"]
    (row,) = group["rows"]
    assert row["key"] == "W1M_x1e3" and row["unit"] == "× 10³"
    assert [c["text"] for c in row["cells"]] == ["131.60 ± 0.72", "24.7 ± 8.0"]


# ---------------------------------------------------------------- published table
def _csv_row(dataset: str, name: str) -> dict[str, str]:
    with open(CSV_DIR / f"published_results_ds{dataset}.csv", newline="") as handle:
        return next(row for row in csv.DictReader(handle) if row["submission name"] == name)


def test_dataset_key():
    assert published.dataset_key("2") == "2"
    assert published.dataset_key("ds3") == "3"
    assert published.dataset_key("calochallenge_dataset_1-photons") == "1-photons"
    assert published.dataset_key("1") is None
    assert published.dataset_key("jetnet-gluon") is None


def test_select_published_rows_match_csv():
    rows = {row.name: row for row in published.select_published("3")}
    assert list(rows) == ["GEANT4", "MDMA", "CaloPointFlow", "CaloDREAM"]
    assert rows["CaloDREAM"].role == "best binary cls high AUC"
    assert rows["GEANT4"].role == "Geant4 vs Geant4"
    raw = _csv_row("3", "MDMA")
    assert rows["MDMA"].auc_high.value == float(raw["binary cls high"]) == 0.98659
    assert rows["MDMA"].kpd_x1e3.std == float(raw["KPD * 1e3 std"])
    assert rows["MDMA"].times_ms["GPU 100"].value == float(raw["time GPU 100"])
    assert rows["GEANT4"].times_ms["CPU 1"].value is None


def test_published_table_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("submission name,binary cls high\nGEANT4,0.5\n")
    with pytest.raises(DataError, match="bad.csv.*lacks columns"):
        published.select_published("2", path=bad)
    with pytest.raises(ValueError, match="no published CaloChallenge table"):
        published.published_csv_path("jets")


# ---------------------------------------------------------------- inputs
def test_training_curve_and_timing_readers(tmp_path):
    curve_path, timing_path = _write_curve_and_timing(tmp_path)
    curve = report_html.read_training_curve(curve_path)
    assert curve.step_label == "step" and list(curve.columns) == ["loss_critic", "loss_generator"]
    assert np.isnan(curve.columns["loss_critic"][4]) and curve.steps[4] == 40
    fig = plots.training_curve_figure(curve.steps, curve.columns, window=5)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss_critic", "loss_generator"]
    assert report_html.training_summary(curve) == "40 logged entries, step 0–390"
    table = report_html.load_timing(timing_path)
    assert ("device", "cpu") in table.info and ("n_parameters", "66,416") in table.info
    (group,) = table.groups
    assert group.name == "batch_sizes"
    assert group.columns == ["batch_size", "ms_per_shower", "ms_per_shower_with_voxelisation"]
    assert group.rows == [["1", "14.25", "15.5"], ["100", "1.125", "2.5"]]
    other = tmp_path / "timing_list.json"
    other.write_text(
        json.dumps(
            {
                "results": [{"batch_size": 10, "device": "cuda", "ms": 0.5}],
                "generation": {"n_samples": 60, "seconds": 0.25},
                "settings": {"batch_sizes": [1, 10], "nested": {"x": 1}},
            }
        )
    )
    table = report_html.load_timing(other)
    groups = {g.name: g for g in table.groups}
    assert groups["results"].columns == ["device", "batch_size", "ms"]
    assert groups["results"].rows == [["cuda", "10", "0.5"]]
    assert groups["generation"].rows == [["60", "0.25"]]
    # a list of scalars is one value; scalars beside a nested object are copied into its rows
    assert groups["settings/nested"].columns == ["batch_sizes", "x"]
    assert groups["settings/nested"].rows == [["1, 10", "1"]]


def test_training_panels_group_learning_rates_and_skip_bookkeeping(tmp_path):
    path = tmp_path / "c.csv"
    lines = ["step,epoch,lr_generator,lr_critic,loss_critic,elapsed_s"]
    lines += [f"{2 * i},{i // 3},{1e-4 / (i + 1)},{2e-4 / (i + 1)},{1 / (i + 1)},{0.5 * i}" for i in range(9)]
    path.write_text("\n".join(lines) + "\n")
    curve = report_html.read_training_curve(path)
    assert report_html.training_summary(curve) == "9 logged entries, step 0–16, last epoch 2, 4 s wall time"
    shown = {k: v for k, v in curve.columns.items() if k not in report_html.BOOKKEEPING_COLUMNS}
    panels = plots.training_panels(shown)
    assert [(name, list(curves)) for name, curves in panels] == [
        ("loss_critic", ["loss_critic"]),
        ("learning rate", ["lr_generator", "lr_critic"]),
    ]
    fig = plots.training_curve_figure(curve.steps, shown, window=1)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss_critic", "learning rate"]
    assert fig.axes[1].get_yscale() == "log"
    three = plots.training_curve_figure(curve.steps, {**shown, "gp": curve.columns["elapsed_s"]}, window=1)
    assert len(three.axes) == 3  # a 2 x 2 grid with the unused panel removed
    assert all(ax.get_xlabel() == "step" for ax in three.axes[1:])


def test_bad_inputs_name_the_file_and_write_nothing(tmp_path):
    metrics, npz = _write_shower_run(tmp_path / "run")
    arrays = dict(np.load(npz))
    del arrays["etot__generated"]
    broken = tmp_path / "broken.npz"
    np.savez(broken, **arrays)
    out = tmp_path / "r.html"
    base = [
        "--metrics",
        str(metrics),
        "--labels",
        "a",
        "--out",
        str(out),
        "--plots-dir",
        str(tmp_path / "p"),
        "--settings",
        SMALL,
    ]
    with pytest.raises(DataError, match=r"broken\.npz.*etot__generated"):
        report_html.main([*base, "--histograms", str(broken)])
    assert not out.exists()
    data = json.loads(metrics.read_text())
    data["rows"]["model"]["cls_low_auc"]["value"] = "high"
    bad_metrics = tmp_path / "bad_metrics.json"
    bad_metrics.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"bad_metrics\.json.*cls_low_auc"):
        report_html.load_metrics(bad_metrics)
    with pytest.raises(ValueError, match="one --histograms and one --labels"):
        report_html.main([*base, "--histograms", str(npz), str(npz)])
    with pytest.raises(ValueError, match="unknown report settings"):
        report_html.main([*base, "--histograms", str(npz), "--settings", '{"nope": 1}'])
    assert not out.exists()


# ---------------------------------------------------------------- the HTML page
def test_report_metrics_table_and_rows(plain_report):
    page, _ = plain_report
    parsed = _parse(page).rows
    rows = {cls: cells for table, cls, cells in parsed if table == "metrics-showers"}
    header = next(cells for table, cls, cells in parsed if table == "metrics-showers")
    assert header == ["metric", "scale", "MDMA run", "meaning"]
    keys = ["separation_E_ratio", "cls_trees_high_auc", "cls_low_auc", "fpd", "kpd", "mystery_score"]
    assert [key for key in rows if key in keys] == keys
    # the metrics file holds raw FPD 0.864978 ± 0.0051452 and KPD -1.2e-5: shown x 10^3
    assert rows["fpd"][:4] == ["FPD fpd", "× 10³", "865.0 \u00b1 5.1", "10.70 \u00b1 0.80"]
    assert rows["kpd"][1:4] == ["× 10³", "-0.012", "0.0004 \u00b1 0.0021"]
    assert rows["cls_low_auc"][1:4] == ["×1", "0.612 \u00b1 0.012", "0.5012 \u00b1 0.0040"]
    assert "ROC" in rows["cls_low_auc"][4] and "low-level" in rows["cls_low_auc"][4]
    # the sensitive tree test comes first among the classifier rows; the group says which rows are
    # comparable with the published tables and which settings this run used
    trees = rows["cls_trees_high_auc"]
    assert trees[:4] == [
        "AUC trees, high-level cls_trees_high_auc",
        "×1",
        "0.9917 ± 0.0012",
        "0.5068 ± 0.0043",
    ]
    assert "sensitive" in trees[4] and "published" in rows["cls_low_auc"][4]
    note = next(c[0] for _, cls, c in parsed if cls == "group" and metric_catalogue.GROUP_CLASSIFIER in c[0])
    assert "config/full.yaml" in note and "comparable with the published tables" in note
    assert "MDMA run: trees: HistGradientBoostingClassifier, 5-fold; network: 2 x 128" in note
    assert rows["separation_E_ratio"][2:4] == ["0.0123", "0.002"]
    assert rows["mystery_score"][2:5] == ["7.5", "1.25", "(no description known for this metric name)"]
    groups = [cells[0] for table, cls, cells in parsed if table == "metrics-showers" and cls == "group"]
    assert [g.split(" \u2014")[0] for g in groups] == [
        metric_catalogue.GROUP_SEPARATION,
        metric_catalogue.GROUP_CLASSIFIER,
        metric_catalogue.GROUP_FPD_SHOWERS,
        metric_catalogue.GROUP_OTHER,
    ]
    separation = [cells for table, _, cells in parsed if table == "separation-table"]
    assert ["energy", "etot", "E_tot / E_inc", "0.0123"] in separation
    assert ["layers", "sparsity_3", "sparsity layer 3", "\u2014"] in separation
    timing = [cells for table, _, cells in parsed if table == "timing-table"]
    assert ["1", "14.25", "15.5"] in timing
    assert ["batch_size", "torch ms/shower", "exported (ONNX Runtime) ms/shower"] in timing
    assert ["1", "22.5", "6.5"] in timing and ["100", "2.75", "4.5"] in timing


def test_separation_summary_layer_matrix():
    histograms = [
        {"name": "E_ratio", "xlabel": "E", "group": "E_ratio", "separation_power": 0.5},
        {"name": "E_layer_00", "xlabel": "E0", "group": "E_layer", "separation_power": None},
        {"name": "E_layer_01", "xlabel": "E1", "group": "E_layer", "separation_power": 0.25},
        {"name": "EC_r_01", "xlabel": "r1", "group": "EC_r", "separation_power": 1.0},
        {"name": "EC_r_00", "xlabel": "r0", "group": "EC_r", "separation_power": 0.0},
        {"name": "efp_3", "xlabel": "one layer only", "group": "efp", "separation_power": 0.1},
    ]
    summary = report_html.separation_summary(histograms)
    assert [s["name"] for s in summary["singles"]] == ["E_ratio", "efp_3"]
    assert summary["layer_groups"] == ["E_layer", "EC_r"]
    texts = [[cell["text"] for cell in row["cells"]] for row in summary["layer_rows"]]
    assert [row["layer"] for row in summary["layer_rows"]] == [0, 1]
    # S = 1 means disjoint samples: shown as fully separated, never as a blank
    assert texts == [["\u2014", "0"], ["0.25", "1.00 (no overlap)"]]
    assert summary["layer_rows"][1]["cells"][1]["style"].endswith("0.550)")
    assert (summary["n_no_overlap"], summary["n_histograms"]) == (1, 6)
    # with the entries in range: a generated sample without entries is no overlap (S counted as 1,
    # whether metrics.json left it undefined or not); both samples empty stays undefined
    totals = {"E_layer_00": (120.0, 0.0), "efp_3": (0.0, 0.0), "E_ratio": (10.0, 10.0)}
    summary = report_html.separation_summary(histograms, totals)
    assert summary["layer_rows"][0]["cells"][0]["text"] == "1.00 (no overlap)"
    assert summary["layer_rows"][0]["cells"][0]["style"].endswith("0.550)")
    assert [s["value"] for s in summary["singles"]] == ["0.5", "0.1"]
    assert summary["n_no_overlap"] == 2
    counts = report_html.group_overlap_counts(histograms, totals)
    assert counts == {"E_ratio": (1, 0), "E_layer": (2, 1), "EC_r": (2, 1), "efp": (1, 0)}


def test_report_embeds_one_valid_png_per_plot(plain_report):
    page, plots_dir = plain_report
    images = _parse(page).images
    files = sorted(plots_dir.glob("*.png"))
    # etot (elayer_3 / sparsity_3 are per-layer and layer 3 is not a default layer) + layer profile,
    # radial profile, layer images, hits vs E_inc + 1 training curve
    assert len(files) == 6
    assert len(images) == 6
    assert not [f for f in files if "elayer_3" in f.name or "sparsity_3" in f.name]
    decoded = []
    for src in images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        decoded.append(data)
    assert sorted(decoded) == sorted(f.read_bytes() for f in files)


def test_plot_run_draws_per_layer_histograms_of_the_selected_layers_only(tmp_path):
    metrics_path, npz = _write_shower_run(tmp_path / "run", dataset="toy")
    metrics = report_html.load_metrics(metrics_path)
    arrays = report_html.load_histograms(npz, metrics)
    style = plots.PlotStyle(dpi=20, width=3.0)

    def names(layers: list[int]) -> list[str]:
        out = tmp_path / str(layers[0])
        records = plots.plot_run(metrics, arrays, out, style=style, shower_layers=layers)
        return [record.path.name for record in records]

    assert {"Generated-layers-elayer_3.png", "Generated-layers-sparsity_3.png"} <= set(names([3]))
    other = names([1])
    assert not [n for n in other if "_3" in n] and "Generated-energy-etot.png" in other


def test_published_rows_only_with_real_data(plain_report, real_report):
    plain, _ = plain_report
    assert "published-table" not in plain and "arXiv:2410.21611" not in plain
    page, _ = real_report
    assert "published numbers (arXiv:2410.21611)" in page
    assert "the tree classifier test has no published counterpart" in page
    rows = {cells[0]: cells for table, _, cells in _parse(page).rows if table == "published-table"}
    assert set(rows) == {"submission", "GEANT4", "MDMA", "CaloPointFlow", "CaloDREAM"}
    raw = _csv_row("2", "MDMA")  # independent read of the shipped table
    assert (raw["FPD * 1e3"], raw["FPD * 1e3 std"]) == ("864.978", "5.1452")
    columns = rows["submission"]
    assert rows["MDMA"][columns.index("FPD × 10³")] == "865.0 \u00b1 5.1"
    assert rows["MDMA"][columns.index("AUC high")] == "0.98673 \u00b1 0.00061"
    assert rows["MDMA"][columns.index("time GPU 1 [ms/shower]")] == "6.396 \u00b1 0.096"
    assert rows["GEANT4"][columns.index("FPD × 10³")] == "10.78 \u00b1 0.79"
    assert rows["CaloDREAM"][1] == "best binary cls high AUC"


def test_real_data_with_unknown_dataset_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="names no CaloChallenge dataset"):
        _run_report(tmp_path, "--real-data", dataset="toy")
    assert not (tmp_path / "plots").exists() and not (tmp_path / "report.html").exists()  # checked first


def test_text_is_escaped(tmp_path):
    page, _ = _run_report(tmp_path, label="<script>alert(1)</script>", dataset="toy")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Test &lt;report&gt; &amp; co" in page


def test_jets_report(tmp_path):
    edges = np.linspace(0.0, 0.3, 4)
    np.savez(
        tmp_path / "h.npz",
        mass__edges=edges,
        mass__reference=np.array([1.0, 5.0, 2.0]),
        mass__generated=np.array([2.0, 4.0, 2.0]),
        mult__edges=np.arange(0.0, 31.0, 10.0),
        mult__reference=np.array([3.0, 4.0, 3.0]),
        mult__generated=np.array([2.0, 5.0, 3.0]),
    )
    metrics = {
        "kind": "jets",
        "dataset": "jetnet-gluon",
        "settings": {},
        "rows": {
            "model": {
                "W1M": {"value": 0.00071, "error": 0.00005},
                "W1M_x1e3": {"value": 0.71, "error": 0.05},
            },
            "real_vs_real": {
                "W1M": {"value": 0.00028, "error": 0.00005},
                "W1M_x1e3": {"value": 0.28, "error": 0.05},
            },
        },
        "histograms": [
            {
                "name": "mass",
                "xlabel": "relative mass m/pT",
                "logx": False,
                "logy": False,
                "group": "jet",
                "separation_power": 0.01,
            },
            {
                "name": "mult",
                "xlabel": "particle multiplicity",
                "logx": False,
                "logy": True,
                "group": "jet",
                "separation_power": 0.02,
            },
        ],
    }
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    out = tmp_path / "r.html"
    report_html.main(
        [
            "--metrics",
            str(tmp_path / "m.json"),
            "--histograms",
            str(tmp_path / "h.npz"),
            "--labels",
            "jets",
            "--real-data",
            "--settings",
            SMALL,
            "--out",
            str(out),
            "--plots-dir",
            str(tmp_path / "p"),
        ]
    )
    page = out.read_text()
    assert len(_parse(page).images) == 2
    assert "no published CaloChallenge numbers apply to jets" in page
    assert "W1 of the relative jet mass" in page
    rows = {cls: cells for table, cls, cells in _parse(page).rows if table == "metrics-jets"}
    assert "W1M" not in rows  # the raw duplicate is skipped
    assert rows["W1M_x1e3"][1:4] == ["× 10³", "0.710 \u00b1 0.050", "0.280 \u00b1 0.050"]


def test_input_data_warnings_are_shown(tmp_path):
    clean, warned = tmp_path / "train.summary.json", tmp_path / "reference.summary.json"
    clean.write_text(json.dumps({"file": "data/train.h5", "sha256": "ab" * 32, "warnings": []}))
    warning = "data/ref.h5: 1 of 12 showers are empty (no voxel energy; first: shower 4)"
    warned.write_text(json.dumps({"file": "data/ref.h5", "sha256": "cd" * 32, "warnings": [warning]}))
    page, _ = _run_report(tmp_path / "ok", "--data-summaries", str(clean), str(warned))
    assert f'<li class="warning">warning: {warning}</li>' in page
    assert "<td>data/train.h5</td>" in page and "passed without warnings" in page and "cd" * 32 in page
    plain, _ = _run_report(tmp_path / "plain")
    assert 'id="input-data"' not in plain
    bad = tmp_path / "bad.summary.json"
    bad.write_text(json.dumps({"file": "x.h5", "sha256": "00", "warnings": "none"}))
    with pytest.raises(DataError, match=r"bad\.summary\.json: 'warnings' must be a list of strings"):
        _run_report(tmp_path / "bad", "--data-summaries", str(bad))
    assert not (tmp_path / "bad" / "report.html").exists()
    bad.write_text("{}")
    with pytest.raises(DataError, match=r"bad\.summary\.json: not a data summary of the validate stage"):
        report_html.load_data_summary(bad)
