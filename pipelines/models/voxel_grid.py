"""The voxel-grid shower family: a shower-level flow and a conditional model of the whole voxel grid.

As CaloFlow splits layer energies (flow I) from normalised shapes (flow II), the family has two parts,
trained side by side (parameter groups "shower" and "grid"):

1. Shower level: the factorised family's flow (:mod:`pipelines.models.shower_flow`, the same transform,
   loss and sampler) draws E_tot / E_inc, the layer energies E_l and the layer hit counts n_l given
   E_inc.
2. Grid level: every shower is a dense grid (n_layers, n_alpha, n_r) (dataset 2: 45 x 16 x 9) rebuilt
   from its points (voxel order (layer, alpha, r), r fastest, as in the shower rows). A hit voxel is
   mapped to its share of the layer energy above the readout threshold T, (E - T) / (E_l - n_l T), to
   the power 1 / SHARE_POWER (y in [0, 1]); an empty voxel to a level below the smallest
   (:class:`GridTransform`). With ``hit_channel`` a second channel holds the hits' y alone (empty
   voxels at their ring's mean hit). Each channel is standardised per (layer, r) ring about a mean that
   is linear in log E_inc and log(1 + n_l) (``voxel_norm``, least squares on the training split), so the
   network models the residual and starts from the mean shape. The network is a 3-D U-Net
   periodic in alpha (:mod:`pipelines.models.voxel_blocks`), conditioned on standardised log E_inc
   (FiLM) and, as two extra input channels broadcast over each layer, on the standardised log E_l / E_inc
   and log(1 + n_l) (the data's when training, the shower flow's when sampling). Two objectives
   (``objective``): ``flow-matching`` (conditional flow matching on the OT path from Gaussian noise;
   sampling integrates the velocity with ``ode_steps`` midpoint steps) or ``vae`` (a conditional VAE,
   latent at the coarsest resolution, decoder mean as the sample).

Sampling (:func:`distribute`): in every layer the n_l voxels of highest generated y (first channel)
are hit (at most E_l / T of them); each holds the threshold plus its share (from the second channel,
where there is one) of the rest, so every layer sums to the
drawn E_l and E_tot and the layer profile are the shower flow's; then voxels below 15.15 keV (none
but float32 rounding) are set to 0 (counted as ``n_below_threshold``). Training grids are rotated by a
random number of alpha bins (the calorimeter is symmetric in alpha). Minibatches, rotations, noise and
times come from the family's own CPU torch.Generator (its :meth:`state_dict`); sampling draws
everything from the ``torch_gen`` it is given.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pipelines.geometry import THRESHOLD_MEV
from pipelines.models.family import Family, ParamGroup, StepContext, TrainingData, register_family
from pipelines.models.flow_matching import midpoint_solve, ot_path, time_features
from pipelines.models.settings import VoxelGridSettings
from pipelines.models.shower_flow import ShowerFlow, ShowerTransform, shower_tables
from pipelines.models.voxel_blocks import GridUNet
from pipelines.training.validation import layer_energies, shower_figures

# ---------------------------------------------------------------------------------------------- grid
#: shares of the layer energy are modelled as share^(1 / SHARE_POWER): errors of the network cost the
#: large voxels little (on log(share) they would be multiplied by its wide range)
SHARE_POWER = 4.0
#: every sampled hit holds at least this (a hair above the threshold, so that float32 keeps it)
FLOOR_MEV = THRESHOLD_MEV * (1.0 + 1e-6)


def excess_shares(energy: Any, layer_e: Any, counts: Any) -> Any:
    """Shares (E - threshold) / (E_layer - n_layer threshold) of hit voxels' energy above the threshold
    (arrays or tensors of the same shape; 0 where the layer holds no energy above its hits' threshold)."""
    free = layer_e - counts * THRESHOLD_MEV
    return (energy - THRESHOLD_MEV).clip(0.0) / free.clip(1e-30)


def grid_from_points(
    energy: torch.Tensor, voxel: torch.Tensor, owner: torch.Tensor, n: int, n_voxels: int
) -> torch.Tensor:
    """Dense showers (n, n_voxels) from point energies, flat voxel indices and owning shower rows
    (energies of points in one voxel add up)."""
    out = torch.zeros(n * n_voxels, dtype=energy.dtype, device=energy.device)
    out.index_put_((owner * n_voxels + voxel,), energy, accumulate=True)
    return out.view(n, n_voxels)


def rotate_voxels(voxel: torch.Tensor, shift: torch.Tensor, n_alpha: int, n_r: int) -> torch.Tensor:
    """Flat voxel indices (layer, alpha, r) with alpha -> (alpha + shift) mod n_alpha (shift per point)."""
    r = voxel % n_r
    alpha = (voxel // n_r) % n_alpha
    layer = voxel // (n_r * n_alpha)
    return (layer * n_alpha + (alpha + shift) % n_alpha) * n_r + r


def coarse_shape(shape: tuple[int, int, int], levels: int) -> tuple[int, int, int]:
    """The grid shape at the U-Net's coarsest level: the 2 x 2 x 2 patches and ``levels - 1`` stride-2
    steps (each axis halved, rounded up)."""
    out = tuple(shape)
    for _ in range(levels):
        out = tuple((s + 1) // 2 for s in out)
    return out  # type: ignore[return-value]


#: features of the per-voxel mean of the shapes (setting ``voxel_norm``): the number of regressors
#: (1, standardised log E_inc, standardised log(1 + n_layer)) of every (layer, r) ring's mean
VOXEL_NORM_FEATURES = {"ring": 1, "energy": 2, "energy-count": 3}
#: a ring's standard deviation is at least this fraction of the root mean square of all voxels' y
#: about their mean (rings never or hardly ever hit would otherwise turn a rare hit into a huge target)
STD_FLOOR = 0.1


def _nested(a: np.ndarray) -> Any:
    """An array as nested tuples of floats (hashable, JSON as nested lists)."""
    return tuple(_nested(v) for v in a) if np.ndim(a) > 1 else tuple(float(v) for v in a)


@dataclasses.dataclass(frozen=True)
class GridTransform:
    """Normalised shapes y = (E_voxel / E_layer)^(1 / SHARE_POWER) (hit voxels, 0 < y <= 1) or
    ``empty`` (empty voxels, ``empty_gap`` standard deviations of the hits' y below the smallest, at
    least a tenth of their root mean square), standardised per voxel ring (layer, r), the same in every
    alpha bin: x = (y - mean) / std with mean = coef[layer][r] . features(shower, layer), features
    (1, standardised log E_inc, standardised log(1 + n_layer)) (the first ``len(coef[0][0])``), and
    std[layer][r] the root mean square of the residual (least squares on the training split, at least
    STD_FLOOR of all voxels'); so a network output of 0 is the mean shape of such showers.
    Condition (log E_inc - cond_mean) / cond_std; per-layer conditions (log(E_layer / E_inc) -
    layer_mean) / layer_std (``layer_empty`` for a layer without energy) and (log(1 + n_layer) -
    count_mean) / count_std. All plain numbers and nested lists (JSON)."""

    empty: float
    cond_mean: float
    cond_std: float
    layer_mean: float
    layer_std: float
    layer_empty: float
    count_mean: float
    count_std: float
    coef: tuple[tuple[tuple[float, ...], ...], ...]  # (n_layers, n_r, n_features)
    std: tuple[tuple[float, ...], ...]  # (n_layers, n_r)
    coef_hit: tuple[tuple[tuple[float, ...], ...], ...] = ()  # the same of the hits' y alone, or ()
    std_hit: tuple[tuple[float, ...], ...] = ()

    @classmethod
    def fit(
        cls, share: np.ndarray, shower: np.ndarray, layer: np.ndarray, ring: np.ndarray, n_alpha: int,
        n_r: int, e_inc: np.ndarray, layer_e: np.ndarray, counts: np.ndarray, empty_gap: float,
        n_features: int = 3, hit_channel: bool = False,
    ) -> GridTransform:  # fmt: skip
        """From the hit voxels' shares (:func:`excess_shares`, in [0, 1]) of the training showers with
        their shower rows, layers and r bins, the alpha and r bins per layer, E_inc (N,) MeV, layer
        energies and hit counts (N, L), the gap of empty voxels and the number of mean features."""
        if n_features not in VOXEL_NORM_FEATURES.values():
            raise ValueError(f"n_features must be one of {sorted(VOXEL_NORM_FEATURES.values())}")
        y = np.asarray(share, dtype=np.float64) ** (1.0 / SHARE_POWER)
        unit = max(y.std(), 0.1 * math.sqrt((y**2).mean()))  # not 0 where all shares are alike
        empty = float(y.min() - empty_gap * unit)
        e_inc = np.asarray(e_inc, dtype=np.float64)
        layer_e = np.asarray(layer_e, dtype=np.float64)
        n_show, n_l = layer_e.shape
        log_e = np.log(e_inc)
        hit = layer_e > 0
        frac = np.log(layer_e[hit] / np.broadcast_to(e_inc[:, None], layer_e.shape)[hit])
        log_n = np.log1p(np.asarray(counts, dtype=np.float64))
        layer_std = float(max(frac.std(), 1e-6))
        base = cls(
            empty, float(log_e.mean()), float(max(log_e.std(), 1e-6)), float(frac.mean()), layer_std,
            float((frac.min() - frac.mean()) / layer_std - 1.0), float(log_n.mean()),
            float(max(log_n.std(), 1e-6)), (((0.0,) * n_features,) * n_r,) * n_l, ((1.0,) * n_r,) * n_l,
        )  # fmt: skip
        feats = base.features(torch.as_tensor(e_inc), torch.as_tensor(counts)).numpy()  # (N, L, K)
        # least squares per ring over all showers and alpha bins; empty voxels hold y = empty, so the
        # sums are those of a grid of `empty` plus the hits' (y - empty)
        gram = n_alpha * np.einsum("slk,slm->lkm", feats, feats)  # (L, K, K), the same for every r
        cell = np.asarray(layer, dtype=np.int64) * n_r + np.asarray(ring, dtype=np.int64)
        f_hit = feats[np.asarray(shower, dtype=np.int64), np.asarray(layer, dtype=np.int64)]  # (H, K)
        dy = y - empty
        fy = np.stack([np.bincount(cell, f_hit[:, k] * dy, minlength=n_l * n_r) for k in range(n_features)],
                      axis=1).reshape(n_l, n_r, n_features)  # fmt: skip
        fy += (empty * n_alpha * feats.sum(axis=0))[:, None, :]
        yy = empty**2 * n_show * n_alpha + np.bincount(cell, y**2 - empty**2, minlength=n_l * n_r)
        ridge = 1e-9 * n_show * n_alpha * np.eye(n_features)  # constant features (layers never hit)
        coef = np.stack([np.linalg.solve(gram[i] + ridge, fy[i].T).T for i in range(n_l)])  # (L, R, K)
        rss = (yy.reshape(n_l, n_r) - (coef * fy).sum(axis=2)).clip(0.0)
        total = (
            yy.sum() / (n_show * n_alpha * n_r * n_l)
            - (fy[..., 0].sum() / (n_show * n_alpha * n_r * n_l)) ** 2
        )
        std = np.sqrt(rss / (n_show * n_alpha)).clip(STD_FLOOR * math.sqrt(max(total, 1e-12)))
        out = dataclasses.replace(base, coef=_nested(coef), std=_nested(std))
        if not hit_channel:
            return out
        # the hits' y alone per ring (slopes shrunk towards 0 by the weight of one hit: sparse rings)
        pairs = f_hit[:, :, None] * f_hit[:, None, :]
        gram_hit = np.stack([np.bincount(cell, pairs[:, k, m], minlength=n_l * n_r)
                             for k in range(n_features) for m in range(n_features)], axis=1)  # fmt: skip
        gram_hit = gram_hit.reshape(n_l * n_r, n_features, n_features)
        fy_hit = np.stack([np.bincount(cell, f_hit[:, k] * y, minlength=n_l * n_r)
                           for k in range(n_features)], axis=1)  # fmt: skip
        ridge_hit = np.diag([1e-9] + [1.0] * (n_features - 1))
        coef_hit = np.stack([np.linalg.solve(gram_hit[i] + ridge_hit, fy_hit[i]) for i in range(n_l * n_r)])
        n_hit = np.bincount(cell, minlength=n_l * n_r)
        rss_hit = (np.bincount(cell, y**2, minlength=n_l * n_r) - (coef_hit * fy_hit).sum(axis=1)).clip(0.0)
        std_hit = np.sqrt(rss_hit / n_hit.clip(1)).clip(STD_FLOOR * max(float(y.std()), 1e-6))
        return dataclasses.replace(
            out,
            coef_hit=_nested(coef_hit.reshape(n_l, n_r, n_features)),
            std_hit=_nested(std_hit.reshape(n_l, n_r)),
        )

    def features(self, e_inc: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """(N, L, K) float64 regressors of the ring means: 1, standardised log E_inc, log(1 + n_layer)."""
        n_f = len(self.coef[0][0])
        cols = [torch.ones(counts.shape, dtype=torch.float64, device=counts.device)]
        cols.append(
            ((torch.log(e_inc.double()) - self.cond_mean) / self.cond_std)[:, None].expand(counts.shape)
        )
        cols.append((torch.log1p(counts.double()) - self.count_mean) / self.count_std)
        return torch.stack(cols[:n_f], dim=2)

    @property
    def channels(self) -> int:
        """1 (y of all voxels) or 2 (and the hits' y alone: empty voxels 0, the ring's mean hit)."""
        return 2 if self.coef_hit else 1

    def moments(
        self, e_inc: torch.Tensor, counts: torch.Tensor, hits: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean (N, L, 1, R), std (1, L, 1, R)) float64 of y for E_inc (N,) and hit counts (N, L) (of the
        hits' y alone if ``hits``)."""
        coef = torch.tensor(self.coef_hit if hits else self.coef, dtype=torch.float64, device=counts.device)
        std = torch.tensor(self.std_hit if hits else self.std, dtype=torch.float64, device=counts.device)
        mean = torch.einsum("nlk,lrk->nlr", self.features(e_inc, counts), coef)
        return mean[:, :, None, :], std[None, :, None, :]

    def forward(
        self, grid: torch.Tensor, e_inc: torch.Tensor, layer_e: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        """Energies (B, L, A, R) MeV, E_inc (B,) MeV, layer energies and hit counts (B, L) ->
        standardised shapes (B, channels, L, A, R) float32."""
        share = excess_shares(grid.double(), layer_e[:, :, None, None].double(), counts[:, :, None, None])
        y = share ** (1.0 / SHARE_POWER)
        mean, std = self.moments(e_inc, counts)
        out = [(torch.where(grid > 0, y, self.empty) - mean) / std]
        if self.coef_hit:
            mean, std = self.moments(e_inc, counts, hits=True)
            out.append(torch.where(grid > 0, (y - mean) / std, 0.0))
        return torch.stack(out, dim=1).float()

    def shape(
        self, x: torch.Tensor, e_inc: torch.Tensor, counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised grids (N, channels, L, A, R) -> (y of every voxel, the hits' y: the second channel's
        where there is one, else the same) float64; on hits the inverse of :meth:`forward`."""
        mean, std = self.moments(e_inc, counts)
        y = x[:, 0].double() * std + mean
        if not self.coef_hit:
            return y, y
        mean, std = self.moments(e_inc, counts, hits=True)
        return y, x[:, 1].double() * std + mean

    @staticmethod
    def share(y: torch.Tensor) -> torch.Tensor:
        """y -> unnormalised shares max(y, 0)^SHARE_POWER."""
        return y.clamp_min(0.0) ** SHARE_POWER

    def condition(self, e_inc: torch.Tensor) -> torch.Tensor:
        """(N,) MeV -> (N, 1) standardised log E_inc (float32)."""
        return ((torch.log(e_inc.double()) - self.cond_mean) / self.cond_std).float()[:, None]

    def layer_condition(
        self, e_inc: torch.Tensor, layer_e: torch.Tensor, counts: torch.Tensor
    ) -> torch.Tensor:
        """(N, 2, L) float32: standardised log(E_layer / E_inc) and log(1 + n_layer) of every layer."""
        layer_e = layer_e.double()
        ratio = layer_e / e_inc.double()[:, None]
        frac = torch.where(ratio > 0, (torch.log(ratio.clamp_min(1e-300)) - self.layer_mean) / self.layer_std,
                           self.layer_empty)  # fmt: skip
        log_n = (torch.log1p(counts.double()) - self.count_mean) / self.count_std
        return torch.stack([frac, log_n], dim=1).float()

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # nested lists

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridTransform:
        nested = ("coef", "std", "coef_hit", "std_hit")
        fields = {f.name: float(data[f.name]) for f in dataclasses.fields(cls) if f.name not in nested}
        return cls(**fields, **{k: _nested(np.asarray(data.get(k, ()), dtype=np.float64)) for k in nested})


def distribute(
    share: torch.Tensor, counts: torch.Tensor, layer_e: torch.Tensor, rank: torch.Tensor | None = None
) -> torch.Tensor:
    """Voxel energies (N, L, V) float64 of generated shares (N, L, V) >= 0 that sum to ``layer_e`` (N, L).

    In every layer the n voxels of highest ``rank`` (default: the share; y, which orders also the
    voxels of share 0) are hit, n = ``counts`` (N, L) but at most
    E_layer / FLOOR_MEV (at least 1 where counts > 0): each gets FLOOR_MEV (or E_layer / n, if less)
    plus its share of the rest (equal parts where the kept shares are all 0).
    """
    layer_e = layer_e.double()
    n = torch.minimum(counts.double(), torch.floor(layer_e / FLOOR_MEV))
    n = torch.where(counts > 0, n.clamp_min(1.0), 0.0)
    order = torch.argsort(share if rank is None else rank, dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(share.shape[-1], device=share.device).expand_as(order))
    keep = rank < n[..., None]
    w = torch.where(keep, share.double(), 0.0)
    w = torch.where(w.sum(dim=-1, keepdim=True) > 0, w, keep.double())
    floor = torch.minimum(torch.full_like(layer_e, FLOOR_MEV), layer_e / n.clamp_min(1.0))
    free = (layer_e - n * floor)[..., None] * w / w.sum(dim=-1, keepdim=True).clamp_min(1e-300)
    return torch.where(keep, floor[..., None] + free, 0.0)


# ---------------------------------------------------------------------------------------------- networks
class Embedding(nn.Module):
    """(time (B,), condition (B, 1)) -> (B, emb_dim): an MLP on [time features, condition]."""

    def __init__(self, time_dim: int, emb_dim: int) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.net = nn.Sequential(nn.Linear(time_dim + 1, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([time_features(t, self.time_dim), cond.float()], dim=1))


#: per-layer condition channels (log layer energy, log hit count) beside the grid
LAYER_CHANNELS = 2


def with_layers(x: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
    """Grid channels (B, C, L, A, R) and layer conditions (B, K, L) -> (B, C + K, L, A, R)."""
    b, _, n_l, n_a, n_r = x.shape
    return torch.cat([x, layers.to(x.dtype)[:, :, :, None, None].expand(b, -1, n_l, n_a, n_r)], dim=1)


class GridVelocity(nn.Module):
    """Velocity field v(x_t, t, condition, layer conditions) of flow matching on grids (B, L, A, R)."""

    def __init__(self, s: VoxelGridSettings, channels: int = 1) -> None:
        super().__init__()
        self.embed = Embedding(s.time_dim, s.emb_dim)
        self.unet = GridUNet(channels + LAYER_CHANNELS, channels, s.base_channels, s.levels, s.emb_dim)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, layers: torch.Tensor
    ) -> torch.Tensor:
        return self.unet(with_layers(x, layers), self.embed(t, cond))


class GridEncoder(nn.Module):
    """q(z | grid, condition): (mean, log variance) of the latent (B, latent_channels, coarse shape)."""

    def __init__(self, s: VoxelGridSettings, shape: tuple[int, int, int], channels: int = 1) -> None:
        super().__init__()
        self.latent_shape = coarse_shape(shape, s.levels)
        self.embed = Embedding(s.time_dim, s.emb_dim)
        self.unet = GridUNet(
            channels + LAYER_CHANNELS, 2 * s.latent_channels, s.base_channels, s.levels, s.emb_dim
        )
        nn.init.normal_(self.unet.out.conv.weight, std=1e-2)  # the U-Net's zero output would stall the KL

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, layers: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.zeros(x.shape[0], device=x.device)
        h = self.unet(with_layers(x, layers), self.embed(t, cond))
        h = F.adaptive_avg_pool3d(h, self.latent_shape)
        mean, log_var = h.chunk(2, dim=1)
        return mean, log_var.clamp(-10.0, 10.0)


class GridDecoder(nn.Module):
    """p(grid | z, condition): the latent upsampled (nearest) to the grid, then the U-Net; its mean."""

    def __init__(self, s: VoxelGridSettings, shape: tuple[int, int, int], channels: int = 1) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.embed = Embedding(s.time_dim, s.emb_dim)
        self.unet = GridUNet(
            s.latent_channels + LAYER_CHANNELS, channels, s.base_channels, s.levels, s.emb_dim
        )

    def forward(self, z: torch.Tensor, cond: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
        t = torch.zeros(z.shape[0], device=z.device)
        z = with_layers(F.interpolate(z, size=self.shape, mode="nearest"), layers)
        return self.unet(z, self.embed(t, cond))


def build_modules(s: VoxelGridSettings, shape: tuple[int, int, int], channels: int) -> dict[str, nn.Module]:
    """The trained modules: the shower flow, and {"velocity"} or {"encoder", "decoder"} of the grid
    (``channels`` grid channels, :attr:`GridTransform.channels`)."""
    flow = ShowerFlow(1 + 2 * shape[0], s.shower_hidden, s.shower_blocks, s.time_dim)
    if s.objective == "flow-matching":
        return {"shower_flow": flow, "velocity": GridVelocity(s, channels)}
    return {"shower_flow": flow, "encoder": GridEncoder(s, shape, channels),
            "decoder": GridDecoder(s, shape, channels)}  # fmt: skip


def vae_loss(
    x: torch.Tensor, recon: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, kl_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, reconstruction, KL) per voxel: 0.5 sum (x - recon)^2 + kl_weight KL(q || N(0, 1)), per
    shower, averaged over showers and divided by the voxels per shower."""
    n_vox = x[0].numel()
    rec = 0.5 * (x - recon).pow(2).flatten(1).sum(1).mean() / n_vox
    kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).flatten(1).sum(1).mean() / n_vox
    return rec + kl_weight * kl, rec, kl


# ---------------------------------------------------------------------------------------------- sampler
class VoxelGridSampler:
    """Generates voxelised showers (the family's :class:`~pipelines.models.family.ShowerSampler`)."""

    def __init__(
        self,
        modules: dict[str, nn.Module],
        shower_transform: ShowerTransform,
        transform: GridTransform,
        grid: tuple[int, int, int],
        settings: VoxelGridSettings,
        device: torch.device,
    ) -> None:
        self.modules, self.shower_transform, self.transform = modules, shower_transform, transform
        self.grid, self.settings, self.device = tuple(grid), settings, device
        self.n_voxels = int(np.prod(self.grid))
        self.per_call = max(1, settings.max_voxels // self.n_voxels)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _grids(self, cond: torch.Tensor, layers: torch.Tensor, torch_gen: torch.Generator) -> torch.Tensor:
        """Standardised grids (B, L, A, R) for conditions (B, 1) and layer conditions (B, 2, L)."""
        s, b = self.settings, cond.shape[0]
        if s.objective == "flow-matching":
            velocity = self.modules["velocity"]
            x0 = torch.randn(b, self.transform.channels, *self.grid, generator=torch_gen, device=self.device)
            return midpoint_solve(lambda x, t: velocity(x, t, cond, layers), x0, s.ode_steps)
        z_shape = coarse_shape(self.grid, s.levels)
        z = torch.randn(b, s.latent_channels, *z_shape, generator=torch_gen, device=self.device)
        return self.modules["decoder"](z, cond, layers)

    def layered(
        self, e_inc: torch.Tensor, torch_gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(showers (N, L, A R) float64 MeV before the threshold, layer energies (N, L) drawn by the
        shower flow, number of non-finite grid values) for E_inc (N,) MeV."""
        n = e_inc.numel()
        flow = self.modules["shower_flow"]
        x = flow.sample(self.shower_transform.condition(e_inc).to(self.device), self.settings.ode_steps,
                        torch_gen)  # fmt: skip
        counts, layer_e = self.shower_transform.decode(torch.nan_to_num(x.double()), e_inc)
        cond = self.transform.condition(e_inc)
        layers = self.transform.layer_condition(e_inc, layer_e, counts)
        out = torch.empty(n, self.transform.channels, *self.grid, dtype=torch.float32, device=self.device)
        for s0 in range(0, n, self.per_call):
            s1 = min(n, s0 + self.per_call)
            out[s0:s1] = self._grids(cond[s0:s1], layers[s0:s1], torch_gen).float()
        bad = ~torch.isfinite(out)
        y, y_hit = self.transform.shape(out.nan_to_num(), e_inc, counts)
        bad = bad.any(dim=1)
        y = torch.where(bad, self.transform.empty, y).reshape(n, self.grid[0], -1)
        share = torch.where(bad, 0.0, self.transform.share(y_hit)).reshape(n, self.grid[0], -1)
        return distribute(share, counts, layer_e, rank=y), layer_e, int(bad.sum())

    @torch.inference_mode()
    def sample_showers(
        self, energies: np.ndarray, torch_gen: torch.Generator
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Showers (N, n_voxels) float32 MeV for incident energies (N,) MeV; all noise from ``torch_gen``."""
        if torch_gen.device.type != self.device.type:
            raise ValueError(f"torch_gen is on {torch_gen.device}, the model on {self.device}")
        e_inc = torch.as_tensor(np.asarray(energies, dtype=np.float64).reshape(-1), device=self.device)
        self._sync()
        t0 = time.perf_counter()
        layered, _, n_bad = self.layered(e_inc, torch_gen)
        self._sync()
        t1 = time.perf_counter()
        showers = layered.reshape(e_inc.numel(), -1).float()
        low = (showers > 0) & (showers < THRESHOLD_MEV)
        n_low = int(low.sum())
        showers[low] = 0.0
        result = showers.cpu().numpy()
        t2 = time.perf_counter()
        counts = {
            "n_points": int(np.count_nonzero(result)),
            "n_collided": 0,
            "n_dropped": 0,
            "n_nonfinite": n_bad,
            "n_negative": 0,
            "n_below_threshold": n_low,
            "seconds_generate": t1 - t0,
            "seconds_convert": t2 - t1,
        }
        return result, counts


# ---------------------------------------------------------------------------------------------- family
@register_family
class VoxelGridFamily(Family):
    """Shower-level flow (E_tot, layer energies, hit counts) + a conditional 3-D convolutional model of
    the normalised shapes of the whole voxel grid (flow matching or VAE)."""

    name = "voxel-grid"
    kinds = ("showers",)
    per_layer_geometries = False  # the regular grids of datasets 2 and 3
    Settings = VoxelGridSettings

    def __init__(self, settings: VoxelGridSettings, data: TrainingData, device: torch.device) -> None:
        super().__init__(settings, data, device)
        geo = data.geometry
        self.grid = (int(geo.n_layers), int(geo.n_alpha), int(geo.n_r))
        n_l, n_alpha, n_r = self.grid
        self.n_voxels = n_l * n_alpha * n_r
        clouds = data.clouds.select(np.asarray(data.train_idx, dtype=np.int64))
        counts, layer_e = shower_tables(clouds.points[:, 0], clouds.points[:, 1], clouds.lengths, n_l)
        usable = np.flatnonzero(layer_e.sum(axis=1) > 0)
        if len(usable) == 0:
            raise ValueError("the training split holds no shower with energy")
        clouds, counts, layer_e = clouds.select(usable), counts[usable], layer_e[usable]
        pts, e_inc = clouds.points, clouds.conditions[:, 0]
        self.shower_transform = ShowerTransform.fit(
            e_inc, counts, layer_e, n_alpha * n_r, seed=int(data.seed)
        )
        shower = np.repeat(np.arange(len(clouds)), clouds.lengths)
        hit = pts[:, 0] > 0
        key = (shower[hit], pts[hit, 1].astype(np.int64))
        share = excess_shares(pts[hit, 0].astype(np.float64), layer_e[key], counts[key])
        self.transform = GridTransform.fit(
            share, key[0], key[1], pts[hit, 3].astype(np.int64), n_alpha, n_r, e_inc, layer_e, counts,
            settings.empty_gap, VOXEL_NORM_FEATURES[settings.voxel_norm], settings.hit_channel,
        )  # fmt: skip
        voxel = (pts[:, 1].astype(np.int64) * n_alpha + pts[:, 2].astype(np.int64)) * n_r + pts[:, 3].astype(
            np.int64
        )
        self._energy = torch.as_tensor(pts[:, 0], dtype=torch.float32)
        self._voxel = torch.as_tensor(voxel)
        self._start = torch.as_tensor(clouds.offsets[:-1].copy())
        self._length = torch.as_tensor(clouds.lengths.copy())
        self._e_inc = torch.as_tensor(e_inc, dtype=torch.float64)
        self._counts = torch.as_tensor(counts)
        self._layer_e = torch.as_tensor(layer_e)
        self._cond = self.transform.condition(self._e_inc)
        self._layers = self.transform.layer_condition(self._e_inc, self._layer_e, self._counts)
        self._shower_cond = self.shower_transform.condition(self._e_inc)
        self._modules = build_modules(settings, self.grid, self.transform.channels)
        for m in self._modules.values():
            m.to(device)
        self._gen = torch.Generator().manual_seed(int(data.seed))
        self._val_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ training contract
    def modules(self) -> dict[str, nn.Module]:
        return self._modules

    def param_groups(self) -> list[ParamGroup]:
        s = self.settings
        grid = tuple(name for name in self._modules if name != "shower_flow")
        return [
            ParamGroup("shower", ("shower_flow",), lr=s.shower_lr, weight_decay=s.weight_decay, ema=True),
            ParamGroup("grid", grid, lr=s.lr, weight_decay=s.weight_decay, ema=True),
        ]

    def shower_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x1, cond, x0, t) of one shower-level minibatch (as the factorised family's), on the device."""
        s, g, n_l = self.settings, self._gen, self.grid[0]
        idx = torch.randint(len(self._e_inc), (s.shower_batch,), generator=g)
        u = torch.rand(s.shower_batch, n_l, generator=g, dtype=torch.float64)
        fill = torch.randn(s.shower_batch, n_l, generator=g, dtype=torch.float64)
        x0 = torch.randn(s.shower_batch, self.shower_transform.dim, generator=g)
        t = torch.rand(s.shower_batch, generator=g)
        x1 = self.shower_transform.forward(self._e_inc[idx], self._counts[idx], self._layer_e[idx], u, fill)
        d = self.device
        return x1.float().to(d), self._shower_cond[idx].to(d), x0.to(d), t.to(d)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(standardised shapes (B, L, A, R), conditions (B, 1), layer conditions (B, 2, L)) of random
        training showers, each rotated by a random number of alpha bins, on the family's device."""
        g, b = self._gen, self.settings.batch
        idx = torch.randint(len(self._length), (b,), generator=g)
        shift = torch.randint(self.grid[1], (b,), generator=g)
        size = self._length[idx]
        owner = torch.repeat_interleave(torch.arange(b), size)
        first = torch.cumsum(size, 0) - size
        point = torch.arange(int(size.sum())) - first[owner] + self._start[idx][owner]
        voxel = rotate_voxels(self._voxel[point], shift[owner], self.grid[1], self.grid[2])
        grid = grid_from_points(self._energy[point], voxel, owner, b, self.n_voxels)
        x = self.transform.forward(grid.view(b, *self.grid), self._e_inc[idx], self._layer_e[idx],
                                   self._counts[idx])  # fmt: skip
        d = self.device
        return x.to(d), self._cond[idx].to(d), self._layers[idx].to(d)

    def train_step(self, ctx: StepContext) -> dict[str, float]:
        s = self.settings
        x1, cond, x0, t = self.shower_batch()
        with ctx.autocast():
            loss_shower = self._modules["shower_flow"].loss(x1, cond, x0, t, s.sigma_min)
        ctx.optimise("shower", loss_shower)
        out = {"loss_shower": float(loss_shower.detach())}
        x1, cond, layers = self.batch()
        if s.objective == "flow-matching":
            b = x1.shape[0]
            x0 = torch.randn(x1.shape, generator=self._gen).to(self.device)
            t = torch.rand(b, generator=self._gen).to(self.device)
            xt, target = ot_path(x0, x1, t[:, None, None, None, None], s.sigma_min)
            with ctx.autocast():
                loss = (self._modules["velocity"](xt, t, cond, layers).float() - target).pow(2).mean()
            ctx.optimise("grid", loss)
            return {"loss": float(loss.detach()), **out}
        latent = coarse_shape(self.grid, s.levels)
        eps = torch.randn((x1.shape[0], s.latent_channels, *latent), generator=self._gen).to(self.device)
        with ctx.autocast():
            mean, log_var = self._modules["encoder"](x1, cond, layers)
            z = mean.float() + eps * torch.exp(0.5 * log_var.float())
            recon = self._modules["decoder"](z, cond, layers).float()
            loss, rec, kl = vae_loss(x1, recon, mean.float(), log_var.float(), s.kl_weight)
        ctx.optimise("grid", loss)
        return {"loss": float(loss.detach()), "reconstruction": float(rec.detach()), "kl": float(kl.detach()),
                **out}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._gen.set_state(state["generator"])

    # ------------------------------------------------------------------ validation and export
    def sampler(self) -> VoxelGridSampler:
        """A sampler over the family's current modules (the loop swaps in EMA weights before validating)."""
        return VoxelGridSampler(
            self._modules, self.shower_transform, self.transform, self.grid, self.settings, self.device
        )

    def _validation_reference(self, n_max: int) -> tuple[np.ndarray, np.ndarray]:
        if self._val_cache is None or self._val_cache[0] != n_max:
            idx = np.asarray(self.data.val_idx, dtype=np.int64)[:n_max]
            sub = self.data.clouds.select(idx)
            ref = layer_energies(sub.points[:, 0], sub.points[:, 1], sub.lengths, self.grid[0])
            self._val_cache = (n_max, sub.conditions[:, 0].copy(), ref)
        return self._val_cache[1], self._val_cache[2]

    def validate(self, n_max: int, seed: int) -> dict[str, float]:
        e_inc, ref_layers = self._validation_reference(n_max)
        if len(e_inc) == 0:
            return {}
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        showers, counts = self.sampler().sample_showers(e_inc, gen)
        gen_layers = showers.reshape(len(e_inc), self.grid[0], -1).sum(axis=2, dtype=np.float64)
        figures = shower_figures(e_inc, gen_layers, e_inc, ref_layers)
        figures["hits_per_shower"] = counts["n_points"] / len(e_inc)
        return figures

    def export_config(self) -> dict[str, Any]:
        return {
            "settings": dataclasses.asdict(self.settings),
            "grid_transform": self.transform.to_dict(),
            "shower_transform": self.shower_transform.to_dict(),
            "grid": list(self.grid),
        }

    @classmethod
    def build_sampler(
        cls,
        config: dict[str, Any],
        state: dict[str, dict[str, torch.Tensor]],
        transform: Any,
        geometry: Any,
        device: torch.device,
    ) -> VoxelGridSampler:
        settings = VoxelGridSettings(**config["settings"])
        grid = tuple(int(v) for v in config["grid"])
        if geometry is not None and tuple(geometry.grid_shape) != grid:
            raise ValueError(
                f"model trained for grid {grid}, geometry {geometry.name} is {geometry.grid_shape}"
            )
        shower_transform = ShowerTransform.from_dict(config["shower_transform"])
        transform = GridTransform.from_dict(config["grid_transform"])
        modules = build_modules(settings, grid, transform.channels)
        for name, module in modules.items():
            module.load_state_dict(state[name])
            module.to(device).eval()
        return VoxelGridSampler(modules, shower_transform, transform, grid, settings, device)

    @classmethod
    def needs_multiplicity(cls) -> bool:
        return False
