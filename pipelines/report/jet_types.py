"""Per-jet-type rows of a jet report (metrics.json ``per_type``, written for data sets of several types).

One table per run: a row per jet type and one for all jets, a column per headline metric (the verdict's
metrics of a type, in table order), each cell "model / real vs real" in the metrics table's units and
coloured by the verdict of that type's model against its own real-vs-real floor
(:mod:`pipelines.report.verdict`).
"""

from __future__ import annotations

from collections.abc import Mapping

from pipelines.io.errors import DataError
from pipelines.jet_types import JET_TYPES, TYPE_NAMES
from pipelines.report import metric_catalogue, verdict

ROWS = ("model", "real_vs_real")


def check_per_type(path: str, per_type: object) -> None:
    """DataError naming ``path`` unless ``per_type`` maps known jet types to model / real-vs-real rows."""
    if not isinstance(per_type, dict) or not per_type:
        raise DataError(f"{path}: 'per_type' must map jet types to their rows")
    for t, entry in per_type.items():
        if t not in JET_TYPES:
            raise DataError(f"{path}: 'per_type' names unknown jet type {t!r}")
        rows = entry.get("rows") if isinstance(entry, dict) else None
        if not isinstance(rows, dict) or set(ROWS) - set(rows):
            raise DataError(f"{path}: per_type {t!r} must hold rows 'model' and 'real_vs_real'")
        for row in rows.values():
            if not isinstance(row, dict) or not all(
                isinstance(e, dict) and "value" in e for e in row.values()
            ):
                raise DataError(f"{path}: per_type {t!r}: every metric must be {{'value', 'error'}}")


def _cell(key: str, rows: Mapping) -> dict:
    from pipelines.report.html import format_scalar

    info = metric_catalogue.metric_info(key, "jets")
    model, real = rows["model"].get(key), rows["real_vs_real"].get(key)
    if model is None or real is None:
        return {"text": "—", "class": verdict.UNRATED}
    found = verdict.compare(key, info.label, model, real)
    if found is None:
        return {"text": "—", "class": verdict.UNRATED}
    text = f"{format_scalar(found.model * info.factor)} / {format_scalar(found.real * info.factor)}"
    return {"text": text, "class": found.verdict}


def jet_type_table(metrics: Mapping) -> dict | None:
    """The per-type table of one run's metrics (None without ``per_type``)."""
    per_type = metrics.get("per_type")
    if not per_type:
        return None
    first = next(iter(per_type.values()))["rows"]
    keys = [item.key for item in verdict.run_verdicts(first, "jets")]
    infos = [metric_catalogue.metric_info(key, "jets") for key in keys]
    rows = []
    for t, entry in per_type.items():
        rows.append(
            {
                "type": t,
                "name": TYPE_NAMES[t],
                "n": f"{entry.get('n_generated', '?')} / {entry.get('n_reference', '?')}",
                "cells": [_cell(key, entry["rows"]) for key in keys],
            }
        )
    sizes = metrics["settings"]
    rows.append(
        {
            "type": "all",
            "name": "all types",
            "n": f"{sizes.get('n_generated', '?')} / {sizes.get('n_reference', '?')}",
            "cells": [_cell(key, metrics["rows"]) for key in keys],
        }
    )
    columns = [{"key": i.key, "label": i.label, "unit": i.unit} for i in infos]
    return {"columns": columns, "rows": rows}
