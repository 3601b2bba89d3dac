"""The comparison page of the runs on one data set, the report's title, and the `compare` rule."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines.io.errors import DataError
from pipelines.io.tables import write_table
from pipelines.metrics.calo_features import ShowerFeatures
from pipelines.metrics.feature_tables import shower_features_table
from pipelines.report import compare, metrics_table
from pipelines.report import html as report_html
from tests.test_report import _write_shower_run
from tests.test_report_browser import _chromium, chromium  # noqa: F401 (the session fixture)
from tests.workflow_runner import REPO, copy_repository

SETTINGS = json.dumps({"dpi": 30, "figure_width": 4.0})


def _features(seed: int, n: int, scale: float = 1.0) -> ShowerFeatures:
    """Random features of ``n`` showers with 4 layers (energies in MeV)."""
    rng = np.random.default_rng(seed)
    e_inc = 10 ** rng.uniform(3, 5, n)
    e_layer = rng.dirichlet(np.ones(4), n) * (e_inc * rng.normal(scale, 0.05, n))[:, None]
    layer = rng.random((n, 4))
    return ShowerFeatures(e_inc=e_inc, e_tot=e_layer.sum(1), n_hits=rng.integers(10, 100, n), e_layer=e_layer,
                          ec_eta=layer, ec_phi=layer, ec_r=layer, width_eta=layer, width_phi=layer,
                          width_r=layer, sparsity=layer)  # fmt: skip


class _Page(HTMLParser):
    """Rows of the comparison table (data-model), links, scripts and external resources of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.models, self.links, self.images, self.external, self.headers = [], [], [], [], []
        self.script, self.title, self._in = "", "", None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "tr" and "data-model" in a:
            self.models.append(a["data-model"])
        if tag == "a":
            self.links.append(a.get("href"))
        if tag == "img":
            self.images.append(a["src"])
        if tag in ("script", "link", "img") and re.match(
            r"(https?:)?//", a.get("src") or a.get("href") or ""
        ):
            self.external.append(a)
        if tag == "th" and "data-metric" in a:
            self.headers.append(a["data-metric"])
        self._in = tag

    def handle_data(self, data: str) -> None:
        if self._in == "script":
            self.script += data
        if self._in == "h1":
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        self._in = None


def _fake_run(root: Path, model: str, seed: int, scale: float, fpd: float, family: str) -> dict:
    """The compare inputs of one run: metrics table (from a hand-made metrics.json), features, summary."""
    run = root / "results" / "calo" / model
    metrics = json.loads(_write_shower_run(run / "evaluation")[0].read_text())
    metrics["rows"]["model"]["fpd"]["value"] = fpd
    (run / "evaluation" / "metrics.json").write_text(json.dumps(metrics))
    write_table(metrics_table.metrics_table(metrics), run / "evaluation" / "metrics.parquet")
    reference, generated = _features(1, 50), _features(seed, 40, scale)
    write_table(shower_features_table(reference, np.arange(0, 100, 2), generated, np.arange(40)),
                run / "evaluation" / "features.parquet")  # fmt: skip
    summary = {"family": family, "steps": 100 * seed, "total_train_time_s": 60.0 * seed, "device": "cpu",
               "parameters": 1000 * seed}  # fmt: skip
    (run / "training_summary.json").write_text(json.dumps(summary))
    (run / "timing.json").write_text(json.dumps({"timing": _timing(seed)}))
    (run / "report.html").write_text("<html></html>")
    return {"model": model, "run": run, "fpd": fpd}


def _timing(seed: int) -> list[dict]:
    """timing.json entries at batch 1, 100 and 10,000 (timed at 1,000, as the CPU cap does)."""
    return [{"requested_batch_size": b, "batch_size": min(b, 1000),
             "ms_per_sample_with_conversion": seed * ms, "ms_per_sample_without_conversion": seed * ms / 2}
            for b, ms in ((1, 10.0), (100, 2.0), (10_000, 0.5))]  # fmt: skip


def _compare(root: Path, runs: list[dict]) -> Path:
    out = root / "results" / "calo" / "comparison.html"
    argv = ["--dataset", "calo", "--models", *[r["model"] for r in runs], "--settings", SETTINGS,
            "--out", str(out),
            "--metrics-tables", *[str(r["run"] / "evaluation" / "metrics.parquet") for r in runs],
            "--features", *[str(r["run"] / "evaluation" / "features.parquet") for r in runs],
            "--training-summaries", *[str(r["run"] / "training_summary.json") for r in runs],
            "--timings", *[str(r["run"] / "timing.json") for r in runs],
            "--reports", *[str(r["run"] / "report.html") for r in runs]]  # fmt: skip
    assert compare.main(argv) == 0
    return out


