"""The voxel-grid shower family: a conditional generative model of the whole (layer, alpha, r) grid.

Every shower is a dense grid (n_layers, n_alpha, n_r) (dataset 2: 45 x 16 x 9) rebuilt from its points
(voxel order (layer, alpha, r), r fastest, as in the shower rows). Voxel energies are mapped to
``y = log(1 + E / threshold)`` (a voxel at the 15.15 keV readout threshold is log 2, 1 TeV about 18),
an empty voxel to ``y = -empty_gap`` (a gap below the threshold, so that a slightly noisy sample of an
empty voxel stays below it), and standardised with the training split's mean and standard deviation
over all voxels. The network is a 3-D U-Net periodic in alpha (:mod:`pipelines.models.voxel_blocks`),
conditioned on standardised log E_inc. Two objectives (``objective``):

- ``flow-matching``: conditional flow matching on the OT path from Gaussian noise to the grid; sampling
  integrates the velocity with ``ode_steps`` midpoint steps.
- ``vae``: a conditional VAE, latent at the coarsest resolution, decoder mean as the sample.

Sampling maps back to energies, clips negative ones to 0 and applies the readout threshold (voxels
below 15.15 keV set to 0, counted as ``n_below_threshold``), so the sparsity compares with the data's.
Training grids are rotated by a random number of alpha bins (the calorimeter is symmetric in alpha).
Minibatches, rotations, noise and times come from the family's own CPU torch.Generator (its
:meth:`state_dict`); sampling draws everything from the ``torch_gen`` it is given.
"""

from __future__ import annotations

import dataclasses
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
from pipelines.models.voxel_blocks import GridUNet
from pipelines.training.validation import layer_energies, shower_figures


# ---------------------------------------------------------------------------------------------- grid
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


