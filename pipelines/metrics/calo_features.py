"""CaloChallenge high-level shower features, histogram binnings and chunked file scans.

Definitions (CaloChallenge 2022 evaluation; energies MeV, positions mm). Voxels below the readout
threshold (``THRESHOLD_MEV`` = 15.15 keV) are zeroed first. Per shower: E_tot, E_tot / E_inc, the number
of hits; per layer l: E_layer, centres of energy EC_eta = sum(x E) / (E_layer + 1e-16) (x = r cos alpha),
EC_phi (y = r sin alpha), EC_r (radial bin centre), widths sqrt(max(0, sum(x^2 E) / (E_layer + 1e-16)
- EC^2)) (the ``max(0, .)`` fixes the NaN the published code gets from rounding), and sparsity
= 1 - mean(E > 0) over the voxels of the layer. Regular geometries only (datasets 2 and 3).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from pipelines.geometry import THRESHOLD_MEV, Geometry
from pipelines.io.calochallenge import check_layout, iter_calochallenge
from pipelines.progress import progress

#: Per-layer feature arrays of :class:`ShowerFeatures`, in the order the histograms list them.
LAYER_FEATURES = ("e_layer", "ec_eta", "ec_phi", "ec_r", "width_eta", "width_phi", "width_r", "sparsity")


def apply_threshold(showers: np.ndarray, threshold: float = THRESHOLD_MEV) -> np.ndarray:
    """Copy of ``showers`` (MeV) with voxels below ``threshold`` MeV set to zero."""
    out = np.array(showers, dtype=np.float32, copy=True)
    out[out < threshold] = 0.0
    return out


def _require_regular(geometry: Geometry) -> tuple[int, int]:
    if not geometry.is_regular:
        raise ValueError(f"high-level features need a regular geometry; dataset {geometry.name} is not")
    n_layers, n_alpha, n_r = geometry.grid_shape
    return n_layers, n_alpha * n_r


@dataclass(frozen=True)
class ShowerFeatures:
    """High-level features of N showers: (N,) per-shower arrays, (N, n_layers) per-layer arrays."""

    e_inc: np.ndarray
    e_tot: np.ndarray
    n_hits: np.ndarray
    e_layer: np.ndarray
    ec_eta: np.ndarray
    ec_phi: np.ndarray
    ec_r: np.ndarray
    width_eta: np.ndarray
    width_phi: np.ndarray
    width_r: np.ndarray
    sparsity: np.ndarray

    def __len__(self) -> int:
        return len(self.e_inc)

    @property
    def e_ratio(self) -> np.ndarray:
        """E_tot / E_inc per shower."""
        return self.e_tot / self.e_inc

    def select(self, index: np.ndarray) -> ShowerFeatures:
        """Features of the showers at ``index`` (integer array or boolean mask)."""
        return ShowerFeatures(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {prefix + f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "") -> ShowerFeatures:
        return cls(**{f.name: np.asarray(arrays[prefix + f.name]) for f in fields(cls)})

    @classmethod
    def concatenate(cls, parts: list[ShowerFeatures]) -> ShowerFeatures:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def high_level_vector(self) -> np.ndarray:
        """Classifier / FPD / KPD input in the published order (362-d for datasets 2 and 3):
        [log10 E_inc, log10(E_layer + 1e-8), EC_eta/100, EC_phi/100, width_eta/100, width_phi/100,
        log10(E_tot + 1e-8), sparsity, EC_r/100, width_r/100]."""
        return np.concatenate(
            [
                np.log10(self.e_inc)[:, None],
                np.log10(self.e_layer + 1e-8),
                self.ec_eta / 100.0,
                self.ec_phi / 100.0,
                self.width_eta / 100.0,
                self.width_phi / 100.0,
                np.log10(self.e_tot + 1e-8)[:, None],
                self.sparsity,
                self.ec_r / 100.0,
                self.width_r / 100.0,
            ],
            axis=1,
        )

    def tree_vector(self) -> np.ndarray:
        """Input of the tree classifier test: :meth:`high_level_vector` plus the energy ratios
        log10((E_layer + 1e-8) / E_inc) per layer and E_tot / E_inc (408-d for datasets 2 and 3).
        Trees cut one feature at a time, so a ratio they would have to piece together from two
        features is given to them directly."""
        return np.concatenate(
            [
                self.high_level_vector(),
                np.log10(self.e_layer + 1e-8) - np.log10(self.e_inc)[:, None],
                self.e_ratio[:, None],
            ],
            axis=1,
        )


def _centre_and_width(e: np.ndarray, e_layer: np.ndarray, coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy-weighted centre and width per layer; e (n, L, V), coord (L, V) in mm."""
    denom = e_layer + 1e-16
    centre = np.einsum("nlv,lv->nl", e, coord) / denom
    second = np.einsum("nlv,lv->nl", e, coord * coord) / denom
    return centre, np.sqrt(np.maximum(0.0, second - centre * centre))


