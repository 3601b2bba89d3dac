"""CaloChallenge high-level shower features, histogram binnings and chunked file scans.

Definitions (CaloChallenge 2022 evaluation; energies MeV, positions mm). Voxels below the readout
threshold (``THRESHOLD_MEV`` = 15.15 keV) are zeroed first. Per shower: E_tot, E_tot / E_inc, the number
of hits; per layer l: E_layer, centres of energy EC_eta = sum(x E) / (E_layer + 1e-16) (x = r cos alpha),
EC_phi (y = r sin alpha), EC_r (radial bin centre), widths sqrt(max(0, sum(x^2 E) / (E_layer + 1e-16)
- EC^2)) (the ``max(0, .)`` fixes the NaN the published code gets from rounding), and sparsity
= 1 - mean(E > 0) over the voxels of the layer. Regular geometries (datasets 2 and 3): the sums come
from one float64 matrix product per block of showers; layers whose width is pure rounding noise are
re-summed in the published code's order, so that the noise matches too. Per-layer binnings (dataset 1):
the per-layer arrays hold the filled layers only (``Geometry.filled_layers``), each with its own r edges
and alpha count, summed per layer in the published code's order; as in the published code, the x/y
centres and widths enter histograms and classifier inputs only for layers binned in alpha
(``Geometry.angular_layers``), and the histogram ranges are the published dataset-1 ones.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from pipelines.geometry import THRESHOLD_MEV, Geometry
from pipelines.io.calochallenge import check_layout, iter_calochallenge
from pipelines.metrics.binning import bin_indices
from pipelines.progress import progress

#: Per-layer feature arrays of :class:`ShowerFeatures`, in the order the histograms list them.
LAYER_FEATURES = ("e_layer", "ec_eta", "ec_phi", "ec_r", "width_eta", "width_phi", "width_r", "sparsity")


def apply_threshold(showers: np.ndarray, threshold: float = THRESHOLD_MEV) -> np.ndarray:
    """Copy of ``showers`` (MeV) with voxels below ``threshold`` MeV set to zero."""
    out = np.array(showers, dtype=np.float32, copy=True)
    out[out < threshold] = 0.0
    return out


def angular_columns(geometry: Geometry) -> np.ndarray:
    """Columns of the per-layer feature arrays of the layers binned in alpha (all for datasets 2, 3)."""
    return np.searchsorted(geometry.filled_layers, geometry.angular_layers)


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

    def high_level_vector(self, angular: np.ndarray | None = None) -> np.ndarray:
        """Classifier / FPD / KPD input in the published order (362-d for datasets 2 and 3, 30 for dataset-1
        photons, 46 for pions): [log10 E_inc, log10(E_layer + 1e-8), EC_eta/100, EC_phi/100, width_eta/100,
        width_phi/100 (the ``angular`` columns only, default all: :func:`angular_columns`),
        log10(E_tot + 1e-8), sparsity, EC_r/100, width_r/100]."""
        a = slice(None) if angular is None else np.asarray(angular, dtype=np.int64)
        return np.concatenate(
            [
                np.log10(self.e_inc)[:, None],
                np.log10(self.e_layer + 1e-8),
                self.ec_eta[:, a] / 100.0,
                self.ec_phi[:, a] / 100.0,
                self.width_eta[:, a] / 100.0,
                self.width_phi[:, a] / 100.0,
                np.log10(self.e_tot + 1e-8)[:, None],
                self.sparsity,
                self.ec_r / 100.0,
                self.width_r / 100.0,
            ],
            axis=1,
        )

    def tree_vector(self, angular: np.ndarray | None = None) -> np.ndarray:
        """Input of the tree classifier test: :meth:`high_level_vector` plus the energy ratios
        log10((E_layer + 1e-8) / E_inc) per layer and E_tot / E_inc (408-d for datasets 2 and 3).
        Trees cut one feature at a time, so a ratio they would have to piece together from two
        features is given to them directly."""
        return np.concatenate(
            [
                self.high_level_vector(angular),
                np.log10(self.e_layer + 1e-8) - np.log10(self.e_inc)[:, None],
                self.e_ratio[:, None],
            ],
            axis=1,
        )


#: Columns of the per-voxel moment matrix: energy weights 1, x, x^2, y, y^2, r, r^2 (mm).
_MOMENTS = ("1", "x", "x2", "y", "y2", "r", "r2")
#: Showers per block of the moment products: the float64 copy of a block (32 x 6480 x 8 B) stays in cache.
_BLOCK = 32
#: Showers per block of the voxel-energy histograms.
_COUNT_BLOCK = 256


def _moment_columns(geometry: Geometry) -> np.ndarray:
    """(voxels per layer, 7) float64: the ``_MOMENTS`` of the voxels of one layer (all layers of a regular
    geometry share them), from the published coordinates: x = r cos alpha, y = r sin alpha, r the radial
    bin centre."""
    _, per_layer = _require_regular(geometry)
    x, y = (c[:per_layer] for c in geometry.voxel_centres_mm)
    r = np.tile(geometry.r_centres, geometry.n_alpha)
    return np.stack([np.ones_like(x), x, x * x, y, y * y, r, r * r], axis=1)


@dataclass
class _VoxelTotals:
    """Thresholded voxel energies summed over showers (n_voxels,) float64, and their largest value, over
    the showers of a batch that ``weights`` (n,) selects with 1.0 (0.0: left out)."""

    weights: np.ndarray
    sum: np.ndarray
    max: float = 0.0


def _layer_moments(
    showers: np.ndarray, columns: np.ndarray, threshold: float, totals: _VoxelTotals | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Energy moments (n, n_layers, 7) float64 and hit counts (n, n_layers) of the thresholded showers;
    ``totals`` accumulated on the way when given.

    One matrix product per block of showers, (block x layers, voxels per layer) x (voxels per layer, 7),
    gives every layer's sums of E, xE, x^2 E, ... at once."""
    n = len(showers)
    per_layer, k = columns.shape
    n_layers = showers.shape[1] // per_layer
    moments = np.empty((n, n_layers, k), dtype=np.float64)
    hits = np.empty((n, n_layers), dtype=np.int64)
    above = np.empty((min(n, _BLOCK), n_layers * per_layer), dtype=bool)
    energy = np.empty(above.shape, dtype=np.float64)
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        m = stop - start
        block = showers[start:stop]
        mask = np.greater_equal(block, threshold, out=above[:m])
        with np.errstate(invalid="ignore"):  # NaN and -inf give NaN here, reported by the caller
            e = np.multiply(block, mask, out=energy[:m])
        np.matmul(e.reshape(m * n_layers, per_layer), columns, out=moments[start:stop].reshape(-1, k))
        hits[start:stop] = mask.view(np.uint8).reshape(m, n_layers, per_layer).sum(axis=2)
        if totals is not None:
            weights = totals.weights[start:stop]
            totals.sum += weights @ e
            if weights.any():
                totals.max = max(totals.max, float(e.max(axis=1)[weights > 0].max()))
    return moments, hits


