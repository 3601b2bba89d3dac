"""Tests of the report's verdict (classes, sentence, training budget), the "no overlap" separation
powers and the conventions list, on hand-made metrics files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipelines.report import html as report_html
from pipelines.report import verdict

SMALL = json.dumps({"dpi": 20, "figure_width": 3.0})


def _entry(value: float, error: float | None = None, **extra) -> dict:
    return {"value": value, "error": error, **extra}


# ---------------------------------------------------------------- classes by hand
@pytest.mark.parametrize(
    ("key", "model", "real", "ratio", "pull", "expected"),
    [
        # pull (0.0074 - 0.0040) / hypot(0.0010, 0.0012) = 2.18: not within; ratio 1.85 <= 3: close
        ("W1M", _entry(0.0074, 0.0010), _entry(0.0040, 0.0012), 1.85, 2.18, verdict.CLOSE),
        # pull (0.52 - 0.51) / hypot(0.01, 0.01) = 0.71: within
        ("cls_trees_jet_auc", _entry(0.52, 0.01), _entry(0.51, 0.01), 2.0, 0.71, verdict.WITHIN),
        # AUC excess over 0.5: ratio 0.469 / 0.0068 = 69, pull 0.4622 / hypot(0.0025, 0.0043) = 92.9: far
        ("cls_trees_high_auc", _entry(0.969, 0.0025), _entry(0.5068, 0.0043), 69.0, 92.9, verdict.FAR),
        # no errors: ratio only; 0.0225 / 0.02 = 1.125 <= 1.5: within
        ("separation_E_ratio", _entry(0.0225), _entry(0.02), 1.125, None, verdict.WITHIN),
        # no errors: 0.05 / 0.02 = 2.5: close; 0.07 / 0.02 = 3.5: far
        ("separation_E_layer", _entry(0.05), _entry(0.02), 2.5, None, verdict.CLOSE),
        ("separation_EC_r", _entry(0.07), _entry(0.02), 3.5, None, verdict.FAR),
        # large pull but small multiple of the floor: close (pull 10, ratio 1.2)
        ("fpd", _entry(0.012, 2e-4 / 2**0.5), _entry(0.01, 2e-4 / 2**0.5), 1.2, 10.0, verdict.CLOSE),
        # model below its floor: within whatever the numbers
        ("kpd", _entry(-0.001), _entry(0.0005), -2.0, None, verdict.WITHIN),
        # floor at the ideal value and no errors: no ratio, no pull
        ("kpd", _entry(0.001), _entry(-0.0002), None, None, verdict.UNRATED),
        # COV, higher is better: Δ = 0.55 - 0.40, pull 0.15 / hypot(0.02, 0.02) = 5.30, ratio 0.55 / 0.40
        ("COV", _entry(0.40, 0.02), _entry(0.55, 0.02), 1.375, 5.30, verdict.CLOSE),
        # more coverage than the floor: within
        ("COV", _entry(0.60, 0.02), _entry(0.55, 0.02), 0.917, -1.77, verdict.WITHIN),
        # no errors: 0.55 / 0.45 = 1.22 within; a collapsed model 0.55 / 0.05 = 11: far
        ("COV", _entry(0.45), _entry(0.55), 1.22, None, verdict.WITHIN),
        ("COV", _entry(0.05), _entry(0.55), 11.0, None, verdict.FAR),
        # MMD grows as the samples differ: pull 0.04 / hypot(0.002, 0.002) = 14.1, ratio 1.8: close
        ("MMD", _entry(0.09, 0.002), _entry(0.05, 0.002), 1.8, 14.1, verdict.CLOSE),
    ],
)
def test_compare_classes_hand_values(key, model, real, ratio, pull, expected):
    found = verdict.compare(key, key, model, real)
    assert found is not None and found.verdict == expected
    if ratio is None:
        assert found.ratio is None
    else:
        assert found.ratio == pytest.approx(ratio, rel=0.01)
    if pull is None:
        assert found.pull is None
    else:
        assert found.pull == pytest.approx(pull, rel=0.01)


def test_coverage_zero_is_infinitely_far():
    found = verdict.compare("COV", "COV", _entry(0.0), _entry(0.5))
    assert found is not None and found.ratio == float("inf") and found.verdict == verdict.FAR


def test_threshold_edges_are_inclusive():
    assert verdict.classify(None, verdict.WITHIN_PULL, 1.0) == verdict.WITHIN
    assert verdict.classify(100.0, verdict.CLOSE_PULL, 1.0) == verdict.CLOSE
    assert verdict.classify(100.0, verdict.CLOSE_PULL + 0.01, 1.0) == verdict.FAR
    assert verdict.classify(verdict.WITHIN_RATIO, None, 1.0) == verdict.WITHIN
    assert verdict.classify(verdict.CLOSE_RATIO, None, 1.0) == verdict.CLOSE
    assert verdict.classify(verdict.CLOSE_RATIO + 0.01, None, 1.0) == verdict.FAR
    assert verdict.compare("fpd", "FPD", {"value": None}, _entry(0.1)) is None


def _rows(model: dict, real: dict) -> dict:
    return {"model": model, "real_vs_real": real}


def test_run_verdicts_skip_component_and_unknown_rows():
    rows = _rows(
        {"W1M_x1e3": _entry(7.4, 1.0), "W1P_eta_rel_x1e3": _entry(9.0, 0.1), "odd": _entry(5.0)},
        {"W1M_x1e3": _entry(4.0, 1.2), "W1P_eta_rel_x1e3": _entry(1.0, 0.1), "odd": _entry(1.0)},
    )
    assert [v.key for v in verdict.run_verdicts(rows, "jets")] == ["W1M_x1e3"]


def test_sentences_for_hand_made_runs():
    far = verdict.run_verdicts(
        _rows(
            {"fpd": _entry(0.7, 0.01), "cls_trees_high_auc": _entry(0.969, 0.0025), "kpd": _entry(1e-6)},
            {"fpd": _entry(0.69, 0.01), "cls_trees_high_auc": _entry(0.5068, 0.0043), "kpd": _entry(2e-6)},
        ),
        "showers",
    )
    assert [(v.key, v.verdict) for v in far] == [
        ("cls_trees_high_auc", verdict.FAR),
        ("fpd", verdict.WITHIN),
        ("kpd", verdict.WITHIN),
    ]
    assert verdict.summary_sentence(far) == (
        "The model is clearly distinguishable from the reference: 1 of 3 metrics far from the "
        "real-vs-real floor (worst: AUC trees, high-level, 0.969 vs 0.507 real vs real), 0 close, "
        "2 within the real-vs-real spread."
    )
    assert verdict.overall_class(far) == verdict.FAR
    close = verdict.run_verdicts(
        _rows({"W1M_x1e3": _entry(7.4, 1.0), "FPD_x1e3": _entry(1.0, 1.0)},
              {"W1M_x1e3": _entry(4.0, 1.2), "FPD_x1e3": _entry(1.1, 1.0)}),
        "jets",
    )  # fmt: skip
    assert verdict.summary_sentence(close, {"W1M_x1e3": "7.4 vs 4.0"}) == (
        "The model is close to the reference: 1 of 2 metrics within the real-vs-real spread, 1 close "
        "(largest difference: W1M, 7.4 vs 4.0 real vs real), none far."
    )
    good = verdict.run_verdicts(_rows({"W1M_x1e3": _entry(4.1, 1.0)}, {"W1M_x1e3": _entry(4.0, 1.0)}), "jets")
    assert verdict.summary_sentence(good) == (
        "The model is indistinguishable from the reference by these metrics: all 1 are within the "
        "real-vs-real spread."
    )
    assert verdict.overall_class(good) == verdict.WITHIN
    assert "no verdict" in verdict.summary_sentence([])


def test_cov_and_mmd_are_headline_metrics_of_a_jet_run():
    rows = _rows({"COV": _entry(0.30, 0.02), "MMD": _entry(0.07, 0.002)},
                 {"COV": _entry(0.52, 0.03), "MMD": _entry(0.06, 0.002)})  # fmt: skip
    found = verdict.run_verdicts(rows, "jets")
    # COV: Δ = 0.52 - 0.30, pull 0.22 / hypot(0.02, 0.03) = 6.1, ratio 0.52 / 0.30 = 1.73: close;
    # MMD: pull 0.01 / hypot(0.002, 0.002) = 3.5, ratio 0.07 / 0.06 = 1.17: close
    assert [(v.key, v.verdict) for v in found] == [("COV", verdict.CLOSE), ("MMD", verdict.CLOSE)]
    assert found[0].pull == pytest.approx(6.10, rel=0.01) and found[0].ratio == pytest.approx(1.733, rel=0.01)


# ---------------------------------------------------------------- the rendered report
def _write_jet_run(directory: Path, *, conventions: bool) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(
        directory / "h.npz",
        jet_relative_mass__edges=np.linspace(0.0, 0.3, 4),
        jet_relative_mass__reference=np.array([1.0, 5.0, 2.0]),
        jet_relative_mass__generated=np.array([2.0, 4.0, 2.0]),
        efp_square__edges=np.geomspace(1e-5, 1e-2, 4),
        efp_square__reference=np.array([3.0, 4.0, 3.0]),
        efp_square__generated=np.array([0.0, 0.0, 0.0]),
    )
    metrics = {
        "kind": "jets",
        "dataset": "jets-top30",
        "settings": {},
        "rows": _rows(
            {"W1M_x1e3": _entry(7.44, 1.03), "cls_trees_jet_auc": _entry(0.839, 0.016)},
            {"W1M_x1e3": _entry(4.04, 1.16), "cls_trees_jet_auc": _entry(0.505, 0.02)},
        ),
        "histograms": [
            {"name": "jet_relative_mass", "xlabel": "jet m / pT", "logx": False, "logy": False,
             "group": "jet", "separation_power": 0.01},
            {"name": "efp_square", "xlabel": "EFP", "logx": True, "logy": False, "group": "efp",
             "separation_power": None},
        ],
    }  # fmt: skip
    if conventions:
        metrics["conventions"] = {"W1": "Wasserstein-1 distance, mean over batches.", "AUC": "0.5 is ideal."}
    (directory / "m.json").write_text(json.dumps(metrics))
    summary = {"family": "flow-matching", "steps": 2000, "total_train_time_s": 759.08, "device": "cpu",
               "parameters": 240067, "exported_step": 800}  # fmt: skip
    (directory / "summary.json").write_text(json.dumps(summary))
    return [
        "--metrics", str(directory / "m.json"), "--histograms", str(directory / "h.npz"),
        "--training-summary", str(directory / "summary.json"),
    ]  # fmt: skip


def _render(tmp_path: Path, *, conventions: bool = True) -> str:
    args = _write_jet_run(tmp_path / "run", conventions=conventions)
    out = tmp_path / "r.html"
    argv = [*args, "--labels", "jets / flow", "--settings", SMALL, "--out", str(out)]
    assert report_html.main([*argv, "--plots-dir", str(tmp_path / "p")]) == 0
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def jet_page(tmp_path_factory) -> str:
    return _render(tmp_path_factory.mktemp("verdict"))


def test_verdict_comes_first_with_sentence_and_budget(jet_page):
    main = jet_page[jet_page.index("<main>") :]
    assert main.index('id="verdict"') < main.index('id="summary"') < main.index('id="metrics"')
    block = re.search(r'<div class="verdict v-(\w+)" data-run="jets / flow" data-verdict="(\w+)">', jet_page)
    assert block is not None and block.groups() == ("far", "far")
    assert (
        "The model is clearly distinguishable from the reference: 1 of 2 metrics far from the real-vs-real "
        "floor (worst: AUC trees, per-jet, 0.839 vs 0.505 real vs real), 1 close, 0 within the "
        "real-vs-real spread." in jet_page
    )
    assert "flow-matching: 2,000 steps in 12.7 min on cpu, 240,067 parameters (exported step 800)" in jet_page
    rows = dict(re.findall(r'<tr data-metric="([^"]+)" data-verdict="(\w+)">', jet_page))
    assert rows == {"W1M_x1e3": "close", "cls_trees_jet_auc": "far"}
    assert 'href="#metric-jets-W1M_x1e3"' in jet_page and 'id="metric-jets-W1M_x1e3"' in jet_page
    assert f"pull ≤ {verdict.WITHIN_PULL:g}" in jet_page


def test_no_overlap_and_conventions(jet_page, tmp_path):
    # the EFP histogram has no generated entry in range: fully separated, counted, never a blank
    assert re.search(
        r"<td>efp</td><td>efp_square</td><td>EFP</td><td class=\"num\">1.00 \(no overlap\)</td>", jet_page
    )
    assert "1 of 2 histograms with no overlap (S = 1.00)." in jet_page
    assert "<dt>W1</dt><dd>Wasserstein-1 distance, mean over batches.</dd>" in jet_page
    plain = _render(tmp_path, conventions=False)
    assert 'id="conventions"' not in plain and "Conventions" not in plain


def test_new_separation_entries_show_their_no_overlap_count():
    run = {
        "label": "a",
        "kind": "showers",
        "metrics": {
            "rows": _rows(
                {"separation_E_layer": _entry(0.31, 0.02, n_histograms=45, n_no_overlap=3)},
                {"separation_E_layer": _entry(0.02, 0.001, n_histograms=45, n_no_overlap=0)},
            )
        },
    }
    (table,) = report_html.metrics_tables([run])
    (row,) = table["groups"][0]["rows"]
    assert [c["text"] for c in row["cells"]] == [
        "0.310 ± 0.020 (3 of 45 histograms: no overlap)",
        "0.0200 ± 0.0010",
    ]
    # today's entries (value only): the model row's count comes from its histograms
    run["metrics"]["rows"] = _rows({"separation_E_layer": _entry(0.31)}, {"separation_E_layer": _entry(0.02)})
    run["overlap"] = {"E_layer": (45, 2)}
    (table,) = report_html.metrics_tables([run])
    assert table["groups"][0]["rows"][0]["cells"][0]["text"] == "0.31 (2 of 45 histograms: no overlap)"


def test_bad_new_fields_are_data_errors(tmp_path):
    args = _write_jet_run(tmp_path, conventions=True)
    path = Path(args[1])
    data = json.loads(path.read_text())
    data["conventions"] = {"W1": 3}
    path.write_text(json.dumps(data))
    with pytest.raises(report_html.DataError, match="conventions"):
        report_html.load_metrics(path)
    data["conventions"] = {}
    data["rows"]["model"]["W1M_x1e3"]["n_no_overlap"] = -1
    path.write_text(json.dumps(data))
    with pytest.raises(report_html.DataError, match="n_no_overlap"):
        report_html.load_metrics(path)


def test_training_summary_count_must_match_runs(tmp_path):
    args = _write_jet_run(tmp_path / "run", conventions=False)
    argv = [*args, "--labels", "x", "--out", str(tmp_path / "r.html"), "--plots-dir", str(tmp_path / "p")]
    with pytest.raises(ValueError, match="one --training-summary per run"):
        report_html.main([*argv, "--training-summary", args[5], args[5]])


def test_metric_rows_link_to_their_plots(jet_page):
    ids = set(re.findall(r'<figure id="([^"]+)"', jet_page))
    assert len(ids) == 2  # every histogram figure has an anchor
    links = re.findall(r'<tr class="metric" id="metric-jets-(\w+)".*?</tr>', jet_page, re.S)
    assert links == ["W1M_x1e3", "cls_trees_jet_auc"]
    row = re.search(r'<tr class="metric" id="metric-jets-W1M_x1e3".*?</tr>', jet_page, re.S).group(0)
    (target,) = re.findall(r'class="plot-link" href="#([^"]+)"', row)
    assert target in ids and target.endswith("jet_relative_mass")
    auc = re.search(r'<tr class="metric" id="metric-jets-cls_trees_jet_auc".*?</tr>', jet_page, re.S).group(0)
    assert "plot-link" not in auc  # a classifier has no single plot
    verdict_row = re.search(r'<tr data-metric="W1M_x1e3" data-verdict="close">.*?</tr>', jet_page).group(0)
    assert f'href="#{target}"' in verdict_row


def test_illustrating_histogram():
    from pipelines.report.metric_catalogue import illustrating_histogram

    drawn = [("E_ratio", "E_ratio"), ("E_layer_09", "E_layer"), ("E_layer_14", "E_layer")]
    assert illustrating_histogram("separation_E_layer", "showers", drawn) == "E_layer_09"
    assert illustrating_histogram("separation_EC_r", "showers", drawn) is None  # not drawn
    assert illustrating_histogram("cls_high_auc", "showers", drawn) is None
    jets = [("jet_relative_mass", "jet"), ("jet_relative_pt", "jet"), ("particle_eta_rel", "particle"),
            ("particle_pt_rel", "particle"), ("efp_square", "efp"), ("efp_paw", "efp")]  # fmt: skip
    assert illustrating_histogram("W1M_x1e3", "jets", jets) == "jet_relative_mass"
    assert illustrating_histogram("W1PT_x1e3", "jets", jets) == "jet_relative_pt"
    assert illustrating_histogram("COV", "jets", jets) is None  # no single histogram shows it
    assert illustrating_histogram("W1P_x1e3", "jets", jets) == "particle_eta_rel"
    assert illustrating_histogram("W1P_pt_rel_x1e3", "jets", jets) == "particle_pt_rel"
    assert illustrating_histogram("W1EFP_paw_x1e5", "jets", jets) == "efp_paw"
    assert illustrating_histogram("FPD", "jets", jets) == "efp_square"
    assert illustrating_histogram("cls_trees_jet_auc", "jets", jets) is None
