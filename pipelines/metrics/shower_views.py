"""What the report's shower views need from the evaluation, in histograms.npz.

Per incident-energy views (``per_einc__*``): the CaloChallenge evaluate.py's incident-energy ranges
(its average-shower-per-energy view; datasets 2 and 3: 10^3, 10^4, 10^5, 10^6 MeV, i.e. 1-10 GeV,
10-100 GeV, 100 GeV-1 TeV), each bin [low, high) as there, except that the last bin also takes E_inc
equal to its upper edge (1 TeV exactly, which the published code drops). Per bin and sample: shower count,
mean energy per layer and its standard error, and histograms of E_tot / E_inc and of the hit count on
edges spanning both samples in that bin (30 bins; every shower of the bin is drawn).

Individual showers (``shower_images__*``): per energy bin a few generated showers drawn at random
(seeded), each with the reference shower nearest to it in log E_inc, as full voxel arrays
(thresholded) so the report can draw them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.geometry import Geometry
from pipelines.io.calochallenge import read_rows
from pipelines.metrics.calo_features import ShowerFeatures, apply_threshold

#: incident-energy bin edges (MeV) of the CaloChallenge evaluate.py's per-energy views, per dataset
EINC_EDGES_MEV = {
    "1-photons": 2.0 ** np.arange(8, 24),  # one bin per dataset-1 energy 2^8 ... 2^22 MeV
    "1-pions": 2.0 ** np.arange(8, 24),
    "2": 10.0 ** np.arange(3, 7),
    "3": 10.0 ** np.arange(3, 7),
}
#: bins of the per-energy E_tot / E_inc and hit-count histograms
VIEW_BINS = 30
#: generated showers drawn per energy bin for the shower images
SHOWERS_PER_BIN = 2
PARTS = ("reference", "generated")


def einc_edges(dataset: str) -> np.ndarray:
    """The CaloChallenge incident-energy bin edges (MeV) of ``dataset`` ("2" or "3")."""
    if dataset not in EINC_EDGES_MEV:
        raise ValueError(f"no CaloChallenge incident-energy bins for dataset {dataset!r}")
    return EINC_EDGES_MEV[dataset].copy()


def einc_bins(e_inc: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index per shower: bins [edges[i], edges[i + 1]), the last closed on the right; -1 outside."""
    e_inc = np.asarray(e_inc, dtype=np.float64)
    index = np.searchsorted(edges, e_inc, side="right") - 1
    index[e_inc == edges[-1]] = len(edges) - 2
    return np.where((index >= 0) & (index < len(edges) - 1), index, -1)


def mean_layer_profiles(
    e_layer: np.ndarray, bins: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean E per layer (n_bins, L), its standard error std / sqrt(n) (NaN for n < 2), counts (n_bins,))."""
    n_layers = e_layer.shape[1]
    mean = np.full((n_bins, n_layers), np.nan)
    error = np.full((n_bins, n_layers), np.nan)
    counts = np.zeros(n_bins, dtype=np.int64)
    for b in range(n_bins):
        rows = e_layer[bins == b]
        counts[b] = len(rows)
        if len(rows):
            mean[b] = rows.mean(axis=0)
        if len(rows) > 1:
            error[b] = rows.std(axis=0, ddof=1) / np.sqrt(len(rows))
    return mean, error, counts


def shared_edges(values: list[np.ndarray], bins: list[np.ndarray], n_bins: int, integer: bool) -> np.ndarray:
    """Per energy bin ``VIEW_BINS`` + 1 linear edges spanning every sample's values in that bin (n_bins,
    VIEW_BINS + 1); integer values get edges from min - 0.5 to max + 0.5; an empty bin gets [0, 1]."""
    edges = np.empty((n_bins, VIEW_BINS + 1))
    for b in range(n_bins):
        inside = np.concatenate([v[i == b] for v, i in zip(values, bins, strict=True)]).astype(np.float64)
        low, high = (inside.min(), inside.max()) if inside.size else (0.0, 1.0)
        if integer:
            low, high = low - 0.5, high + 0.5
        elif high - low < 1e-9 * max(abs(high), 1.0):
            low, high = low - 0.5 * max(abs(low), 1.0) * 1e-3, high + 0.5 * max(abs(high), 1.0) * 1e-3
        edges[b] = np.linspace(low, high, VIEW_BINS + 1)
    return edges


def binned_histograms(values: np.ndarray, bins: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts (n_bins, k) of ``values`` per energy bin on that bin's ``edges`` row (numpy.histogram rules)."""
    return np.stack([np.histogram(values[bins == b], edges[b])[0] for b in range(len(edges))]).astype(
        np.int64
    )


