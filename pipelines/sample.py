"""Stage ``sample``: generate showers or jets with a trained MDMA generator, in the input file formats.

Showers: incident energies drawn to match the reference file (``energy_source``: "resample" draws
the reference's energies with replacement, the default; "log_uniform" draws log-uniformly between
the reference's smallest and largest energy) -> n from the multiplicity model p(n | E) (or, with
``n_from_reference``, the hit count of the same resampled reference shower) -> per-point Gaussian
noise -> generator -> inverse point transform (noise, generator and inverse transform all on the
generator's device, see ``generate_points``) -> every shower rotated by one random integer in alpha
((alpha + k) mod n_alpha) -> NaN / negative energies set to 0 and counted -> voxelised (collisions
"sum" or "shift") -> voxels below 15.15 keV set to 0 -> CaloChallenge HDF5.

Jets: n from p(n) (or the resampled reference jet's particle count) -> generator -> inverse
transform -> phi_rel wrapped into [-pi, pi), negative pt_rel clipped to 0 -> particles sorted by
decreasing pt_rel and padded to the reference's slot count (mask column 1 = real) -> jet features
(pt, eta, mass, n) recomputed from the massless constituents in the frame of a resampled reference
jet's (pt, eta) (phi_jet = 0) -> JetNet HDF5. A model of several jet types (its multiplicity model is
p(n | type)) generates each jet with the type of the resampled reference jet, so the types come in the
reference's proportions; the type is the generator's one-hot condition and is written as JetNet's type
column.

Generation runs in chunks of clouds; inside a chunk clouds are sorted by n and grouped into
generator calls under a padded-token budget. ``timing.json`` records ms per generated cloud at
several request sizes, with and without the conversion (voxelisation / padding), plus device,
torch version, parameter count and the collision and clipping counts of the written sample.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pipelines.device import resolve_device
from pipelines.geometry import THRESHOLD_MEV, Geometry, load_geometry
from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError
from pipelines.models.family import ShowerSampler
from pipelines.progress import progress as progress_bar
from pipelines.sample_settings import SampleSettings

log = logging.getLogger(__name__)

KINDS = ("showers", "jets")


@dataclass
class Sampler:
    """Everything needed to generate: the family's sampler, point transform, multiplicity model.

    ``generator`` is a :class:`~pipelines.models.family.PointSampler` (points in transformed space,
    n from ``multiplicity``) or a :class:`~pipelines.models.family.ShowerSampler` (voxelised showers
    directly; ``multiplicity`` is None).
    """

    generator: Any
    transform: Any  # fitted pipelines.transforms.PointTransform
    multiplicity: Any  # pipelines.models.multiplicity model, None for shower samplers
    device: torch.device
    geometry: Geometry | None = None  # showers only
    family: str = ""
    parameters: int = 0
    cond_dim: int = 0

    @property
    def jet_types(self) -> tuple[str, ...]:
        """The jet types the model is conditioned on (empty for a model of one type)."""
        return tuple(getattr(self.multiplicity, "types", ()))

    def jet_conditions(self, codes: np.ndarray | None, size: int) -> np.ndarray:
        """Raw jet conditions (size, 3 + types): (pt, eta, mass) unused, then the one-hot type."""
        from pipelines.jet_types import one_hot
        from pipelines.models.mdma import JET_RAW_CONDITIONS

        raw = np.zeros((size, JET_RAW_CONDITIONS))
        if not self.jet_types:
            return raw
        return np.concatenate([raw, one_hot(codes, self.jet_types)], axis=1)

    @property
    def config(self) -> Any:
        """The point sampler (it carries kind, point_dim, noise_dim and mean_n)."""
        return self.generator

    @property
    def makes_showers(self) -> bool:
        return isinstance(self.generator, ShowerSampler)


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


def _batches(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[np.ndarray]:
    """Non-empty clouds sorted by n, grouped so that B * n_max <= max_tokens and B <= batch_size."""
    order = np.argsort(lengths, kind="stable")
    order = order[lengths[order] > 0]
    out, start = [], 0
    while start < len(order):
        stop = start + 1
        while (stop < len(order) and stop - start < batch_size
               and (stop - start + 1) * lengths[order[stop]] <= max_tokens):  # fmt: skip
            stop += 1
        out.append(order[start:stop])
        start = stop
    return out


def noise_generator(device: torch.device | str, seed: int) -> torch.Generator:
    """The seeded torch.Generator on ``device`` that :func:`generate_points` draws its noise from."""
    return torch.Generator(device=device).manual_seed(int(seed))


def _ranges(n: np.ndarray) -> np.ndarray:
    """Concatenated arange(n_i) for every count n_i (int64)."""
    return np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)


@torch.inference_mode()
def generate_points(
    sampler: Sampler,
    raw_conditions: np.ndarray,
    lengths: np.ndarray,
    torch_gen: torch.Generator,
    batch_size: int = 1000,
    max_tokens: int = 50_000,
) -> np.ndarray:
    """Generated points in physical units (P, d) float64, clouds in input order, P = sum(lengths).

    Everything between the upload of the conditions and the download of the finished points runs on
    ``sampler.device`` without host synchronisation: Gaussian noise for the real points only, drawn
    from ``torch_gen`` (a generator on that device, see :func:`noise_generator`) in one call per
    request, the generator batch after batch, and the float64 inverse point transform in torch. The
    same seed on the same device type gives the same sample; CPU and GPU noise streams differ, so
    their samples differ.
    """
    device = sampler.device
    if torch_gen.device.type != device.type:
        raise ValueError(f"torch_gen is on {torch_gen.device}, the generator on {device}")
    lengths = np.asarray(lengths, dtype=np.int64)
    cfg = sampler.config
    batches = _batches(lengths, batch_size, max_tokens)
    if not batches:
        return np.zeros((0, cfg.point_dim), dtype=np.float64)
    from pipelines.models.mdma import make_condition

    # Host bookkeeping, uploaded once: clouds in batch order; for every real point (in that order) its
    # row in the flattened padded batch and its row in the output (clouds in input order).
    order = np.concatenate(batches)
    n = lengths[order]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rank = _ranges(n)
    dest = np.repeat(offsets[order], n) + rank
    n_max = np.concatenate([np.full(len(b), lengths[b[-1]]) for b in batches])  # per cloud, its batch's
    first = np.cumsum([0] + [len(b) for b in batches])  # cloud index where each batch starts
    slot = np.repeat(np.arange(len(order)) - np.repeat(first[:-1], [len(b) for b in batches]), n)
    padded_row = slot * np.repeat(n_max, n) + rank
    cond = make_condition(np.asarray(raw_conditions, dtype=np.float64)[order], n, cfg.kind, cfg.mean_n)
    cond, n_dev = cond.to(device), torch.as_tensor(n, device=device)
    dest, padded_row = torch.as_tensor(dest, device=device), torch.as_tensor(padded_row, device=device)

    noise = torch.randn(len(rank), cfg.noise_dim, generator=torch_gen, device=device)
    points = torch.empty(len(rank), cfg.point_dim, dtype=torch.float64, device=device)
    p0 = 0
    for c0, c1 in zip(first[:-1], first[1:], strict=True):
        b, m = int(c1 - c0), int(n_max[c0])
        p1 = p0 + int(n[c0:c1].sum())
        rows = padded_row[p0:p1]
        mask = torch.arange(m, device=device)[None, :] >= n_dev[c0:c1, None]
        padded = torch.zeros(b * m, cfg.noise_dim, device=device).index_copy_(0, rows, noise[p0:p1])
        x = sampler.generator(padded.view(b, m, -1), cond[c0:c1], mask).reshape(b * m, -1)
        points.index_copy_(0, dest[p0:p1], sampler.transform.inverse_transform_torch(x.index_select(0, rows)))
        p0 = p1
    return points.cpu().numpy()  # the only device -> host transfer (and synchronisation)


def rotate_alpha(points: np.ndarray, lengths: np.ndarray, shifts: np.ndarray, n_alpha: int) -> np.ndarray:
    """Shower points (P, 4) with alpha -> (alpha + k_i) mod n_alpha for every point of shower i."""
    out = np.array(points, copy=True)
    k = np.repeat(np.asarray(shifts, dtype=np.int64), np.asarray(lengths, dtype=np.int64))
    out[:, 2] = np.mod(np.floor(out[:, 2]).astype(np.int64) + k, n_alpha)
    return out


def clean_energies(energies: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Point energies with NaN/inf and negative values set to 0 -> (energies, n_nonfinite, n_negative)."""
    e = np.array(energies, dtype=np.float64, copy=True)
    bad = ~np.isfinite(e)
    e[bad] = 0.0
    neg = e < 0
    e[neg] = 0.0
    return e, int(bad.sum()), int(neg.sum())


