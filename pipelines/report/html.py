"""Stage ``report``: one self-contained HTML validation page (plots embedded as base64 PNG data URIs)
from the evaluation outputs (metrics.json + histograms.npz per run), optional training curves (CSV),
training summaries (JSON: model family and training budget) and generation timings (JSON). The page
opens with a verdict per run (:mod:`pipelines.report.verdict`). The PNGs are also written to
``--plots-dir`` for ``snakemake --report``.

A metrics.json may carry, beyond the evaluation contract, ``n_histograms`` and ``n_no_overlap`` in
an entry (separation powers) and a top-level ``"conventions"`` object (short name -> one sentence);
both are shown when present. A separation power of two samples that share no bin is shown as
"1.00 (no overlap)", never as a blank.

Timing JSON (written by the sampling stage) is read tolerantly: top-level scalars (device, parameter
count, ...) are shown as run information; every object below the top level whose values are all
scalars (a list of scalars counts as one) becomes one table row; keys on the way to it become columns:
integer-like keys as ``batch_size``, other keys name the table (``group``, e.g. a device name); scalars
beside nested objects are copied into the rows beneath them. Rows are shown as one table per group (a
group of one row as a key/value list). So ``{"device": "cpu", "n_parameters": 66416, "batch_sizes":
{"1": {"ms_per_shower": 3.1, "ms_per_shower_voxelised": 4.0}}}`` and ``{"batch_sizes": [{"batch_size":
1, "ms_per_shower": 3.1}]}`` both give a table "batch_sizes" with a row per batch size.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError
from pipelines.io.hashing import file_sha256
from pipelines.report import metric_catalogue, published, shower_views, verdict
from pipelines.report.jet_types import check_per_type, jet_type_table
from pipelines.report.plots import (
    PlotRecord,
    plot_run,
    slug,
    training_curve_figure,
    training_panels,
    write_png,
)
from pipelines.report.settings import ReportSettings
from pipelines.report.stale import utc_now
from pipelines.settings import settings_object

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "report.html"
KINDS = ("showers", "jets")
ROW_NAMES = {"model": "model vs reference", "real_vs_real": "reference vs reference (real-vs-real)"}
MISSING = "\u2014"
#: optional integer fields of a metrics.json entry (separation powers: histograms averaged, and those
#: of them without any overlap between the samples)
COUNT_KEYS = ("n_histograms", "n_no_overlap")
NO_OVERLAP = "1.00 (no overlap)"
#: the project, named in the title of every page
PROJECT = "Point-cloud generative models"
#: timing.json keys that describe calorimeter voxelisation; not shown for jets
CALORIMETER_ONLY = frozenset({"collisions", "n_collided", "collided_fraction", "n_voxels_below_threshold"})


def parse_settings(text: str | Mapping | None) -> ReportSettings:
    """ReportSettings from a JSON object string or mapping; unknown keys and bad types are ValueErrors."""
    return ReportSettings(**settings_object(text, ReportSettings, "report"))


# ---------------------------------------------------------------- inputs
def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_json_object(path: Path, what: str) -> dict:
    """The JSON object in ``path``; DataError naming the file and ``what`` it should hold otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read {what} JSON: {err}") from err
    if not isinstance(data, dict):
        raise DataError(f"{path}: {what} must be a JSON object")
    return data


def load_metrics(path: str | Path) -> dict:
    """metrics.json of the evaluation contract, validated (DataError naming the file otherwise)."""
    path = Path(path)
    data = _read_json_object(path, "metrics")
    missing = [key for key in ("kind", "dataset", "rows", "settings", "histograms") if key not in data]
    if missing:
        raise DataError(f"{path}: metrics lack keys {missing}")
    if data["kind"] not in KINDS:
        raise DataError(f"{path}: kind must be one of {KINDS}, got {data['kind']!r}")
    if not isinstance(data["settings"], dict):
        raise DataError(f"{path}: 'settings' must be an object")
    rows = data["rows"]
    if not isinstance(rows, dict) or set(ROW_NAMES) - set(rows):
        raise DataError(f"{path}: 'rows' must hold 'model' and 'real_vs_real'")
    for row_name, row in rows.items():
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {row_name!r} must be an object of metrics")
        for metric, entry in row.items():
            if not isinstance(entry, dict) or "value" not in entry:
                raise DataError(f"{path}: metric {metric!r} of row {row_name!r} must be {{'value', 'error'}}")
            for key in ("value", "error"):
                item = entry.get(key)
                if item is not None and not _is_number(item):
                    raise DataError(f"{path}: {key} of metric {metric!r} in row {row_name!r} is {item!r}")
            for key in COUNT_KEYS:
                item = entry.get(key)
                if item is not None and (not isinstance(item, int) or isinstance(item, bool) or item < 0):
                    raise DataError(f"{path}: {key} of metric {metric!r} in row {row_name!r} is {item!r}")
    conventions = data.get("conventions", {})
    if not isinstance(conventions, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in conventions.items()
    ):
        raise DataError(f"{path}: 'conventions' must map short names to sentences (strings)")
    if "per_type" in data:
        check_per_type(str(path), data["per_type"])
    if not isinstance(data["histograms"], list):
        raise DataError(f"{path}: 'histograms' must be a list")
    names = set()
    for entry in data["histograms"]:
        lacking = [
            k
            for k in ("name", "xlabel", "logx", "logy", "group")
            if not isinstance(entry, dict) or k not in entry
        ]
        if lacking:
            raise DataError(f"{path}: histogram entry {entry!r} lacks {lacking}")
        sp = entry.get("separation_power")
        if sp is not None and not _is_number(sp):
            raise DataError(f"{path}: separation_power of {entry['name']!r} is {sp!r}")
        if entry["name"] in names:
            raise DataError(f"{path}: histogram {entry['name']!r} listed twice")
        names.add(entry["name"])
    return data


