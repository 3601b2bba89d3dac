"""Showers as point clouds: voxels -> points (E, layer, alpha, r) and back.

A point is one non-zero voxel: its energy in MeV and its integer (layer, alpha, r) bin,
stored as float32. Turning points back into voxels clamps every coordinate into the grid
and handles points that land in the same voxel ("collisions") by summing them, or by
first moving them to a free neighbouring voxel of the same shower ("shift").
Works for regular (datasets 2, 3) and per-layer (dataset 1) geometries alike.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from pipelines.geometry import Geometry

POINT_NAMES = ("energy", "layer", "alpha", "r")
#: Storage dtypes of the shower point columns (bin indices are small integers).
POINT_DTYPES = {"energy": "float32", "layer": "uint8", "alpha": "uint8", "r": "uint8"}
Collisions = Literal["sum", "shift"]

#: Neighbour moves (d_layer, d_alpha, d_r) tried in order for a colliding point in "shift" mode:
#: the nearest cells of the same layer first, then the adjacent layers.
NEIGHBOUR_MOVES = np.array(
    [
        (0, 0, 1),
        (0, 0, -1),
        (0, 1, 0),
        (0, -1, 0),
        (1, 0, 0),
        (-1, 0, 0),
        (0, 1, 1),
        (0, -1, 1),
        (0, 1, -1),
        (0, -1, -1),
    ],
    dtype=np.int64,
)


def voxels_to_points(showers: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Convert showers (N, n_voxels) to points (P, 4) = (E, layer, alpha, r) and lengths (N,).

    Points of one shower are contiguous and in voxel order; zero-hit showers have length 0.
    """
    columns, lengths = voxels_to_columns(showers, geometry)
    points = np.empty((len(columns["energy"]), len(POINT_NAMES)), dtype=np.float32)
    for j, name in enumerate(POINT_NAMES):
        points[:, j] = columns[name]
    return points, lengths


def voxels_to_columns(showers: np.ndarray, geometry: Geometry) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`voxels_to_points` as columns in their storage dtypes (:data:`POINT_DTYPES`).

    The column-wise layout is what the point-cloud files store, and it avoids a (P, 4) float
    intermediate: the conversion stage's hot path.
    """
    showers = np.ascontiguousarray(showers)
    if showers.ndim != 2 or showers.shape[1] != geometry.n_voxels:
        raise ValueError(f"showers of shape {showers.shape} do not fit dataset {geometry.name}")
    hit = showers != 0
    lengths = np.count_nonzero(hit, axis=1).astype(np.int64)
    flat = np.flatnonzero(hit)
    voxel = flat - np.repeat(np.arange(len(showers), dtype=np.int64) * geometry.n_voxels, lengths)
    columns = {"energy": np.take(showers.reshape(-1), flat)}
    for name, table in zip(POINT_NAMES[1:], _bin_tables(geometry), strict=True):
        columns[name] = np.take(table, voxel)
    return columns, lengths


def _bin_tables(geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(layer, alpha, r) bin of every voxel as three uint8 arrays, cached per geometry."""
    cached = _TABLES.get(id(geometry))
    if cached is None or cached[0] is not geometry:
        index = geometry.voxel_index
        if index.max(initial=0) > np.iinfo(np.uint8).max:
            raise ValueError(f"dataset {geometry.name}: bin indices do not fit the uint8 point columns")
        tables = tuple(np.ascontiguousarray(index[:, j], dtype=np.uint8) for j in range(3))
        cached = _TABLES[id(geometry)] = (geometry, tables)
    return cached[1]