def apply_threshold(showers: np.ndarray, threshold: float = THRESHOLD_MEV) -> int:
    """Zero voxels below ``threshold`` MeV in place; return how many non-zero voxels were removed."""
    low = (showers > 0) & (showers < threshold)
    showers[low] = 0.0
    return int(low.sum())


def _new_counts() -> dict[str, Any]:
    return {
        "n_points": 0,
        "n_collided": 0,
        "n_dropped": 0,
        "n_nonfinite": 0,
        "n_negative": 0,
        "n_below_threshold": 0,
        "seconds_generate": 0.0,
        "seconds_convert": 0.0,
    }


def showers_from_conditions(
    sampler: Sampler,
    energies: np.ndarray,
    n: np.ndarray,
    rng: np.random.Generator,
    torch_gen: torch.Generator,
    settings: SampleSettings,
    voxelise: bool = True,
    progress: bool = False,
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Generate showers (N, n_vox) float32 MeV for incident energies (MeV) and hit counts n."""
    from pipelines.pointcloud import points_to_voxels

    geo = sampler.geometry
    if sampler.makes_showers:
        return _showers_from_model(sampler, energies, torch_gen, settings, progress)
    n = np.asarray(n, dtype=np.int64)
    counts = _new_counts()
    showers = np.zeros((len(n), geo.n_voxels), dtype=np.float32) if voxelise else None
    n_alpha = geo.bin_ranges[1]  # per-layer binnings: alpha is clamped into each layer when voxelised
    shifts = rng.integers(0, n_alpha, len(n))
    bar = progress_bar(total=len(n), unit="shower", disable=not progress, desc="sample")
    for s0 in range(0, len(n), settings.chunk_size):
        s1 = min(len(n), s0 + settings.chunk_size)
        t0 = time.perf_counter()
        raw = np.asarray(energies[s0:s1], dtype=np.float64).reshape(-1, 1)
        pts = generate_points(sampler, raw, n[s0:s1], torch_gen, settings.batch_size, settings.max_tokens)
        pts = rotate_alpha(pts, n[s0:s1], shifts[s0:s1], n_alpha)
        pts[:, 0], bad, neg = clean_energies(pts[:, 0])
        t1 = time.perf_counter()
        counts["seconds_generate"] += t1 - t0
        counts["n_points"] += len(pts)
        counts["n_nonfinite"] += bad
        counts["n_negative"] += neg
        if voxelise:
            vox, collided = points_to_voxels(
                pts.astype(np.float32), n[s0:s1], geo, collisions=settings.collisions
            )
            counts["n_below_threshold"] += apply_threshold(vox)
            counts["n_collided"] += collided
            showers[s0:s1] = vox
            counts["seconds_convert"] += time.perf_counter() - t1
        bar.update(s1 - s0)
    bar.close()
    return showers, counts


def _showers_from_model(
    sampler: Sampler,
    energies: np.ndarray,
    torch_gen: torch.Generator,
    settings: SampleSettings,
    progress: bool,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Showers from a shower sampler, chunk by chunk, with the counts summed over chunks."""
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    showers = np.zeros((len(energies), sampler.geometry.n_voxels), dtype=np.float32)
    counts = _new_counts()
    bar = progress_bar(total=len(energies), unit="shower", disable=not progress, desc="sample")
    for s0 in range(0, len(energies), settings.chunk_size):
        s1 = min(len(energies), s0 + settings.chunk_size)
        showers[s0:s1], c = sampler.generator.sample_showers(energies[s0:s1], torch_gen)
        for key in counts:
            counts[key] += c.get(key, 0)
        bar.update(s1 - s0)
    bar.close()
    return showers, counts


def jets_from_points(
    points: np.ndarray, n: np.ndarray, n_slots: int, jet_pt: np.ndarray, jet_eta: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Ragged (eta_rel, phi_rel, pt_rel) points -> JetNet particle_features (N, n_slots, 4), jet_features.

    Particles are sorted by decreasing pt_rel; jet (pt [GeV], eta, mass [GeV], n) come from the sum of
    the massless constituents with pt = pt_rel * jet_pt, eta = eta_rel + jet_eta, phi = phi_rel.
    """
    n = np.asarray(n, dtype=np.int64)
    if n.size and n.max() > n_slots:
        raise ValueError(f"a jet has {n.max()} particles but the format has {n_slots} slots")
    pts = np.array(points, dtype=np.float64, copy=True)
    counts = _new_counts()
    bad = ~np.isfinite(pts)
    counts["n_nonfinite"] = int(bad.any(axis=1).sum())
    pts[bad] = 0.0
    counts["n_negative"] = int((pts[:, 2] < 0).sum())
    pts[:, 2] = np.maximum(pts[:, 2], 0.0)
    pts[:, 1] = np.mod(pts[:, 1] + np.pi, 2 * np.pi) - np.pi
    counts["n_points"] = len(pts)
    jet = np.repeat(np.arange(len(n)), n)
    order = np.lexsort((-pts[:, 2], jet))
    pts, jet = pts[order], jet[order]
    slot = np.arange(len(pts)) - np.repeat(np.cumsum(n) - n, n)
    pf = np.zeros((len(n), n_slots, 4), dtype=np.float32)
    pf[jet, slot, :3] = pts
    pf[jet, slot, 3] = 1.0
    pf[..., 1] = np.clip(pf[..., 1], -np.float32(np.pi), np.float32(np.pi))  # float32 rounding at +-pi
    pt = pts[:, 2] * np.repeat(jet_pt, n)
    eta = pts[:, 0] + np.repeat(jet_eta, n)
    px = np.bincount(jet, pt * np.cos(pts[:, 1]), len(n))
    py = np.bincount(jet, pt * np.sin(pts[:, 1]), len(n))
    pz = np.bincount(jet, pt * np.sinh(eta), len(n))
    e = np.bincount(jet, pt * np.cosh(eta), len(n))
    jpt = np.hypot(px, py)
    jeta = np.where(jpt > 0, np.arcsinh(pz / np.where(jpt > 0, jpt, 1.0)), 0.0)
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))
    jf = np.stack([jpt, jeta, mass, n.astype(np.float64)], axis=1).astype(np.float32)
    return pf, jf, counts


# ----------------------------------------------------------------------------------------------
# Reference files
# ----------------------------------------------------------------------------------------------


def reference_showers(
    path: str | Path, geometry: Geometry, need_counts: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Incident energies (N,) MeV of a CaloChallenge file and, if asked, hit counts (N,) per shower."""
    from pipelines.io.calochallenge import ENERGY_KEY, INCIDENT_RANGE_MEV, check_layout, iter_calochallenge

    path = Path(path)
    n_ref = check_layout(path, geometry)
    if need_counts:
        energies, counts = np.empty(n_ref), np.empty(n_ref, dtype=np.int64)
        for start, e, s in iter_calochallenge(path, geometry):
            energies[start : start + len(e)] = e
            counts[start : start + len(e)] = np.count_nonzero(s, axis=1)
        return energies, counts
    with h5py.File(path, "r") as f:  # energies only: skip decompressing the showers
        energies = np.asarray(f[ENERGY_KEY][()], dtype=np.float64).reshape(-1)
    low, high = INCIDENT_RANGE_MEV
    if not np.all(np.isfinite(energies)) or energies.min() < low or energies.max() > high:
        raise DataError(f"{path}: incident energies must be finite and within [{low:g}, {high:g}] MeV")
    return energies, None


def draw_energies(
    reference: np.ndarray, n_samples: int, source: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Incident energies (MeV) matching the reference: resampled (with the chosen indices) or log-uniform."""
    if source == "resample":
        idx = rng.integers(0, len(reference), n_samples)
        return reference[idx], idx
    lo, hi = np.log(reference.min()), np.log(reference.max())
    return np.exp(rng.uniform(lo, hi, n_samples)), None


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_generation(
    sampler: Sampler,
    kind: str,
    conditions: np.ndarray,
    settings: SampleSettings,
    seed: int,
    n_slots: int | None = None,
) -> list[dict[str, Any]]:
    """Median ms per cloud for requests of each size in ``timing_batch_sizes`` (capped on CPU).

    A request covers sampling n, noise, generator, inverse transform (and rotation, energy cleaning
    for showers): "without conversion"; "with conversion" adds voxelisation + threshold (showers) or
    sorting, padding and jet features (jets). One warm-up request precedes the measurements.
    """
    rng = np.random.default_rng(seed)
    torch_gen = noise_generator(sampler.device, seed)
    quiet = dataclasses.replace(settings, progress=False)
    out = []

    def one(b: int) -> tuple[float, float]:
        """(seconds without conversion, seconds with conversion) for one request of b clouds."""
        cond = conditions[rng.integers(0, len(conditions), b)]
        _sync(sampler.device)
        t0 = time.perf_counter()
        if kind == "showers":
            n = None if sampler.makes_showers else sampler.multiplicity.sample(rng, conditions=cond)
            t_n = time.perf_counter() - t0
            _, counts = showers_from_conditions(sampler, cond, n, rng, torch_gen, quiet, voxelise=True)
            return t_n + counts["seconds_generate"], t_n + counts["seconds_generate"] + counts[
                "seconds_convert"
            ]
        codes = cond[:, 2].astype(np.int64) if sampler.jet_types else None
        n = sampler.multiplicity.sample(rng, conditions=codes, size=b)
        pts = generate_points(
            sampler, sampler.jet_conditions(codes, b), n, torch_gen, settings.batch_size, settings.max_tokens
        )
        _sync(sampler.device)
        t_model = time.perf_counter() - t0
        jets_from_points(pts, n, n_slots, cond[:, 0], cond[:, 1])
        return t_model, time.perf_counter() - t0

    cap = settings.timing_max_batch_cpu if sampler.device.type == "cpu" else None
    one(min(settings.timing_batch_sizes))  # warm-up
    for requested in settings.timing_batch_sizes:
        b = min(requested, cap) if cap else requested
        runs = [one(b) for _ in range(settings.timing_repeats)]
        model_s = float(np.median([r[0] for r in runs]))
        with_s = float(np.median([r[1] for r in runs]))
        out.append({
            "requested_batch_size": int(requested), "batch_size": int(b), "repeats": settings.timing_repeats,
            "ms_per_sample_without_conversion": 1e3 * model_s / b,
            "ms_per_sample_with_conversion": 1e3 * with_s / b,
        })  # fmt: skip
        log.info(
            "timing batch %d: %.3f ms/sample model only, %.3f ms/sample with conversion",
            b,
            1e3 * model_s / b,
            1e3 * with_s / b,
        )
    return out


# ----------------------------------------------------------------------------------------------
# Stage
# ----------------------------------------------------------------------------------------------


def load_sampler(
    model: str | Path,
    multiplicity: str | Path | None,
    transforms: str | Path,
    kind: str,
    device: torch.device,
    geometry: Geometry | None = None,
) -> Sampler:
    """Load the model, its point transform and (where the family needs it) the multiplicity model."""
    from pipelines.models.family import get_family
    from pipelines.models.multiplicity import load_multiplicity
    from pipelines.models.store import load_model, read_model
    from pipelines.transforms import load_transform

    if kind == "showers" and geometry is None:
        raise ValueError("showers need a geometry")
    payload = read_model(model)
    if payload["kind"] != kind:
        raise ValueError(f"{model}: the model was trained on {payload['kind']}, not {kind}")
    transform = load_transform(transforms)
    names = tuple(getattr(transform, "point_names", ()))
    if names != tuple(payload["extra"].get("point_names", names)):
        raise DataError(
            f"{transforms}: transform columns {names} differ from the model's "
            f"{payload['extra']['point_names']}"
        )
    generator, _ = load_model(model, transform, geometry, device)
    n_params = sum(
        int(v.numel()) for w in payload["weights"].values() for v in w.values() if v.dtype.is_floating_point
    )
    mult = None
    if get_family(payload["family"]).needs_multiplicity():
        if multiplicity is None:
            raise ValueError(f"{model}: the {payload['family']!r} family needs --multiplicity")
        mult = load_multiplicity(multiplicity)
        if kind == "showers" and mult.n_max > geometry.n_voxels:
            raise DataError(
                f"{multiplicity}: n_max {mult.n_max} exceeds the {geometry.n_voxels} voxels "
                f"of dataset {geometry.name}"
            )
        if kind == "showers" and not mult.conditional:
            log.warning("%s: multiplicity model is unconditional; n will not depend on E_inc", multiplicity)
    cond_dim = int(payload["config"].get("cond_dim", 0)) if isinstance(payload["config"], dict) else 0
    sampler = Sampler(generator, transform, mult, device, geometry, payload["family"], n_params, cond_dim)
    if kind == "jets" and mult is not None and cond_dim and cond_dim != 1 + len(sampler.jet_types):
        raise DataError(
            f"{multiplicity}: jet types {list(sampler.jet_types)} do not match the model's condition "
            f"length {cond_dim} ({model})"
        )
    return sampler


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def run_showers(
    sampler: Sampler,
    reference: str | Path,
    n_samples: int,
    seed: int,
    settings: SampleSettings,
    out: str | Path,
) -> tuple[dict[str, Any], np.ndarray]:
    """Generate and write ``n_samples`` showers; return the summary and the reference energies."""
    from pipelines.io.calochallenge import write_calochallenge

    ss = np.random.SeedSequence(seed).spawn(3)
    rng_e, rng_n, rng_rot = (np.random.default_rng(s) for s in ss)
    torch_gen = noise_generator(sampler.device, ss[2].generate_state(1)[0])
    ref_e, ref_n = reference_showers(reference, sampler.geometry, settings.n_from_reference)
    energies, idx = draw_energies(ref_e, n_samples, settings.energy_source, rng_e)
    if sampler.makes_showers:
        n = np.zeros(n_samples, dtype=np.int64)  # the model draws its own hit counts
    elif settings.n_from_reference:
        n = ref_n[idx]
    else:
        n = sampler.multiplicity.sample(rng_n, conditions=energies)
    t0 = time.perf_counter()
    showers, counts = showers_from_conditions(
        sampler, energies, n, rng_rot, torch_gen, settings, voxelise=True, progress=settings.progress
    )
    seconds = time.perf_counter() - t0
    if not np.all(np.isfinite(showers)) or showers.min() < 0:  # clean_energies makes this unreachable
        raise RuntimeError("generated showers contain NaN or negative energies")
    write_calochallenge(out, energies, showers)
    if sampler.makes_showers:
        n = np.count_nonzero(showers, axis=1)
    summary = _summary(counts, n, seconds)
    summary["n_hits_written_mean"] = float(np.count_nonzero(showers, axis=1).mean())
    return summary, ref_e


def run_jets(
    sampler: Sampler,
    reference: str | Path,
    n_samples: int,
    seed: int,
    settings: SampleSettings,
    out: str | Path,
) -> tuple[dict[str, Any], np.ndarray, int]:
    """Generate and write ``n_samples`` jets; return the summary, the reference (pt, eta) (and type code,
    for a model of several types) and the slot count."""
    from pipelines.io.jetnet import read_jet_types, read_jetnet, write_jetnet

    ss = np.random.SeedSequence(seed).spawn(3)
    rng_j, rng_n = np.random.default_rng(ss[0]), np.random.default_rng(ss[1])
    torch_gen = noise_generator(sampler.device, ss[2].generate_state(1)[0])
    ref_pf, ref_jf = read_jetnet(reference)
    n_slots = ref_pf.shape[1]
    if sampler.multiplicity.n_max > n_slots:
        raise DataError(
            f"{reference}: {n_slots} particle slots, the multiplicity model allows up to "
            f"{sampler.multiplicity.n_max}"
        )
    ref_codes = read_jet_types(reference) if sampler.jet_types else None
    if sampler.jet_types and ref_codes is None:
        raise DataError(
            f"{reference}: no jet type column, but the model generates types {list(sampler.jet_types)}"
        )
    idx = rng_j.integers(0, len(ref_jf), n_samples)
    frame = ref_jf[idx, :2].astype(np.float64)  # (pt, eta) of the resampled reference jets
    codes = ref_codes[idx] if ref_codes is not None else None  # the reference's type proportions
    if settings.n_from_reference:
        n = (ref_pf[idx, :, 3] == 1).sum(axis=1).astype(np.int64)
    else:
        n = sampler.multiplicity.sample(rng_n, conditions=codes, size=n_samples)
    t0 = time.perf_counter()
    pf_parts, jf_parts, counts = [], [], _new_counts()
    bar = progress_bar(total=n_samples, unit="jet", disable=not settings.progress, desc="sample")
    for s0 in range(0, n_samples, settings.chunk_size):
        s1 = min(n_samples, s0 + settings.chunk_size)
        raw = sampler.jet_conditions(None if codes is None else codes[s0:s1], s1 - s0)
        pts = generate_points(sampler, raw, n[s0:s1], torch_gen, settings.batch_size, settings.max_tokens)
        pf, jf, c = jets_from_points(pts, n[s0:s1], n_slots, frame[s0:s1, 0], frame[s0:s1, 1])
        pf_parts.append(pf)
        jf_parts.append(jf)
        for key in ("n_points", "n_nonfinite", "n_negative"):
            counts[key] += c[key]
        bar.update(s1 - s0)
    bar.close()
    seconds = time.perf_counter() - t0
    write_jetnet(out, np.concatenate(pf_parts), np.concatenate(jf_parts), types=codes)
    timing_conditions = ref_jf[:, :2].astype(np.float64)
    if ref_codes is not None:
        timing_conditions = np.column_stack([timing_conditions, ref_codes])
    summary = _summary(counts, n, seconds)
    if codes is not None:
        summary["jets_per_type"] = {t: int((codes == k).sum()) for t, k in _type_codes(sampler.jet_types)}
    return summary, timing_conditions, n_slots


def _type_codes(types: tuple[str, ...]) -> list[tuple[str, int]]:
    from pipelines.jet_types import type_code

    return [(t, type_code(t)) for t in types]


def _summary(counts: dict[str, Any], n: np.ndarray, seconds: float) -> dict[str, Any]:
    n_points = int(counts["n_points"])
    return {
        "n_samples": int(len(n)), "n_mean": float(n.mean()) if len(n) else 0.0, "n_zero": int((n == 0).sum()),
        "n_points": n_points, "n_collided": int(counts["n_collided"]),
        "collided_fraction": counts["n_collided"] / n_points if n_points else 0.0,
        "n_nonfinite_clipped": int(counts["n_nonfinite"]), "n_negative_clipped": int(counts["n_negative"]),
        "n_voxels_below_threshold": int(counts["n_below_threshold"]),
        "n_points_dropped": int(counts["n_dropped"]),  # beyond a layer's voxel count (factorised)
        "seconds": seconds, "ms_per_sample": 1e3 * seconds / max(1, len(n)),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Stage ``sample``: generate showers (CaloChallenge HDF5) or jets (JetNet HDF5) plus timing.json."""
    p = argparse.ArgumentParser(prog="sample", description=main.__doc__)
    p.add_argument("--model", required=True, help="model file written by the train stage (.pt)")
    p.add_argument(
        "--multiplicity", default=None, help="multiplicity model (.json), for families that need it"
    )
    p.add_argument("--transforms", required=True, help="fitted point transform (.json, fit-transforms)")
    p.add_argument(
        "--reference", required=True, help="reference file whose E_inc (showers) / jets frame to match"
    )
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--dataset", default=None, help="CaloChallenge dataset (showers): 2 or 3")
    p.add_argument("--n-samples", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--settings", default="{}", help="JSON object of SampleSettings")
    p.add_argument("--out", required=True, help="generated sample (.h5)")
    p.add_argument("--out-timing", required=True, help="timing and generation summary (.json)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)
    settings = SampleSettings.from_json(args.settings)
    if args.n_samples < 1:
        raise ValueError(f"--n-samples must be >= 1, got {args.n_samples}")
    geometry = None
    if args.kind == "showers":
        if args.dataset is None:
            raise ValueError("sample --kind showers needs --dataset")
        geometry = load_geometry(args.dataset)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    sampler = load_sampler(args.model, args.multiplicity, args.transforms, args.kind, device, geometry)

    if args.kind == "showers":
        summary, timing_conditions = run_showers(
            sampler, args.reference, args.n_samples, args.seed, settings, args.out
        )
        n_slots = None
    else:
        summary, timing_conditions, n_slots = run_jets(
            sampler, args.reference, args.n_samples, args.seed, settings, args.out
        )
    log.info(
        "wrote %s: %d %s, %d points, %d collided, %d negative and %d non-finite clipped",
        args.out,
        summary["n_samples"],
        args.kind,
        summary["n_points"],
        summary["n_collided"],
        summary["n_negative_clipped"],
        summary["n_nonfinite_clipped"],
    )
    timing = (
        time_generation(sampler, args.kind, timing_conditions, settings, args.seed + 1, n_slots)
        if settings.timing
        else []
    )
    report = {
        "kind": args.kind, "dataset": args.dataset,
        "device": device.type, "device_name": _device_name(device),
        "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
        "family": sampler.family, "generator_parameters": sampler.parameters,
        "multiplicity_family": sampler.multiplicity.family if sampler.multiplicity is not None else None,
        "conversion": ("collision-free decoding + threshold" if sampler.makes_showers else
                       "voxelisation + threshold" if args.kind == "showers" else "padding + jet features"),
        "timing": timing, "generation": summary, "seed": args.seed, "settings": dataclasses.asdict(settings),
    }  # fmt: skip
    with atomic_path(args.out_timing) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1) + "\n")
    return 0
