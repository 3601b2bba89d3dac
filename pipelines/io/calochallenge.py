"""Validated reading and writing of CaloChallenge shower files (HDF5).

Layout: ``incident_energies`` (N, 1) in MeV and ``showers`` (N, n_voxels) in MeV, voxels
flattened in (layer, alpha, r) order with r fastest. Readers check everything a broken or
foreign file can get wrong and raise :class:`DataError` naming the file and the problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import deflate
import h5py
import numpy as np

from pipelines.geometry import Geometry
from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError

ENERGY_KEY = "incident_energies"
SHOWER_KEY = "showers"

#: Incident energies accepted by the readers, MeV (the challenge covers 1 GeV to 1 TeV).
INCIDENT_RANGE_MEV = (1.0, 1.0e7)


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: cannot open HDF5 file (truncated?): {err}") from err


def _check_dtype(path: Path, key: str, dtype: np.dtype) -> None:
    """Energies are floating point (float32 in the challenge files): no strings, no integers."""
    if np.issubdtype(dtype, np.floating):
        return
    if dtype.kind in "SUO":
        what = "a string"
    elif np.issubdtype(dtype, np.integer) or dtype.kind == "b":
        what = "an integer"
    else:
        what = "a non-numeric"
    raise DataError(
        f"{path}: {key!r} has {what} dtype ({dtype}); energies must be floating point MeV "
        "(float32 in CaloChallenge files)"
    )


def check_layout(path: str | Path, geometry: Geometry) -> int:
    """Check keys, dtypes and shapes of a CaloChallenge file against ``geometry``; return the shower count."""
    path = Path(path)
    with _open(path) as f:
        for key in (ENERGY_KEY, SHOWER_KEY):
            if key not in f:
                raise DataError(f"{path}: missing dataset {key!r} (found {sorted(f.keys())})")
        e_shape, s_shape = f[ENERGY_KEY].shape, f[SHOWER_KEY].shape
        for key in (ENERGY_KEY, SHOWER_KEY):
            _check_dtype(path, key, f[key].dtype)
    if len(e_shape) not in (1, 2) or (len(e_shape) == 2 and e_shape[1] != 1):
        raise DataError(f"{path}: {ENERGY_KEY!r} has shape {e_shape}, expected (N, 1)")
    if len(s_shape) != 2:
        raise DataError(f"{path}: {SHOWER_KEY!r} has shape {s_shape}, expected (N, {geometry.n_voxels})")
    if s_shape[1] != geometry.n_voxels:
        raise DataError(
            f"{path}: {SHOWER_KEY!r} has {s_shape[1]} voxels per shower, dataset {geometry.name} "
            f"has {geometry.n_voxels}"
        )
    if s_shape[0] != e_shape[0]:
        raise DataError(f"{path}: {s_shape[0]} showers but {e_shape[0]} incident energies")
    if s_shape[0] == 0:
        raise DataError(f"{path}: contains no showers")
    return int(s_shape[0])


def _check_values(path: Path, start: int, energies: np.ndarray, showers: np.ndarray) -> None:
    if not np.all(np.isfinite(energies)):
        bad = start + int(np.flatnonzero(~np.isfinite(energies))[0])
        raise DataError(f"{path}: incident energy of shower {bad} is not finite")
    low, high = INCIDENT_RANGE_MEV
    out = (energies < low) | (energies > high)
    if np.any(out):
        bad = int(np.flatnonzero(out)[0])
        raise DataError(
            f"{path}: incident energy {energies[bad]:g} MeV of shower {start + bad} is outside "
            f"[{low:g}, {high:g}] MeV"
        )
    if showers.size and showers.min() >= 0 and np.isfinite(showers.max()):
        return  # fast path: min is NaN if any value is NaN
    finite = np.isfinite(showers)
    if not np.all(finite):
        bad = start + int(np.flatnonzero(~finite.all(axis=1))[0])
        raise DataError(f"{path}: shower {bad} has NaN or infinite voxel energies")
    if np.any(showers < 0):
        bad = start + int(np.flatnonzero((showers < 0).any(axis=1))[0])
        raise DataError(f"{path}: shower {bad} has negative voxel energies")


class _DeflateRows:
    """Rows of a float32 dataset stored in whole-row chunks with the deflate filter only (the layout
    :func:`write_calochallenge` makes), inflated with libdeflate, which is several times faster than
    HDF5's zlib. The last inflated chunk is kept, so reads that split a chunk inflate it once."""

    def __init__(self, path: Path, dataset: h5py.Dataset) -> None:
        self.path, self.dataset = path, dataset
        self.rows, self.width = dataset.chunks
        self.nbytes = self.rows * self.width * 4
        self.cached: tuple[int, np.ndarray] | None = None

    @classmethod
    def open(cls, path: Path, dataset: h5py.Dataset) -> _DeflateRows | None:
        """The reader for ``dataset``, or None where its layout needs HDF5's own reading."""
        plist = dataset.id.get_create_plist()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        plain = dataset.ndim == 2 and dataset.dtype == np.dtype("<f4") and dataset.chunks is not None
        if not plain or dataset.chunks[1] != dataset.shape[1] or filters != [h5py.h5z.FILTER_DEFLATE]:
            return None
        return cls(path, dataset)

    def _chunk(self, first: int) -> np.ndarray:
        """Rows ``first`` to ``first + self.rows`` (the stored chunk, padded past the last row)."""
        if self.cached is None or self.cached[0] != first:
            filter_mask, data = self.dataset.id.read_direct_chunk((first, 0))
            if filter_mask & 1 == 0:  # bit set: the chunk was stored without compression
                try:
                    data = deflate.zlib_decompress(data, self.nbytes)
                except deflate.DeflateError as err:
                    raise DataError(f"{self.path}: corrupt compressed showers at row {first}: {err}") from err
            if len(data) != self.nbytes:
                raise DataError(f"{self.path}: showers chunk at row {first} has {len(data)} bytes")
            self.cached = first, np.frombuffer(data, dtype="<f4").reshape(self.rows, self.width)
        return self.cached[1]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a new (stop - start, width) float32 array."""
        out = np.empty((stop - start, self.width), dtype=np.float32)
        for first in range(start - start % self.rows, stop, self.rows):
            lo, hi = max(start, first), min(stop, first + self.rows)
            out[lo - start : hi - start] = self._chunk(first)[lo - first : hi - first]
        return out


def iter_calochallenge(
    path: str | Path, geometry: Geometry, chunk_size: int = 2000
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield validated ``(start, incident_energies (n,) float64 MeV, showers (n, n_vox) float32)`` chunks."""
    path = Path(path)
    n = check_layout(path, geometry)
    with _open(path) as f:
        e_ds, s_ds = f[ENERGY_KEY], f[SHOWER_KEY]
        rows = _DeflateRows.open(path, s_ds)
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            try:
                energies = np.asarray(e_ds[start:stop], dtype=np.float64).reshape(-1)
                if rows is None:
                    showers = np.asarray(s_ds[start:stop], dtype=np.float32)
                else:
                    showers = rows.read(start, stop)
            except OSError as err:
                raise DataError(f"{path}: cannot read showers {start}..{stop} (truncated?): {err}") from err
            _check_values(path, start, energies, showers)
            yield start, energies, showers


