"""Shower level of the factorised family: a conditional flow-matching model of per-shower numbers.

Given c = standardised log(E_inc / MeV) it models the vector (dimension 1 + 2 L, L layers)

    s = standardise([log(E_tot / E_inc), log(E_l / n_l) for each layer, log(1 + n_l + u_l) for each layer])

with E_l / n_l the mean energy per hit of layer l (the layer-energy fractions follow from it and the
counts: f_l = n_l (E_l / n_l) / E_tot), n_l the layer hit counts dequantised by u_l ~ U[0, 1) (``u = 0.5``
when no noise is given: the deterministic transform). A layer without hits has no mean hit energy:
its coordinate is filled with standard-normal noise in the standardised space (``fill``; 0 when none is
given), so the flow never has to produce a point mass there, and the value is ignored when decoding.
The means and standard deviations (of the mean hit energies: over layers with hits) are fitted on the
training split (:meth:`ShowerTransform.fit`), and so is a conditional whitening of the standardised
vector s: z = L^-1 (s - a - b c), with a + b c the least-squares linear dependence on the condition
and L the Cholesky factor of the residual covariance plus a small ridge (:data:`RIDGE`; fitted with
training-like noise: u and fill from a seeded generator). The flow models z, which is close to
uncorrelated unit noise, so it learns in far fewer steps. Everything is stored as plain lists. The
inverse (:meth:`ShowerTransform.inverse`) is exact up to float64 rounding: counts are
floor(exp(y) - 1), so the deterministic transform round-trips integers exactly.

Decoding a sampled vector (:meth:`ShowerTransform.decode`): every quantity is clamped to its range in
the training split (counts also to [0, voxels of the layer]); the layer energies n_l (E_l / n_l) are then
rescaled by one factor per shower so that they sum to the sampled E_tot (layers without hits get no
energy), i.e. the fractions are renormalised to sum 1 over the layers with hits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.geometry import THRESHOLD_MEV
from pipelines.models.flow_matching import TimeMLP, midpoint_solve, ot_path, time_features

#: Ridge of the whitening covariance, relative to its mean diagonal.
RIDGE = 1e-2


def _t(x: Any, like: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    device = like.device if like is not None else None
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, device=device).to(dtype)


def _linear_whitening(s: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares fit s ~ a + b c, and the Cholesky factor L of the residual covariance plus ridge.

    Written with numpy reductions in a fixed order and an explicit Cholesky loop (no BLAS or LAPACK),
    so the result is bit for bit the same whatever the thread count, library or memory alignment.
    """
    n, dim = s.shape
    c_mean = c.mean()
    s_mean = s.mean(axis=0)
    c_dev = c - c_mean
    c_var = (c_dev * c_dev).sum()
    slope = (c_dev[:, None] * (s - s_mean)).sum(axis=0) / c_var if c_var > 0 else np.zeros(dim)
    offset = s_mean - slope * c_mean
    resid = s - offset - c[:, None] * slope
    cov = np.stack([(resid * resid[:, j : j + 1]).sum(axis=0) for j in range(dim)]) / max(n, 1)
    # ridge: directions without variance (few showers, layers never hit) are not blown up
    cov = cov + RIDGE * np.eye(dim) * max(float(np.diagonal(cov).mean()), 1e-12)
    chol = np.zeros_like(cov)
    for j in range(dim):
        col = cov[j:, j] - (chol[j:, :j] * chol[j, :j]).sum(axis=1)
        chol[j, j] = np.sqrt(col[0])
        chol[j + 1 :, j] = col[1:] / chol[j, j]
    return offset, slope, chol