def compute_features(
    incident_energies: np.ndarray, showers: np.ndarray, geometry: Geometry, threshold: float = THRESHOLD_MEV
) -> ShowerFeatures:
    """High-level features of one batch: incident energies (n,) MeV, showers (n, n_voxels) MeV."""
    n_layers, per_layer = _require_regular(geometry)
    e_inc = np.asarray(incident_energies, dtype=np.float64).reshape(-1)
    showers = np.asarray(showers)
    if showers.ndim != 2 or showers.shape != (len(e_inc), geometry.n_voxels):
        raise ValueError(
            f"showers must be ({len(e_inc)}, {geometry.n_voxels}) for dataset {geometry.name}, "
            f"got {showers.shape}"
        )
    e = np.where(showers >= threshold, showers, 0.0).astype(np.float64).reshape(-1, n_layers, per_layer)
    x, y = (c.reshape(n_layers, per_layer) for c in geometry.voxel_centres_mm)
    r = geometry.voxel_r_mm.reshape(n_layers, per_layer)
    e_layer = e.sum(axis=2)
    ec_eta, width_eta = _centre_and_width(e, e_layer, x)
    ec_phi, width_phi = _centre_and_width(e, e_layer, y)
    ec_r, width_r = _centre_and_width(e, e_layer, r)
    hits = e > 0
    return ShowerFeatures(
        e_inc=e_inc,
        e_tot=e_layer.sum(axis=1),
        n_hits=hits.sum(axis=(1, 2)).astype(np.int64),
        e_layer=e_layer,
        ec_eta=ec_eta,
        ec_phi=ec_phi,
        ec_r=ec_r,
        width_eta=width_eta,
        width_phi=width_phi,
        width_r=width_r,
        sparsity=1.0 - hits.mean(axis=2),
    )


def log_edges(low: float, top: float, n_edges: int) -> np.ndarray:
    """logspace(log10(low), log10(top), n_edges) with the end points exactly ``low`` and ``top``.

    Fix of a rounding flaw of the published binning: 10**log10(top) can fall an ulp below ``top`` (the
    published code takes log10 in float32, which moves it by ~1e-7), and the reference's largest value,
    which defines ``top``, then drops out of the histogram."""
    edges = np.logspace(np.log10(low), np.log10(top), n_edges)
    edges[0], edges[-1] = low, top
    return edges


def voxel_energy_edges(max_reference_voxel_mev: float, threshold: float = THRESHOLD_MEV) -> np.ndarray:
    """Voxel-energy binning: logspace(log10(threshold), log10(max reference voxel), 50) in MeV."""
    top = max(float(max_reference_voxel_mev), 10.0 * threshold)
    return log_edges(threshold, top, 50)


def voxel_energy_counts(
    showers: np.ndarray, edges: np.ndarray, threshold: float = THRESHOLD_MEV
) -> np.ndarray:
    """Per-shower histogram (n, len(edges) - 1) int32 of above-threshold voxel energies (MeV).

    Out-of-range entries are dropped."""
    k = len(edges) - 1
    rows, cols = np.nonzero(showers >= threshold)
    vals = showers[rows, cols].astype(np.float64)
    # np.histogram convention: bins [e_i, e_{i+1}) and the last bin closed on the right.
    b = np.searchsorted(edges, vals, side="right") - 1
    b[vals == edges[-1]] = k - 1
    ok = (b >= 0) & (b < k)
    flat = np.bincount(rows[ok] * k + b[ok], minlength=len(showers) * k)
    return flat.reshape(len(showers), k).astype(np.int32)


@dataclass(frozen=True)
class FileScan:
    """Result of one pass over a shower file.

    features: per-shower high-level features; voxel_sum: (n_voxels,) summed energy (MeV) and max_voxel:
    largest thresholded voxel energy (MeV), both over the selected rows (all when none); voxel_counts:
    per-shower voxel-energy histograms (N, k) when edges were given.
    """

    features: ShowerFeatures
    voxel_sum: np.ndarray
    max_voxel: float
    voxel_counts: np.ndarray | None


def scan_file(
    path: str | Path,
    geometry: Geometry,
    voxel_edges: np.ndarray | None = None,
    chunk_size: int = 2000,
    threshold: float = THRESHOLD_MEV,
    rows: np.ndarray | None = None,
) -> FileScan:
    """One chunked pass over a CaloChallenge file (memory bounded by ``chunk_size`` showers).

    ``rows``: optional boolean mask (N,) of the showers entering ``voxel_sum`` and ``max_voxel``
    (features and voxel counts cover every shower).
    """
    n = check_layout(path, geometry)
    parts: list[ShowerFeatures] = []
    voxel_sum = np.zeros(geometry.n_voxels, dtype=np.float64)
    counts = None if voxel_edges is None else np.zeros((n, len(voxel_edges) - 1), dtype=np.int32)
    max_voxel = 0.0
    bar = progress(total=n, desc=f"features {Path(path).name}", unit="shower", leave=False)
    for start, energies, showers in iter_calochallenge(path, geometry, chunk_size):
        stop = start + len(energies)
        parts.append(compute_features(energies, showers, geometry, threshold))
        above = np.where(showers >= threshold, showers, 0.0)
        keep = slice(None) if rows is None else rows[start:stop]
        max_voxel = max(max_voxel, float(above[keep].max(initial=0.0)))
        voxel_sum += above[keep].sum(axis=0, dtype=np.float64)
        if counts is not None:
            counts[start:stop] = voxel_energy_counts(showers, voxel_edges, threshold)
        bar.update(len(energies))
    bar.close()
    return FileScan(ShowerFeatures.concatenate(parts), voxel_sum, max_voxel, counts)