@dataclasses.dataclass(frozen=True)
class GridTransform:
    """y = log(1 + E / threshold) (E > 0) or -empty (E = 0), standardised: x = (y - shift) / scale;
    condition (log E_inc - cond_mean) / cond_std."""

    threshold: float
    empty: float
    shift: float
    scale: float
    cond_mean: float
    cond_std: float

    @classmethod
    def fit(cls, energies: np.ndarray, n_voxels_total: int, e_inc: np.ndarray, empty: float) -> GridTransform:
        """From the hit energies (MeV, all > 0) of all training showers, their voxel count, E_inc (MeV)
        and the level -empty of empty voxels."""
        y = np.log1p(np.asarray(energies, dtype=np.float64) / THRESHOLD_MEV)
        n_empty = n_voxels_total - len(y)
        mean = float((y.sum() - empty * n_empty) / n_voxels_total)
        var = float(((y**2).sum() + empty**2 * n_empty) / n_voxels_total - mean**2)
        log_e = np.log(np.asarray(e_inc, dtype=np.float64))
        return cls(THRESHOLD_MEV, float(empty), mean, math.sqrt(max(var, 1e-12)), float(log_e.mean()),
                   float(max(log_e.std(), 1e-6)))  # fmt: skip

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """Energies (MeV) -> standardised transformed grid."""
        y = torch.where(grid > 0, torch.log1p(grid.clamp_min(0.0) / self.threshold), -self.empty)
        return (y - self.shift) / self.scale

    def energies(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised grid -> energies (MeV), negative ones clipped to 0 (threshold not yet applied)."""
        return self.threshold * torch.expm1((x * self.scale + self.shift).clamp_min(0.0))

    def condition(self, e_inc: torch.Tensor) -> torch.Tensor:
        """(N,) MeV -> (N, 1) standardised log E_inc (float32)."""
        return ((torch.log(e_inc.double()) - self.cond_mean) / self.cond_std).float()[:, None]

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridTransform:
        return cls(**{f.name: float(data[f.name]) for f in dataclasses.fields(cls)})


# ---------------------------------------------------------------------------------------------- networks
class Embedding(nn.Module):
    """(time (B,), condition (B, 1)) -> (B, emb_dim): an MLP on [time features, condition]."""

    def __init__(self, time_dim: int, emb_dim: int) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.net = nn.Sequential(nn.Linear(time_dim + 1, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([time_features(t, self.time_dim), cond.float()], dim=1))


class GridVelocity(nn.Module):
    """Velocity field v(x_t, t, condition) of flow matching on grids (B, L, A, R)."""

    def __init__(self, s: VoxelGridSettings) -> None:
        super().__init__()
        self.embed = Embedding(s.time_dim, s.emb_dim)
        self.unet = GridUNet(1, 1, s.base_channels, s.levels, s.emb_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(x[:, None], self.embed(t, cond))[:, 0]


class GridEncoder(nn.Module):
    """q(z | grid, condition): (mean, log variance) of the latent (B, latent_channels, coarse shape)."""

    def __init__(self, s: VoxelGridSettings, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.latent_shape = coarse_shape(shape, s.levels)
        self.embed = Embedding(s.time_dim, s.emb_dim)
        self.unet = GridUNet(1, 2 * s.latent_channels, s.base_channels, s.levels, s.emb_dim)
        nn.init.normal_(self.unet.out.conv.weight, std=1e-2)  # the U-Net's zero output would stall the KL

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.zeros(x.shape[0], device=x.device)
        h = F.adaptive_avg_pool3d(self.unet(x[:, None], self.embed(t, cond)), self.latent_shape)
        mean, log_var = h.chunk(2, dim=1)
        return mean, log_var.clamp(-10.0, 10.0)


class GridDecoder(nn.Module):
    """p(grid | z, condition): the latent upsampled (nearest) to the grid, then the U-Net; its mean."""

    def __init__(self, s: VoxelGridSettings, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.embed = Embedding(s.time_dim, s.emb_dim)
        self.unet = GridUNet(s.latent_channels, 1, s.base_channels, s.levels, s.emb_dim)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        t = torch.zeros(z.shape[0], device=z.device)
        return self.unet(F.interpolate(z, size=self.shape, mode="nearest"), self.embed(t, cond))[:, 0]


def build_modules(s: VoxelGridSettings, shape: tuple[int, int, int]) -> dict[str, nn.Module]:
    """The trained modules of an objective: {"velocity"} or {"encoder", "decoder"}."""
    if s.objective == "flow-matching":
        return {"velocity": GridVelocity(s)}
    return {"encoder": GridEncoder(s, shape), "decoder": GridDecoder(s, shape)}


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
        transform: GridTransform,
        grid: tuple[int, int, int],
        settings: VoxelGridSettings,
        device: torch.device,
    ) -> None:
        self.modules, self.transform, self.grid = modules, transform, tuple(grid)
        self.settings, self.device = settings, device
        self.n_voxels = int(np.prod(self.grid))
        self.per_call = max(1, settings.max_voxels // self.n_voxels)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _grids(self, cond: torch.Tensor, torch_gen: torch.Generator) -> torch.Tensor:
        """Standardised grids (B, L, A, R) for conditions (B, 1)."""
        s, b = self.settings, cond.shape[0]
        if s.objective == "flow-matching":
            velocity = self.modules["velocity"]
            x0 = torch.randn(b, *self.grid, generator=torch_gen, device=self.device)
            return midpoint_solve(lambda x, t: velocity(x, t, cond), x0, s.ode_steps)
        decoder = self.modules["decoder"]
        z_shape = coarse_shape(self.grid, s.levels)
        z = torch.randn(b, s.latent_channels, *z_shape, generator=torch_gen, device=self.device)
        return decoder(z, cond)

    @torch.inference_mode()
    def sample_showers(
        self, energies: np.ndarray, torch_gen: torch.Generator
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Showers (N, n_voxels) float32 MeV for incident energies (N,) MeV; all noise from ``torch_gen``."""
        if torch_gen.device.type != self.device.type:
            raise ValueError(f"torch_gen is on {torch_gen.device}, the model on {self.device}")
        e_inc = torch.as_tensor(np.asarray(energies, dtype=np.float64).reshape(-1), device=self.device)
        n = e_inc.numel()
        out = torch.empty(n, self.n_voxels, dtype=torch.float32, device=self.device)
        self._sync()
        t0 = time.perf_counter()
        cond = self.transform.condition(e_inc)
        for s0 in range(0, n, self.per_call):
            s1 = min(n, s0 + self.per_call)
            out[s0:s1] = self._grids(cond[s0:s1], torch_gen).reshape(s1 - s0, -1).float()
        bad = ~torch.isfinite(out)
        n_bad = int(bad.sum())
        out[bad] = 0.0
        n_negative = int((out * self.transform.scale + self.transform.shift < 0).sum())
        self._sync()
        t1 = time.perf_counter()
        showers = self.transform.energies(out)
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
            "n_negative": n_negative,
            "n_below_threshold": n_low,
            "seconds_generate": t1 - t0,
            "seconds_convert": t2 - t1,
        }
        return result, counts