def _check_array(path: Path, key: str, array: np.ndarray, shape: tuple[int, ...] | None, ndim: int) -> None:
    if array.ndim != ndim or (shape is not None and array.shape != shape):
        raise DataError(f"{path}: array {key!r} has shape {array.shape}, expected {shape or f'{ndim}-d'}")
    if not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: array {key!r} is not numeric ({array.dtype})")


def load_histograms(path: str | Path, metrics: Mapping) -> dict[str, np.ndarray]:
    """histograms.npz arrays for every histogram listed in ``metrics`` (plus the shower extras), validated."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: cannot read histograms NPZ: {err}") from err
    needed = []
    for entry in metrics["histograms"]:
        needed += [f"{entry['name']}__{part}" for part in ("edges", "reference", "generated")]
    if metrics["kind"] == "showers":
        needed += ["mean_shower__reference", "mean_shower__generated"]
        needed += [f"nhits_vs_einc__{part}" for part in ("edges", "reference", "generated")]
    for t in metrics.get("per_type", {}):
        needed += [f"type_{t}_jet_relative_mass__{part}" for part in ("edges", "reference", "generated")]
    missing = [key for key in needed if key not in arrays]
    if missing:
        raise DataError(f"{path}: histograms NPZ lacks arrays {missing}")
    for entry in metrics["histograms"]:
        name = entry["name"]
        edges = arrays[f"{name}__edges"]
        _check_array(path, f"{name}__edges", edges, None, 1)
        if edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise DataError(f"{path}: {name}__edges must be >= 2 finite, strictly increasing values")
        for part in ("reference", "generated"):
            counts = arrays[f"{name}__{part}"]
            _check_array(path, f"{name}__{part}", counts, (edges.size - 1,), 1)
            if not np.all(np.isfinite(counts)) or np.any(counts < 0):
                raise DataError(f"{path}: {name}__{part} must hold finite, non-negative counts")
    if metrics["kind"] == "showers":
        ref = arrays["mean_shower__reference"]
        _check_array(path, "mean_shower__reference", ref, None, 3)
        _check_array(path, "mean_shower__generated", arrays["mean_shower__generated"], ref.shape, 3)
        edges = arrays["nhits_vs_einc__edges"]
        _check_array(path, "nhits_vs_einc__edges", edges, None, 1)
        if edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise DataError(f"{path}: nhits_vs_einc__edges must be >= 2 finite, strictly increasing values")
        for part in ("reference", "generated"):
            _check_array(
                path, f"nhits_vs_einc__{part}", arrays[f"nhits_vs_einc__{part}"], (edges.size - 1,), 1
            )
        problem = shower_views.view_array_problem(arrays)
        if problem:
            raise DataError(f"{path}: histograms NPZ {problem}")
    return arrays


@dataclass(frozen=True)
class TrainingCurve:
    """Numeric columns of a training log against its step column."""

    step_label: str
    steps: np.ndarray
    columns: dict[str, np.ndarray]


def read_training_curve(path: str | Path) -> TrainingCurve:
    """Training log CSV: the ``step`` column (else ``epoch``/``iteration``, else the row number) and every
    other column whose non-empty cells are all numbers (empty cells become NaN)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read training curve CSV: {err}") from err
    if not header or not rows:
        raise DataError(f"{path}: training curve CSV has no header or no rows")
    numeric: dict[str, np.ndarray] = {}
    for column in header:
        cells = [(row.get(column) or "").strip() for row in rows]
        try:
            values = np.array([float(cell) if cell else np.nan for cell in cells], dtype=np.float64)
        except ValueError:
            continue
        if np.any(np.isfinite(values)):
            numeric[column] = values
    step_label = next((name for name in ("step", "epoch", "iteration") if name in numeric), None)
    steps = numeric.pop(step_label) if step_label else np.arange(len(rows), dtype=np.float64)
    if not numeric:
        raise DataError(f"{path}: training curve CSV has no numeric columns besides the step")
    return TrainingCurve(step_label or "row", steps, numeric)


#: training-log columns that are bookkeeping, summarised in the caption instead of drawn as panels.
BOOKKEEPING_COLUMNS = ("epoch", "elapsed_s")