@dataclass
class ShowerTransform:
    """Fitted statistics of the shower-level vector (plain floats and lists: JSON-able)."""

    n_layers: int
    capacity: int | list[int]  # voxels per layer: n_alpha * n_r, or one number per layer (per-layer bins)
    cond_mean: float
    cond_std: float
    mean: list[float]
    std: list[float]
    ratio_range: list[float]  # [min, max] of E_tot / E_inc
    log_hit_min: list[float]  # per layer: range of log(E_l / n_l) over layers with hits
    log_hit_max: list[float]
    count_min: list[int]
    count_max: list[int]
    white_offset: list[float]  # a (dim,)
    white_slope: list[float]  # b (dim,)
    white_chol: list[list[float]]  # L (dim, dim), lower triangular

    def __post_init__(self) -> None:
        self._cache: dict[tuple[str, torch.device], torch.Tensor] = {}

    def _get(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Field ``name`` as a float64 tensor on ``like``'s device (cached: fields are fixed after fit)."""
        key = (name, like.device)
        if key not in self._cache:
            value = np.asarray(getattr(self, name), dtype=np.float64)
            self._cache[key] = torch.as_tensor(value, device=like.device)
        return self._cache[key]

    @property
    def dim(self) -> int:
        return 1 + 2 * self.n_layers

    @staticmethod
    def _parts(e_inc: Any, counts: Any, layer_e: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log(E_tot / E_inc) (N,), log mean hit energy (N, L) (0 where no hit), counts (N, L) float64)."""
        layer_e, counts = _t(layer_e), _t(counts)
        e_tot = layer_e.sum(dim=1)
        if torch.any(e_tot <= 0):
            raise ValueError("every shower needs a positive total energy")
        hit = counts > 0
        log_hit = torch.where(hit, torch.log(torch.where(hit, layer_e / counts.clamp_min(1.0), 1.0)), 0.0)
        return torch.log(e_tot / _t(e_inc, layer_e).reshape(-1)), log_hit, counts

    @classmethod
    def fit(
        cls,
        e_inc: np.ndarray,
        counts: np.ndarray,
        layer_e: np.ndarray,
        capacity: int | list[int],
        seed: int = 0,
    ) -> ShowerTransform:
        """Statistics of the training showers; ``seed`` draws the noise the whitening is fitted with.

        ``capacity``: voxels per layer, one number (regular grid) or one per layer (per-layer binnings).
        """
        log_ratio, log_hit, cnt = (a.numpy() for a in cls._parts(e_inc, counts, layer_e))
        hit = cnt > 0
        log_count = np.log1p(cnt + 0.5)
        n_hit = hit.sum(axis=0)
        hit_mean = np.where(
            n_hit > 0, (log_hit * hit).sum(axis=0) / np.maximum(n_hit, 1), np.log(THRESHOLD_MEV)
        )
        hit_var = (((log_hit - hit_mean) ** 2) * hit).sum(axis=0) / np.maximum(n_hit, 1)
        hit_std = np.where(n_hit > 1, np.sqrt(hit_var), 1.0)
        hit_min = np.where(hit, log_hit, np.inf).min(axis=0)
        hit_max = np.where(hit, log_hit, -np.inf).max(axis=0)
        hit_min = np.where(n_hit > 0, hit_min, np.log(THRESHOLD_MEV))
        hit_max = np.where(n_hit > 0, hit_max, np.log(THRESHOLD_MEV))
        mean = np.concatenate([[log_ratio.mean()], hit_mean, log_count.mean(axis=0)])
        std = np.concatenate([[log_ratio.std()], hit_std, log_count.std(axis=0)])
        log_e = np.log(np.asarray(e_inc, dtype=np.float64))
        ratio = np.exp(log_ratio)
        dim = 1 + 2 * cnt.shape[1]
        if isinstance(capacity, int | np.integer):
            capacity_, count_max = int(capacity), [int(min(v, capacity)) for v in cnt.max(axis=0)]
        else:
            capacity_ = [int(c) for c in capacity]
            if len(capacity_) != cnt.shape[1]:
                raise ValueError(f"capacity has {len(capacity_)} layers, the counts {cnt.shape[1]}")
            count_max = [int(min(v, c)) for v, c in zip(cnt.max(axis=0), capacity_, strict=True)]
        out = cls(
            n_layers=int(cnt.shape[1]),
            capacity=capacity_,
            cond_mean=float(log_e.mean()),
            cond_std=float(max(log_e.std(), 1e-6)),
            mean=[float(v) for v in mean],
            std=[float(max(v, 1e-6)) for v in std],
            ratio_range=[float(ratio.min()), float(ratio.max())],
            log_hit_min=[float(v) for v in hit_min],
            log_hit_max=[float(v) for v in hit_max],
            count_min=[int(v) for v in cnt.min(axis=0)],
            count_max=count_max,
            white_offset=[0.0] * dim,
            white_slope=[0.0] * dim,
            white_chol=np.eye(dim).tolist(),
        )
        # conditional whitening, fitted on the standardised vectors with training-like noise
        gen = torch.Generator().manual_seed(int(seed))
        u = torch.rand(cnt.shape, generator=gen, dtype=torch.float64)
        fill = torch.randn(cnt.shape, generator=gen, dtype=torch.float64)
        s = out.standardised(e_inc, cnt, layer_e, u, fill).numpy()
        offset, slope, chol = _linear_whitening(s, out.condition(e_inc).double().numpy()[:, 0])
        out.white_offset = [float(v) for v in offset]
        out.white_slope = [float(v) for v in slope]
        out.white_chol = chol.tolist()
        out._cache.clear()
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShowerTransform:
        return cls(**d)

    def condition(self, e_inc: Any) -> torch.Tensor:
        """Model condition (N, 1) float32: standardised log(E_inc / MeV)."""
        e = _t(e_inc).reshape(-1)
        return ((torch.log(e) - self.cond_mean) / self.cond_std).float()[:, None]

    def standardised(
        self,
        e_inc: Any,
        counts: Any,
        layer_e: Any,
        u: torch.Tensor | float = 0.5,
        fill: torch.Tensor | float = 0.0,
    ) -> torch.Tensor:
        """Per-coordinate standardised vector s (N, 1 + 2L) float64 (before the whitening).

        ``u``: dequantisation noise of the counts in [0, 1); ``fill``: standardised value of the
        mean-hit-energy coordinate of layers without hits (noise when training).
        """
        log_ratio, log_hit, counts = self._parts(e_inc, counts, layer_e)
        mean, std = self._get("mean", log_hit), self._get("std", log_hit)
        n_l = self.n_layers
        hit_z = (log_hit - mean[1 : 1 + n_l]) / std[1 : 1 + n_l]
        hit_z = torch.where(counts > 0, hit_z, _t(fill, hit_z).expand_as(hit_z))
        count_z = (torch.log1p(counts + _t(u, counts)) - mean[1 + n_l :]) / std[1 + n_l :]
        return torch.cat([((log_ratio - mean[0]) / std[0])[:, None], hit_z, count_z], dim=1)

    def _trend(self, e_inc: Any, like: torch.Tensor) -> torch.Tensor:
        c = self.condition(e_inc).to(like.device).double()
        return self._get("white_offset", like) + c * self._get("white_slope", like)

    def whiten(self, s: torch.Tensor, e_inc: Any) -> torch.Tensor:
        """z = L^-1 (s - a - b c) of standardised vectors s (N, dim)."""
        s = s.double()
        chol = self._get("white_chol", s)
        return torch.linalg.solve_triangular(chol, (s - self._trend(e_inc, s)).T, upper=False).T

    def unwhiten(self, z: torch.Tensor, e_inc: Any) -> torch.Tensor:
        """s = L z + a + b c (the inverse of :meth:`whiten`)."""
        z = z.double()
        return z @ self._get("white_chol", z).T + self._trend(e_inc, z)

    def forward(
        self,
        e_inc: Any,
        counts: Any,
        layer_e: Any,
        u: torch.Tensor | float = 0.5,
        fill: torch.Tensor | float = 0.0,
    ) -> torch.Tensor:
        """Model vector z = L^-1 (s - a - b c) (N, 1 + 2L) float64 (arguments as :meth:`standardised`)."""
        return self.whiten(self.standardised(e_inc, counts, layer_e, u, fill), e_inc)

    def inverse(
        self, x: torch.Tensor, e_inc: Any, clamp: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(E_tot / E_inc (N,), mean hit energies (N, L) MeV, counts (N, L) int64) of model vectors.

        Counts are floor(exp(y) - 1); with ``clamp`` every quantity is clamped to its training range
        (counts also to [0, capacity]). Mean hit energies of layers without hits are meaningless.
        """
        n_l = self.n_layers
        s = self.unwhiten(x, e_inc)
        x = s * self._get("std", s) + self._get("mean", s)
        log_ratio, log_hit = x[:, 0], x[:, 1 : 1 + n_l]
        counts = torch.floor(torch.exp(x[:, 1 + n_l :]) - 1.0)
        if clamp:
            log_ratio = log_ratio.clamp(*np.log(self.ratio_range))
            hit_lo, hit_hi = self._get("log_hit_min", x), self._get("log_hit_max", x)
            log_hit = torch.maximum(torch.minimum(log_hit, hit_hi), hit_lo)
            count_lo, count_hi = self._get("count_min", x), self._get("count_max", x)
            counts = torch.maximum(torch.minimum(counts, count_hi), count_lo)
            if isinstance(self.capacity, int):
                counts = counts.clamp(0, self.capacity)
            else:
                counts = torch.minimum(counts.clamp_min(0), self._get("capacity", x))
        return torch.exp(log_ratio), torch.exp(log_hit), counts.long()

    def decode(self, x: torch.Tensor, e_inc: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts (N, L) int64, layer energies (N, L) float64 MeV) of sampled model vectors."""
        ratio, hit_energy, counts = self.inverse(x, e_inc, clamp=True)
        layer_e = counts.double() * hit_energy
        total = layer_e.sum(dim=1, keepdim=True)
        e_tot = ratio * _t(e_inc, x).reshape(-1)
        scale = torch.where(total > 0, e_tot[:, None] / torch.where(total > 0, total, 1.0), 0.0)
        return counts, layer_e * scale


class ShowerFlow(nn.Module):
    """Velocity field of the shower-level vector given the condition c (an MLP with time features)."""

    def __init__(self, dim: int, hidden: int, n_layers: int, time_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.net = TimeMLP(dim, 1, hidden, n_layers, time_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, cond)

    def loss(
        self, x1: torch.Tensor, cond: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, sigma_min: float
    ) -> torch.Tensor:
        """Flow-matching loss (mean squared velocity error) of data x1, noise x0 and times t (B,)."""
        xt, target = ot_path(x0, x1, t[:, None], sigma_min)
        return (self(xt, t, cond) - target).pow(2).mean()

    def sample(self, cond: torch.Tensor, steps: int, generator: torch.Generator) -> torch.Tensor:
        """Standardised vectors (N, dim) for conditions (N, 1): midpoint ODE solve from Gaussian noise."""
        x0 = torch.randn(cond.shape[0], self.dim, generator=generator, device=cond.device)
        return midpoint_solve(self.frozen_velocity(cond), x0, steps)

    def frozen_velocity(self, cond: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """velocity(x, t) for fixed conditions, equal to ``self(x, t, cond)`` but cheaper per call.

        The first layer of the MLP acts on [x, cond, time features]; its condition part is computed
        once, and its time part once per call for the single time of a midpoint step.
        """
        first, rest = self.net.net[0], self.net.net[1:]
        w_x, w_c, w_t = torch.split(first.weight, [self.dim, 1, self.net.time_dim], dim=1)
        base = first.bias + cond.to(w_c.dtype) @ w_c.T

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t_part = time_features(t[:1], self.net.time_dim).to(w_t.dtype) @ w_t.T
            return rest(torch.addmm(base + t_part, x.to(w_x.dtype), w_x.T))

        return velocity


def shower_tables(
    energy: np.ndarray, layer: np.ndarray, lengths: np.ndarray, n_layers: int
) -> tuple[np.ndarray, np.ndarray]:
    """(counts (N, L) int64, layer energies (N, L) float64) of ragged shower points."""
    lengths = np.asarray(lengths, dtype=np.int64)
    key = np.repeat(np.arange(len(lengths)), lengths) * n_layers + np.asarray(layer, dtype=np.int64)
    size = len(lengths) * n_layers
    counts = np.bincount(key, minlength=size).reshape(len(lengths), n_layers)
    layer_e = np.bincount(key, weights=np.asarray(energy, np.float64), minlength=size)
    return counts.astype(np.int64), layer_e.reshape(len(lengths), n_layers)


def depth_summaries(layer_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy-weighted mean layer and its standard deviation (N,) of layer energies (N, L)."""
    layer_e = layer_e.double()
    e_tot = layer_e.sum(dim=1).clamp_min(1e-30)
    idx = torch.arange(layer_e.shape[1], dtype=torch.float64, device=layer_e.device)
    depth = (layer_e * idx).sum(dim=1) / e_tot
    var = (layer_e * (idx[None, :] - depth[:, None]) ** 2).sum(dim=1) / e_tot
    return depth, torch.sqrt(var.clamp_min(0.0))