#: A layer's width is rounding noise when its variance is below this fraction of the second moment.
_ILL_CONDITIONED = 1e-2


def _resum_ill_conditioned(
    moments: np.ndarray, hits: np.ndarray, showers: np.ndarray, columns: np.ndarray, threshold: float
) -> None:
    """Recompute in place, with numpy's pairwise sums over each layer's voxels (the published code's
    summation order), the moments of layers with two or more hits whose x, y or r variance is mostly
    cancellation (e.g. all hits at one radius): there the width is rounding noise, and this noise is then
    the published code's own rather than that of the matrix product's order."""
    e_sum = moments[..., 0] + 1e-16
    noisy = np.zeros(hits.shape, dtype=bool)
    for j in (1, 3, 5):
        centre, second = moments[..., j] / e_sum, moments[..., j + 1] / e_sum
        noisy |= second - centre * centre < _ILL_CONDITIONED * second
    index_n, index_l = np.nonzero(noisy & (hits >= 2))
    per_layer, k = columns.shape
    layers = showers.reshape(len(showers), -1, per_layer)
    weights = np.ascontiguousarray(columns.T)
    for start in range(0, len(index_n), 4096):
        i_n, i_l = index_n[start : start + 4096], index_l[start : start + 4096]
        rows = layers[i_n, i_l]
        e = np.where(rows >= threshold, rows, 0).astype(np.float64)
        for j in range(k):
            moments[i_n, i_l, j] = (weights[j] * e).sum(axis=-1)


def _check_finite(e_layer: np.ndarray) -> None:
    if not np.all(np.isfinite(e_layer)):
        bad = int(np.flatnonzero(~np.isfinite(e_layer).all(axis=1))[0])
        raise ValueError(f"shower {bad} has NaN or infinite voxel energies")


