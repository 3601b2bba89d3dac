"""Stage ``evaluate-showers``: CaloChallenge metrics of a generated shower file against a reference file.

Samples compared (the "real_vs_real" row is the floor a model is read against): the reference is split by
row parity into half A (even rows) and half B (odd rows). With ``n = min(N_generated, len(B))``,
the *model* row compares ``n`` generated showers with half A, the *real_vs_real* row compares ``n``
showers of half B with half A: same code, same sizes. When fewer than all rows are needed they are taken
evenly strided (rows ``(2k + 1) * N // (2 n)``), so a generated file produced row by row from the
reference incident energies keeps matching energies (for N_gen = N_ref the generated rows used are
exactly the odd rows). Histograms and mean showers in histograms.npz are half A ("reference") and the
compared generated rows ("generated"); separation powers are those of exactly these histograms. So are
the report's per-incident-energy views and the few individual showers it draws
(:mod:`pipelines.metrics.shower_views`).

Histogram edges that depend on data (E_layer, voxel energies) come from half A, the comparison's own
reference sample, as the CaloChallenge evaluate.py takes them from the reference file it compares with.
A histogram in whose range the compared sample has no entry (and half A has) counts as separation power
1, as :func:`pipelines.metrics.separation.counted_separation_power` defines; every
``separation_<group>`` entry is {"value": mean over the group's histograms, "error": None,
"n_histograms", "n_no_overlap": how many of them were counted as 1}. metrics.json names these and the
other conventions under ``conventions``.

Classifier rows: ``cls_trees_high_{auc,jsd}``, the sensitive test (gradient-boosted trees on the
high-level features plus energy ratios, k-fold cross-validated, :mod:`pipelines.metrics.tree_classifier`),
and ``cls_{high,low}_{auc,jsd}``, the CaloChallenge network classifier; only the network with the
published setting (3 x 2048, config/full.yaml) is comparable with the published tables.

Reference features are cached in ``--cache-dir`` under a key made of the sha256 of the reference file
content and of the source code that computes them, so a cached entry can never be stale.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
from pathlib import Path

import numpy as np

from pipelines import codehash
from pipelines.geometry import KNOWN_DATASETS, THRESHOLD_MEV, Geometry, load_geometry
from pipelines.io.atomic import atomic_path
from pipelines.io.calochallenge import check_layout, iter_calochallenge
from pipelines.io.hashing import file_sha256
from pipelines.io.tables import write_table
from pipelines.metrics.calo_features import (
    FileScan,
    HistogramSpec,
    ShowerFeatures,
    angular_columns,
    histogram_specs,
    histogram_values,
    load_rows,
    nhits_profile,
    scan_file,
    voxel_energy_counts,
    voxel_energy_edges,
)
from pipelines.metrics.classifier import classifier_test, low_level_inputs
from pipelines.metrics.distances import frechet_physics_distance, kernel_physics_distance
from pipelines.metrics.feature_tables import shower_features_table
from pipelines.metrics.separation import UNDEFINED_CONVENTION, counted_separation_power, histogram_counts
from pipelines.metrics.settings import ClassifierConfig, EvaluateShowersSettings
from pipelines.metrics.shower_views import (
    SHOWERS_PER_BIN,
    einc_edges,
    per_energy_arrays,
    select_shower_pairs,
    shower_image_arrays,
)
from pipelines.metrics.tree_classifier import TreeClassifierResult, tree_classifier_test

log = logging.getLogger(__name__)


#: what the tree classifier test of the showers reads (ShowerFeatures.tree_vector)
TREE_INPUTS = (
    "the 362 high-level features of the network classifier plus log10(E_layer / E_inc) per layer and "
    "E_tot / E_inc"
)

# ---------------------------------------------------------------- sample selection


def strided_rows(total: int, n: int) -> np.ndarray:
    """``n`` of ``total`` row indices, evenly strided: (2k + 1) * total // (2n)."""
    if not 0 < n <= total:
        raise ValueError(f"cannot take {n} rows of {total}")
    return ((2 * np.arange(n, dtype=np.int64) + 1) * total) // (2 * n)


