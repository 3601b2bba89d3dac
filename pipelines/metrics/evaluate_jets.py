"""Stage ``evaluate-jets``: JetNet metrics and histograms of a generated sample against a reference.

Rows of metrics.json (both computed with the same code and the same sizes):

* The reference (N jets) is split by a seeded permutation (``seed``) into two disjoint halves
  A = perm[:N // 2] and B = perm[N // 2 : 2 * (N // 2)] (a leftover odd jet is unused).
* ``real_vs_real``: metrics of B against A.
* ``model``: metrics of G' against A, where G' is a seeded subsample without replacement of
  len(B) generated jets (all generated jets, in a seeded order, if there are fewer than len(B); the
  sizes used are recorded under ``settings``).

* ``COV`` and ``MMD`` in both rows: MPGAN's coverage and minimum matching distance with the energy
  mover's distance (:mod:`pipelines.metrics.emd`), ``cov_mmd_num_batches`` batches of
  ``cov_mmd_num_eval_samples`` jets (jetnet's 10 x 100 by default, about 10^5 exact transport problems
  per row); the batch sizes used are recorded under ``settings``.
* ``cls_trees_jet_{auc,jsd}`` in both rows: the tree classifier test
  (:mod:`pipelines.metrics.tree_classifier`) on per-jet features
  (:func:`pipelines.metrics.jet_metrics.jet_level_features`: relative mass, sum of pt_rel,
  multiplicity and the pt-ordered features of the ``tree_n_particles`` leading particles), seeded with
  ``seed + tree_seed_offset``; read it against its real-vs-real row.

Histograms (raw counts, edges from the full reference; out-of-range entries dropped) compare the full
reference with the full generated sample: relative jet mass and pT, particle eta_rel / phi_rel / pt_rel
(real particles only), the 5 prime EFPs (n = 4, d = 4) and the particle multiplicity.  Their separation
powers count the undefined case as :func:`pipelines.metrics.separation.counted_separation_power` does
(``no_overlap`` marks a histogram counted as 1).

Several jet types (reference and generated files with JetNet's type column, more than one type in the
reference): ``per_type`` holds, per type, the same ``model`` and ``real_vs_real`` rows (no tree test)
computed on that type's jets alone, exactly as an evaluation of files holding only those jets would
(same seed, same sizes), with their sizes; histograms.npz adds each type's relative jet mass
(``type_<t>_jet_relative_mass__{edges,reference,generated}``).

metrics.json names its conventions under ``conventions`` (EFP weights, error of the averaged W1, the
EMD and COV/MMD, histogram edges, undefined separation powers).

The reference EFPs (all 36 per jet) are cached in ``--cache-dir`` under a key = sha256 of the reference
file's bytes combined with the EFP weight convention and the hash of the code that computes them (efp
and jet_metrics with all they import, see pipelines.codehash).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipelines import codehash
from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError
from pipelines.io.hashing import file_sha256
from pipelines.io.jetnet import read_jet_types, read_jetnet
from pipelines.io.tables import write_table
from pipelines.jet_types import JET_TYPES, type_code
from pipelines.metrics import efp, emd, jet_metrics
from pipelines.metrics.feature_tables import jet_features_table
from pipelines.metrics.jet_metrics import JetSample, make_sample
from pipelines.metrics.separation import UNDEFINED_CONVENTION, counted_separation_power, histogram_counts
from pipelines.metrics.settings import EvaluateJetsSettings
from pipelines.metrics.tree_classifier import tree_classifier_test

log = logging.getLogger(__name__)

CACHE_VERSION = "jet-efps-v2"
# percentiles of the reference that bound the histogram ranges (robust to single outliers)
RANGE_PERCENTILES = (0.05, 99.95)


# ---------------------------------------------------------------- cache


def reference_cache_key(reference: Path, efp_normalised: bool = False) -> str:
    """sha256 over the reference file's bytes, the EFP weight convention, the EFP code (efp and
    jet_metrics with all they import, see :mod:`pipelines.codehash`) and the cache format version."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    h.update(file_sha256(reference).encode())
    h.update(b"normalised" if efp_normalised else b"raw-pt")
    h.update(codehash.code_hash("pipelines.metrics.efp", "pipelines.metrics.jet_metrics").encode())
    return h.hexdigest()


