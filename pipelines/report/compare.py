"""Stage ``compare``: one self-contained HTML page per data set that puts every run (model) trained on
it side by side, so a model can be picked on one screen.

Inputs per run: ``metrics.parquet`` (:mod:`pipelines.report.metrics_table`), ``features.parquet``
(:mod:`pipelines.metrics.feature_tables`), ``training_summary.json``, ``timing.json`` (the sample stage)
and the run's report page (linked). The page holds one table, sortable by a click on a column header
(plain JavaScript in the page, no external resource): a row per run with its family, training budget,
parameters, ms per generated sample at every timed batch size (conversion included), verdict counts
and the headline metrics (colour: the metric's class against the floor), under a pinned real-vs-real row; and
overlaid key distributions from the features tables (reference filled, each run a line): E_tot/E_inc,
the mean layer profile and the hit count for showers, the relative jet mass, the relative jet pT and
the multiplicity for jets. The real-vs-real row shows the first run's floor; a cell marked * differs
between runs (each report shows its own).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError
from pipelines.io.tables import read_table, table_info
from pipelines.report import verdict
from pipelines.report.html import (
    MISSING,
    PROJECT,
    TrainingBudget,
    _read_json_object,
    data_uri,
    format_value_error,
    load_training_budget,
    parse_settings,
    render_html,
)
from pipelines.report.metrics_table import REQUIRED_COLUMNS
from pipelines.report.plots import density, overlay_figure, png_bytes
from pipelines.report.settings import ReportSettings

log = logging.getLogger(__name__)

TEMPLATE_NAME = "comparison.html"
#: verdict classes from best to worst, as counted per run
CLASSES = (verdict.WITHIN, verdict.CLOSE, verdict.FAR)
#: a run's overall class is that of its worst headline metric
SEVERITY = {verdict.WITHIN: 0, verdict.UNRATED: 1, verdict.CLOSE: 2, verdict.FAR: 3}
#: features columns the overlays read, per kind of data
FEATURE_COLUMNS = {
    "showers": ("sample", "E_ratio", "n_hits", "E_layer_00"),
    "jets": ("sample", "jet_relative_mass", "jet_relative_pt", "multiplicity"),
}


@dataclass(frozen=True)
class Run:
    """One run of the data set: its model name, metrics and features tables, budget and report page."""

    model: str
    metrics: pa.Table
    features: pa.Table
    budget: TrainingBudget
    report: Path
    speed: dict[int, tuple[float, int]] = dataclasses.field(default_factory=dict)


def load_speed(path: str | Path) -> dict[int, tuple[float, int]]:
    """From a run's timing.json: {requested batch size: (ms per sample with conversion, batch timed)}
    (the sample stage caps CPU timings at ``timing_max_batch_cpu``); empty when timing was off."""
    path = Path(path)
    entries = _read_json_object(path, "timing").get("timing")
    if not isinstance(entries, list):
        raise DataError(f"{path}: timing JSON has no 'timing' list (written by the sample stage)")
    speed = {}
    for entry in entries:
        keys = ("requested_batch_size", "batch_size", "ms_per_sample_with_conversion")
        values = [entry.get(k) if isinstance(entry, dict) else None for k in keys]
        if not (all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values[:2])
                and isinstance(values[2], int | float) and math.isfinite(values[2])):  # fmt: skip
            raise DataError(
                f"{path}: timing entry {entry!r} needs positive integers requested_batch_size and "
                "batch_size and a finite ms_per_sample_with_conversion"
            )
        speed[values[0]] = (float(values[2]), values[1])
    return speed


def _features(path: Path, kind: str) -> pa.Table:
    table = read_table(path, FEATURE_COLUMNS[kind])
    samples = set(table.column("sample").to_pylist())
    if not {"reference", "generated"} <= samples:
        raise DataError(
            f"{path}: features table needs 'reference' and 'generated' rows, has {sorted(samples)}"
        )
    return table


def load_runs(
    models: Sequence[str],
    metrics_tables: Sequence[str | Path],
    features: Sequence[str | Path],
    summaries: Sequence[str | Path],
    reports: Sequence[str | Path],
    timings: Sequence[str | Path],
) -> list[Run]:
    """The runs, validated: one entry per model in every list, distinct models, one kind of data."""
    lengths = {len(models), len(metrics_tables), len(features), len(summaries), len(reports), len(timings)}
    if len(lengths) != 1 or not models:
        raise ValueError(
            f"compare needs one --metrics-tables, --features, --training-summaries, --timings and --reports "
            f"entry per --models name; got {len(models)} models, {len(metrics_tables)} metrics tables, "
            f"{len(features)} features tables, {len(summaries)} summaries, {len(timings)} timings, "
            f"{len(reports)} reports"
        )
    if len(set(models)) != len(models):
        raise ValueError(f"compare --models must be distinct, got {list(models)}")
    runs = []
    for model, mpath, fpath, spath, rpath, tpath in zip(
        models, metrics_tables, features, summaries, reports, timings, strict=True
    ):
        table = read_table(mpath, REQUIRED_COLUMNS)
        kind = table_info(table).get("kind")
        if kind not in FEATURE_COLUMNS:
            raise DataError(
                f"{mpath}: the schema metadata of the metrics table names no kind of data: {kind!r}"
            )
        if runs and kind != table_info(runs[0].metrics)["kind"]:
            raise DataError(
                f"{mpath}: {kind} metrics, but the first run holds {table_info(runs[0].metrics)['kind']}"
            )
        runs.append(Run(model, table, _features(Path(fpath), kind), load_training_budget(spath), Path(rpath),
                        load_speed(tpath)))  # fmt: skip
    return runs


# ---------------------------------------------------------------- table
def _whole_data_set(table: pa.Table) -> list[dict]:
    """The rows of the whole data set (a jet table of several types also holds each type's rows)."""
    return [row for row in table.to_pylist() if row.get("jet_type") is None]


def _rows(table: pa.Table) -> dict[str, dict]:
    return {row["metric"]: row for row in _whole_data_set(table)}


def headline_metrics(runs: Sequence[Run]) -> list[dict]:
    """The columns of the table: the headline metrics of the runs, first-seen order (label, unit)."""
    seen: dict[str, dict] = {}
    for run in runs:
        for row in _whole_data_set(run.metrics):
            if row["headline"] and row["metric"] not in seen:
                seen[row["metric"]] = {
                    "key": row["metric"],
                    "label": row["label"],
                    "unit": row["display_unit"],
                }
    return list(seen.values())


def _cell(row: dict | None, value_key: str, error_key: str) -> dict:
    """A table cell: text in the report's units, the number it sorts by and the verdict class."""
    value = None if row is None else row[value_key]
    if value is None:
        return {"text": MISSING, "sort": "", "class": "none"}
    factor = row["display_factor"]
    error = row[error_key]
    return {
        "text": format_value_error(value * factor, None if error is None else error * factor),
        "sort": f"{value * factor:.12g}",
        "class": (row["verdict"] or "none") if value_key == "value" else "floor",
    }


def _close(a: float | None, b: float | None) -> bool:
    return a is None and b is None or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9))