def read_calochallenge(path: str | Path, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Read a whole validated file: ``(incident_energies (N,) float64 MeV, showers (N, n_vox) float32)``."""
    n = check_layout(path, geometry)
    energies = np.empty(n, dtype=np.float64)
    showers = np.empty((n, geometry.n_voxels), dtype=np.float32)
    for start, e, s in iter_calochallenge(path, geometry):
        energies[start : start + len(e)] = e
        showers[start : start + len(e)] = s
    return energies, showers


def read_rows(path: str | Path, geometry: Geometry, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(incident_energies (m,) float64 MeV, showers (m, n_vox) float32)`` of the file rows
    ``rows`` (any order, repeats allowed), reading only those rows."""
    path = Path(path)
    n = check_layout(path, geometry)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"{path}: rows {rows.min()}..{rows.max()} outside 0..{n - 1}")
    if not rows.size:
        return np.empty(0, dtype=np.float64), np.empty((0, geometry.n_voxels), dtype=np.float32)
    unique, back = np.unique(rows, return_inverse=True)
    with _open(path) as f:
        try:
            energies = np.asarray(f[ENERGY_KEY][unique], dtype=np.float64).reshape(-1)
            showers = np.asarray(f[SHOWER_KEY][unique], dtype=np.float32).reshape(-1, geometry.n_voxels)
        except OSError as err:
            raise DataError(f"{path}: cannot read showers {unique.tolist()} (truncated?): {err}") from err
    for k, row in enumerate(unique):
        _check_values(path, int(row), energies[k : k + 1], showers[k : k + 1])
    return energies[back], showers[back]


def write_calochallenge(path: str | Path, incident_energies: np.ndarray, showers: np.ndarray) -> None:
    """Write showers in the CaloChallenge layout (float32, gzip), atomically."""
    energies = np.asarray(incident_energies, dtype=np.float32).reshape(-1, 1)
    showers = np.asarray(showers, dtype=np.float32)
    if showers.ndim != 2 or showers.shape[0] != energies.shape[0]:
        raise ValueError(f"showers {showers.shape} and incident energies {energies.shape} do not match")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(ENERGY_KEY, data=energies, compression="gzip")
        chunk_rows = max(1, min(len(showers), 2**20 // max(1, showers.shape[1])))
        f.create_dataset(
            SHOWER_KEY,
            data=showers,
            compression="gzip",
            chunks=(chunk_rows, showers.shape[1]) if len(showers) else None,
        )