def _irregular_moments(
    showers: np.ndarray, geometry: Geometry, threshold: float, totals: _VoxelTotals | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_layer_moments` for a per-layer geometry: moments (n, filled layers, 7) and hit counts,
    each layer's sums in the published code's order ((w * E).sum(axis=-1) over the layer's voxels)."""
    mask = np.greater_equal(showers, threshold)
    with np.errstate(invalid="ignore"):
        e = np.where(mask, showers, 0.0).astype(np.float64)
    if totals is not None:
        totals.sum += totals.weights @ e
        if totals.weights.any():
            totals.max = max(totals.max, float(e[totals.weights > 0].max()))
    x, y = geometry.voxel_centres_mm
    r = geometry.voxel_r_mm
    weights = np.stack([np.ones_like(x), x, x * x, y, y * y, r, r * r])
    starts = np.concatenate([[0], np.cumsum(geometry.layer_n_voxels)])
    layers = geometry.filled_layers
    moments = np.empty((len(showers), len(layers), len(_MOMENTS)), dtype=np.float64)
    hits = np.empty((len(showers), len(layers)), dtype=np.int64)
    for j, layer in enumerate(layers):
        lo, hi = starts[layer], starts[layer + 1]
        block = e[:, lo:hi]
        for k in range(len(_MOMENTS)):
            moments[:, j, k] = (weights[k, lo:hi] * block).sum(axis=-1)
        hits[:, j] = mask[:, lo:hi].sum(axis=1)
    return moments, hits


def _centre_and_width(
    sum_w: np.ndarray, sum_w2: np.ndarray, denom: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Energy-weighted centre sum(w E) / denom and width sqrt(max(0, sum(w^2 E) / denom - centre^2))."""
    centre = sum_w / denom
    second = sum_w2 / denom
    return centre, np.sqrt(np.maximum(0.0, second - centre * centre))


def compute_features(
    incident_energies: np.ndarray, showers: np.ndarray, geometry: Geometry, threshold: float = THRESHOLD_MEV
) -> ShowerFeatures:
    """High-level features of one batch: incident energies (n,) MeV, showers (n, n_voxels) MeV."""
    e_inc = np.asarray(incident_energies, dtype=np.float64).reshape(-1)
    showers = np.asarray(showers)
    if showers.ndim != 2 or showers.shape != (len(e_inc), geometry.n_voxels):
        raise ValueError(
            f"showers must be ({len(e_inc)}, {geometry.n_voxels}) for dataset {geometry.name}, "
            f"got {showers.shape}"
        )
    return _features(e_inc, showers, geometry, threshold, None)


def _features(
    e_inc: np.ndarray,
    showers: np.ndarray,
    geometry: Geometry,
    threshold: float,
    totals: _VoxelTotals | None,
) -> ShowerFeatures:
    """:func:`compute_features` on checked input, accumulating ``totals`` when given."""
    if geometry.is_regular:
        _, per_layer = _require_regular(geometry)
        columns = _moment_columns(geometry)
        moments, hits = _layer_moments(showers, columns, threshold, totals)
        _check_finite(moments[..., 0])
        _resum_ill_conditioned(moments, hits, showers, columns, threshold)
    else:
        per_layer = geometry.layer_n_voxels[geometry.filled_layers]
        moments, hits = _irregular_moments(showers, geometry, threshold, totals)
        _check_finite(moments[..., 0])
    e_layer = moments[..., 0]
    denom = e_layer + 1e-16
    ec_eta, width_eta = _centre_and_width(moments[..., 1], moments[..., 2], denom)
    ec_phi, width_phi = _centre_and_width(moments[..., 3], moments[..., 4], denom)
    ec_r, width_r = _centre_and_width(moments[..., 5], moments[..., 6], denom)
    return ShowerFeatures(
        e_inc=e_inc,
        e_tot=e_layer.sum(axis=1),
        n_hits=hits.sum(axis=1),
        e_layer=np.ascontiguousarray(e_layer),
        ec_eta=ec_eta,
        ec_phi=ec_phi,
        ec_r=ec_r,
        width_eta=width_eta,
        width_phi=width_phi,
        width_r=width_r,
        sparsity=1.0 - hits / per_layer,
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

    Bins as np.histogram's ([e_i, e_{i+1}), the last closed); out-of-range entries are dropped."""
    showers = np.asarray(showers)
    n, k = len(showers), len(edges) - 1
    counts = np.empty((n, k), dtype=np.int32)
    for start in range(0, n, _COUNT_BLOCK):
        block = showers[start : start + _COUNT_BLOCK]
        m = len(block)
        flat = np.flatnonzero(block >= threshold)
        per_row = np.diff(np.searchsorted(flat, np.arange(m + 1) * block.shape[1]))
        # bin b of a voxel counts at row * (k + 1) + 1 + b: dropped voxels (b = -1) in an unused column 0
        index = np.repeat(np.arange(m) * (k + 1) + 1, per_row) + bin_indices(block.reshape(-1)[flat], edges)
        counts[start : start + m] = np.bincount(index, minlength=m * (k + 1)).reshape(m, k + 1)[:, 1:]
    return counts


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
    weights = np.ones(n) if rows is None else np.asarray(rows, dtype=np.float64)
    max_voxel = 0.0
    bar = progress(total=n, desc=f"features {Path(path).name}", unit="shower", leave=False)
    for start, energies, showers in iter_calochallenge(path, geometry, chunk_size):
        stop = start + len(energies)
        totals = _VoxelTotals(weights[start:stop], voxel_sum)
        parts.append(_features(energies, showers, geometry, threshold, totals))
        max_voxel = max(max_voxel, totals.max)
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
    #: column of the per-layer feature arrays (-1: not a per-layer histogram)
    column: int = -1


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


#: published dataset-1 ranges (evaluate_plotting_helper.py): (layers with the wide range, wide, narrow)
_DS1_RANGES = {
    "ec_eta": ((12, 13), (-500.0, 500.0), (-100.0, 100.0)),
    "ec_phi": ((12, 13), (-500.0, 500.0), (-100.0, 100.0)),
    "width_eta": ((12, 13), (0.0, 400.0), (0.0, 100.0)),
    "width_phi": ((12, 13), (0.0, 400.0), (0.0, 100.0)),
    "ec_r": ((12, 13, 14), (0.0, 1500.0), (0.0, 500.0)),
    "width_r": ((12, 13, 14), (0.0, 1500.0), (0.0, 500.0)),
}
#: per-layer features defined on the layers binned in alpha only
_ANGULAR = ("ec_eta", "ec_phi", "width_eta", "width_phi")


def _layer_edges(feature: str, default: np.ndarray, layer: int, geometry: Geometry | None) -> np.ndarray:
    """Histogram edges of a per-layer feature: the dataset-2/3 ones, or dataset 1's per-layer ranges."""
    if geometry is None or geometry.is_regular or feature not in _DS1_RANGES:
        return default
    wide_layers, wide, narrow = _DS1_RANGES[feature]
    return np.linspace(*(wide if layer in wide_layers else narrow), 101)


def histogram_specs(
    reference: ShowerFeatures,
    max_reference_voxel: float,
    threshold: float = THRESHOLD_MEV,
    geometry: Geometry | None = None,
) -> list[HistogramSpec]:
    """All histograms with the published binnings; data-dependent edges (E_layer, voxel energy) come from
    ``reference`` and ``max_reference_voxel``: pass the comparison's own reference sample (half A), as the
    CaloChallenge evaluate.py takes them from the reference file it compares with. Histograms are named by
    layer id (``E_layer_12``); with a per-layer ``geometry`` (dataset 1) they cover its filled layers, the
    x/y ones its layers binned in alpha, with the published dataset-1 ranges."""
    specs = [HistogramSpec("E_ratio", "E_tot / E_inc", False, True, "E_ratio", np.linspace(0.5, 1.5, 101))]
    n_columns = reference.e_layer.shape[1]
    ids = np.arange(n_columns) if geometry is None else geometry.filled_layers
    if len(ids) != n_columns:
        raise ValueError(f"features have {n_columns} layers, geometry {geometry.name} fills {len(ids)}")
    angular = set(range(n_columns) if geometry is None else angular_columns(geometry).tolist())
    for column, layer in enumerate(ids):
        top = max(float(reference.e_layer[:, column].max(initial=0.0)), 10.0 * threshold)
        edges = log_edges(threshold, top, 40)
        specs.append(
            HistogramSpec(
                f"E_layer_{layer:02d}", f"E layer {layer} [MeV]", True, True, "E_layer", edges, column
            )
        )
    for feature, (group, label, default, logx) in _LAYER_HIST.items():
        for column, layer in enumerate(ids):
            if feature in _ANGULAR and column not in angular:
                continue
            edges = _layer_edges(feature, default, int(layer), geometry)
            specs.append(
                HistogramSpec(
                    f"{group}_{layer:02d}", f"{label}, layer {layer}", logx, True, group, edges, column
                )
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
    column = spec.column if spec.column >= 0 else int(spec.name.rsplit("_", 1)[1])
    return getattr(features, _GROUP_FEATURE[spec.group])[:, column]


def nhits_profile(features: ShowerFeatures, edges: np.ndarray) -> np.ndarray:
    """Mean number of hits per bin of log10(E_inc / MeV) (NaN for empty bins)."""
    x = np.log10(features.e_inc)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    inside = (x >= edges[0]) & (x <= edges[-1])
    sums = np.bincount(idx[inside], weights=features.n_hits[inside], minlength=len(edges) - 1)
    n = np.bincount(idx[inside], minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, sums / np.maximum(n, 1), np.nan)