def floor_row(runs: Sequence[Run], metrics: Sequence[dict]) -> list[dict]:
    """The real-vs-real cells (the first run's floor; ``differs`` where another run's floor differs)."""
    tables = [_rows(run.metrics) for run in runs]
    cells = []
    for metric in metrics:
        first = next((rows[metric["key"]] for rows in tables if metric["key"] in rows), None)
        cell = _cell(first, "real_vs_real", "real_vs_real_error")
        others = [rows[metric["key"]]["real_vs_real"] for rows in tables if metric["key"] in rows]
        cell["differs"] = any(not _close(value, others[0]) for value in others)
        cells.append(cell)
    return cells


def speed_columns(runs: Sequence[Run]) -> list[int]:
    """The timed batch sizes of any run, ascending (one ms-per-sample column each)."""
    return sorted({size for run in runs for size in run.speed})


def speed_cell(run: Run, size: int) -> dict:
    """ms per sample at a requested batch size: text (the batch timed in brackets where it was capped)
    and the number it sorts by."""
    if size not in run.speed:
        return {"text": MISSING, "sort": ""}
    ms, timed = run.speed[size]
    text = f"{ms:.3g}" if ms >= 0.01 else f"{ms:.2g}"
    return {"text": text if timed == size else f"{text} ({timed:,})", "sort": f"{ms:.6g}"}


