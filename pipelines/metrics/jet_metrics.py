"""JetNet metrics (arXiv:2211.10295, the ``jetnet`` 0.2.5 definitions): W1M, W1PT, W1P, W1EFP, FPD,
KPD, and MPGAN's COV and MMD (arXiv:2106.11535).

* Relative jet mass m / pT_jet from the massless four-vector sum of the particles in relative
  coordinates (pt_rel, eta_rel, phi_rel): a shift in eta is a longitudinal boost and a shift in phi a
  rotation, so the mass of the relative four-vectors is m / pT_jet when pt_rel = pt / pT_jet.  The
  relative jet pT is the transverse momentum of the same sum, |sum pt_rel (cos phi, sin phi)| (jetnet's
  ``jet_features(...)["pt"]``): 1 for a jet of all its constituents, below 1 for truncated jets.
* EFPs (:mod:`pipelines.metrics.efp`) weighted by the raw pt_rel by default, as ``jetnet`` (energyflow
  ``normed=None``); ``efp_normalised`` weights by pt_rel / sum pt_rel instead (not comparable with the
  published W1EFP, FPD, KPD).
* W1M, W1PT (relative jet pT, beside W1M), W1P (per particle feature over real particles only, plus the
  mean over the three), W1EFP (the 5 prime EFPs with n = 4, d = 4, plus their mean): 1-d Wasserstein
  distances over ``num_batches`` batches of ``batch_size`` jets drawn with replacement from each sample
  (seeded ``default_rng(seed)``, per batch first the real then the generated indices, as ``jetnet``
  draws them; the same jet indices for every W1 metric).  value = mean over batches, error = std over
  batches (population std, ddof = 0, as in ``jetnet``).  The mean over features is taken per batch,
  then averaged over batches; its error follows ``w1_error`` (see ``W1_ERRORS``): the std over batches
  of the per-batch mean (default), or ``jetnet``'s convention for the averaged W1 (jetnet <= 0.2.2
  ``average_over_features``, used for the published tables): the Euclidean norm of the per-feature
  stds, sqrt(sum_k sigma_k^2).
  Documented deviation: the published batch size is 50,000; when a sample is smaller the batch size
  becomes ``min(num_eval_samples, len(real), len(gen))``.
* FPD, KPD on all 36 EFPs with d <= 4 through :mod:`pipelines.metrics.distances`.
* COV, MMD (:mod:`pipelines.metrics.emd`): energy mover's distances (pt_rel weights, R = ``emd_radius``)
  between ``cov_mmd_num_batches`` batches of ``cov_mmd_num_eval_samples`` real and generated jets, drawn
  with replacement as the W1 batches are (a generator of its own seeded with ``seed``, real then
  generated indices per batch: jetnet's ``cov_mmd`` draws after ``rng = default_rng(seed)``; the batch
  size is scaled down to the smaller sample like the W1 batch size).  value = mean over batches,
  error = std over batches (ddof = 0).  COV: higher is better; MMD: lower is better.  The cost is
  num_batches x size^2 exact transport problems (``benchmarks/bench_cov_mmd.py``).
* Units: every metric is reported raw under its name, and in the published units under
  ``<name>_x1e3`` (W1M, W1PT, W1P, FPD, KPD) or ``<name>_x1e5`` (W1EFP): value_scaled = raw * factor;
  COV and MMD only raw (the published tables show them so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipelines.metrics import efp, emd
from pipelines.metrics.distances import frechet_physics_distance, kernel_physics_distance, wasserstein_1d
from pipelines.metrics.settings import W1_ERRORS, JetMetricSettings

PARTICLE_FEATURES = ("eta_rel", "phi_rel", "pt_rel")
PRIME_EFP_NAMES = tuple(efp.GRAPHS[i].name for i in efp.PRIME_N4_D4)
SCALE_W1M = 1e3
SCALE_W1PT = 1e3
SCALE_W1P = 1e3
SCALE_W1EFP = 1e5
SCALE_FPD_KPD = 1e3

#: EFP weight conventions, each with the sentence metrics.json names it by
EFP_CONVENTIONS = {
    False: "EFPs weighted by the raw pt_rel (energyflow normed=None, as jetnet and the published W1EFP, "
    "FPD, KPD); the d = 0 EFP is sum(pt_rel)",
    True: "EFPs weighted by pt_rel / sum(pt_rel) (energyflow normed=True; not comparable with the published "
    "W1EFP, FPD, KPD); the d = 0 EFP is 1",
}


@dataclass(frozen=True)
class JetSample:
    """Per-jet quantities one evaluation needs: particles (N, n, 3), padding mask (N, n) (True = pad),
    relative masses (N,), all 36 EFPs (N, 36), relative jet pT (N,)."""

    particles: NDArray[np.float64]
    mask: NDArray[np.bool_]
    mass: NDArray[np.float64]
    efps: NDArray[np.float64]
    pt: NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.mass)

    def select(self, indices: NDArray[np.integer]) -> JetSample:
        i = indices
        return JetSample(self.particles[i], self.mask[i], self.mass[i], self.efps[i], self.pt[i])


def split_particle_features(particle_features: NDArray[np.floating]) -> tuple[NDArray, NDArray[np.bool_]]:
    """JetNet (N, n, 4) (eta_rel, phi_rel, pt_rel, mask 1 = real) -> particles (N, n, 3), pad mask (N, n)."""
    pf = np.asarray(particle_features)
    if pf.ndim != 3 or pf.shape[2] != 4:
        raise ValueError(f"particle_features must have shape (N, n, 4), got {pf.shape}")
    return pf[:, :, :3], pf[:, :, 3] < 0.5


def four_vector_sum(
    particles: NDArray[np.floating], mask: NDArray[np.bool_] | None = None
) -> tuple[NDArray[np.float64], ...]:
    """(E, px, py, pz) of each jet, (N,) each, summed over massless particles (eta_rel, phi_rel, pt_rel)
    (N, n, 3): E = pt cosh(eta), p = (pt cos(phi), pt sin(phi), pt sinh(eta)); padded particles (mask
    True) are left out."""
    p = np.asarray(particles, dtype=np.float64)
    if p.ndim != 3 or p.shape[2] < 3:
        raise ValueError(f"particles must have shape (N, n, 3), got {p.shape}")
    eta, phi, pt = p[:, :, 0], p[:, :, 1], p[:, :, 2]
    if mask is not None:
        pt = np.where(np.asarray(mask, dtype=bool), 0.0, pt)
    e = np.sum(pt * np.cosh(eta), axis=1)
    px = np.sum(pt * np.cos(phi), axis=1)
    py = np.sum(pt * np.sin(phi), axis=1)
    pz = np.sum(pt * np.sinh(eta), axis=1)
    return e, px, py, pz


def relative_mass(
    particles: NDArray[np.floating], mask: NDArray[np.bool_] | None = None
) -> NDArray[np.float64]:
    """m / pT_jet of each jet, m = sqrt(max(0, E^2 - |p|^2)) of :func:`four_vector_sum`: (N, n, 3) -> (N,)."""
    e, px, py, pz = four_vector_sum(particles, mask)
    return np.sqrt(np.maximum(e * e - px * px - py * py - pz * pz, 0.0))


def relative_pt(
    particles: NDArray[np.floating], mask: NDArray[np.bool_] | None = None
) -> NDArray[np.float64]:
    """Relative jet pT sqrt(px^2 + py^2) of :func:`four_vector_sum`: (N, n, 3) -> (N,)."""
    _, px, py, _ = four_vector_sum(particles, mask)
    return np.hypot(px, py)


def make_sample(
    particle_features: NDArray[np.floating],
    efp_values: NDArray[np.float64] | None = None,
    progress: bool = False,
    efp_normalised: bool = False,
) -> JetSample:
    """Build a :class:`JetSample` from JetNet particle features, computing EFPs (weights as
    ``efp_normalised``, see :func:`pipelines.metrics.efp.efps`) unless given."""
    particles, mask = split_particle_features(particle_features)
    particles = np.asarray(particles, dtype=np.float64)
    if efp_values is None:
        efp_values = efp.efps(particles, mask, progress=progress, normalised=efp_normalised)
    if efp_values.shape != (len(particles), len(efp.GRAPHS)):
        raise ValueError(
            f"efp_values must have shape {(len(particles), len(efp.GRAPHS))}, got {efp_values.shape}"
        )
    return JetSample(
        particles,
        mask,
        relative_mass(particles, mask),
        np.asarray(efp_values, dtype=np.float64),
        relative_pt(particles, mask),
    )


def jet_level_features(sample: JetSample, n_particles: int = 30) -> NDArray[np.float64]:
    """Per-jet input of the tree classifier test, (N, 3 + 3 n_particles): relative mass, sum of pt_rel,
    multiplicity, then (eta_rel, phi_rel, pt_rel) of the ``n_particles`` leading particles by pt_rel
    (real particles only, zero-padded where a jet has fewer)."""
    if n_particles < 1:
        raise ValueError(f"n_particles must be >= 1, got {n_particles}")
    real = ~sample.mask
    pt = np.where(real, sample.particles[:, :, 2], 0.0)
    # leading first: real particles by decreasing pt_rel, padding after them (stable for ties)
    order = np.argsort(np.where(real, -pt, np.inf), axis=1, kind="stable")[:, :n_particles]
    leading = np.take_along_axis(sample.particles, order[:, :, None], axis=1)
    leading = np.where(np.take_along_axis(real, order, axis=1)[:, :, None], leading, 0.0)
    if leading.shape[1] < n_particles:
        pad = np.zeros((len(sample), n_particles - leading.shape[1], 3))
        leading = np.concatenate([leading, pad], axis=1)
    per_jet = np.stack([sample.mass, pt.sum(axis=1), real.sum(axis=1).astype(np.float64)], axis=1)
    return np.concatenate([per_jet, leading.reshape(len(sample), -1)], axis=1)


def batch_size_for(n_real: int, n_gen: int, num_eval_samples: int) -> int:
    """Jets per W1 batch: the published size, scaled down to the smaller sample when needed."""
    return int(min(num_eval_samples, n_real, n_gen))


def draw_batches(
    n_real: int, n_gen: int, size: int, num_batches: int, seed: int
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """With-replacement jet indices (real, gen) of ``size`` each for ``num_batches`` batches from
    ``default_rng(seed)``, real first in each batch (the draws of jetnet's ``rng.choice``)."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, n_real, size), rng.integers(0, n_gen, size)) for _ in range(num_batches)]


def batch_indices(
    n_real: int, n_gen: int, settings: JetMetricSettings
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Seeded with-replacement jet indices (real, gen) for every W1 batch."""
    size = batch_size_for(n_real, n_gen, settings.num_eval_samples)
    return draw_batches(n_real, n_gen, size, settings.num_batches, settings.seed)


def cov_mmd_batch_indices(
    n_real: int, n_gen: int, settings: JetMetricSettings
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Seeded with-replacement jet indices (real, gen) for every COV/MMD batch."""
    size = batch_size_for(n_real, n_gen, settings.cov_mmd_num_eval_samples)
    return draw_batches(n_real, n_gen, size, settings.cov_mmd_num_batches, settings.seed)


def cov_mmd(real: JetSample, gen: JetSample, settings: JetMetricSettings) -> NDArray[np.float64]:
    """(COV, MMD) of every COV/MMD batch of ``gen`` against ``real``: (cov_mmd_num_batches, 2)."""
    batches = cov_mmd_batch_indices(len(real), len(gen), settings)
    real_clouds, gen_clouds = emd.clouds(real.particles, real.mask), emd.clouds(gen.particles, gen.mask)
    return emd.cov_mmd_per_batch(real_clouds, gen_clouds, batches, settings.emd_radius)


def w1_per_batch_jet_features(
    real: NDArray[np.floating], gen: NDArray[np.floating], batches: list[tuple[NDArray, NDArray]]
) -> NDArray[np.float64]:
    """W1 of every column of per-jet features (N, k) in every batch: (num_batches, k)."""
    real = np.asarray(real, dtype=np.float64).reshape(len(real), -1)
    gen = np.asarray(gen, dtype=np.float64).reshape(len(gen), -1)
    return np.array(
        [[wasserstein_1d(real[ir, c], gen[ig, c]) for c in range(real.shape[1])] for ir, ig in batches]
    )


def w1_per_batch_particle_features(
    real: JetSample, gen: JetSample, batches: list[tuple[NDArray, NDArray]]
) -> NDArray:
    """W1 of each particle feature over the real (non-padded) particles of each batch: (num_batches, 3)."""
    rows = []
    for ir, ig in batches:
        pr = real.particles[ir][~real.mask[ir]]
        pg = gen.particles[ig][~gen.mask[ig]]
        if len(pr) == 0 or len(pg) == 0:
            rows.append([np.inf] * len(PARTICLE_FEATURES))
        else:
            rows.append([wasserstein_1d(pr[:, c], pg[:, c]) for c in range(len(PARTICLE_FEATURES))])
    return np.array(rows)


def _mean_std(per_batch: NDArray[np.float64]) -> tuple[float, float]:
    return float(np.mean(per_batch)), float(np.std(per_batch))


def feature_mean_w1(per_batch: NDArray[np.float64], w1_error: str = "batch_std") -> tuple[float, float]:
    """(value, error) of the W1 averaged over features from per-batch values (num_batches, K).

    value = mean over batches and features; error per ``w1_error`` (a key of ``W1_ERRORS``):
    "batch_std" = std over batches of the per-batch feature mean, "jetnet_norm" = sqrt(sum_k sigma_k^2)
    with sigma_k the std over batches of feature k."""
    per_batch = np.asarray(per_batch, dtype=np.float64)
    value = float(np.mean(per_batch))
    if w1_error == "batch_std":
        return value, float(np.std(per_batch.mean(axis=1)))
    if w1_error == "jetnet_norm":
        return value, float(np.linalg.norm(np.std(per_batch, axis=0)))
    raise ValueError(f"w1_error must be one of {sorted(W1_ERRORS)}, got {w1_error!r}")


def _add(
    rows: dict[str, dict[str, float | None]], name: str, value: float, error: float | None, scale: float
) -> None:
    """Store a metric raw under ``name`` and scaled under ``name_x1eK``."""
    rows[name] = {"value": float(value), "error": None if error is None else float(error)}
    suffix = f"_x1e{round(np.log10(scale))}"
    rows[name + suffix] = {
        "value": float(value) * scale,
        "error": None if error is None else float(error) * scale,
    }


def jet_metrics(
    real: JetSample, gen: JetSample, settings: JetMetricSettings
) -> dict[str, dict[str, float | None]]:
    """All jet metrics of ``gen`` against ``real``: {name: {"value", "error"}} (raw and scaled entries)."""
    if len(real) < 2 or len(gen) < 2:
        raise ValueError(f"need at least 2 jets per sample, got {len(real)} real and {len(gen)} generated")
    rows: dict[str, dict[str, float | None]] = {}
    batches = batch_indices(len(real), len(gen), settings)

    _add(rows, "W1M", *_mean_std(w1_per_batch_jet_features(real.mass, gen.mass, batches)), SCALE_W1M)
    _add(rows, "W1PT", *_mean_std(w1_per_batch_jet_features(real.pt, gen.pt, batches)), SCALE_W1PT)

    w1p = w1_per_batch_particle_features(real, gen, batches)
    for c, name in enumerate(PARTICLE_FEATURES):
        _add(rows, f"W1P_{name}", *_mean_std(w1p[:, c]), SCALE_W1P)
    _add(rows, "W1P", *feature_mean_w1(w1p, settings.w1_error), SCALE_W1P)

    w1efp = w1_per_batch_jet_features(efp.prime_n4_d4(real.efps), efp.prime_n4_d4(gen.efps), batches)
    for c, name in enumerate(PRIME_EFP_NAMES):
        _add(rows, f"W1EFP_{name}", *_mean_std(w1efp[:, c]), SCALE_W1EFP)
    _add(rows, "W1EFP", *feature_mean_w1(w1efp, settings.w1_error), SCALE_W1EFP)

    fpd = frechet_physics_distance(
        real.efps,
        gen.efps,
        seed=settings.seed,
        n_sizes=settings.fpd_n_sizes,
        n_draws=settings.fpd_n_draws,
        min_samples=settings.fpd_min_samples,
        max_samples=settings.fpd_max_samples,
    )
    _add(rows, "FPD", *fpd, SCALE_FPD_KPD)
    kpd = kernel_physics_distance(
        real.efps,
        gen.efps,
        seed=settings.seed,
        n_batches=settings.kpd_n_batches,
        batch_size=settings.kpd_batch_size,
    )
    _add(rows, "KPD", *kpd, SCALE_FPD_KPD)

    per_batch = cov_mmd(real, gen, settings)
    for c, name in enumerate(("COV", "MMD")):
        value, error = _mean_std(per_batch[:, c])
        rows[name] = {"value": value, "error": error}
    return rows