def test_comparison_page_of_two_runs(tmp_path):
    runs = [_fake_run(tmp_path, "flow", 1, 1.0, 0.9, "flow-matching"),
            _fake_run(tmp_path, "fact", 2, 0.8, 0.2, "factorised")]  # fmt: skip
    text = _compare(tmp_path, runs).read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    assert page.models == ["flow", "fact"]
    assert "flow/report.html" in page.links and "fact/report.html" in page.links  # relative to the page
    assert page.external == [] and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert len(page.images) == 3  # E_ratio, layer profile, hits
    assert 'addEventListener("click"' in page.script and ".sort(" in page.script
    assert "Point-cloud generative models" in page.title and "calo" in page.title
    assert "flow (flow-matching)" in page.title and "fact (factorised)" in page.title
    # the metric columns: the headline metrics, FPD shown x 1e3 as in the report (0.9 -> 900)
    assert "fpd" in page.headers and "separation_E_ratio" in page.headers
    cells = re.findall(r'<td class="num v-\w+" data-sort="([^"]*)">', text)
    n = len(page.headers)
    column = page.headers.index("fpd")
    assert [float(cells[column]), float(cells[n + column])] == [900.0, 200.0]
    assert '<tr class="floor">' in text and "real vs real" in text


def test_comparison_page_shows_parameters_and_ms_per_shower_at_every_batch_size(tmp_path):
    runs = [_fake_run(tmp_path, "flow", 1, 1.0, 0.9, "flow-matching"),
            _fake_run(tmp_path, "fact", 2, 0.8, 0.2, "factorised")]  # fmt: skip
    text = _compare(tmp_path, runs).read_text(encoding="utf-8")
    assert re.findall(r'data-speed="(\d+)">ms per shower at batch ([\d,]+)<', text) == [
        ("1", "1"), ("100", "100"), ("10000", "10,000")]  # fmt: skip
    # per run: 10, 2 and 0.5 ms x seed; the 10,000 request was timed at 1,000 and says so
    speed = re.findall(r'<td class="num speed" data-sort="([^"]*)">([^<]*)</td>', text)
    assert speed == [("10", "10"), ("2", "2"), ("0.5", "0.5 (1,000)"),
                     ("20", "20"), ("4", "4"), ("1", "1 (1,000)")]  # fmt: skip
    assert re.findall(r'<td class="num" data-sort="(\d+)">([\d,]+)</td>\s*<td class="num speed"', text) == [
        ("1000", "1,000"), ("2000", "2,000")]  # fmt: skip
    assert "the batch size actually timed" in text
    # the metric columns sit after the three speed columns and the four verdict columns
    assert re.search(r'<th data-col="13" data-metric="', text)
    timing = runs[0]["run"] / "timing.json"
    timing.write_text(json.dumps({"generation": {}}))
    with pytest.raises(DataError, match=f"{timing}: timing JSON has no 'timing' list"):
        _compare(tmp_path, runs)
    timing.write_text(json.dumps({"timing": [{"requested_batch_size": 1, "batch_size": 0}]}))
    with pytest.raises(DataError, match="needs positive integers requested_batch_size"):
        _compare(tmp_path, runs)


def test_comparison_page_of_one_run_and_bad_inputs(tmp_path):
    run = _fake_run(tmp_path, "only", 1, 1.0, 0.5, "factorised")
    page = _Page()
    page.feed(_compare(tmp_path, [run]).read_text(encoding="utf-8"))
    assert page.models == ["only"] and len(page.images) == 3
    with pytest.raises(ValueError, match="one --metrics-tables"):
        compare.load_runs(["a", "b"], [run["run"] / "evaluation" / "metrics.parquet"], [], [], [], [])
    features = run["run"] / "evaluation" / "features.parquet"
    write_table(shower_features_table(_features(1, 5), np.arange(5), _features(2, 0), np.arange(0)), features)
    with pytest.raises(DataError, match=f"{features}: features table needs 'reference' and 'generated'"):
        _compare(tmp_path, [run])


def test_overlay_edges():
    values = np.array([0.0, 1.0, 2.0, 7.0])
    edges = compare.overlay_edges(values, compare.Overlay("n", "n", "n", "n", integer=True))
    np.testing.assert_array_equal(edges, np.arange(-0.5, 8.0))
    edges = compare.overlay_edges(np.array([3.0, 5.0]), compare.Overlay("n", "n", "n", "n", integer=True))
    np.testing.assert_array_equal(edges, [2.5, 3.5, 4.5, 5.5])
    edges = compare.overlay_edges(np.linspace(0.0, 1.0, 1001), compare.Overlay("x", "x", "x", "x"), bins=10)
    assert edges[0] == pytest.approx(0.005) and edges[-1] == pytest.approx(0.995) and len(edges) == 11
    edges = compare.overlay_edges(np.ones(5), compare.Overlay("x", "x", "x", "x"), bins=4)  # one value
    np.testing.assert_allclose(edges, [0.5, 0.75, 1.0, 1.25, 1.5])


