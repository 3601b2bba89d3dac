"""Parquet tables for use outside the workflow (pandas, polars, pyarrow): written atomically, with the
meaning and unit of every column in the schema metadata.

Each column's field metadata holds ``description`` (and ``unit`` where the column has one); the
schema metadata holds ``table`` (what one row is) and any further key given as ``info`` (strings, or
JSON for other values). :func:`read_table` checks that a file is a Parquet table with the columns a
reader needs and names the file otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError


@dataclass(frozen=True)
class Column:
    """One column: its name, values (a 1-d array or list; None entries become nulls), meaning, unit and
    optionally its Arrow type (else inferred)."""

    name: str
    values: Any
    description: str
    unit: str = ""
    type: pa.DataType | None = None


def build_table(columns: Sequence[Column], table: str, info: Mapping[str, Any] | None = None) -> pa.Table:
    """A pyarrow table of ``columns`` described in its schema: ``table`` says what a row is."""
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ValueError(f"table columns must be distinct, got {names}")
    arrays, fields = [], []
    for column in columns:
        array = pa.array(column.values, type=column.type)
        meta = {"description": column.description}
        if column.unit:
            meta["unit"] = column.unit
        arrays.append(array)
        fields.append(pa.field(column.name, array.type, metadata=meta))
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"table columns differ in length: {dict(zip(names, map(len, arrays), strict=True))}")
    metadata = {"table": table}
    for key, value in (info or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write ``table`` to ``path`` as Parquet, atomically (nothing is left behind on failure)."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: str | Path, columns: Sequence[str] = ()) -> pa.Table:
    """The Parquet table in ``path``; DataError naming the file when it cannot be read or lacks one of
    ``columns``."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path}: cannot read Parquet table: {err}") from err
    missing = [name for name in columns if name not in table.column_names]
    if missing:
        raise DataError(f"{path}: Parquet table lacks columns {missing}")
    return table


def column_descriptions(table: pa.Table) -> dict[str, dict[str, str]]:
    """Column name -> its field metadata (``description``, ``unit``) as strings."""
    return {
        field.name: {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
        for field in table.schema
    }


def table_info(table: pa.Table) -> dict[str, str]:
    """The schema metadata as strings (``table`` and the ``info`` keys given to :func:`build_table`)."""
    return {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
