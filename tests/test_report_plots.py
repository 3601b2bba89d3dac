"""Tests of the report's plot conventions: incident-energy axis, out-of-range arrows, legends off the
data, log y for EFPs, the "fixed n" multiplicity and jet timing without calorimeter-only fields."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.report import html as report_html
from pipelines.report import plots

STYLE = plots.PlotStyle(dpi=30, width=3.0)


def test_ratio_panel_marks_points_beyond_its_range_with_arrows():
    # normalised ratios 4.0, 1.0, 0.1 (ref 10/40/50 of 100, gen 40/40/5 of 85 -> scaled by hand below)
    reference = np.array([10.0, 40.0, 50.0])
    generated = np.array([40.0, 40.0, 5.0])
    fig = plots.histogram_figure(np.arange(4.0), reference, generated, xlabel="x", style=STYLE)
    ax_ratio = fig.axes[1]
    ratio = (generated / generated.sum()) / (reference / reference.sum())
    assert ratio[0] > 1.5 and 0.5 < ratio[1] < 1.5 and ratio[2] < 0.5
    above = [line for line in ax_ratio.lines if line.get_gid() == "ratio-above"]
    below = [line for line in ax_ratio.lines if line.get_gid() == "ratio-below"]
    assert len(above) == 1 and len(below) == 1
    np.testing.assert_allclose(above[0].get_xdata(), [0.5])
    np.testing.assert_allclose(below[0].get_xdata(), [2.5])
    low, high = STYLE.ratio_range
    assert above[0].get_marker() == "^" and low < above[0].get_ydata()[0] < high
    assert below[0].get_marker() == "v" and low < below[0].get_ydata()[0] < high
    inside = plots.histogram_figure(np.arange(4.0), reference, reference, xlabel="x", style=STYLE)
    assert not [line for line in inside.axes[1].lines if str(line.get_gid()).startswith("ratio-")]


def test_bin_centres_and_out_of_range():
    np.testing.assert_allclose(plots.bin_centres(np.array([1.0, 100.0]), log=True), [10.0])
    np.testing.assert_allclose(plots.bin_centres(np.array([1.0, 3.0])), [2.0])
    above, below = plots.out_of_range(np.array([2.0, np.nan, 0.1, 1.0]), 0.5, 1.5)
    assert above.tolist() == [True, False, False, False] and below.tolist() == [False, False, True, False]


@pytest.mark.parametrize("kind", ["histogram", "profile", "training"])
def test_legends_sit_above_the_data(kind):
    edges = np.linspace(0.0, 1.0, 6)
    counts = np.array([5.0, 50.0, 100.0, 50.0, 5.0])
    if kind == "histogram":
        fig = plots.histogram_figure(edges, counts, counts, xlabel="x", label="a long run label", style=STYLE)
    elif kind == "profile":
        fig = plots.profile_figure(edges, counts, counts, xlabel="x", ylabel="y", style=STYLE)
    else:
        steps = np.arange(100.0)
        fig = plots.training_curve_figure(
            steps, {"lr_a": 1 / (steps + 1), "lr_b": 2 / (steps + 1)}, style=STYLE
        )
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert legend is not None
    box, axes_box = legend.get_window_extent(), ax.get_window_extent()
    assert box.y0 >= axes_box.y1 - 1.0  # wholly above the plotting area
    assert box.y1 <= fig.bbox.y1 + 1.0  # and still inside the figure


def _shower_arrays() -> dict[str, np.ndarray]:
    shape = (4, 3, 2)
    return {
        "mean_shower__reference": np.ones(shape),
        "mean_shower__generated": np.ones(shape),
        "nhits_vs_einc__edges": np.array([3.0, 4.0, 5.0]),  # log10(E_inc / MeV)
        "nhits_vs_einc__reference": np.array([100.0, 300.0]),
        "nhits_vs_einc__generated": np.array([110.0, 280.0]),
    }


def test_hits_vs_incident_energy_axis_is_in_mev_on_a_log_axis(tmp_path, monkeypatch):
    drawn = {}
    original = plots.profile_figure

    def spy(edges, *args, **kwargs):
        fig = original(edges, *args, **kwargs)
        drawn[kwargs["xlabel"]] = (np.asarray(edges), fig)
        return fig

    monkeypatch.setattr(plots, "profile_figure", spy)
    metrics = {"kind": "showers", "dataset": "toy", "histograms": []}
    records = plots.plot_run(metrics, _shower_arrays(), tmp_path, style=STYLE, shower_layers=[1])
    assert records[-1].path.name == "Generated-hit_multiplicity-nhits_vs_einc.png"
    edges, fig = drawn["incident energy E_inc [MeV]"]
    np.testing.assert_allclose(edges, [1e3, 1e4, 1e5])  # 10 ** the stored log10 edges
    ax_ratio = fig.axes[1]
    assert ax_ratio.get_xscale() == "log" and ax_ratio.get_xlim() == pytest.approx((1e3, 1e5))
    labels = [t.get_text() for t in ax_ratio.get_xticklabels() if t.get_text()]
    assert any("10^{3}" in text or "10^{4}" in text for text in labels)  # decades in MeV, not log10 values


def _jet_metrics(histograms: list[dict]) -> dict:
    return {"kind": "jets", "dataset": "jets", "histograms": histograms}


def _entry(name: str, group: str, logy: bool = False) -> dict:
    return {
        "name": name,
        "xlabel": name,
        "logx": False,
        "logy": logy,
        "group": group,
        "separation_power": 0.1,
    }


def test_efp_histograms_use_log_y_and_fixed_n_says_so(tmp_path, monkeypatch):
    edges = np.arange(-0.5, 31.0, 1.0)
    reference = np.zeros(31)
    reference[30], reference[17] = 1499.0, 1.0
    generated = np.zeros(31)
    generated[30] = 750.0
    arrays = {
        "efp_square__edges": np.geomspace(1e-5, 1e-2, 4),
        "efp_square__reference": np.array([3.0, 40.0, 3.0]),
        "efp_square__generated": np.array([2.0, 40.0, 4.0]),
        "multiplicity__edges": edges,
        "multiplicity__reference": reference,
        "multiplicity__generated": generated,
    }
    drawn: dict[str, object] = {}
    original = plots.histogram_figure

    def spy(*args, **kwargs):
        fig = original(*args, **kwargs)
        drawn[kwargs["xlabel"]] = fig
        return fig

    monkeypatch.setattr(plots, "histogram_figure", spy)
    metrics = _jet_metrics([_entry("efp_square", "efp"), _entry("multiplicity", "jet")])
    records = plots.plot_run(metrics, arrays, tmp_path, style=STYLE)
    assert drawn["efp_square"].axes[0].get_yscale() == "log"
    assert "multiplicity" not in drawn  # no near-empty histogram
    text = "fixed n = 30: all 750 generated jets; reference: 1,499 of 1,500 jets (99.93 %) at n = 30"
    assert plots.fixed_n_text(edges, reference, generated) == text
    (record,) = [r for r in records if r.title == "multiplicity"]
    assert record.caption == f"multiplicity: {text}"
    assert plots.fixed_n_text(edges, generated, generated).endswith("all 750 reference jets too")
    with pytest.raises(ValueError, match="more than one bin"):
        plots.fixed_n_text(edges, reference, reference)


def test_jet_timing_leaves_out_calorimeter_fields(tmp_path):
    timing = {
        "kind": "jets",
        "device": "cpu",
        "generation": {
            "n_samples": 10,
            "n_collided": 0,
            "collided_fraction": 0.0,
            "n_voxels_below_threshold": 0,
        },
        "settings": {"collisions": "shift", "batch_size": 1000},
    }
    path = tmp_path / "timing.json"
    path.write_text(json.dumps(timing))
    table = report_html.load_timing(path)
    columns = {name for group in table.groups for name in group.columns}
    assert columns == {"n_samples", "batch_size"}
    timing["kind"] = "showers"
    path.write_text(json.dumps(timing))
    shown = {name for group in report_html.load_timing(path).groups for name in group.columns}
    assert {"n_collided", "collisions", "n_voxels_below_threshold"} <= shown
    del timing["kind"]
    path.write_text(json.dumps(timing))
    assert "collisions" not in {c for g in report_html.load_timing(path, "jets").groups for c in g.columns}


def test_plots_also_written_as_pdf_when_asked(tmp_path):
    assert report_html.parse_settings('{"pdf": true}').style().pdf is True
    arrays = {
        "x__edges": np.arange(4.0),
        "x__reference": np.array([1.0, 2.0, 3.0]),
        "x__generated": np.array([1.0, 3.0, 2.0]),
    }
    metrics = _jet_metrics([_entry("x", "jet")])
    (record,) = plots.plot_run(
        metrics, arrays, tmp_path / "pdf", style=plots.PlotStyle(dpi=20, width=3.0, pdf=True)
    )
    assert record.path.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    (plain,) = plots.plot_run(metrics, arrays, tmp_path / "png", style=STYLE)
    assert plain.path.exists() and not plain.path.with_suffix(".pdf").exists()
