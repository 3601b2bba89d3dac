"""Calorimeter geometry parsed from the CaloChallenge binning XML files.

Voxel order everywhere is (layer, alpha, r) with r fastest, as in the CaloChallenge
shower rows. Radial edges are in mm; alpha bins split [-pi, pi) evenly.
Irregular geometries (dataset 1: per-layer binnings, empty layers) are represented
as well; the regular-grid helpers (``n_alpha``, ``n_r``, ``r_edges``) require a
regular geometry (datasets 2 and 3) and say so otherwise.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

#: Voxel readout threshold of the CaloChallenge: 0.5 keV / sampling fraction 0.033, in MeV.
THRESHOLD_MEV = 0.5e-3 / 0.033

#: Physical depth of one readout layer in datasets 2 and 3 (W 1.4 mm + Si 0.3 mm, twice), mm.
LAYER_THICKNESS_MM = 3.4

KNOWN_DATASETS = {
    "1-photons": "binning_dataset_1_photons.xml",
    "1-pions": "binning_dataset_1_pions.xml",
    "2": "binning_dataset_2.xml",
    "3": "binning_dataset_3.xml",
}


class GeometryError(ValueError):
    """A binning file or a geometry request that cannot be honoured."""


@dataclass(frozen=True, eq=False)
class Geometry:
    """Per-layer binning of a cylindrical calorimeter readout.

    Attributes:
        name: dataset name ("2", "3", "1-photons", ...).
        layer_r_edges: radial bin edges per layer, mm; a layer with edges ``[0]`` is empty.
        layer_n_alpha: number of alpha bins per layer.
    """

    name: str
    layer_r_edges: tuple[np.ndarray, ...]
    layer_n_alpha: tuple[int, ...]

    @property
    def n_layers(self) -> int:
        return len(self.layer_r_edges)

    @cached_property
    def layer_n_voxels(self) -> np.ndarray:
        """Voxels per layer: n_alpha * n_r (0 for empty layers)."""
        return np.array(
            [(len(e) - 1) * a for e, a in zip(self.layer_r_edges, self.layer_n_alpha, strict=True)],
            dtype=np.int64,
        )

    @property
    def n_voxels(self) -> int:
        return int(self.layer_n_voxels.sum())

    @cached_property
    def is_regular(self) -> bool:
        """True when every layer has the same r edges and alpha count (datasets 2 and 3)."""
        first = self.layer_r_edges[0]
        return (
            len(first) > 1
            and all(len(e) == len(first) and np.array_equal(e, first) for e in self.layer_r_edges)
            and len(set(self.layer_n_alpha)) == 1
        )

    def _require_regular(self) -> None:
        if not self.is_regular:
            raise GeometryError(f"geometry of dataset {self.name} is irregular (per-layer binning)")

    @property
    def n_alpha(self) -> int:
        self._require_regular()
        return self.layer_n_alpha[0]

    @property
    def n_r(self) -> int:
        self._require_regular()
        return len(self.layer_r_edges[0]) - 1

    @property
    def r_edges(self) -> np.ndarray:
        """Radial edges in mm (regular geometries)."""
        self._require_regular()
        return self.layer_r_edges[0]

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """(n_layers, n_alpha, n_r) of a regular geometry."""
        return (self.n_layers, self.n_alpha, self.n_r)

    @property
    def r_centres(self) -> np.ndarray:
        """Radial bin centres in mm (regular geometries)."""
        e = self.r_edges
        return 0.5 * (e[1:] + e[:-1])

    @property
    def alpha_centres(self) -> np.ndarray:
        """Alpha bin centres in rad: midpoints of linspace(-pi, pi, n_alpha + 1)."""
        e = np.linspace(-np.pi, np.pi, self.n_alpha + 1)
        return 0.5 * (e[1:] + e[:-1])

    @cached_property
    def voxel_index(self) -> np.ndarray:
        """(n_voxels, 3) integer (layer, alpha, r) of every voxel in flattened order."""
        rows = []
        for layer, (edges, n_alpha) in enumerate(zip(self.layer_r_edges, self.layer_n_alpha, strict=True)):
            n_r = len(edges) - 1
            if n_r <= 0:
                continue
            a, r = np.meshgrid(np.arange(n_alpha), np.arange(n_r), indexing="ij")
            rows.append(np.stack([np.full(a.size, layer), a.ravel(), r.ravel()], axis=1))
        return np.concatenate(rows).astype(np.int64)

    @cached_property
    def voxel_centres_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) in mm of every voxel centre in flattened order: x = r cos(alpha), y = r sin(alpha)."""
        xs, ys = [], []
        for edges, n_alpha in zip(self.layer_r_edges, self.layer_n_alpha, strict=True):
            if len(edges) < 2:
                continue
            rc = 0.5 * (edges[1:] + edges[:-1])
            ae = np.linspace(-np.pi, np.pi, n_alpha + 1)
            ac = 0.5 * (ae[1:] + ae[:-1])
            a, r = np.meshgrid(ac, rc, indexing="ij")
            xs.append((r * np.cos(a)).ravel())
            ys.append((r * np.sin(a)).ravel())
        return np.concatenate(xs), np.concatenate(ys)

    @cached_property
    def voxel_r_mm(self) -> np.ndarray:
        """Radial bin centre in mm of every voxel in flattened order."""
        x, y = self.voxel_centres_mm
        return np.hypot(x, y)

    @cached_property
    def filled_layers(self) -> np.ndarray:
        """Ids of the layers that have voxels (every layer of datasets 2 and 3; 5 or 7 of dataset 1)."""
        return np.flatnonzero(self.layer_n_voxels > 0).astype(np.int64)

    @cached_property
    def angular_layers(self) -> np.ndarray:
        """Ids of the layers binned in alpha (n_alpha > 1): those with centres and widths in x and y, as
        the official HighLevelFeatures computes them (``layersBinnedInAlpha``)."""
        n_alpha = np.array(self.layer_n_alpha)
        return np.flatnonzero((self.layer_n_voxels > 0) & (n_alpha > 1)).astype(np.int64)

    @cached_property
    def bin_ranges(self) -> tuple[int, int, int]:
        """(n_layers, largest n_alpha, largest n_r): the range of the point coordinates (layer, alpha, r)."""
        n_r = max(len(e) - 1 for e in self.layer_r_edges)
        return self.n_layers, max(self.layer_n_alpha), n_r

    @property
    def compact_shape(self) -> tuple[int, int, int]:
        """(filled layers, largest n_alpha, largest n_r): the padded grid that holds every filled layer;
        the grid shape itself for a regular geometry."""
        _, n_alpha, n_r = self.bin_ranges
        return len(self.filled_layers), n_alpha, n_r

    @cached_property
    def compact_index(self) -> np.ndarray:
        """(n_voxels,) flat index of every voxel in the :attr:`compact_shape` grid (identity if regular)."""
        _, n_alpha, n_r = self.compact_shape
        row = np.searchsorted(self.filled_layers, self.voxel_index[:, 0])
        return (row * n_alpha + self.voxel_index[:, 1]) * n_r + self.voxel_index[:, 2]

    def to_compact(self, voxels: np.ndarray) -> np.ndarray:
        """Voxel arrays (..., n_voxels) as (..., *compact_shape), zero where a layer has no such bin."""
        voxels = np.asarray(voxels)
        out = np.zeros((*voxels.shape[:-1], int(np.prod(self.compact_shape))), dtype=voxels.dtype)
        out[..., self.compact_index] = voxels
        return out.reshape(*voxels.shape[:-1], *self.compact_shape)

    @cached_property
    def nearest_filled_layer(self) -> np.ndarray:
        """(n_layers,) for every layer id the nearest filled layer (ties: the shallower one)."""
        ids = np.arange(self.n_layers)
        distance = np.abs(ids[:, None] - self.filled_layers[None, :])
        return self.filled_layers[np.argmin(distance, axis=1)]

    def flat_index(self, layer: np.ndarray, alpha: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Flattened voxel index of integer (layer, alpha, r) (regular geometries)."""
        return (
            np.asarray(layer, np.int64) * self.n_alpha + np.asarray(alpha, np.int64)
        ) * self.n_r + np.asarray(r, np.int64)


def parse_binning_xml(path: str | Path, name: str | None = None) -> Geometry:
    """Read a CaloChallenge binning XML file (``<Bins><Bin><Layer r_edges=.. n_bin_alpha=..>``)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise GeometryError(f"{path}: cannot parse binning XML: {err}") from err
    bins = root.findall("Bin")
    if len(bins) != 1:
        raise GeometryError(f"{path}: expected one <Bin> element, found {len(bins)}")
    layers = sorted(bins[0].findall("Layer"), key=lambda el: int(el.get("id", "-1")))
    if not layers:
        raise GeometryError(f"{path}: no <Layer> elements")
    edges, n_alpha = [], []
    for i, el in enumerate(layers):
        if int(el.get("id", "-1")) != i:
            raise GeometryError(f"{path}: layer ids are not 0..{len(layers) - 1}")
        e = np.array([float(v) for v in el.get("r_edges", "0").split(",")])
        if np.any(np.diff(e) <= 0) or e[0] != 0:
            raise GeometryError(f"{path}: layer {i} r_edges must start at 0 and increase")
        edges.append(e)
        n_alpha.append(int(el.get("n_bin_alpha", "1")))
    return Geometry(name=name or path.stem, layer_r_edges=tuple(edges), layer_n_alpha=tuple(n_alpha))


def load_geometry(dataset: str | int) -> Geometry:
    """Geometry of a CaloChallenge dataset ("2", "3", "1-photons", "1-pions") from the shipped XML."""
    key = str(dataset)
    if key not in KNOWN_DATASETS:
        raise GeometryError(f"unknown CaloChallenge dataset {dataset!r}; known: {sorted(KNOWN_DATASETS)}")
    ref = resources.files("pipelines") / "data" / KNOWN_DATASETS[key]
    with resources.as_file(ref) as path:
        return parse_binning_xml(path, name=key)
