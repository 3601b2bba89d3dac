"""Stage ``metrics-table``: a run's metrics.json as tables, ``metrics.parquet`` (for pandas / polars and
the comparison page) and ``metrics.tsv`` (the table of ``snakemake --report``).

One row per metric of metrics.json: the model row's value and error, the real-vs-real row's value and
error, how the report shows it (label, group, meaning, display factor and unit, from
:mod:`pipelines.report.metric_catalogue`) and, where both values exist, the ratio, pull and class
against the real-vs-real floor (:mod:`pipelines.report.verdict`); ``headline`` marks the metrics the
report's verdict counts. Values are stored as in metrics.json (raw); multiply by ``display_factor``
for the report's units. The TSV holds the rows the report's metrics table shows, in its units.
A jet data set of several types adds each type's rows (metrics.json ``per_type``) after the rows of the
whole data set, marked by ``jet_type`` (null on the whole data set's rows).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from pipelines.io.atomic import atomic_path
from pipelines.io.tables import Column, build_table, write_table
from pipelines.report import metric_catalogue, verdict
from pipelines.report.html import load_metrics

log = logging.getLogger(__name__)

#: columns of metrics.parquet a reader (the comparison page) relies on
REQUIRED_COLUMNS = ("metric", "label", "headline", "value", "error", "real_vs_real", "real_vs_real_error",
                    "display_factor", "display_unit", "verdict")  # fmt: skip
TSV_COLUMNS = ("jet_type", "metric", "label", "group", "unit", "model", "model_error", "real_vs_real",
               "real_vs_real_error", "ratio", "pull", "verdict")  # fmt: skip


def ordered_names(metrics: Mapping) -> list[str]:
    """Every metric name of both rows: the report's order first, then the raw duplicates it skips."""
    rows = metrics["rows"]
    names = list(dict.fromkeys([*rows["model"], *rows["real_vs_real"]]))
    shown = [info.key for info in metric_catalogue.select_metrics(names, metrics["kind"])]
    return shown + [name for name in names if name not in shown]


def _number(entry: Mapping | None, key: str) -> float | None:
    value = (entry or {}).get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _count(entry: Mapping | None, key: str) -> int | None:
    value = (entry or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _records(rows: Mapping, kind: str, jet_type: str | None) -> list[dict]:
    """One record per metric of a model / real-vs-real pair of rows (the whole data set or one type)."""
    headline = {item.key for item in verdict.run_verdicts(rows, kind)}
    records = []
    for name in ordered_names({"rows": rows, "kind": kind}):
        model, real = rows["model"].get(name), rows["real_vs_real"].get(name)
        info = metric_catalogue.metric_info(name, kind)
        found = verdict.compare(name, info.label, model, real) if model and real else None
        records.append(
            {
                "jet_type": jet_type,
                "metric": name,
                "label": info.label,
                "group": info.group,
                "meaning": info.meaning,
                "headline": name in headline,
                "value": _number(model, "value"),
                "error": _number(model, "error"),
                "real_vs_real": _number(real, "value"),
                "real_vs_real_error": _number(real, "error"),
                "display_factor": info.factor,
                "display_unit": info.unit,
                "ratio": found.ratio if found else None,
                "pull": found.pull if found else None,
                "verdict": found.verdict if found else None,
                "n_histograms": _count(model, "n_histograms"),
                "n_no_overlap": _count(model, "n_no_overlap"),
                "real_vs_real_n_no_overlap": _count(real, "n_no_overlap"),
            }
        )
    return records


def metrics_table(metrics: Mapping, source: str = "") -> pa.Table:
    """The metrics table of one run's (validated) metrics.json content."""
    kind = metrics["kind"]
    records = _records(metrics["rows"], kind, None)
    for jet_type, entry in metrics.get("per_type", {}).items():
        records += _records(entry["rows"], kind, jet_type)
    f64, i64, text, flag = pa.float64(), pa.int64(), pa.string(), pa.bool_()
    described = {
        "jet_type": ("jet type of the row (g, q, t, w, z); null: the whole data set", "", text),
        "metric": ("name of the metric in metrics.json", "", text),
        "label": ("the report's name of the metric", "", text),
        "group": ("the report's group of the metric", "", text),
        "meaning": ("what the metric measures", "", text),
        "headline": ("true for the metrics the report's verdict counts", "", flag),
        "value": (
            "model vs reference, as stored in metrics.json (raw; the report shows it x display_factor)",
            "",
            f64,
        ),
        "error": ("error of value (null: none recorded)", "", f64),
        "real_vs_real": ("reference half vs reference half (the floor), as stored", "", f64),
        "real_vs_real_error": ("error of real_vs_real (null: none recorded)", "", f64),
        "display_factor": ("the report shows value x display_factor", "", f64),
        "display_unit": ("the scale the report shows, e.g. '× 10³'", "", text),
        "ratio": ("(value - ideal) / (real_vs_real - ideal); ideal 0.5 for an AUC, else 0", "", f64),
        "pull": ("(value - real_vs_real) / sqrt(error² + real_vs_real_error²)", "standard deviations", f64),
        "verdict": (
            "within / close / far / unrated against the floor (pipelines/report/verdict.py)",
            "",
            text,
        ),
        "n_histograms": ("histograms averaged (separation powers)", "", i64),
        "n_no_overlap": ("of them, histograms without overlap, counted as S = 1", "", i64),
        "real_vs_real_n_no_overlap": ("as n_no_overlap, for the real-vs-real row", "", i64),
    }
    columns = [
        Column(key, [record[key] for record in records], meaning, unit, kind)
        for key, (meaning, unit, kind) in described.items()
    ]
    info = {
        "kind": kind,
        "dataset": str(metrics["dataset"]),
        "source": source,
        "conventions": metrics.get("conventions", {}),
        "verdict_thresholds": verdict.THRESHOLDS_TEXT,
    }
    return build_table(columns, "one metric per row: model and real-vs-real values", info)


def _cell(value: float | None, factor: float = 1.0) -> str:
    return "" if value is None else f"{value * factor:.6g}"


def metrics_tsv(table: pa.Table) -> str:
    """The rows the report's metrics table shows, in its units, as tab-separated text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(TSV_COLUMNS)
    kind = table.schema.metadata[b"kind"].decode()
    shown = {info.key for info in metric_catalogue.select_metrics(table.column("metric").to_pylist(), kind)}
    for row in table.to_pylist():
        if row["metric"] not in shown:
            continue
        f = row["display_factor"]
        writer.writerow(
            [row["jet_type"] or "", row["metric"], row["label"], row["group"], row["display_unit"],
             _cell(row["value"], f), _cell(row["error"], f), _cell(row["real_vs_real"], f),
             _cell(row["real_vs_real_error"], f),
             _cell(row["ratio"]), _cell(row["pull"]), row["verdict"] or ""]
        )  # fmt: skip
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines metrics-table --metrics M.json --out-parquet M.parquet --out-tsv M.tsv``."""
    parser = argparse.ArgumentParser(prog="pipelines metrics-table", description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, required=True, help="metrics.json of one run")
    parser.add_argument("--out-parquet", type=Path, required=True, help="metrics.parquet to write")
    parser.add_argument("--out-tsv", type=Path, required=True, help="metrics.tsv to write")
    args = parser.parse_args(argv)
    table = metrics_table(load_metrics(args.metrics), str(args.metrics))
    text = metrics_tsv(table)
    write_table(table, args.out_parquet)
    with atomic_path(args.out_tsv) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log.info("metrics-table: wrote %s and %s (%d metrics)", args.out_parquet, args.out_tsv, table.num_rows)
    return 0