def reference_efps(
    reference: Path, particle_features: NDArray[np.floating], cache_dir: Path, efp_normalised: bool = False
) -> tuple[NDArray[np.float64], bool]:
    """All 36 EFPs of the reference jets (weights as ``efp_normalised``), loaded from or stored in the
    cache; returns (efps, cache hit)."""
    key = reference_cache_key(reference, efp_normalised)
    cache_file = cache_dir / f"jetnet_efps_{key}.npz"
    n_jets = len(particle_features)
    if cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                values, stored_key = z["efps"], str(z["key"])
            if stored_key == key and values.shape == (n_jets, len(efp.GRAPHS)):
                return values.astype(np.float64, copy=False), True
            log.warning("ignoring stale EFP cache %s", cache_file)
        except (OSError, KeyError, ValueError) as err:
            log.warning("ignoring unreadable EFP cache %s (%s)", cache_file, err)
    particles, mask = jet_metrics.split_particle_features(particle_features)
    values = efp.efps(particles, mask, progress=True, normalised=efp_normalised)
    with atomic_path(cache_file) as tmp, open(tmp, "wb") as f:
        np.savez(f, efps=values, key=np.array(key))
    return values, False


# ---------------------------------------------------------------- histograms


def _linear_edges(ref: NDArray, n_bins: int, lo: float | None = None) -> NDArray[np.float64]:
    a, b = np.percentile(ref, RANGE_PERCENTILES) if len(ref) else (0.0, 1.0)
    a = a if lo is None else lo
    if not b > a:
        b = a + 1.0
    return np.linspace(a, b, n_bins + 1)


def _log_edges(ref: NDArray, n_bins: int) -> NDArray[np.float64]:
    pos = ref[ref > 0]
    a, b = np.percentile(pos, RANGE_PERCENTILES) if len(pos) else (1e-6, 1.0)
    if not b > a:
        b = a * 10.0
    return np.logspace(np.log10(a), np.log10(b), n_bins + 1)


@dataclass(frozen=True)
class _HistSpec:
    name: str
    xlabel: str
    logx: bool
    logy: bool
    group: str
    reference: NDArray
    generated: NDArray
    edges: NDArray[np.float64]


def _histogram_specs(ref: JetSample, gen: JetSample, n_bins: int) -> list[_HistSpec]:
    """Every histogram of the jet report, with its edges taken from the reference."""
    rp, gp = ref.particles[~ref.mask], gen.particles[~gen.mask]
    n_slots = max(ref.mask.shape[1], gen.mask.shape[1])
    specs = [
        _HistSpec("jet_relative_mass", "jet m / pT", False, False, "jet", ref.mass, gen.mass,
                  _linear_edges(ref.mass, n_bins, lo=0.0)),
        _HistSpec("jet_relative_pt", "jet pT (particles) / pT_jet", False, False, "jet", ref.pt, gen.pt,
                  _linear_edges(ref.pt, n_bins)),
        _HistSpec("particle_eta_rel", "particle eta_rel", False, True, "particle", rp[:, 0], gp[:, 0],
                  _linear_edges(rp[:, 0], n_bins)),
        _HistSpec("particle_phi_rel", "particle phi_rel [rad]", False, True, "particle", rp[:, 1], gp[:, 1],
                  _linear_edges(rp[:, 1], n_bins)),
        _HistSpec("particle_pt_rel", "particle pT / pT_jet", True, True, "particle", rp[:, 2], gp[:, 2],
                  _log_edges(rp[:, 2], n_bins)),
        _HistSpec("multiplicity", "particles per jet", False, False, "jet", (~ref.mask).sum(axis=1),
                  (~gen.mask).sum(axis=1), np.arange(-0.5, n_slots + 1.0, 1.0)),
    ]  # fmt: skip
    ref_prime, gen_prime = efp.prime_n4_d4(ref.efps), efp.prime_n4_d4(gen.efps)
    for c, name in enumerate(jet_metrics.PRIME_EFP_NAMES):
        edges = _log_edges(ref_prime[:, c], n_bins)
        label = f"EFP n=4 d=4 ({name})"
        specs.append(
            _HistSpec(f"efp_{name}", label, True, False, "efp", ref_prime[:, c], gen_prime[:, c], edges)
        )
    return specs