def training_summary(curve: TrainingCurve) -> str:
    """One line on a training log: logged entries and step range, last epoch, elapsed wall time."""
    steps = curve.steps[np.isfinite(curve.steps)]
    parts = [f"{len(curve.steps)} logged entries"]
    if steps.size:
        first, last = format_scalar(float(steps.min())), format_scalar(float(steps.max()))
        parts[0] += f", {curve.step_label} {first}–{last}"
    for column, text in (("epoch", "last epoch {}"), ("elapsed_s", "{} s wall time")):
        values = curve.columns.get(column)
        if values is not None and np.any(np.isfinite(values)):
            parts.append(text.format(format_scalar(float(np.nanmax(values)))))
    return ", ".join(parts)


@dataclass(frozen=True)
class TrainingBudget:
    """What a model was given: family, optimisation steps, training minutes, device, parameters."""

    family: str
    steps: int | None
    minutes: float | None
    device: str
    parameters: int | None
    exported_step: int | None

    def text(self) -> str:
        """One line, e.g. "factorised: 1,500 steps in 3.4 min on cpu, 256,048 parameters (exported step
        1,000)"; parts that were not recorded are left out."""
        parts = []
        if self.steps is not None:
            parts.append(f"{self.steps:,} steps")
        if self.minutes is not None:
            parts.append(f"in {self.minutes:.3g} min")
        if self.device:
            parts.append(f"on {self.device}")
        line = f"{self.family}: " + " ".join(parts)
        if self.parameters is not None:
            line += f", {self.parameters:,} parameters"
        if self.exported_step is not None and self.exported_step != self.steps:
            line += f" (exported step {self.exported_step:,})"
        return line


def load_training_budget(path: str | Path) -> TrainingBudget:
    """The training budget from a run's training_summary.json (written by the train stage)."""
    path = Path(path)
    data = _read_json_object(path, "training summary")

    def integer(key: str) -> int | None:
        value = data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    seconds = data.get("total_train_time_s", data.get("wall_time_s"))
    return TrainingBudget(
        family=str(data.get("family") or "model family not recorded"),
        steps=integer("steps"),
        minutes=seconds / 60.0 if _is_number(seconds) else None,
        device=str(data.get("device") or ""),
        parameters=integer("parameters"),
        exported_step=integer("exported_step"),
    )


@dataclass(frozen=True)
class TimingGroup:
    """One table of timing rows: its ``name`` (the JSON keys leading to it), columns and formatted rows."""

    name: str
    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class TimingTable:
    """Generation timings: run information (key, value) and one table per group of rows."""

    info: list[tuple[str, str]]
    groups: list[TimingGroup]


def _is_scalar(value: object) -> bool:
    if isinstance(value, list):
        return all(item is None or isinstance(item, str | int | float | bool) for item in value)
    return value is None or isinstance(value, str | int | float | bool)


def _timing_records(node: object, context: dict, records: list[dict]) -> None:
    if isinstance(node, list):
        for item in node:
            _timing_records(item, context, records)
        return
    if not isinstance(node, dict):
        return
    scalars = {key: value for key, value in node.items() if _is_scalar(value)}
    nested = {key: value for key, value in node.items() if not _is_scalar(value)}
    if not nested:
        records.append({**context, **scalars})
        return
    for key, child in nested.items():
        inner = {**context, **scalars}
        if re.fullmatch(r"\d+", str(key)):
            inner["batch_size"] = int(key)
        else:
            inner["group"] = f"{inner['group']}/{key}" if "group" in inner else str(key)
        _timing_records(child, inner, records)


def format_scalar(value: object) -> str:
    """Human-readable table cell for a JSON scalar (floats to 4 significant digits; lists comma-joined)."""
    if isinstance(value, list):
        return ", ".join(format_scalar(item) for item in value)
    if value is None:
        return MISSING
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def load_data_summary(path: str | Path) -> dict:
    """A ``validate`` summary JSON: input file, content hash and warnings (DataError if it is not one)."""
    path = Path(path)
    data = _read_json_object(path, "the data summary")
    if not {"file", "sha256", "warnings"} <= set(data):
        raise DataError(f"{path}: not a data summary of the validate stage (needs file, sha256, warnings)")
    warnings = data["warnings"]
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise DataError(f"{path}: 'warnings' must be a list of strings")
    return {
        "summary_file": str(path),
        "file": str(data["file"]),
        "sha256": str(data["sha256"]),
        "warnings": warnings,
    }


def _without_keys(node: object, drop: frozenset[str]) -> object:
    """``node`` with every object key in ``drop`` removed, at any depth."""
    if isinstance(node, dict):
        return {key: _without_keys(value, drop) for key, value in node.items() if key not in drop}
    if isinstance(node, list):
        return [_without_keys(item, drop) for item in node]
    return node