def test_report_title_names_the_project_runs_and_families(tmp_path):
    metrics, histograms = _write_shower_run(tmp_path / "run")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"family": "factorised", "steps": 10}))
    context, _ = report_html.build_report([metrics], [histograms], ["calo-ds2 / factorised"], tmp_path / "p",
                                          settings=report_html.parse_settings(SETTINGS),
                                          training_summaries=[summary])  # fmt: skip
    assert (
        context["title"]
        == "Point-cloud generative models: validation of calo-ds2 / factorised (family factorised)"
    )
    settings = replace(report_html.parse_settings(SETTINGS), title="My sweep")
    context, _ = report_html.build_report([metrics], [histograms], ["a"], tmp_path / "p", settings=settings)
    assert context["title"] == "My sweep"
    assert "MDMA" not in report_html.ReportSettings().title


def test_compare_rule_plans_one_page_per_data_set_with_every_model(tmp_path):
    """A dry run of the tiny config with two models on the showers: one compare job for that data set
    reading both runs' tables, one for the jets; both pages are default targets."""
    work = copy_repository(tmp_path / "work")
    config = yaml.safe_load((REPO / "tests" / "config" / "tiny.yaml").read_text())
    config["runs"].append({"dataset": "calo", "model": "tiny"})
    (work / "two.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", "--configfile", "two.yaml"]
    res = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    commands = re.findall(r"^Shell command: (.* compare .*)$", res.stdout, re.MULTILINE)
    assert len(commands) == 2, res.stdout
    calo = next(c for c in commands if "--dataset calo " in c)
    assert "--models tiny-factorised tiny " in calo
    for model in ("tiny-factorised", "tiny"):
        assert f"results/calo/{model}/evaluation/metrics.parquet" in calo
        assert f"results/calo/{model}/evaluation/features.parquet" in calo
    assert re.search(r"rule all:\n\s+input: .*results/calo/comparison.html", res.stdout)
    assert "results/jets/comparison.html" in res.stdout
    assert res.stdout.count("rule metrics_table:") == 3


def _full_jets(seed: int, n: int) -> np.ndarray:
    """JetNet particle features of ``n`` jets with all 4 slots real (a fixed multiplicity)."""
    rng = np.random.default_rng(seed)
    pf = np.ones((n, 4, 4))
    pf[:, :, :2] = rng.normal(0.0, 0.1, (n, 4, 2))
    pf[:, :, 2] = rng.dirichlet(np.ones(4), n)
    return pf


def test_jet_comparison_says_when_the_multiplicity_is_fixed(tmp_path):
    from pipelines.metrics.feature_tables import jet_features_table
    from pipelines.metrics.jet_metrics import make_sample

    entry = {"W1M_x1e3": {"value": 4.0, "error": 1.0}}
    metrics = {"kind": "jets", "dataset": "jets", "settings": {}, "histograms": [],
               "rows": {"model": entry, "real_vs_real": entry}}  # fmt: skip
    runs = []
    for index, model in enumerate(("a", "b")):
        run = tmp_path / "results" / "jets" / model
        (run / "evaluation").mkdir(parents=True)
        write_table(metrics_table.metrics_table(metrics), run / "evaluation" / "metrics.parquet")
        table = jet_features_table(make_sample(_full_jets(0, 30)), make_sample(_full_jets(index + 1, 20)))
        write_table(table, run / "evaluation" / "features.parquet")
        (run / "training_summary.json").write_text(json.dumps({"family": "flow-matching"}))
        (run / "timing.json").write_text(json.dumps({"timing": []}))
        runs.append({"model": model, "run": run})
    text = _compare(tmp_path, runs).read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    assert page.models == ["a", "b"] and len(page.images) == 2  # jet mass and jet pT
    assert "The particle multiplicity is 4 in the reference and in every run." in text


#: clicks a header of the comparison table (twice: descending) and records the order of the runs
CLICK = """<script>
var th = document.querySelector('th[data-metric="fpd"]'); th.click();
function order() { return Array.from(document.querySelectorAll("tbody tr")).map(r => r.dataset.model); }
document.body.dataset.ascending = order();
th.click();
document.body.dataset.descending = order();
</script></body>"""


def test_header_click_sorts_the_runs_in_chromium(chromium, tmp_path):  # noqa: F811 (the imported fixture)
    runs = [_fake_run(tmp_path, name, seed, 1.0, fpd, "factorised")
            for name, seed, fpd in (("b", 1, 0.5), ("a", 2, 0.1), ("c", 3, 0.9))]  # fmt: skip
    page = _compare(tmp_path, runs)
    page.write_text(page.read_text(encoding="utf-8").replace("</body>", CLICK), encoding="utf-8")
    done = _chromium(chromium, tmp_path / "profile", "--dump-dom", str(page))
    assert 'data-ascending="a,b,c"' in done.stdout and 'data-descending="c,b,a"' in done.stdout, done.stderr