def per_energy_arrays(reference: ShowerFeatures, generated: ShowerFeatures, edges: np.ndarray) -> dict:
    """``per_einc__*`` arrays: ``edges`` (MeV), and per part (reference, generated) ``n``,
    ``layer_mean``, ``layer_error``, ``e_ratio``, ``n_hits`` counts; ``e_ratio_edges``, ``n_hits_edges``."""
    n_bins = len(edges) - 1
    samples = dict(zip(PARTS, (reference, generated), strict=True))
    bins = {part: einc_bins(f.e_inc, edges) for part, f in samples.items()}
    arrays = {"per_einc__edges": np.asarray(edges, dtype=np.float64)}
    for part, features in samples.items():
        mean, error, counts = mean_layer_profiles(features.e_layer, bins[part], n_bins)
        arrays |= {
            f"per_einc__n__{part}": counts,
            f"per_einc__layer_mean__{part}": mean,
            f"per_einc__layer_error__{part}": error,
        }
    for name, integer in (("e_ratio", False), ("n_hits", True)):
        values = {part: getattr(f, name) for part, f in samples.items()}
        view = shared_edges([values[p] for p in PARTS], [bins[p] for p in PARTS], n_bins, integer)
        arrays[f"per_einc__{name}_edges"] = view
        for part in PARTS:
            arrays[f"per_einc__{name}__{part}"] = binned_histograms(values[part], bins[part], view)
    return arrays


def select_shower_pairs(
    generated_e_inc: np.ndarray, reference_e_inc: np.ndarray, edges: np.ndarray, per_bin: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(generated indices, reference indices, energy bin) of the showers to draw: per energy bin up to
    ``per_bin`` generated showers drawn without replacement (seeded, in increasing E_inc), each paired with
    the reference shower nearest in log E_inc (the first on ties)."""
    rng = np.random.default_rng(seed)
    gen_bins = einc_bins(generated_e_inc, edges)
    log_ref = np.log(np.asarray(reference_e_inc, dtype=np.float64))
    chosen_gen, chosen_ref, chosen_bin = [], [], []
    for b in range(len(edges) - 1):
        candidates = np.flatnonzero(gen_bins == b)
        if not candidates.size:
            continue
        picked = rng.choice(candidates, size=min(per_bin, candidates.size), replace=False)
        for g in picked[np.argsort(generated_e_inc[picked], kind="stable")]:
            chosen_gen.append(int(g))
            chosen_ref.append(int(np.argmin(np.abs(log_ref - np.log(generated_e_inc[g])))))
            chosen_bin.append(b)
    as_int = [np.array(v, dtype=np.int64) for v in (chosen_gen, chosen_ref, chosen_bin)]
    return as_int[0], as_int[1], as_int[2]


def shower_image_arrays(
    generated: Path,
    reference: Path,
    geometry: Geometry,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, np.ndarray]:
    """``shower_images__*`` arrays of the selected file rows (generated rows, reference rows, energy bin):
    thresholded voxel energies (m, n_layers, n_alpha, n_r) MeV and E_inc (m,) MeV per part, and ``bin``."""
    gen_rows, ref_rows, bins = rows
    arrays = {"shower_images__bin": bins}
    for part, path, index in (("generated", generated, gen_rows), ("reference", reference, ref_rows)):
        e_inc, showers = read_rows(path, geometry, index)
        arrays[f"shower_images__{part}"] = geometry.to_compact(apply_threshold(showers))
        arrays[f"shower_images__e_inc__{part}"] = e_inc
    return arrays
