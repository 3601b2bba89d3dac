"""Ragged point-cloud store: all clouds' points concatenated, plus offsets (HDF5, never padded).

A file holds the points column by column (group ``points``, one dataset per named column, with
its own dtype: integer bin coordinates are stored as small integers, energies as float32),
``offsets`` (N + 1,) int64, per-cloud ``conditions`` (N, c) float64 and the train/validation/test
``split`` (N,) int8, with column names and free-form attributes (seed, source, ...) as HDF5
attributes. In memory, points are one (P, d) float32 array. Zero-length clouds are valid.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", VALIDATION: "validation", TEST: "test"}


@dataclass
class Clouds:
    """A set of variable-length point clouds stored flat with offsets."""

    points: np.ndarray
    offsets: np.ndarray
    conditions: np.ndarray
    point_names: tuple[str, ...]
    condition_names: tuple[str, ...]
    split: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        self.conditions = np.asarray(self.conditions, dtype=np.float64).reshape(len(self.offsets) - 1, -1)
        self.split = np.asarray(self.split, dtype=np.int8)
        self.point_names = tuple(self.point_names)
        self.condition_names = tuple(self.condition_names)
        n = len(self.offsets) - 1
        if self.points.ndim != 2 or self.points.shape[1] != len(self.point_names):
            raise ValueError(f"points {self.points.shape} do not match point names {self.point_names}")
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.points) or np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets must start at 0, end at the point count and never decrease")
        if self.conditions.shape[1] != len(self.condition_names) or self.split.shape != (n,):
            raise ValueError("conditions or split do not match the number of clouds")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Number of points per cloud, (N,) int64."""
        return np.diff(self.offsets)

    def cloud(self, i: int) -> np.ndarray:
        """Points of cloud ``i``, (n_i, d)."""
        return self.points[self.offsets[i] : self.offsets[i + 1]]

    def select(self, indices: np.ndarray) -> Clouds:
        """A new Clouds holding the clouds at ``indices`` (in that order)."""
        indices = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[indices]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        point_idx = np.repeat(self.offsets[indices] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Clouds(
            points=self.points[point_idx],
            offsets=offsets,
            conditions=self.conditions[indices],
            point_names=self.point_names,
            condition_names=self.condition_names,
            split=self.split[indices],
            attrs=dict(self.attrs),
        )

    def split_indices(self, which: int) -> np.ndarray:
        """Indices of the clouds in split ``which`` (TRAIN, VALIDATION or TEST)."""
        return np.flatnonzero(self.split == which)


def write_clouds(path: str | Path, clouds: Clouds, column_dtypes: dict[str, str] | None = None) -> None:
    """Write ``clouds`` to an HDF5 file atomically (``column_dtypes`` as for :class:`CloudWriter`)."""
    with CloudWriter(path, clouds.point_names, clouds.condition_names, column_dtypes) as writer:
        writer.append(clouds.points, clouds.lengths, clouds.conditions)
        writer.finish(clouds.split, clouds.attrs)


class CloudWriter:
    """Append clouds chunk by chunk to an HDF5 file, so memory stays bounded; atomic on success.

    Use as a context manager; the split labels and attributes are written at the end.
    ``column_dtypes`` maps column names to storage dtypes (default float32); values are checked
    to survive the cast exactly.
    """

    def __init__(
        self,
        path: str | Path,
        point_names: tuple[str, ...],
        condition_names: tuple[str, ...],
        column_dtypes: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        self.dtypes = {name: np.dtype((column_dtypes or {}).get(name, "float32")) for name in point_names}
        self.point_names = tuple(point_names)
        self.condition_names = tuple(condition_names)
        self._lengths: list[np.ndarray] = []
        self._conditions: list[np.ndarray] = []
        self._n_points = 0

    def __enter__(self) -> CloudWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._file = h5py.File(tmp, "w")
        group = self._file.create_group("points")
        self._columns = [
            group.create_dataset(
                name, shape=(0,), maxshape=(None,), dtype=self.dtypes[name], chunks=(1 << 18,)
            )
            for name in self.point_names
        ]
        return self

    def append(self, points: np.ndarray, lengths: np.ndarray, conditions: np.ndarray) -> None:
        """Add clouds: their points (sum(lengths), d), lengths (n,) and conditions (n, c)."""
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != len(self.point_names):
            raise ValueError(f"points of shape {points.shape} do not have {len(self.point_names)} columns")
        columns = {name: points[:, j] for j, name in enumerate(self.point_names)}
        self.append_columns(columns, lengths, conditions)

    def append_columns(
        self, columns: Mapping[str, np.ndarray], lengths: np.ndarray, conditions: np.ndarray
    ) -> None:
        """Add clouds given column by column (name -> (sum(lengths),) values)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        n_new = int(lengths.sum())
        if sorted(columns) != sorted(self.point_names):
            raise ValueError(f"columns {sorted(columns)} are not the point columns {list(self.point_names)}")
        if any(len(values) != n_new for values in columns.values()):
            raise ValueError("points and lengths do not match")
        cast = []
        for name, column in zip(self.point_names, self._columns, strict=True):
            given = np.asarray(columns[name])
            values = given.astype(column.dtype, copy=False)
            if column.dtype.kind in "iu" and values is not given and not np.array_equal(values, given):
                raise ValueError(f"column {name} holds values that are not {column.dtype} integers")
            cast.append(values)
        end = self._n_points + n_new
        for column, values in zip(self._columns, cast, strict=True):
            column.resize(end, axis=0)
            column[self._n_points :] = values
        self._n_points = end
        self._lengths.append(lengths)
        self._conditions.append(np.asarray(conditions, dtype=np.float64).reshape(len(lengths), -1))

    @property
    def n_clouds(self) -> int:
        return int(sum(len(x) for x in self._lengths))

    def finish(self, split: np.ndarray, attrs: dict[str, Any]) -> None:
        """Write offsets, conditions, split labels and attributes."""
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        f = self._file
        f.create_dataset("offsets", data=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        conditions = np.concatenate(self._conditions) if self._conditions else np.zeros((0, 1))
        f.create_dataset("conditions", data=conditions)
        f.create_dataset("split", data=np.asarray(split, dtype=np.int8))
        f.attrs["point_names"] = json.dumps(list(self.point_names))
        f.attrs["condition_names"] = json.dumps(list(self.condition_names))
        f.attrs["attrs"] = json.dumps(attrs, sort_keys=True)
        self._finished = True

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        if exc_type is None and not getattr(self, "_finished", False):
            exc = RuntimeError("CloudWriter closed without finish()")
            self._atomic.__exit__(type(exc), exc, None)
            raise exc
        self._atomic.__exit__(exc_type, exc, tb)


def read_clouds(path: str | Path) -> Clouds:
    """Read a point-cloud file written by :func:`write_clouds`."""
    path = Path(path)
    if not path.exists() or not h5py.is_hdf5(path):
        raise DataError(f"{path}: not a point-cloud HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            missing = {"points", "offsets", "conditions", "split"} - set(f.keys())
            if missing:
                raise DataError(f"{path}: missing datasets {sorted(missing)}")
            names = tuple(json.loads(f.attrs["point_names"]))
            columns = [f["points"][name][()] for name in names]
            n_points = len(columns[0]) if columns else 0
            points = np.empty((n_points, len(names)), dtype=np.float32)
            for j, column in enumerate(columns):
                points[:, j] = column
            return Clouds(
                points=points,
                offsets=f["offsets"][()],
                conditions=f["conditions"][()],
                point_names=names,
                condition_names=tuple(json.loads(f.attrs["condition_names"])),
                split=f["split"][()],
                attrs=json.loads(f.attrs.get("attrs", "{}")),
            )
    except (OSError, KeyError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot read point clouds: {err}") from err


def assign_split(n: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Seeded random train/validation/test labels for ``n`` clouds with the given fractions."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    counts = np.floor(f * n).astype(np.int64)
    counts[0] += n - counts.sum()
    labels = np.repeat(np.arange(3, dtype=np.int8), counts)
    return np.random.default_rng(seed).permutation(labels)