def load_rows(
    path: str | Path, geometry: Geometry, index: np.ndarray, chunk_size: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """Incident energies (m,) and thresholded showers (m, n_voxels) float32 of the sorted rows ``index``."""
    index = np.asarray(index, dtype=np.int64)
    energies = np.empty(len(index), dtype=np.float64)
    showers = np.empty((len(index), geometry.n_voxels), dtype=np.float32)
    for start, e, s in iter_calochallenge(path, geometry, chunk_size):
        lo, hi = np.searchsorted(index, [start, start + len(e)])
        local = index[lo:hi] - start
        energies[lo:hi] = e[local]
        showers[lo:hi] = apply_threshold(s[local])
    return energies, showers


# ---------------------------------------------------------------- histograms


@dataclass(frozen=True)
class HistogramSpec:
    """One observable histogram: ``name`` keys histograms.npz; ``group`` collects per-layer copies."""

    name: str
    xlabel: str
    logx: bool
    logy: bool
    group: str
    edges: np.ndarray


_LAYER_HIST = {
    # feature: (group label, axis label, edges or None for the E_layer log binning, logx)
    "ec_eta": ("EC_eta", "centre of energy x [mm]", np.linspace(-30, 30, 101), False),
    "ec_phi": ("EC_phi", "centre of energy y [mm]", np.linspace(-30, 30, 101), False),
    "ec_r": ("EC_r", "centre of energy r [mm]", np.linspace(0, 42, 101), False),
    "width_eta": ("width_eta", "width x [mm]", np.linspace(0, 30, 101), False),
    "width_phi": ("width_phi", "width y [mm]", np.linspace(0, 30, 101), False),
    "width_r": ("width_r", "width r [mm]", np.linspace(0, 20, 101), False),
    "sparsity": ("sparsity", "sparsity (fraction of empty voxels)", np.linspace(0, 1, 21), False),
}


def histogram_specs(
    reference: ShowerFeatures, max_reference_voxel: float, threshold: float = THRESHOLD_MEV
) -> list[HistogramSpec]:
    """All histograms with the published binnings; data-dependent edges (E_layer, voxel energy) come from
    ``reference`` and ``max_reference_voxel``: pass the comparison's own reference sample (half A), as the
    CaloChallenge evaluate.py takes them from the reference file it compares with."""
    specs = [HistogramSpec("E_ratio", "E_tot / E_inc", False, True, "E_ratio", np.linspace(0.5, 1.5, 101))]
    n_layers = reference.e_layer.shape[1]
    for layer in range(n_layers):
        top = max(float(reference.e_layer[:, layer].max(initial=0.0)), 10.0 * threshold)
        edges = log_edges(threshold, top, 40)
        specs.append(
            HistogramSpec(f"E_layer_{layer:02d}", f"E layer {layer} [MeV]", True, True, "E_layer", edges)
        )
    for group, label, edges, logx in _LAYER_HIST.values():
        for layer in range(n_layers):
            specs.append(
                HistogramSpec(f"{group}_{layer:02d}", f"{label}, layer {layer}", logx, True, group, edges)
            )
    specs.append(
        HistogramSpec(
            "voxel_energy",
            "voxel energy [MeV]",
            True,
            True,
            "voxel_energy",
            voxel_energy_edges(max_reference_voxel, threshold),
        )
    )
    return specs


_GROUP_FEATURE = {v[0]: k for k, v in _LAYER_HIST.items()} | {"E_layer": "e_layer"}


def histogram_values(features: ShowerFeatures, spec: HistogramSpec) -> np.ndarray:
    """Per-shower values entering histogram ``spec`` (not for the voxel-energy histogram)."""
    if spec.group == "E_ratio":
        return features.e_ratio
    if spec.group not in _GROUP_FEATURE:
        raise ValueError(f"histogram {spec.name} has no per-shower values")
    layer = int(spec.name.rsplit("_", 1)[1])
    return getattr(features, _GROUP_FEATURE[spec.group])[:, layer]


def nhits_profile(features: ShowerFeatures, edges: np.ndarray) -> np.ndarray:
    """Mean number of hits per bin of log10(E_inc / MeV) (NaN for empty bins)."""
    x = np.log10(features.e_inc)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    inside = (x >= edges[0]) & (x <= edges[-1])
    sums = np.bincount(idx[inside], weights=features.n_hits[inside], minlength=len(edges) - 1)
    n = np.bincount(idx[inside], minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, sums / np.maximum(n, 1), np.nan)