def histograms(
    ref: JetSample, gen: JetSample, n_bins: int
) -> tuple[list[dict[str, Any]], dict[str, NDArray]]:
    """Histogram descriptions for metrics.json and the arrays for histograms.npz."""
    listing, arrays = [], {}
    for spec in _histogram_specs(ref, gen, n_bins):
        edges = np.asarray(spec.edges, dtype=np.float64)
        h_ref = histogram_counts(spec.reference, edges)
        h_gen = histogram_counts(spec.generated, edges)
        separation, no_overlap = counted_separation_power(h_ref, h_gen)
        arrays[f"{spec.name}__edges"] = edges
        arrays[f"{spec.name}__reference"] = h_ref
        arrays[f"{spec.name}__generated"] = h_gen
        listing.append(
            {
                "name": spec.name,
                "xlabel": spec.xlabel,
                "logx": spec.logx,
                "logy": spec.logy,
                "group": spec.group,
                "separation_power": separation,
                "no_overlap": no_overlap,
            }
        )
    return listing, arrays


# ---------------------------------------------------------------- evaluation


def split_rows(n_reference: int, n_generated: int, seed: int) -> tuple[NDArray, NDArray, NDArray]:
    """Indices (half A, half B, generated subsample G') as described in the module docstring."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_reference)
    half = n_reference // 2
    gen_idx = rng.permutation(n_generated)[:half]
    return perm[:half], perm[half : 2 * half], gen_idx


def compare_rows(
    ref: JetSample, gen: JetSample, settings: EvaluateJetsSettings
) -> tuple[dict[str, Any], dict[str, Any], tuple[NDArray, NDArray, NDArray]]:
    """(model row, real-vs-real row, (half A, half B, G' indices)) of ``gen`` against ``ref``."""
    half_a, half_b, gen_idx = split_rows(len(ref), len(gen), settings.seed)
    metric_settings = settings.metric_settings()
    real_a = ref.select(half_a)
    log.info("real_vs_real: %d vs %d jets", len(half_a), len(half_b))
    rvr = jet_metrics.jet_metrics(real_a, ref.select(half_b), metric_settings)
    log.info("model: %d reference vs %d generated jets", len(half_a), len(gen_idx))
    model = jet_metrics.jet_metrics(real_a, gen.select(gen_idx), metric_settings)
    return model, rvr, (half_a, half_b, gen_idx)


def per_type_rows(
    ref: JetSample,
    gen: JetSample,
    ref_codes: NDArray,
    gen_codes: NDArray,
    settings: EvaluateJetsSettings,
    generated: Path,
) -> tuple[dict[str, Any], dict[str, NDArray]]:
    """``per_type`` of metrics.json and each type's relative-mass histogram (see the module docstring)."""
    out: dict[str, Any] = {}
    arrays: dict[str, NDArray] = {}
    for t in JET_TYPES:
        ref_t = np.flatnonzero(ref_codes == type_code(t))
        if len(ref_t) == 0:
            continue
        gen_t = np.flatnonzero(gen_codes == type_code(t))
        if len(gen_t) < 4 or len(ref_t) < 4:
            raise DataError(
                f"{generated}: {len(gen_t)} generated and {len(ref_t)} reference {t} jets; the per-type "
                "evaluation needs at least 4 of each"
            )
        log.info("jet type %s: %d reference, %d generated jets", t, len(ref_t), len(gen_t))
        ref_s, gen_s = ref.select(ref_t), gen.select(gen_t)
        model, rvr, (half_a, half_b, gen_idx) = compare_rows(ref_s, gen_s, settings)
        out[t] = {
            "rows": {"model": model, "real_vs_real": rvr},
            "n_reference": len(ref_t),
            "n_generated": len(gen_t),
            "n_real_half": len(half_a),
            "n_generated_used": len(gen_idx),
        }
        edges = _linear_edges(ref_s.mass, settings.n_bins, lo=0.0)  # as the all-jets histogram
        arrays[f"type_{t}_jet_relative_mass__edges"] = edges
        arrays[f"type_{t}_jet_relative_mass__reference"] = histogram_counts(ref_s.mass, edges)
        arrays[f"type_{t}_jet_relative_mass__generated"] = histogram_counts(gen_s.mass, edges)
    return out, arrays


def _type_codes(reference: Path, generated: Path) -> tuple[NDArray, NDArray] | None:
    """Both files' type codes when the reference holds several types (None otherwise)."""
    ref_codes = read_jet_types(reference)
    if ref_codes is None or len(np.unique(ref_codes)) < 2:
        return None
    gen_codes = read_jet_types(generated)
    if gen_codes is None:
        raise DataError(f"{generated}: no jet type column, but the reference {reference} holds several types")
    return ref_codes, gen_codes


def evaluate(
    reference: Path,
    generated: Path,
    settings: EvaluateJetsSettings,
    cache_dir: Path,
    features: list | None = None,
) -> tuple[dict[str, Any], dict[str, NDArray]]:
    """metrics.json content and histograms.npz arrays for one generated sample; when ``features`` is a
    list, the per-jet features table (:mod:`pipelines.metrics.feature_tables`) is appended to it."""
    ref_pf, _ = read_jetnet(reference)
    gen_pf, _ = read_jetnet(generated)
    for path, pf in ((reference, ref_pf), (generated, gen_pf)):
        if len(pf) < 4:
            raise DataError(f"{path}: needs at least 4 jets for the evaluation, holds {len(pf)}")
        empty = ~(pf[:, :, 3] > 0.5).any(axis=1)
        if empty.any():
            raise DataError(
                f"{path}: jet {int(np.flatnonzero(empty)[0])} has no particles ({int(empty.sum())} such "
                "jets); its mass and EFPs are undefined"
            )
    ref_efps, hit = reference_efps(reference, ref_pf, cache_dir, settings.efp_normalised)
    log.info("reference EFPs: %s (%d jets)", "cache hit" if hit else "computed and cached", len(ref_pf))
    ref = make_sample(ref_pf, ref_efps)
    gen = make_sample(gen_pf, progress=True, efp_normalised=settings.efp_normalised)

    model, rvr, (half_a, half_b, gen_idx) = compare_rows(ref, gen, settings)
    n_eval = settings.num_eval_samples
    real_a = ref.select(half_a)
    trees = {}
    if settings.tree_classifier:
        k = settings.tree_n_particles
        features_a = jet_metrics.jet_level_features(real_a, k)
        for row, other in (("model", gen.select(gen_idx)), ("real_vs_real", ref.select(half_b))):
            log.info("tree classifier (%s)", row)
            result = tree_classifier_test(
                features_a, jet_metrics.jet_level_features(other, k), settings.tree_config()
            )
            (model if row == "model" else rvr).update(
                cls_trees_jet_auc={"value": result.auc, "error": result.auc_error},
                cls_trees_jet_jsd={"value": result.jsd, "error": result.jsd_error},
            )
            trees[row] = {key: v for key, v in result.to_dict().items() if key != "config"}

    listing, arrays = histograms(ref, gen, settings.n_bins)
    if features is not None:
        info = {"kind": "jets", "dataset": settings.dataset or reference.stem}
        features.append(jet_features_table(ref, gen, info))
    recorded = dataclasses.asdict(settings)
    recorded["dataset"] = settings.dataset or reference.stem
    recorded.update(
        reference=str(reference),
        generated=str(generated),
        n_reference=len(ref),
        n_generated=len(gen),
        n_real_half=len(half_a),
        n_real_vs_real_other=len(half_b),
        n_generated_used=len(gen_idx),
        w1_batch_size_real_vs_real=jet_metrics.batch_size_for(
            len(half_a), len(half_b), settings.num_eval_samples
        ),
        w1_batch_size_model=jet_metrics.batch_size_for(len(half_a), len(gen_idx), n_eval),
        cov_mmd_batch_size_real_vs_real=jet_metrics.batch_size_for(
            len(half_a), len(half_b), settings.cov_mmd_num_eval_samples
        ),
        cov_mmd_batch_size_model=jet_metrics.batch_size_for(
            len(half_a), len(gen_idx), settings.cov_mmd_num_eval_samples
        ),
        efp_columns=list(efp.EFP_NAMES),
        units="raw under <name>; published units under <name>_x1e3 (W1M, W1PT, W1P, FPD, KPD), <name>_x1e5 "
        "(W1EFP); COV and MMD raw only",
        classifier_trees=(
            f"{settings.tree_config().describe()}; inputs: relative mass, sum of pt_rel, multiplicity, "
            f"(eta_rel, phi_rel, pt_rel) of the {settings.tree_n_particles} leading particles by pt_rel"
        )
        if settings.tree_classifier
        else "off",
    )
    metrics = {
        "kind": "jets",
        "dataset": recorded["dataset"],
        "rows": {"model": model, "real_vs_real": rvr},
        "settings": recorded,
        "conventions": conventions(settings),
        "histograms": listing,
    }
    if trees:
        metrics["tree_classifier"] = trees
    codes = _type_codes(reference, generated)
    if codes is not None:
        metrics["per_type"], type_arrays = per_type_rows(ref, gen, *codes, settings, generated)
        arrays.update(type_arrays)
    return metrics, arrays


def conventions(settings: EvaluateJetsSettings) -> dict[str, str]:
    """One sentence per convention that shapes the numbers of metrics.json (its ``conventions``)."""
    return {
        "efp": jet_metrics.EFP_CONVENTIONS[settings.efp_normalised],
        "w1_error": jet_metrics.W1_ERRORS[settings.w1_error],
        "cov_mmd": emd.convention(settings.emd_radius),
        "separation_edges": "histogram edges from the full reference file (percentiles "
        f"{RANGE_PERCENTILES[0]}-{RANGE_PERCENTILES[1]} for continuous features); the histograms compare "
        "the full reference with the full generated sample",
        "separation_undefined": UNDEFINED_CONVENTION,
    }


def _finite_or_none(obj: Any) -> Any:
    """Replace non-finite floats (e.g. W1P of a sample without particles) by None: strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_outputs(
    metrics: dict[str, Any], arrays: dict[str, NDArray], out_metrics: Path, out_hist: Path
) -> None:
    """Write metrics.json and histograms.npz atomically."""
    text = json.dumps(_finite_or_none(metrics), indent=2, allow_nan=False)
    with atomic_path(out_hist) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    with atomic_path(out_metrics) as tmp:
        tmp.write_text(text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evaluate-jets", description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="reference JetNet HDF5 file")
    parser.add_argument("--generated", type=Path, required=True, help="generated JetNet HDF5 file")
    parser.add_argument("--settings", default="{}", help="JSON object of EvaluateJetsSettings")
    parser.add_argument("--cache-dir", type=Path, required=True, help="folder for the reference EFP cache")
    parser.add_argument("--out-metrics", type=Path, required=True, help="metrics.json to write")
    parser.add_argument("--out-histograms", type=Path, required=True, help="histograms.npz to write")
    parser.add_argument("--out-features", type=Path, help="features.parquet of the jets to write")
    args = parser.parse_args(argv)
    settings = EvaluateJetsSettings.from_json(args.settings)
    tables: list = []
    metrics, arrays = evaluate(args.reference, args.generated, settings, args.cache_dir, tables)
    if args.out_features is not None:
        write_table(tables[0], args.out_features)
    write_outputs(metrics, arrays, args.out_metrics, args.out_histograms)
    model = metrics["rows"]["model"]
    log.info(
        "W1M %.3g x1e-3, W1PT %.3g x1e-3, W1P %.3g x1e-3, W1EFP %.3g x1e-5, FPD %.3g x1e-3, KPD %.3g x1e-3, "
        "COV %.3g, MMD %.3g",
        *(model[k]["value"] for k in ("W1M_x1e3", "W1PT_x1e3", "W1P_x1e3", "W1EFP_x1e5", "FPD_x1e3")),
        *(model[k]["value"] for k in ("KPD_x1e3", "COV", "MMD")),
    )
    return 0