def load_timing(path: str | Path, kind: str | None = None) -> TimingTable:
    """Timing JSON read as described in the module docstring; for jets (``kind`` or the file's own
    ``kind``) the calorimeter-only keys (:data:`CALORIMETER_ONLY`) are left out."""
    path = Path(path)
    data = _read_json_object(path, "timing")
    if data.get("kind", kind) == "jets":
        data = {k: _without_keys(v, CALORIMETER_ONLY) for k, v in data.items() if k not in CALORIMETER_ONLY}
    info = [(key, format_scalar(value)) for key, value in data.items() if _is_scalar(value)]
    records: list[dict] = []
    for key, value in data.items():
        if not _is_scalar(value):
            context = {"batch_size": int(key)} if re.fullmatch(r"\d+", key) else {"group": key}
            _timing_records(value, context, records)
    if not info and not records:
        raise DataError(f"{path}: timing JSON holds nothing to show")
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(str(record.pop("group", "")), []).append(record)
    groups = []
    for name, group_records in grouped.items():
        columns: list[str] = []
        for record in group_records:
            columns += [key for key in record if key not in columns]
        lead = [key for key in ("device", "batch_size") if key in columns]
        columns = lead + [key for key in columns if key not in lead]
        rows = [[format_scalar(record.get(column)) for column in columns] for record in group_records]
        groups.append(TimingGroup(name, columns, rows))
    return TimingTable(info, groups)


#: the timing table of an export.json (stage ``export``): its title and (column, key) pairs
EXPORT_GROUP = "exported (ONNX Runtime)"
EXPORT_COLUMNS = (
    ("batch_size", "batch_size"),
    ("torch ms/shower", "ms_per_shower_torch"),
    ("exported (ONNX Runtime) ms/shower", "ms_per_shower_onnxruntime"),
)


def load_export_timing(path: str | Path) -> TimingGroup:
    """The timing rows of an export.json: ms/shower of the torch sampler and of the ONNX graph."""
    path = Path(path)
    rows = _read_json_object(path, "export").get("timing")
    keys = [key for _, key in EXPORT_COLUMNS]
    if (
        not isinstance(rows, list)
        or not rows
        or not all(isinstance(row, dict) and all(_is_number(row.get(key)) for key in keys) for row in rows)
    ):
        raise DataError(f"{path}: not an export.json with timings ('timing' rows with {', '.join(keys)})")
    cells = [[format_scalar(row[key]) for key in keys] for row in rows]
    return TimingGroup(EXPORT_GROUP, [column for column, _ in EXPORT_COLUMNS], cells)


# ---------------------------------------------------------------- formatting
def format_value_error(value: float | None, error: float | None = None, digits: int = 2) -> str:
    """``value ± error`` with the error to ``digits`` significant digits and the value to the same
    decimal place (scientific notation for very large or very small numbers); value alone to 4
    significant digits when there is no error; an em dash for a missing value."""
    if value is None or not math.isfinite(value):
        return MISSING
    if error is None or not math.isfinite(error) or error <= 0:
        return f"{value:.4g}"
    exponent = math.floor(math.log10(error))
    decimals = digits - 1 - exponent
    if abs(value) < 1e7 and decimals <= 8:
        if decimals >= 0:
            return f"{value:.{decimals}f} \u00b1 {error:.{decimals}f}"
        step = 10.0 ** (-decimals)
        return f"{round(value / step) * step:.0f} \u00b1 {round(error / step) * step:.0f}"
    power = math.floor(math.log10(abs(value))) if value != 0 else exponent
    mantissa_decimals = max(0, power - exponent + digits - 1)
    scale = 10.0**power
    return (
        f"({value / scale:.{mantissa_decimals}f} \u00b1 {error / scale:.{mantissa_decimals}f})e{power:+03d}"
    )


# ---------------------------------------------------------------- page assembly
def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _settings_items(settings: Mapping) -> list[tuple[str, str]]:
    return [
        (str(key), value if isinstance(value, str) else json.dumps(value, sort_keys=True))
        for key, value in settings.items()
    ]


