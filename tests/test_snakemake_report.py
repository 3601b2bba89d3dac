"""`snakemake --report`: every item marked report() has a caption file of its own, and the plots'
caption template gives every plot the report stage writes a caption of its own (valid reStructuredText)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import jinja2
import numpy as np
import pytest
from docutils.core import publish_parts

from pipelines.metrics import evaluate_jets
from pipelines.metrics.calo_features import ShowerFeatures, histogram_specs
from pipelines.metrics.jet_metrics import make_sample
from pipelines.report.plots import PlotStyle, plot_run
from tests.test_jet_metrics import _jetnet_particles
from tests.workflow_runner import REPO

RULES = REPO / "workflow" / "rules"
REPORT_DIR = REPO / "workflow" / "report"
FALLBACK = "says what it shows"  # the plots caption for a plot it does not know


def _report_items() -> list[str]:
    """The text of every report(...) marker in the rule files."""
    items = []
    for path in sorted(RULES.glob("*.smk")):
        text = path.read_text()
        for match in re.finditer(r"report\(\n(.*?)\n\s*\),", text, re.DOTALL):
            items.append(match.group(1))
    return items


def test_every_report_item_has_its_own_caption_and_labels():
    items = _report_items()
    assert len(items) == 3  # the plots of a run, its metrics table, the comparison page of a data set
    captions = []
    for item in items:
        caption = re.search(r'caption="\.\./report/([\w.]+\.rst)"', item)
        assert caption is not None, item
        assert (REPORT_DIR / caption.group(1)).is_file()
        assert "labels=" in item, item
        captions.append(caption.group(1))
    assert len(set(captions)) == len(captions)
    assert "metrics.tsv" in "".join(items)  # metrics.json enters the report as a table


def _render(template: str, name: str, dataset: str = "calo-ds2", model: str = "factorised") -> str:
    """The caption as Snakemake renders it: Jinja with the job's wildcards, then reStructuredText."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    wildcards = SimpleNamespace(name=name, dataset=dataset, model=model)
    text = env.from_string(template).render(snakemake=SimpleNamespace(wildcards=wildcards))
    overrides = {"halt_level": 2, "report_level": 5}  # a warning of docutils is an error here
    publish_parts(text, writer="html", settings_overrides=overrides)
    return " ".join(text.split())


def _shower_plot_names(tmp_path) -> list[str]:
    rng = np.random.default_rng(0)
    n, layers = 30, 45
    e_layer = rng.exponential(100.0, (n, layers))
    grid = rng.random((n, layers))
    features = ShowerFeatures(e_inc=np.full(n, 1e4), e_tot=e_layer.sum(1), n_hits=rng.integers(1, 99, n),
                              e_layer=e_layer, ec_eta=grid, ec_phi=grid, ec_r=grid, width_eta=grid,
                              width_phi=grid, width_r=grid, sparsity=grid)  # fmt: skip
    listing, arrays = [], {}
    for spec in histogram_specs(features, 50.0):
        counts = rng.integers(1, 9, len(spec.edges) - 1).astype(float)
        arrays |= {f"{spec.name}__edges": spec.edges, f"{spec.name}__reference": counts,
                   f"{spec.name}__generated": counts}  # fmt: skip
        listing.append({"name": spec.name, "xlabel": spec.xlabel, "logx": spec.logx, "logy": spec.logy,
                        "group": spec.group, "separation_power": 0.0})  # fmt: skip
    mean = rng.random((layers, 16, 9))
    arrays |= {"mean_shower__reference": mean, "mean_shower__generated": mean,
               "nhits_vs_einc__edges": np.linspace(3, 6, 4), "nhits_vs_einc__reference": np.ones(3),
               "nhits_vs_einc__generated": np.ones(3)}  # fmt: skip
    metrics = {"kind": "showers", "dataset": "2", "histograms": listing}
    records = plot_run(
        metrics, arrays, tmp_path, label="calo-ds2 / factorised", style=PlotStyle(dpi=20, width=4)
    )
    return [record.path.stem for record in records]


def _jet_plot_names(tmp_path) -> list[str]:
    rng = np.random.default_rng(1)
    ref, gen = make_sample(_jetnet_particles(rng, 20)[0]), make_sample(_jetnet_particles(rng, 20)[0])
    listing, arrays = evaluate_jets.histograms(ref, gen, 10)
    metrics = {"kind": "jets", "dataset": "jets-top30", "histograms": listing}
    records = plot_run(metrics, arrays, tmp_path, label="jets-top30 / flow", style=PlotStyle(dpi=20, width=4))
    return [record.path.stem for record in records]


@pytest.mark.parametrize("kind", ["showers", "jets"])
def test_every_plot_gets_a_caption_of_its_own(tmp_path, kind):
    template = (REPORT_DIR / "plots.rst").read_text()
    if kind == "showers":
        names, dataset, model = _shower_plot_names(tmp_path), "calo-ds2", "factorised"
    else:
        names, dataset, model = _jet_plot_names(tmp_path), "jets-top30", "flow"
    names.append(f"training-0-{dataset}_{model}")
    captions = {name: _render(template, name, dataset, model) for name in names}
    assert all(FALLBACK not in caption for caption in captions.values()), captions
    assert len(set(captions.values())) == len(captions)  # no two plots share a caption
    assert all(f"{dataset} / {model}" in caption for caption in captions.values())
    if kind == "showers":
        layer = next(name for name in names if "-E_layer-" in name)
        assert f"Energy deposited in layer {int(layer[-2:])} [MeV]" in captions[layer]
    else:
        assert "W1M" in captions[next(name for name in names if name.endswith("jet_relative_mass"))]
    assert FALLBACK in _render(template, "calo-ds2_factorised-new_section-new_plot")