def run_row(run: Run, metrics: Sequence[dict], out_dir: Path, speeds: Sequence[int] = ()) -> dict:
    """One run's table row: name, link to its report, family, budget, verdict counts and metric cells."""
    rows = _rows(run.metrics)
    counted = [row["verdict"] for row in rows.values() if row["headline"] and row["verdict"]]
    counts = {name: counted.count(name) for name in CLASSES}
    worst = max(counted, key=SEVERITY.__getitem__) if counted else verdict.UNRATED
    budget = run.budget
    return {
        "model": run.model,
        "href": os.path.relpath(run.report, out_dir),
        "family": budget.family,
        "steps": budget.steps,
        "minutes": None if budget.minutes is None else f"{budget.minutes:.3g}",
        "device": budget.device or MISSING,
        "parameters": budget.parameters,
        "speed": [speed_cell(run, size) for size in speeds],
        "counts": counts,
        "worst": worst,
        "cells": [_cell(rows.get(metric["key"]), "value", "error") for metric in metrics],
    }


# ---------------------------------------------------------------- plots
@dataclass(frozen=True)
class Overlay:
    """One overlaid distribution: name, features column (the prefix of the per-layer columns for the
    layer profile), axis label, what it shows and the binning."""

    name: str
    column: str
    xlabel: str
    shows: str
    integer: bool = False


SHOWER_OVERLAYS = (
    Overlay("E_ratio", "E_ratio", "E_tot / E_inc", "the deposited over the incident energy per shower"),
    Overlay(
        "layer_profile", "E_layer_", "layer", "the mean energy deposited per layer (longitudinal profile)"
    ),
    Overlay("n_hits", "n_hits", "hits per shower", "the voxels above threshold per shower"),
)
JET_OVERLAYS = (
    Overlay("jet_relative_mass", "jet_relative_mass", "jet m / pT", "the relative jet mass"),
    Overlay(
        "jet_relative_pt",
        "jet_relative_pt",
        "jet pT / pT_jet",
        "the pT of the vector sum of the particles over the jet pT",
    ),
    Overlay("multiplicity", "multiplicity", "particles per jet", "the particle multiplicity", integer=True),
)


def _column(table: pa.Table, name: str, sample: str) -> np.ndarray:
    values = np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
    return values[np.asarray(table.column("sample").to_pylist()) == sample]


def _layers(table: pa.Table, sample: str) -> np.ndarray:
    """Mean energy per layer (MeV) of a sample: the layer profile."""
    names = sorted(name for name in table.column_names if name.startswith("E_layer_"))
    return np.array([_column(table, name, sample).mean() for name in names])


def overlay_edges(values: np.ndarray, overlay: Overlay, bins: int = 40) -> np.ndarray:
    """Bin edges from the reference values: one per integer from their smallest to their largest, else
    their 0.5-99.5 % percentiles."""
    finite = values[np.isfinite(values)]
    if overlay.integer:
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        return np.arange(float(low) - 0.5, float(high) + 1.0, 1.0)
    low, high = np.percentile(finite, (0.5, 99.5)) if finite.size else (0.0, 1.0)
    edges = np.linspace(low, high, bins + 1)
    return edges if np.all(np.diff(edges) > 0) else np.linspace(low - 0.5, low + 0.5, bins + 1)


