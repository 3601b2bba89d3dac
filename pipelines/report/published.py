"""Published CaloChallenge numbers (arXiv:2410.21611) to show next to the project's own metrics.

The project ships the challenge's tables as ``pipelines/data/published/published_results_<ds>.csv``
(one row per submission; row ``GEANT4`` compares two independent Geant4 samples). Columns read here:
``submission name``, ``binary cls low|high`` (+ `` std``: classifier AUC, mean and std over 10
trainings), ``FPD * 1e3`` and ``KPD * 1e3`` (+ `` std``), ``Parameters generation`` and
``time CPU|GPU <batch size>`` (+ `` std``, milliseconds per shower; hardware not stated).
These numbers are comparable with the project's only when it ran on the real dataset files.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pipelines.io.errors import DataError

CITATION = "arXiv:2410.21611"
REFERENCE_ROW = "GEANT4"
DEFAULT_MODELS: tuple[str, ...] = ("GEANT4", "MDMA", "CaloPointFlow")
TIMING_BATCH_SIZES: tuple[int, ...] = (1, 100, 10000)
CSV_NAMES = {
    "1-photons": "published_results_ds1_photons.csv",
    "1-pions": "published_results_ds1_pions.csv",
    "2": "published_results_ds2.csv",
    "3": "published_results_ds3.csv",
}
_REQUIRED_COLUMNS = (
    "submission name",
    "binary cls low",
    "binary cls low std",
    "binary cls high",
    "binary cls high std",
    "FPD * 1e3",
    "FPD * 1e3 std",
    "KPD * 1e3",
    "KPD * 1e3 std",
)


@dataclass(frozen=True)
class Measurement:
    """A published mean and its spread (std over trainings/draws); either may be missing (None)."""

    value: float | None
    std: float | None = None


@dataclass(frozen=True)
class PublishedRow:
    """One submission of the published table, with the reason it is shown (``role``)."""

    name: str
    role: str
    auc_low: Measurement
    auc_high: Measurement
    fpd_x1e3: Measurement
    kpd_x1e3: Measurement
    parameters_generation: float | None
    #: ``{"CPU 1": Measurement(ms per shower, std), "GPU 100": ...}``
    times_ms: dict[str, Measurement] = field(default_factory=dict)


def dataset_key(dataset: str) -> str | None:
    """Map a dataset name from metrics.json ("2", "ds2", "dataset_3", "calochallenge-1-photons") to a
    published-table key ("1-photons", "1-pions", "2", "3"), or None when it names none of them."""
    text = str(dataset).strip().lower()
    if text in CSV_NAMES:
        return text
    match = re.search(r"(?:^|[^0-9])([123])(?:[-_ ]?(photons?|pions?))?$", text)
    if match is None:
        return None
    number, particle = match.group(1), match.group(2)
    if number == "1":
        if particle is None:
            return None
        return "1-photons" if particle.startswith("photon") else "1-pions"
    return None if particle else number


def published_csv_path(dataset: str) -> Path:
    """Path of the shipped published table for ``dataset`` (ValueError when there is none)."""
    key = dataset_key(dataset)
    if key is None:
        raise ValueError(
            f"no published CaloChallenge table for dataset {dataset!r}; known: {sorted(CSV_NAMES)}"
        )
    ref = resources.files("pipelines") / "data" / "published" / CSV_NAMES[key]
    with resources.as_file(ref) as path:
        return Path(path)


def _number(text: str | None, path: Path, column: str, name: str) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError as err:
        raise DataError(f"{path}: column {column!r} of {name!r} is not a number: {text!r}") from err
    if not math.isfinite(value):
        raise DataError(f"{path}: column {column!r} of {name!r} is not finite: {text!r}")
    return value


def read_published(path: str | Path) -> list[dict[str, str]]:
    """All rows of a published table as dicts of the raw cell strings (validated header)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            rows = list(reader)
    except OSError as err:
        raise DataError(f"{path}: cannot read published table: {err}") from err
    missing = [c for c in _REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: published table lacks columns {missing}")
    if not rows:
        raise DataError(f"{path}: published table has no rows")
    return rows


def _measure(row: dict[str, str], column: str, path: Path) -> Measurement:
    name = row["submission name"]
    return Measurement(
        _number(row.get(column), path, column, name), _number(row.get(f"{column} std"), path, column, name)
    )


def _to_row(raw: dict[str, str], role: str, path: Path) -> PublishedRow:
    name = raw["submission name"]
    times = {}
    for device in ("CPU", "GPU"):
        for batch in TIMING_BATCH_SIZES:
            column = f"time {device} {batch}"
            if column in raw:
                times[f"{device} {batch}"] = _measure(raw, column, path)
    return PublishedRow(
        name=name,
        role=role,
        auc_low=_measure(raw, "binary cls low", path),
        auc_high=_measure(raw, "binary cls high", path),
        fpd_x1e3=_measure(raw, "FPD * 1e3", path),
        kpd_x1e3=_measure(raw, "KPD * 1e3", path),
        parameters_generation=_number(raw.get("Parameters generation"), path, "Parameters generation", name),
        times_ms=times,
    )


def best_by_auc_high(rows: list[dict[str, str]], path: Path) -> dict[str, str]:
    """The submission (Geant4 reference row excluded) whose high-level classifier AUC is closest to 0.5."""
    best, best_distance = None, math.inf
    for raw in rows:
        if raw["submission name"] == REFERENCE_ROW:
            continue
        auc = _number(raw.get("binary cls high"), path, "binary cls high", raw["submission name"])
        if auc is not None and abs(auc - 0.5) < best_distance:
            best, best_distance = raw, abs(auc - 0.5)
    if best is None:
        raise DataError(f"{path}: no submission has a 'binary cls high' AUC")
    return best


def select_published(
    dataset: str, models: tuple[str, ...] = DEFAULT_MODELS, path: str | Path | None = None
) -> list[PublishedRow]:
    """Rows to show beside the project's metrics: ``models`` by exact submission name (the Geant4
    reference row must exist; other names absent from the table are skipped), then the best entry by
    high-level classifier AUC (|AUC - 0.5| smallest), marked in its role if it is already listed."""
    path = Path(path) if path is not None else published_csv_path(dataset)
    rows = read_published(path)
    by_name = {raw["submission name"]: raw for raw in rows}
    if REFERENCE_ROW not in by_name:
        raise DataError(f"{path}: published table has no {REFERENCE_ROW!r} (Geant4 vs Geant4) row")
    best = best_by_auc_high(rows, path)["submission name"]
    selected = []
    for name in models:
        if name not in by_name:
            continue
        role = "Geant4 vs Geant4" if name == REFERENCE_ROW else "published model"
        if name == best:
            role += "; best binary cls high AUC"
        selected.append(_to_row(by_name[name], role, path))
    if best not in models:
        selected.append(_to_row(by_name[best], "best binary cls high AUC", path))
    return selected
