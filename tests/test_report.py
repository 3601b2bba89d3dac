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
from pipelines.report import html as report_html
from pipelines.report import plots, published

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
    arrays["nhits_vs_einc__edges"] = np.geomspace(1e3, 1e6, 5)
    arrays["nhits_vs_einc__reference"] = np.array([100.0, 200.0, 300.0, 400.0])
    arrays["nhits_vs_einc__generated"] = np.array([110.0, 190.0, 330.0, 400.0])
    npz = directory / "histograms.npz"
    np.savez(npz, **arrays)
    metrics = {
        "kind": "showers",
        "dataset": dataset,
        "rows": {
            "model": {
                "auc_low": {"value": 0.61234, "error": 0.0123},
                "fpd_x1e3": {"value": 864.978, "error": 5.1452},
                "kpd_x1e3": {"value": -0.012, "error": None},
            },
            "real_vs_real": {
                "auc_low": {"value": 0.5012, "error": 0.004},
                "fpd_x1e3": {"value": 10.7, "error": 0.8},
                "kpd_x1e3": {"value": 0.0004, "error": 0.0021},
            },
        },
        "settings": {"n_showers": 20000, "classifier": {"hidden": [64, 64]}, "note": label_note},
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
            self._row, self._row_class = [], attrs.get("class") or ""
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


@pytest.fixture(scope="module")
def plain_report(tmp_path_factory) -> tuple[str, Path]:
    return _run_report(tmp_path_factory.mktemp("plain"))


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


def test_metric_descriptions_read_scale_from_name():
    meaning, scale = report_html.describe_metric("fpd_x1e3")
    assert "Fréchet" in meaning and scale == "value × 10^3"
    meaning, scale = report_html.describe_metric("auc_high")
    assert "AUC" in meaning and "high-level" in meaning and "no rescaling" in scale


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
    table = report_html.load_timing(timing_path)
    assert ("device", "cpu") in table.info and ("n_parameters", "66,416") in table.info
    assert table.columns == ["group", "batch_size", "ms_per_shower", "ms_per_shower_with_voxelisation"]
    assert table.rows == [["batch_sizes", "1", "14.25", "15.5"], ["batch_sizes", "100", "1.125", "2.5"]]
    other = tmp_path / "timing_list.json"
    other.write_text(json.dumps({"results": [{"batch_size": 10, "device": "cuda", "ms": 0.5}]}))
    table = report_html.load_timing(other)
    assert table.columns == ["group", "device", "batch_size", "ms"]
    assert table.rows == [["results", "cuda", "10", "0.5"]]


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
    data["rows"]["model"]["auc_low"]["value"] = "high"
    bad_metrics = tmp_path / "bad_metrics.json"
    bad_metrics.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"bad_metrics\.json.*auc_low"):
        report_html.load_metrics(bad_metrics)
    with pytest.raises(ValueError, match="one --histograms and one --labels"):
        report_html.main([*base, "--histograms", str(npz), str(npz)])
    with pytest.raises(ValueError, match="unknown report settings"):
        report_html.main([*base, "--histograms", str(npz), "--settings", '{"nope": 1}'])
    assert not out.exists()


# ---------------------------------------------------------------- the HTML page
def test_report_metrics_table_and_rows(plain_report):
    page, _ = plain_report
    rows = [(cls, cells) for table, cls, cells in _parse(page).rows if table == "metrics-table"]
    header = rows[0][1]
    assert header == ["run", "comparison", "auc_low", "fpd_x1e3", "kpd_x1e3"]
    model = next(cells for cls, cells in rows if cls == "model")
    rvr = next(cells for cls, cells in rows if cls == "rvr")
    assert model == ["MDMA run", "model vs reference", "0.612 \u00b1 0.012", "865.0 \u00b1 5.1", "-0.012"]
    assert rvr == [
        "MDMA run",
        "reference vs reference (real-vs-real)",
        "0.5012 \u00b1 0.0040",
        "10.70 \u00b1 0.80",
        "0.0004 \u00b1 0.0021",
    ]
    separation = [cells for table, _, cells in _parse(page).rows if table == "separation-table"]
    assert ["energy", "etot", "E_tot / E_inc", "0.0123"] in separation
    assert ["layers", "sparsity_3", "sparsity layer 3", "\u2014"] in separation
    timing = [cells for table, _, cells in _parse(page).rows if table == "timing-table"]
    assert ["batch_sizes", "1", "14.25", "15.5"] in timing


def test_report_embeds_one_valid_png_per_plot(plain_report):
    page, plots_dir = plain_report
    images = _parse(page).images
    files = sorted(plots_dir.glob("*.png"))
    # 3 listed histograms + layer profile, radial profile, layer images, hits vs E_inc + 1 training curve
    assert len(files) == 8
    assert len(images) == 8
    decoded = []
    for src in images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        decoded.append(data)
    assert sorted(decoded) == sorted(f.read_bytes() for f in files)


def test_published_rows_only_with_real_data(plain_report, real_report):
    plain, _ = plain_report
    assert "published-table" not in plain and "arXiv:2410.21611" not in plain
    page, _ = real_report
    assert "published numbers (arXiv:2410.21611)" in page
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
            "model": {"w1m_x1e3": {"value": 0.71, "error": 0.05}},
            "real_vs_real": {"w1m_x1e3": {"value": 0.28, "error": 0.05}},
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
    assert "Wasserstein distance of the relative jet mass" in page