def _overlay_values(runs: Sequence[Run], overlay: Overlay) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-bin values of the reference (the first run's) and of each run's generated sample."""
    if overlay.name == "layer_profile":
        return _layers(runs[0].features, "reference"), [_layers(run.features, "generated") for run in runs]
    return _column(runs[0].features, overlay.column, "reference"), [
        _column(run.features, overlay.column, "generated") for run in runs
    ]


def overlay_plots(runs: Sequence[Run], settings: ReportSettings) -> tuple[list[dict], list[str]]:
    """The overlaid key distributions (PNG data URIs; the reference is the first run's) and notes on
    those not drawn: an integer feature with one value in every sample (e.g. jets of a fixed n)."""
    kind = table_info(runs[0].metrics)["kind"]
    plots, notes = [], []
    for overlay in SHOWER_OVERLAYS if kind == "showers" else JET_OVERLAYS:
        ref, generated = _overlay_values(runs, overlay)
        if overlay.integer and len(np.unique(np.concatenate([ref, *generated]))) == 1:
            notes.append(f"{overlay.shows.capitalize()} is {ref[0]:g} in the reference and in every run.")
            continue
        if overlay.name == "layer_profile":
            edges, lines = np.arange(len(ref) + 1) - 0.5, generated
            ylabel, logy = "mean energy per layer [MeV]", True
        else:
            edges = overlay_edges(ref, overlay)
            ref = density(np.histogram(ref, edges)[0], edges)
            lines = [density(np.histogram(values, edges)[0], edges) for values in generated]
            ylabel, logy = "normalised entries (1/N dN/dx)", False
        fig = overlay_figure(
            edges, ref, list(zip([run.model for run in runs], lines, strict=True)), xlabel=overlay.xlabel,
            ylabel=ylabel, logy=logy, colours=settings.colours, style=settings.style(0),
        )  # fmt: skip
        caption = (
            f"{overlay.shows.capitalize()}: the reference (filled; the first run's) and each run's generated "
            f"sample (lines), with run / reference below"
        )
        plots.append(
            {"name": overlay.name, "caption": caption, "uri": data_uri(png_bytes(fig, settings.dpi))}
        )
    return plots, notes


# ---------------------------------------------------------------- page
def page_title(dataset: str, runs: Sequence[Run]) -> str:
    """The page title: project, data set and the runs compared."""
    names = ", ".join(f"{run.model} ({run.budget.family})" for run in runs)
    return f"{PROJECT}: comparison of {len(runs)} run{'s' if len(runs) != 1 else ''} on {dataset}: {names}"


def build_context(dataset: str, runs: Sequence[Run], out: Path, settings: ReportSettings) -> dict:
    """The template context of the comparison page."""
    metrics = headline_metrics(runs)
    speeds = speed_columns(runs)
    plots, notes = overlay_plots(runs, settings)
    return {
        "title": page_title(dataset, runs),
        "dataset": dataset,
        "kind": table_info(runs[0].metrics)["kind"],
        "metrics": metrics,
        "floor": floor_row(runs, metrics),
        "runs": [run_row(run, metrics, out.parent, speeds) for run in runs],
        "speeds": speeds,
        "capped": any(timed != size for run in runs for size, (_, timed) in run.speed.items()),
        "classes": CLASSES,
        "severity": SEVERITY,
        "plots": plots,
        "plot_notes": notes,
        "thresholds": verdict.THRESHOLDS_TEXT,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines compare --dataset D --models a b --metrics-tables ... --features ...
    --training-summaries ... --timings ... --reports ... --out comparison.html [--settings JSON]``."""
    parser = argparse.ArgumentParser(prog="pipelines compare", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="name of the data set (page title)")
    parser.add_argument("--models", nargs="+", required=True, help="model name of every run")
    parser.add_argument(
        "--metrics-tables", nargs="+", required=True, help="metrics.parquet per run (same order)"
    )
    parser.add_argument("--features", nargs="+", required=True, help="features.parquet per run (same order)")
    parser.add_argument(
        "--training-summaries", nargs="+", required=True, help="training_summary.json per run (same order)"
    )
    parser.add_argument("--timings", nargs="+", required=True, help="timing.json per run (same order)")
    parser.add_argument(
        "--reports", nargs="+", required=True, help="report.html per run (linked; same order)"
    )
    parser.add_argument("--settings", default="{}", help="JSON object of report settings (colours, dpi, ...)")
    parser.add_argument("--out", type=Path, required=True, help="comparison HTML page to write")
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings)
    runs = load_runs(
        args.models, args.metrics_tables, args.features, args.training_summaries, args.reports, args.timings
    )
    page = render_html(build_context(args.dataset, runs, args.out, settings), TEMPLATE_NAME)
    with atomic_path(args.out) as tmp:
        tmp.write_text(page, encoding="utf-8")
        tmp.chmod(0o644)
    log.info("compare: wrote %s (%d runs)", args.out, len(runs))
    return 0