_TABLES: dict[int, tuple[Geometry, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}


def _layer_tables(geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per layer: first flat voxel index, number of alpha bins, number of radial bins."""
    n_r = np.array([len(e) - 1 for e in geometry.layer_r_edges], dtype=np.int64)
    n_alpha = np.array(geometry.layer_n_alpha, dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(n_alpha * n_r)[:-1]])
    return start, n_alpha, n_r


def _clamped_bins(points: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer (layer, alpha, r) of points, floored and clamped into the grid (NaN -> 0); a point in a
    layer without voxels (dataset 1) goes to the nearest layer that has some."""
    _, n_alpha, n_r = _layer_tables(geometry)
    coords = np.fmax(points[:, 1:4], 0)  # fmax also maps NaN to 0
    layer = geometry.nearest_filled_layer[np.minimum(coords[:, 0], geometry.n_layers - 1).astype(np.int64)]
    alpha = np.minimum(coords[:, 1], n_alpha[layer] - 1).astype(np.int64)
    r = np.minimum(coords[:, 2], np.maximum(n_r[layer] - 1, 0)).astype(np.int64)
    return layer, alpha, r


def _regular_keys(coords: np.ndarray, lengths: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Flat voxel index (shower * n_voxels + voxel) of points in a regular grid, clamped (fast path).

    ``coords`` is a contiguous (3, P) floating array of the floored (layer, alpha, r) of the points
    (column-strided arithmetic on the (P, 4) points is several times slower); it is clamped in place.
    Flooring first and clamping after gives the same bins as clamping first; the clamp is skipped when
    every bin is already inside the grid (a NaN fails that check and is clamped to 0 by fmax). The
    in-shower index is one matrix-vector product of the integer-valued bins with the strides, exact in
    float32 below 2**24. Keys are int32 (the caller keeps len(lengths) * n_voxels below 2**31).
    """
    n_layers, n_alpha, n_r = geometry.grid_shape
    top = np.array([n_layers - 1, n_alpha - 1, n_r - 1], dtype=coords.dtype)
    if not (np.all(coords.min(axis=1, initial=0) >= 0) and np.all(coords.max(axis=1, initial=0) <= top)):
        np.fmax(coords, 0, out=coords)
        np.minimum(coords, top[:, None], out=coords)
    key = (np.array([n_alpha * n_r, n_r, 1], dtype=coords.dtype) @ coords).astype(np.int32)
    key += np.repeat(np.arange(len(lengths), dtype=np.int32) * np.int32(geometry.n_voxels), lengths)
    return key


def _shift_collisions(
    shower: np.ndarray, layer: np.ndarray, alpha: np.ndarray, r: np.ndarray, geometry: Geometry
) -> np.ndarray:
    """Flat voxel index (within its shower) of every point after moving colliders to free neighbours.

    A point keeps its voxel if it is the first point there; each later point tries
    :data:`NEIGHBOUR_MOVES` in order (alpha wraps around) and takes the first voxel that no
    point occupies; points that find none stay and are summed.
    """
    start, n_alpha, n_r = _layer_tables(geometry)
    n_vox = geometry.n_voxels
    local = start[layer] + alpha * n_r[layer] + r
    key = shower * n_vox + local
    _, first = np.unique(key, return_index=True)
    is_first = np.zeros(len(key), dtype=bool)
    is_first[first] = True
    taken = np.sort(key[is_first])
    movers = np.flatnonzero(~is_first)
    for d_layer, d_alpha, d_r in NEIGHBOUR_MOVES:
        if len(movers) == 0:
            break
        new_layer = layer[movers] + d_layer
        inside = (new_layer >= 0) & (new_layer < geometry.n_layers)
        new_layer = np.clip(new_layer, 0, geometry.n_layers - 1)
        new_r = r[movers] + d_r
        inside &= (new_r >= 0) & (new_r < n_r[new_layer])
        new_alpha = (alpha[movers] + d_alpha) % n_alpha[new_layer]
        new_local = start[new_layer] + new_alpha * n_r[new_layer] + np.clip(new_r, 0, None)
        new_key = shower[movers] * n_vox + new_local
        pos = np.searchsorted(taken, new_key)
        free = inside & ~((pos < len(taken)) & (taken[np.minimum(pos, len(taken) - 1)] == new_key))
        cand = np.flatnonzero(free)
        _, first_cand = np.unique(new_key[cand], return_index=True)
        winners = cand[first_cand]
        local[movers[winners]] = new_local[winners]
        taken = np.sort(np.concatenate([taken, new_key[winners]]))
        keep = np.ones(len(movers), dtype=bool)
        keep[winners] = False
        movers = movers[keep]
    return local


def _distinct_keys(flat: np.ndarray, key: np.ndarray) -> int:
    """Number of distinct ``key`` values, ``flat`` (float32) being zeros with the points' energies
    scattered at ``key``. Its count of nonzero bit patterns (an int32 view: faster than float compares)
    is at most that number, and equal to the number of keys only when they are all distinct; below it
    (collisions, or energies of +0.0) the keys are counted on a separate mask."""
    if np.count_nonzero(flat.view(np.int32)) == len(key):
        return len(key)
    hit = np.zeros(len(flat), dtype=bool)
    hit[key] = True
    return int(np.count_nonzero(hit))


def points_to_voxels(
    points: np.ndarray,
    lengths: np.ndarray,
    geometry: Geometry,
    collisions: Collisions = "sum",
    chunk_voxels: int = 2**24,
) -> tuple[np.ndarray, int]:
    """Voxelise points (P, 4) with per-shower ``lengths`` into showers (N, n_voxels) float32.

    Returns the showers and the number of points that landed in a voxel already hit by
    another point of the same shower (before any "shift"). Coordinates are floored and
    clamped into the grid; energies are summed per voxel.
    """
    if collisions not in ("sum", "shift"):
        raise ValueError(f"collisions must be 'sum' or 'shift', got {collisions!r}")
    points = np.asarray(points)
    lengths = np.asarray(lengths, dtype=np.int64)
    if points.ndim != 2 or points.shape[1] != 4 or lengths.sum() != len(points):
        raise ValueError(f"points {points.shape} and lengths (sum {lengths.sum()}) do not match")
    n, n_vox = len(lengths), geometry.n_voxels
    if chunk_voxels >= 2**31:
        raise ValueError("chunk_voxels must stay below 2**31 (int32 voxel keys)")
    start, _, n_r = _layer_tables(geometry)
    out = np.zeros((n, n_vox), dtype=np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    per_chunk = max(1, chunk_voxels // n_vox)
    n_collided = 0
    for s0 in range(0, n, per_chunk):
        s1 = min(n, s0 + per_chunk)
        p = points[offsets[s0] : offsets[s1]]
        if geometry.is_regular:
            coords = np.floor(p[:, 1:4].T, out=np.empty((3, len(p)), np.result_type(p.dtype, np.float32)))
            key = _regular_keys(coords, lengths[s0:s1], geometry)
            energy = p[:, 0] if p.dtype == np.float32 else p[:, 0].astype(np.float32)
        else:
            shower = np.repeat(np.arange(s1 - s0, dtype=np.int64), lengths[s0:s1])
            layer, alpha, r = _clamped_bins(p, geometry)
            key = shower * n_vox + start[layer] + alpha * n_r[layer] + r
            energy = p[:, 0].astype(np.float32)
        flat = out[s0:s1].reshape(-1)
        flat[key] = energy  # the result where every key is distinct
        collided = len(key) - _distinct_keys(flat, key)
        n_collided += collided
        if collided == 0:
            continue
        flat[:] = 0.0
        if collisions == "shift":
            if geometry.is_regular:  # the regular keys were made without the per-point bins
                shower = np.repeat(np.arange(s1 - s0, dtype=np.int64), lengths[s0:s1])
                layer, alpha, r = _clamped_bins(p, geometry)
            key = shower * n_vox + _shift_collisions(shower, layer, alpha, r, geometry)
        np.add.at(flat, key, energy)
    return out, int(n_collided)