def comparison_rows(n_reference: int, n_generated: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(half A rows, half B rows, generated rows) of the two comparisons (see module docstring)."""
    if n_reference < 2:
        raise ValueError(f"the reference needs at least 2 showers to be split in halves, has {n_reference}")
    half_a = np.arange(0, n_reference, 2)
    odd = np.arange(1, n_reference, 2)
    n = min(n_generated, len(odd))
    return half_a, odd[strided_rows(len(odd), n)], strided_rows(n_generated, n)


# ---------------------------------------------------------------- reference cache


def code_hash(dataset: str) -> str:
    """Hash of the code that shapes the cached reference features (this module and everything it
    imports, see :mod:`pipelines.codehash`) and of the dataset's binning XML."""
    return codehash.code_hash(
        "pipelines.metrics.evaluate_showers", extra_files=(f"data/{KNOWN_DATASETS[dataset]}",)
    )


def cache_key(reference_sha256: str, dataset: str) -> str:
    return f"ds{dataset}-{reference_sha256[:24]}-{code_hash(dataset)}"


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def reference_scan(
    reference: Path,
    reference_sha256: str,
    geometry: Geometry,
    half_a: np.ndarray,
    cache_dir: Path,
    chunk_size: int,
) -> FileScan:
    """Reference features and voxel-energy counts (edges up to the largest voxel of half A), half-A voxel
    sums and largest voxel, from the cache when possible."""
    path = cache_dir / f"calo_reference_{cache_key(reference_sha256, geometry.name)}.npz"
    if path.exists():
        log.info("reference features from cache %s", path)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return FileScan(
            ShowerFeatures.from_arrays(arrays, "f_"),
            arrays["voxel_sum"],
            float(arrays["max_voxel"]),
            arrays["voxel_counts"],
        )
    rows = np.zeros(check_layout(reference, geometry), dtype=bool)
    rows[half_a] = True
    first = scan_file(reference, geometry, None, chunk_size, rows=rows)
    edges = voxel_energy_edges(first.max_voxel)
    counts = np.zeros((len(first.features), len(edges) - 1), dtype=np.int32)
    for start, _e, s in iter_calochallenge(reference, geometry, chunk_size):
        counts[start : start + len(s)] = voxel_energy_counts(s, edges)
    scan = FileScan(first.features, first.voxel_sum, first.max_voxel, counts)
    _save_npz(
        path,
        {
            **scan.features.to_arrays("f_"),
            "voxel_sum": scan.voxel_sum,
            "max_voxel": np.array(scan.max_voxel),
            "voxel_counts": counts,
        },
    )
    log.info("cached reference features in %s", path)
    return scan


# ---------------------------------------------------------------- metrics


def _entry(value: float | None, error: float | None = None) -> dict:
    return {
        "value": None if value is None else float(value),
        "error": None if error is None else float(error),
    }


def _counts(spec: HistogramSpec, feats: ShowerFeatures, voxel_counts: np.ndarray) -> np.ndarray:
    if spec.group == "voxel_energy":
        return voxel_counts.sum(axis=0).astype(np.int64)
    return histogram_counts(histogram_values(feats, spec), spec.edges)


def group_means(specs: list[HistogramSpec], powers: list[tuple[float, bool]]) -> dict[str, dict]:
    """``separation_<group>`` entries from the counted separation powers (S, no_overlap) of ``specs``:
    {"value": mean S of the group, "error": None, "n_histograms", "n_no_overlap"}."""
    groups: dict[str, list[tuple[float, bool]]] = {}
    for spec, sp in zip(specs, powers, strict=True):
        groups.setdefault(spec.group, []).append(sp)
    return {
        f"separation_{g}": {
            **_entry(np.mean([s for s, _ in v])),
            "n_histograms": len(v),
            "n_no_overlap": sum(no_overlap for _, no_overlap in v),
        }
        for g, v in groups.items()
    }


def conventions() -> dict[str, str]:
    """One sentence per convention that shapes the numbers of metrics.json (its ``conventions``)."""
    return {
        "separation_edges": "histogram edges of E_layer and voxel energies from the comparison's own "
        "reference sample (half A, the even rows of the reference file), as the CaloChallenge evaluate.py",
        "separation_undefined": UNDEFINED_CONVENTION,
        "threshold": f"voxels below {THRESHOLD_MEV * 1e3:.2f} keV are set to zero in both samples first",
    }


def _classifier_entries(name: str, real: np.ndarray, other: np.ndarray, cfg: ClassifierConfig) -> dict:
    res = classifier_test(real, other, cfg)
    several = cfg.runs > 1  # the std of a single training is no error estimate
    return {
        f"cls_{name}_auc": _entry(res.auc, res.auc_std if several else None),
        f"cls_{name}_jsd": _entry(res.jsd, res.jsd_std if several else None),
    }


def _tree_entries(result: TreeClassifierResult) -> dict:
    return {
        "cls_trees_high_auc": _entry(result.auc, result.auc_error),
        "cls_trees_high_jsd": _entry(result.jsd, result.jsd_error),
    }


def evaluate(
    reference: Path,
    generated: Path,
    dataset: str,
    settings: EvaluateShowersSettings,
    cache_dir: Path,
    features: list | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Compute (metrics.json content, histograms.npz arrays); when ``features`` is a list, the features
    table of the compared showers (:mod:`pipelines.metrics.feature_tables`) is appended to it."""
    geometry = load_geometry(dataset)
    n_ref, n_gen = check_layout(reference, geometry), check_layout(generated, geometry)
    half_a, half_b, gen_rows = comparison_rows(n_ref, n_gen)
    reference_sha256 = file_sha256(reference)
    ref = reference_scan(reference, reference_sha256, geometry, half_a, cache_dir, settings.chunk_size)
    edges = voxel_energy_edges(ref.max_voxel)
    gen_mask = np.zeros(n_gen, dtype=bool)
    gen_mask[gen_rows] = True
    gen = scan_file(generated, geometry, edges, settings.chunk_size, rows=gen_mask)

    fa, fb, fg = ref.features.select(half_a), ref.features.select(half_b), gen.features.select(gen_rows)
    ca, cb, cg = ref.voxel_counts[half_a], ref.voxel_counts[half_b], gen.voxel_counts[gen_rows]
    specs = histogram_specs(fa, ref.max_voxel, geometry=geometry)  # ref.max_voxel: half A's (reference_scan)
    arrays: dict[str, np.ndarray] = {}
    hist_list, s_model, s_real = [], [], []
    for spec in specs:
        h_a, h_b, h_g = _counts(spec, fa, ca), _counts(spec, fb, cb), _counts(spec, fg, cg)
        s_model.append(counted_separation_power(h_a, h_g))
        s_real.append(counted_separation_power(h_a, h_b))
        arrays[f"{spec.name}__edges"] = spec.edges
        arrays[f"{spec.name}__reference"] = h_a
        arrays[f"{spec.name}__generated"] = h_g
        hist_list.append(
            {
                "name": spec.name,
                "xlabel": spec.xlabel,
                "logx": spec.logx,
                "logy": spec.logy,
                "group": spec.group,
                "separation_power": s_model[-1][0],
                "no_overlap": s_model[-1][1],
            }
        )
    if features is not None:
        info = {"kind": "showers", "dataset": str(dataset), "reference_sha256": reference_sha256}
        features.append(shower_features_table(fa, half_a, fg, gen_rows, info, geometry.filled_layers))
    # (filled layers, n_alpha, n_r); zero-padded where a layer of dataset 1 has fewer bins
    arrays["mean_shower__reference"] = geometry.to_compact(ref.voxel_sum / len(half_a))
    arrays["mean_shower__generated"] = geometry.to_compact(gen.voxel_sum / len(gen_rows))
    lo, hi = np.log10(ref.features.e_inc.min()), np.log10(ref.features.e_inc.max())
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    e_edges = np.linspace(lo, hi, 16)
    arrays["nhits_vs_einc__edges"] = e_edges
    arrays["nhits_vs_einc__reference"] = nhits_profile(fa, e_edges)
    arrays["nhits_vs_einc__generated"] = nhits_profile(fg, e_edges)
    bins = einc_edges(geometry.name)
    arrays |= per_energy_arrays(fa, fg, bins)
    g, r, b = select_shower_pairs(fg.e_inc, fa.e_inc, bins, SHOWERS_PER_BIN, settings.seed)
    arrays |= shower_image_arrays(generated, reference, geometry, (gen_rows[g], half_a[r], b))

    rows: dict[str, dict] = {
        "model": group_means(specs, s_model),
        "real_vs_real": group_means(specs, s_real),
    }
    trees: dict[str, dict] = {}
    angular = angular_columns(geometry)
    if settings.tree_classifier:
        ta = fa.tree_vector(angular)
        for row, other in (("model", fg), ("real_vs_real", fb)):
            log.info("tree classifier (%s)", row)
            result = tree_classifier_test(ta, other.tree_vector(angular), settings.tree_config())
            rows[row].update(_tree_entries(result))
            trees[row] = {k: v for k, v in result.to_dict().items() if k != "config"}
    xa, xb, xg = (f.high_level_vector(angular) for f in (fa, fb, fg))
    for row, other in (("model", xg), ("real_vs_real", xb)):
        log.info("FPD/KPD (%s)", row)
        fpd = frechet_physics_distance(
            xa,
            other,
            settings.seed,
            settings.fpd_n_sizes,
            settings.fpd_n_draws,
            settings.fpd_min_samples,
            settings.fpd_max_samples,
        )
        kpd = kernel_physics_distance(
            xa, other, settings.seed, settings.kpd_n_batches, settings.kpd_batch_size
        )
        rows[row]["fpd"], rows[row]["kpd"] = _entry(*fpd), _entry(*kpd)
        log.info("classifier high-level (%s)", row)
        rows[row].update(_classifier_entries("high", xa, other, settings.classifier_config()))
    if settings.classifier_low:
        low_a = low_level_inputs(*load_rows(reference, geometry, half_a, settings.chunk_size))
        for row, path, idx in (("model", generated, gen_rows), ("real_vs_real", reference, half_b)):
            log.info("classifier low-level (%s)", row)
            low_other = low_level_inputs(*load_rows(path, geometry, idx, settings.chunk_size))
            rows[row].update(_classifier_entries("low", low_a, low_other, settings.classifier_config()))
            del low_other

    cfg = settings.classifier_config()
    metrics = {
        "kind": "showers",
        "dataset": str(dataset),
        "rows": rows,
        "settings": {
            **dataclasses.asdict(settings),
            "classifier_network": cfg.describe(),
            "classifier_comparable": "the network classifier rows (cls_low, cls_high) are comparable with "
            "the published CaloChallenge tables only with the published setting on the real files; this "
            f"run's setting is {'' if cfg.is_published else 'not '}the published one",
            "classifier_trees": (settings.tree_config().describe() + "; inputs: " + TREE_INPUTS)
            if settings.tree_classifier
            else "off",
            "threshold_mev": THRESHOLD_MEV,
            "n_reference": n_ref,
            "n_generated": n_gen,
            "n_reference_half_a": len(half_a),
            "n_compared": len(gen_rows),
            "comparison": "model: generated rows vs reference even rows (half A); real_vs_real: reference "
            "odd rows (half B) vs half A; same sizes",
            "fpd_kpd_units": "raw values (published tables quote x 1e3)",
            "reference_sha256": reference_sha256,
        },
        "conventions": conventions(),
        "histograms": hist_list,
    }
    if trees:
        metrics["tree_classifier"] = trees
    return metrics, arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evaluate-showers", description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="reference CaloChallenge HDF5")
    parser.add_argument("--generated", type=Path, required=True, help="generated CaloChallenge HDF5")
    parser.add_argument("--dataset", default="2", choices=sorted(KNOWN_DATASETS))
    parser.add_argument("--settings", default="{}", help="JSON object of EvaluateShowersSettings")
    parser.add_argument("--cache-dir", type=Path, required=True, help="folder for cached reference features")
    parser.add_argument("--out-metrics", type=Path, required=True)
    parser.add_argument("--out-histograms", type=Path, required=True)
    parser.add_argument("--out-features", type=Path, help="features.parquet of the compared showers")
    args = parser.parse_args(argv)
    settings = EvaluateShowersSettings.from_json(args.settings)
    tables: list = []
    metrics, arrays = evaluate(args.reference, args.generated, args.dataset, settings, args.cache_dir, tables)
    if args.out_features is not None:
        write_table(tables[0], args.out_features)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_path(args.out_histograms) as tmp:
        tmp.write_bytes(buf.getvalue())
    with atomic_path(args.out_metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    log.info("wrote %s and %s", args.out_metrics, args.out_histograms)
    return 0