# ---------------------------------------------------------------------------------------------- family
@register_family
class VoxelGridFamily(Family):
    """A conditional 3-D convolutional model of the whole voxel grid (flow matching or VAE)."""

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
        if len(clouds) == 0 or not np.any(clouds.points[:, 0] > 0):
            raise ValueError("the training split holds no shower with energy")
        pts = clouds.points
        e_inc = clouds.conditions[:, 0]
        hit = pts[:, 0] > 0
        n_total = len(clouds) * self.n_voxels
        self.transform = GridTransform.fit(pts[hit, 0], n_total, e_inc, settings.empty_gap)
        voxel = (pts[:, 1].astype(np.int64) * n_alpha + pts[:, 2].astype(np.int64)) * n_r + pts[:, 3].astype(
            np.int64
        )
        self._energy = torch.as_tensor(pts[:, 0], dtype=torch.float32)
        self._voxel = torch.as_tensor(voxel)
        self._start = torch.as_tensor(clouds.offsets[:-1].copy())
        self._length = torch.as_tensor(clouds.lengths.copy())
        self._cond = self.transform.condition(torch.as_tensor(e_inc))
        self._modules = build_modules(settings, self.grid)
        for m in self._modules.values():
            m.to(device)
        self._gen = torch.Generator().manual_seed(int(data.seed))
        self._val_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ training contract
    def modules(self) -> dict[str, nn.Module]:
        return self._modules

    def param_groups(self) -> list[ParamGroup]:
        s = self.settings
        return [ParamGroup("grid", tuple(self._modules), lr=s.lr, weight_decay=s.weight_decay, ema=True)]

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(standardised grids (B, L, A, R), conditions (B, 1)) of random training showers, each
        rotated by a random number of alpha bins, on the family's device."""
        g, b = self._gen, self.settings.batch
        idx = torch.randint(len(self._length), (b,), generator=g)
        shift = torch.randint(self.grid[1], (b,), generator=g)
        size = self._length[idx]
        owner = torch.repeat_interleave(torch.arange(b), size)
        first = torch.cumsum(size, 0) - size
        point = torch.arange(int(size.sum())) - first[owner] + self._start[idx][owner]
        voxel = rotate_voxels(self._voxel[point], shift[owner], self.grid[1], self.grid[2])
        grid = grid_from_points(self._energy[point], voxel, owner, b, self.n_voxels)
        x = self.transform.forward(grid).view(b, *self.grid)
        return x.to(self.device), self._cond[idx].to(self.device)

    def train_step(self, ctx: StepContext) -> dict[str, float]:
        x1, cond = self.batch()
        if self.settings.objective == "flow-matching":
            b = x1.shape[0]
            x0 = torch.randn(x1.shape, generator=self._gen).to(self.device)
            t = torch.rand(b, generator=self._gen).to(self.device)
            xt, target = ot_path(x0, x1, t[:, None, None, None], self.settings.sigma_min)
            with ctx.autocast():
                loss = (self._modules["velocity"](xt, t, cond).float() - target).pow(2).mean()
            ctx.optimise("grid", loss)
            return {"loss": float(loss.detach())}
        latent = coarse_shape(self.grid, self.settings.levels)
        eps = torch.randn((x1.shape[0], self.settings.latent_channels, *latent), generator=self._gen)
        eps = eps.to(self.device)
        with ctx.autocast():
            mean, log_var = self._modules["encoder"](x1, cond)
            z = mean.float() + eps * torch.exp(0.5 * log_var.float())
            recon = self._modules["decoder"](z, cond).float()
            loss, rec, kl = vae_loss(x1, recon, mean.float(), log_var.float(), self.settings.kl_weight)
        ctx.optimise("grid", loss)
        return {"loss": float(loss.detach()), "reconstruction": float(rec.detach()), "kl": float(kl.detach())}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._gen.set_state(state["generator"])

    # ------------------------------------------------------------------ validation and export
    def sampler(self) -> VoxelGridSampler:
        """A sampler over the family's current modules (the loop swaps in EMA weights before validating)."""
        return VoxelGridSampler(self._modules, self.transform, self.grid, self.settings, self.device)

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
        modules = build_modules(settings, grid)
        for name, module in modules.items():
            module.load_state_dict(state[name])
            module.to(device).eval()
        return VoxelGridSampler(modules, GridTransform.from_dict(config["grid_transform"]), grid, settings,
                                device)  # fmt: skip

    @classmethod
    def needs_multiplicity(cls) -> bool:
        return False