def _pair_names(paths: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Caption names for optional per-run files: the run labels when counts match, else file names."""
    if len(paths) == len(labels):
        return list(labels)
    return [Path(path).name for path in paths]


def scaled_value_error(entry: Mapping | None, factor: float) -> str:
    """``value ± error`` of a metrics.json entry multiplied by ``factor`` (an em dash when absent),
    followed by how many of its histograms have no overlap when the entry records that."""
    if entry is None or entry.get("value") is None:
        return MISSING
    error = entry.get("error")
    text = format_value_error(entry["value"] * factor, None if error is None else error * factor)
    return text + no_overlap_note(entry.get("n_no_overlap"), entry.get("n_histograms"))


def no_overlap_note(n_no_overlap: int | None, n_histograms: int | None) -> str:
    """`` (k of n histograms: no overlap)`` for k > 0 (empty otherwise; "of n" only when known)."""
    if not n_no_overlap:
        return ""
    of = f" of {n_histograms}" if n_histograms else ""
    noun = "histogram" if (n_histograms or n_no_overlap) == 1 else "histograms"
    return f" ({n_no_overlap}{of} {noun}: no overlap)"


def group_overlap_counts(histograms: Sequence[Mapping], totals: Mapping[str, tuple[float, float]]) -> dict:
    """Per histogram group: (histograms, histograms without overlap) of the model row, from the
    histogram list and the (reference, generated) totals (:func:`has_no_overlap`)."""
    counts: dict[str, tuple[int, int]] = {}
    for entry in histograms:
        n, k = counts.get(entry["group"], (0, 0))
        counts[entry["group"]] = (n + 1, k + has_no_overlap(entry, totals.get(entry["name"])))
    return counts


def metrics_tables(runs: list[dict]) -> list[dict]:
    """One transposed metrics table per evaluation kind: a row per metric (grouped, see
    :mod:`pipelines.report.metric_catalogue`), per run the columns "model vs reference" and "real vs real"."""
    tables = []
    for kind in KINDS:
        kind_runs = [run for run in runs if run["kind"] == kind]
        if not kind_runs:
            continue
        names = [name for run in kind_runs for row in run["metrics"]["rows"].values() for name in row]
        groups: list[dict] = []
        for info in metric_catalogue.select_metrics(names, kind):
            if not groups or groups[-1]["name"] != info.group:
                note = metric_catalogue.GROUP_NOTES[info.group]
                groups.append({"name": info.group, "note": note, "rows": []})
            cells = [
                {
                    "text": scaled_value_error(_with_overlap(run, row_key, info.key), info.factor),
                    "rvr": row_key != "model",
                    "href": run.get("plot_links", {}).get(info.key) if row_key == "model" else None,
                }
                for run in kind_runs
                for row_key in ROW_NAMES
            ]
            groups[-1]["rows"].append(
                {
                    "key": info.key,
                    "label": info.label,
                    "unit": info.unit,
                    "meaning": info.meaning,
                    "sub": info.sub,
                    "cells": cells,
                }
            )
        for group in groups:
            if group["name"] == metric_catalogue.GROUP_CLASSIFIER:
                group["note"] += classifier_settings_note(kind_runs)
        tables.append({"kind": kind, "runs": [run["label"] for run in kind_runs], "groups": groups})
    return tables


def _with_overlap(run: Mapping, row_key: str, key: str) -> Mapping | None:
    """A metrics.json entry; a model-row separation power without recorded overlap counts gets the
    counts of its histogram group (the histograms of metrics.json are those of the model row)."""
    entry = run["metrics"]["rows"][row_key].get(key)
    if entry is None or row_key != "model" or "n_no_overlap" in entry or not key.startswith("separation_"):
        return entry
    counts = run.get("overlap", {}).get(key[len("separation_") :])
    if counts is None:
        return entry
    return {**entry, "n_histograms": counts[0], "n_no_overlap": counts[1]}


def classifier_settings_note(runs: list[dict]) -> str:
    """Which classifier settings produced each run's rows (recorded by evaluate-showers), or ""."""
    parts = []
    for run in runs:
        settings = run["metrics"].get("settings", {})
        recorded = [
            f"{name} {settings[key]}"
            for key, name in (("classifier_trees", "trees:"), ("classifier_network", "network:"))
            if isinstance(settings.get(key), str)
        ]
        if recorded:
            parts.append(f" {run['label']}: " + "; ".join(recorded) + ".")
    return "".join(parts)


LAYER_SUFFIX = re.compile(r"^(?P<group>.+)_(?P<layer>\d+)$")


def has_no_overlap(entry: Mapping, totals: tuple[float, float] | None) -> bool:
    """Whether a histogram's samples share no bin: S recorded as 1, or exactly one of the two samples
    has entries in range (S counted as 1, however metrics.json recorded it)."""
    value = entry.get("separation_power")
    if value is not None and value >= 1.0 - 1e-12:
        return True
    if totals is None:
        return False
    reference, generated = totals
    return (reference > 0) != (generated > 0)


def _separation_cell(value: float | None, no_overlap: bool = False) -> dict:
    """Table cell of a separation power with a red background whose strength grows with S (0..1);
    "1.00 (no overlap)" for disjoint samples, an em dash when S is undefined (both samples empty)."""
    if no_overlap:
        value = 1.0
    if value is None:
        return {"text": MISSING, "style": ""}
    alpha = 0.55 * min(max(value, 0.0), 1.0)
    text = NO_OVERLAP if no_overlap else f"{value:.3g}"
    return {"text": text, "style": f"background-color: rgba(214, 39, 40, {alpha:.3f})"}


def separation_summary(
    histograms: Sequence[Mapping], totals: Mapping[str, tuple[float, float]] | None = None
) -> dict:
    """Separation powers of a run: a list of single histograms and, for histograms named
    ``<group>_<layer>`` (all groups with more than one layer), a layer x group matrix. ``totals``
    (histogram name -> reference and generated entries in range) marks histograms without overlap;
    ``n_no_overlap`` counts them."""
    totals = totals or {}
    cells = {e["name"]: _separation_cell(e.get("separation_power"), has_no_overlap(e, totals.get(e["name"])))
             for e in histograms}  # fmt: skip
    per_layer: dict[str, dict[int, str]] = {}
    for entry in histograms:
        match = LAYER_SUFFIX.match(entry["name"])
        if match and match.group("group") == entry["group"]:
            per_layer.setdefault(entry["group"], {})[int(match.group("layer"))] = entry["name"]
    per_layer = {group: layers for group, layers in per_layer.items() if len(layers) > 1}
    singles = [
        {"group": e["group"], "name": e["name"], "xlabel": e["xlabel"], "value": cells[e["name"]]["text"]}
        for e in histograms
        if e["group"] not in per_layer
    ]
    layers = sorted({layer for values in per_layer.values() for layer in values})
    empty = _separation_cell(None)
    matrix = [
        {
            "layer": layer,
            "cells": [cells[per_layer[g][layer]] if layer in per_layer[g] else empty for g in per_layer],
        }
        for layer in layers
    ]
    n_no_overlap = sum(cell["text"] == NO_OVERLAP for cell in cells.values())
    return {
        "singles": singles,
        "layer_groups": list(per_layer),
        "layer_rows": matrix,
        "n_no_overlap": n_no_overlap,
        "n_histograms": len(histograms),
    }


def plot_anchor(run_index: int, record: PlotRecord) -> str:
    """The HTML id of a plot of run ``run_index`` (unique on the page)."""
    return f"plot-{run_index}-{slug(record.path.stem)}"


def plot_links(metrics: Mapping, records: Sequence[PlotRecord], run_index: int) -> dict[str, str]:
    """Metric name -> HTML id of the plot that shows what it measures
    (:func:`pipelines.report.metric_catalogue.illustrating_histogram`), for the metrics that have one."""
    groups = {entry["name"]: entry["group"] for entry in metrics["histograms"]}
    drawn = [(record.title, record.group) for record in records if groups.get(record.title) == record.group]
    anchors = {record.title: plot_anchor(run_index, record) for record in records if record.title in groups}
    names = {name for row in metrics["rows"].values() for name in row}
    links = {}
    for name in names:
        found = metric_catalogue.illustrating_histogram(name, metrics["kind"], drawn)
        if found is not None:
            links[name] = anchors[found]
    return links


def run_verdict(run: Mapping) -> dict:
    """The verdict block of a run: the sentence, the overall class and one row per headline metric
    (values in the units of the metrics table; ratio and pull against the real-vs-real floor)."""
    rows = run["metrics"]["rows"]
    items = verdict.run_verdicts(rows, run["kind"])
    shown = {}
    table = []
    for item in items:
        info = metric_catalogue.metric_info(item.key, run["kind"])
        model = scaled_value_error(_with_overlap(run, "model", item.key), info.factor)
        real = scaled_value_error(rows["real_vs_real"][item.key], info.factor)
        shown[item.key] = (
            f"{format_scalar(item.model * info.factor)} vs {format_scalar(item.real * info.factor)}"
        )
        table.append(
            {
                "key": item.key,
                "label": item.label,
                "unit": info.unit,
                "model": model,
                "real": real,
                "ratio": MISSING if item.ratio is None else f"{item.ratio:.3g}",
                "pull": MISSING if item.pull is None else f"{item.pull:.1f}",
                "class": item.verdict,
                "text": verdict.CLASS_TEXT[item.verdict],
                "href": run.get("plot_links", {}).get(item.key),
            }
        )
    worst = verdict.worst(items)
    return {
        "sentence": verdict.summary_sentence(items, shown),
        "class": verdict.overall_class(items),
        "rows": table,
        "worst": worst.key if worst is not None else None,
    }


def conventions(runs: Sequence[Mapping]) -> list[tuple[str, str]]:
    """The metrics files' "conventions" (short name -> sentence), merged over the runs in first-seen
    order; a name given different sentences by different runs is listed once per sentence."""
    seen: dict[tuple[str, str], None] = {}
    for run in runs:
        for name, sentence in run["metrics"].get("conventions", {}).items():
            seen[(name, sentence)] = None
    return list(seen)


def _published_tables(runs: list[dict], models: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    tables, notes, seen = [], [], set()
    for run in runs:
        metrics = run["metrics"]
        if metrics["kind"] != "showers":
            notes.append(f"{run['label']}: no published CaloChallenge numbers apply to {metrics['kind']}.")
            continue
        key = published.dataset_key(str(metrics["dataset"]))
        if key is None:
            raise ValueError(
                f"--real-data given, but dataset {metrics['dataset']!r} of run {run['label']!r} names no "
                f"CaloChallenge dataset with published numbers ({sorted(published.CSV_NAMES)})"
            )
        if key in seen:
            continue
        seen.add(key)
        rows = published.select_published(key, models)
        time_keys = [
            f"{device} {batch}" for device in ("CPU", "GPU") for batch in published.TIMING_BATCH_SIZES
        ]
        table_rows = [
            {
                "name": row.name,
                "role": row.role,
                "cells": [
                    format_value_error(row.auc_low.value, row.auc_low.std),
                    format_value_error(row.auc_high.value, row.auc_high.std),
                    format_value_error(row.fpd_x1e3.value, row.fpd_x1e3.std),
                    format_value_error(row.kpd_x1e3.value, row.kpd_x1e3.std),
                    f"{row.parameters_generation:,.0f}" if row.parameters_generation is not None else MISSING,
                ]
                + [
                    format_value_error(row.times_ms[k].value, row.times_ms[k].std)
                    if k in row.times_ms
                    else MISSING
                    for k in time_keys
                ],
            }
            for row in rows
        ]
        columns = ["AUC low", "AUC high", "FPD × 10³", "KPD × 10³", "parameters (generation)"]
        columns += [f"time {k} [ms/shower]" for k in time_keys]
        tables.append(
            {"dataset": key, "source": published.CSV_NAMES[key], "columns": columns, "rows": table_rows}
        )
    return tables, notes


def build_report(
    metrics_paths: Sequence[str | Path],
    histogram_paths: Sequence[str | Path],
    labels: Sequence[str],
    plots_dir: str | Path,
    *,
    settings: ReportSettings = ReportSettings(),
    training_curves: Sequence[str | Path] = (),
    timings: Sequence[str | Path] = (),
    training_summaries: Sequence[str | Path] = (),
    real_data: bool = False,
    data_summaries: Sequence[str | Path] = (),
    models: Sequence[str | Path] = (),
    exports: Sequence[str | Path] = (),
) -> tuple[dict, list[PlotRecord]]:
    """Load and validate all inputs, write the PNGs into ``plots_dir`` and return the template context.

    ``data_summaries``: summary JSONs of the ``validate`` stage; their input files and warnings are shown.
    ``models``: model files, hashed only. ``exports``: export.json per timing file (same order), its
    ONNX Runtime timings shown beside the torch ones. Every file read is listed with its sha256, beside
    the UTC time.
    """
    if not (len(metrics_paths) == len(histogram_paths) == len(labels)) or not labels:
        raise ValueError(
            f"report needs one --histograms and one --labels entry per --metrics file; "
            f"got {len(metrics_paths)} metrics, {len(histogram_paths)} histograms, {len(labels)} labels"
        )
    if training_summaries and len(training_summaries) != len(labels):
        raise ValueError(
            f"report needs one --training-summary per run when given; got {len(training_summaries)} "
            f"for {len(labels)} runs"
        )
    budgets = [load_training_budget(path) for path in training_summaries] or [None] * len(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"report --labels must be distinct, got {list(labels)}")
    plots_dir = Path(plots_dir)
    # every input is read and checked before the first plot is written: a bad one leaves no plots behind
    loaded = [(load_metrics(path), path) for path in metrics_paths]
    loaded_arrays = [
        load_histograms(hpath, metrics) for (metrics, _), hpath in zip(loaded, histogram_paths, strict=True)
    ]
    read_curves = [read_training_curve(path) for path in training_curves]
    kinds = (
        [metrics["kind"] for metrics, _ in loaded] if len(timings) == len(loaded) else [None] * len(timings)
    )
    timing_tables = [
        {"title": name, "file": str(path), "table": load_timing(path, kind)}
        for path, name, kind in zip(timings, _pair_names(timings, labels), kinds, strict=True)
    ]
    if len(exports) > len(timing_tables):
        raise ValueError(f"report needs one --timing per --export; got {len(exports)} for {len(timings)}")
    for table, path in zip(timing_tables, exports, strict=False):
        table["table"].groups.append(load_export_timing(path))
    summaries = [load_data_summary(path) for path in data_summaries]
    published_tables, published_notes = ([], [])
    if real_data:
        named = [{"label": name, "metrics": m} for (m, _), name in zip(loaded, labels, strict=True)]
        published_tables, published_notes = _published_tables(named, settings.published_models)
    runs, records = [], []
    for index, ((metrics, mpath), hpath, label, arrays) in enumerate(
        zip(loaded, histogram_paths, labels, loaded_arrays, strict=True)
    ):
        log.info("report: plotting run %r (%s, dataset %s)", label, metrics["kind"], metrics["dataset"])
        run_records = plot_run(
            metrics,
            arrays,
            plots_dir,
            label=label,
            style=settings.style(index),
            shower_layers=settings.shower_layers or None,
        )
        records += run_records
        groups: dict[str, list[dict]] = {}
        for record in run_records:
            groups.setdefault(record.group, []).append(
                {
                    "title": record.title,
                    "caption": record.caption,
                    "uri": data_uri(record.png),
                    "file": record.path.name,
                    "anchor": plot_anchor(index, record),
                    "wide": record.wide,
                }
            )
        totals = {
            e["name"]: tuple(
                float(arrays[f"{e['name']}__{part}"].sum()) for part in ("reference", "generated")
            )
            for e in metrics["histograms"]
        }
        run = {
            "label": label,
            "metrics": metrics,
            "kind": metrics["kind"],
            "dataset": str(metrics["dataset"]),
            "metrics_file": str(mpath),
            "histograms_file": str(hpath),
            "settings": _settings_items(metrics["settings"]),
            "separation": separation_summary(metrics["histograms"], totals),
            "overlap": group_overlap_counts(metrics["histograms"], totals),
            "groups": [{"name": name, "plots": plots} for name, plots in groups.items()],
            "budget": budgets[index].text() if budgets[index] is not None else None,
            "plot_links": plot_links(metrics, run_records, index),
            "jet_types": jet_type_table(metrics),
        }
        run["verdict"] = run_verdict(run)
        runs.append(run)
    curves = []
    for index, (path, name, curve) in enumerate(
        zip(training_curves, _pair_names(training_curves, labels), read_curves, strict=True)
    ):
        shown = {k: v for k, v in curve.columns.items() if k not in BOOKKEEPING_COLUMNS} or curve.columns
        fig = training_curve_figure(
            curve.steps,
            shown,
            step_label=curve.step_label,
            window=settings.smoothing,
            style=settings.style(index),
        )
        png_path = plots_dir / f"training-{index}-{slug(name)}.png"
        png = write_png(fig, png_path, settings.dpi, settings.pdf)
        panels = [" + ".join(curves) for _, curves in training_panels(shown)]
        caption = f"{Path(path).name}: {training_summary(curve)}; panels: " + ", ".join(panels)
        record = PlotRecord("training", name, caption, png_path, png)
        records.append(record)
        curves.append({"title": name, "caption": record.caption, "uri": data_uri(png), "file": png_path.name})
    context = {
        "title": settings.title
        or default_title(labels, [b.family if b is not None else None for b in budgets]),
        "runs": runs,
        "metrics_tables": metrics_tables(runs),
        "conventions": conventions(runs),
        "thresholds": verdict.THRESHOLDS_TEXT,
        "real_data": real_data,
        "citation": published.CITATION,
        "published_tables": published_tables,
        "published_notes": published_notes,
        "curves": curves,
        "timings": timing_tables,
        "data_summaries": summaries,
        "made": utc_now(),
        "provenance": provenance(
            {
                "model": models,
                "metrics": metrics_paths,
                "histograms": histogram_paths,
                "training curve": training_curves,
                "training summary": training_summaries,
                "timing": timings,
                "export": exports,
                "data summary": data_summaries,
            }
        ),
        "report_settings": _settings_items(
            {f.name: getattr(settings, f.name) for f in fields(ReportSettings)}
        ),
    }
    return context, records


def provenance(files: Mapping[str, Sequence[str | Path]]) -> list[dict]:
    """One row (role, file, sha256) per file of ``files`` (role -> paths), in the given order."""
    return [
        {"role": role, "file": str(path), "sha256": file_sha256(path)}
        for role, paths in files.items()
        for path in paths
    ]


def default_title(labels: Sequence[str], families: Sequence[str | None]) -> str:
    """The page title without a ``title`` setting: the project, then each run with its model family,
    e.g. "Point-cloud generative models: validation of calo-ds2 / factorised (family factorised)"."""
    runs = [
        f"{label} (family {family})" if family else label
        for label, family in zip(labels, families, strict=True)
    ]
    return f"{PROJECT}: validation of " + ", ".join(runs)


def render_html(context: Mapping, template: str = TEMPLATE_NAME) -> str:
    """Render ``template`` (of the report's templates folder) with HTML escaping of every inserted value."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(template).render(**context)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines report --metrics M.json ... --histograms H.npz ... --labels a ... --out r.html
    --plots-dir DIR [--training-curve c.csv ...] [--timing t.json ...] [--training-summary s.json ...]
    [--real-data] [--settings JSON]``."""
    parser = argparse.ArgumentParser(prog="pipelines report", description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json per run")
    parser.add_argument("--histograms", nargs="+", required=True, help="histograms.npz per run (same order)")
    parser.add_argument("--labels", nargs="+", required=True, help="run names (same order)")
    parser.add_argument(
        "--training-curve", nargs="*", default=[], help="training log CSVs (step + loss columns)"
    )
    parser.add_argument("--timing", nargs="*", default=[], help="generation timing JSONs")
    parser.add_argument(
        "--training-summary",
        nargs="*",
        default=[],
        help="training_summary.json per run (same order): family and training budget beside the verdict",
    )
    parser.add_argument(
        "--real-data",
        action="store_true",
        help="runs used the real CaloChallenge files: show the published numbers (arXiv:2410.21611)",
    )
    parser.add_argument(
        "--data-summaries", nargs="*", default=[], help="summary JSONs of the validate stage (warnings shown)"
    )
    parser.add_argument(
        "--model", nargs="*", default=[], help="model files (model.pt) per run: their sha256 is listed"
    )
    parser.add_argument(
        "--export", nargs="*", default=[], help="export.json per --timing (same order): ONNX Runtime timings"
    )
    parser.add_argument("--settings", default="{}", help="JSON object of report settings")
    parser.add_argument("--out", required=True, help="output HTML file")
    parser.add_argument("--plots-dir", required=True, help="directory for the PNG files")
    args = parser.parse_args(argv)
    settings = parse_settings(args.settings)
    context, records = build_report(
        args.metrics,
        args.histograms,
        args.labels,
        args.plots_dir,
        settings=settings,
        training_curves=args.training_curve,
        timings=args.timing,
        training_summaries=args.training_summary,
        real_data=args.real_data,
        data_summaries=args.data_summaries,
        models=args.model,
        exports=args.export,
    )
    page = render_html(context)
    with atomic_path(args.out) as tmp:
        tmp.write_text(page, encoding="utf-8")
        tmp.chmod(0o644)
    log.info("report: wrote %s with %d plots (PNGs in %s)", args.out, len(records), args.plots_dir)
    return 0
