"""The factorised shower family: shower-level flow matching, point-level likelihood model, exact decoding.

1. Shower level (:mod:`pipelines.models.shower_flow`): conditional flow matching draws, given log E_inc,
   E_tot / E_inc, the mean hit energy of every layer and the layer hit counts n_l; decoded into n_l and
   layer energies E_l that sum to the sampled E_tot (a layer without hits has no energy).
2. Point level (:mod:`pipelines.models.point_model`): for every layer with n_l > 0, exactly n_l points,
   each with a ring r, an alpha and a share of the layer energy, given per-layer features of the shower.
3. Decoding (:mod:`pipelines.models.decoding`): every point holds a voxel of its own: the default
   ``placement="pareto"`` draws n_l distinct voxels, ``"independent"`` draws each point's voxel on its
   own and then resolves collisions (the higher-energy point keeps a contested voxel, the others move
   to the nearest free voxel of the layer; counted as ``n_collided``). A layer never has more points
   than voxels (the shower level clamps n_l to n_alpha * n_r; the decoder would keep the highest-energy
   points). Each layer's voxel energies are rescaled to the sampled E_l, so E_tot and the layer profile
   are the shower level's to float32 precision. Then voxels below the 15.15 keV readout threshold are
   set to 0 (counted as ``n_below_threshold``): the threshold comes after the rescaling, so a layer's
   sum can end up below its sampled energy by the energy of its sub-threshold voxels.

Training: each step is one AdamW update of the shower flow (group "shower") and one of the point model
(group "points"); minibatches (showers, (shower, layer) pairs, flow-matching noise and times,
dequantisation and fill noise) come from the family's own CPU torch.Generator seeded from the run
seed, whose state is the family's :meth:`state_dict`, so a resumed run continues the same data stream.
Sampling draws everything from the ``torch_gen`` it is given (same seed, same device: same showers).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.geometry import THRESHOLD_MEV
from pipelines.models.decoding import (
    Resolved,
    neighbour_order,
    resolve_collisions,
    scale_to_targets,
    voxelise,
)
from pipelines.models.family import (
    Family,
    ParamGroup,
    StepContext,
    TrainingData,
    global_mean,
    register_family,
    rows_of,
)
from pipelines.models.point_model import PointModel, pair_features, sample_points, shower_summary
from pipelines.models.settings import FactorisedSettings
from pipelines.models.shower_flow import ShowerFlow, ShowerTransform, shower_tables
from pipelines.training.validation import layer_energies, shower_figures


def _build_modules(
    settings: FactorisedSettings, n_layers: int, n_alpha: int, n_r: int
) -> dict[str, nn.Module]:
    flow = ShowerFlow(1 + 2 * n_layers, settings.shower_hidden, settings.shower_blocks, settings.time_dim)
    points = PointModel(
        n_layers, n_alpha, n_r, settings.point_hidden, settings.point_blocks, settings.n_components
    )
    return {"shower_flow": flow, "point_model": points}


class FactorisedSampler:
    """Generates voxelised showers (the family's :class:`~pipelines.models.family.ShowerSampler`)."""

    def __init__(
        self,
        flow: ShowerFlow,
        points: PointModel,
        transform: ShowerTransform,
        y_range: tuple[float, float],
        grid: tuple[int, int, int],
        ode_steps: int,
        placement: str,
        device: torch.device,
    ) -> None:
        self.flow, self.points, self.transform = flow, points, transform
        self.y_range = (float(y_range[0]), float(y_range[1]))
        self.n_layers, self.n_alpha, self.n_r = grid
        self.ode_steps, self.placement, self.device = ode_steps, placement, device
        self.order = neighbour_order(self.n_alpha, self.n_r, device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def sample_showers(
        self, energies: np.ndarray, torch_gen: torch.Generator
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Showers (N, n_voxels) float32 MeV for incident energies (N,) MeV; all noise from ``torch_gen``."""
        if torch_gen.device.type != self.device.type:
            raise ValueError(f"torch_gen is on {torch_gen.device}, the model on {self.device}")
        n_l, n_vox = self.n_layers, self.n_alpha * self.n_r
        e_inc = torch.as_tensor(np.asarray(energies, dtype=np.float64).reshape(-1), device=self.device)
        n = e_inc.numel()
        self._sync()
        t0 = time.perf_counter()
        cond = self.transform.condition(e_inc)
        x = torch.nan_to_num(self.flow.sample(cond, self.ode_steps, torch_gen).double())
        counts, layer_e = self.transform.decode(x, e_inc)
        summary = shower_summary(cond[:, 0], e_inc, layer_e)
        shower, layer = torch.nonzero(counts > 0, as_tuple=True)
        feats = pair_features(summary, counts, layer_e, shower, layer, n_vox)
        params = self.points(feats, layer)
        pts = sample_points(params, counts[shower, layer], torch_gen, self.y_range, self.placement)
        self._sync()
        t1 = time.perf_counter()
        group = (shower * n_l + layer)[pts.pair]
        voxel = pts.alpha * self.n_r + pts.r
        if pts.distinct:
            res = Resolved(voxel, torch.ones_like(voxel, dtype=torch.bool), 0, 0)
        else:
            res = resolve_collisions(group, voxel, pts.y, self.n_alpha, self.n_r, self.order)
        share = torch.where(res.kept, torch.exp(pts.y - self.y_range[1]), 0.0)
        energy = scale_to_targets(group, share, layer_e.reshape(-1))
        showers = voxelise(group, res.voxel, energy, n, n_l, n_vox)
        low = (showers > 0) & (showers < THRESHOLD_MEV)
        n_low = int(low.sum())
        showers[low] = 0.0
        out = showers.cpu().numpy()
        t2 = time.perf_counter()
        counts_out = {
            "n_points": int(res.kept.sum()),
            "n_collided": res.n_moved,
            "n_dropped": res.n_dropped,
            "n_nonfinite": 0,
            "n_negative": 0,
            "n_below_threshold": n_low,
            "seconds_generate": t1 - t0,
            "seconds_convert": t2 - t1,
        }
        return out, counts_out


@register_family
class FactorisedFamily(Family):
    """Shower-level flow matching + point-level likelihood model + collision-free decoding."""

    name = "factorised"
    kinds = ("showers",)
    Settings = FactorisedSettings
    per_layer_geometries = False
    data_parallel = True

    def __init__(self, settings: FactorisedSettings, data: TrainingData, device: torch.device) -> None:
        super().__init__(settings, data, device)
        geo = data.geometry
        self.grid = (int(geo.n_layers), int(geo.n_alpha), int(geo.n_r))
        n_l, n_alpha, n_r = self.grid
        self.capacity = n_alpha * n_r
        clouds = data.clouds.select(np.asarray(data.train_idx, dtype=np.int64))
        points = clouds.points
        counts, layer_e = shower_tables(points[:, 0], points[:, 1], clouds.lengths, n_l)
        usable = layer_e.sum(axis=1) > 0
        if not usable.any():
            raise ValueError("the training split holds no shower with energy")
        e_inc = clouds.conditions[:, 0]
        self.transform = ShowerTransform.fit(
            e_inc[usable], counts[usable], layer_e[usable], self.capacity, seed=int(data.seed)
        )

        # shower-level tables (showers with energy only)
        keep = np.flatnonzero(usable)
        self._e_inc = torch.as_tensor(e_inc[keep])
        self._counts = torch.as_tensor(counts[keep])
        self._layer_e = torch.as_tensor(layer_e[keep])
        self._cond = self.transform.condition(self._e_inc)
        self._summary = shower_summary(self._cond[:, 0], self._e_inc, self._layer_e)

        # point tables, grouped by (shower row, layer) pair: r, alpha, log share y = log(E n_l / E_l)
        row_of = np.full(len(clouds), -1, dtype=np.int64)
        row_of[keep] = np.arange(len(keep))
        shower = np.repeat(row_of, clouds.lengths)
        layer = points[:, 1].astype(np.int64)
        mean_hit = layer_e[keep] / np.maximum(counts[keep], 1)
        y = np.log(np.maximum(points[:, 0].astype(np.float64), 1e-30) / mean_hit[shower, layer])
        pair_key = shower * n_l + layer
        order = np.argsort(pair_key, kind="stable")
        pairs, starts, sizes = np.unique(pair_key[order], return_index=True, return_counts=True)
        self._pair_shower = torch.as_tensor(pairs // n_l)
        self._pair_layer = torch.as_tensor(pairs % n_l)
        self._pair_start = torch.as_tensor(starts.astype(np.int64))
        self._pair_size = torch.as_tensor(sizes.astype(np.int64))
        self._p_alpha = torch.as_tensor(points[order, 2].astype(np.uint8))  # small: converted per batch
        self._p_r = torch.as_tensor(points[order, 3].astype(np.uint8))
        self._p_y = torch.as_tensor(y[order], dtype=torch.float32)
        self.y_range = (float(y.min()), float(y.max()))

        self._modules = _build_modules(settings, n_l, n_alpha, n_r)
        for m in self._modules.values():
            m.to(device)
        self._gen = torch.Generator().manual_seed(int(data.seed))
        self._batch_points = 0  # points of the last point-level minibatch (all ranks' shares)
        self._val_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ training contract
    def modules(self) -> dict[str, nn.Module]:
        return self._modules

    def param_groups(self) -> list[ParamGroup]:
        s = self.settings
        return [
            ParamGroup("shower", ("shower_flow",), lr=s.shower_lr, weight_decay=s.weight_decay, ema=True),
            ParamGroup("points", ("point_model",), lr=s.point_lr, weight_decay=s.weight_decay, ema=True),
        ]

    def shower_batch(
        self, rows: slice | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x1, cond, x0, t) of one shower-level minibatch, on the family's device (``rows``: only these
        rows of it, drawn as part of the whole batch)."""
        s, g = self.settings, self._gen
        idx = torch.randint(len(self._e_inc), (s.shower_batch,), generator=g)
        u = torch.rand(s.shower_batch, self.grid[0], generator=g, dtype=torch.float64)
        fill = torch.randn(s.shower_batch, self.grid[0], generator=g, dtype=torch.float64)
        x0 = torch.randn(s.shower_batch, self.transform.dim, generator=g)
        t = torch.rand(s.shower_batch, generator=g)
        if rows is not None:
            idx, u, fill, x0, t = idx[rows], u[rows], fill[rows], x0[rows], t[rows]
        x1 = self.transform.forward(self._e_inc[idx], self._counts[idx], self._layer_e[idx], u, fill)
        d = self.device
        return x1.float().to(d), self._cond[idx].to(d), x0.to(d), t.to(d)

    def point_batch(self, rows: slice | None = None) -> tuple[torch.Tensor, ...]:
        """(pair features, pair layer, r, alpha, y, point owner) of one point-level minibatch (on device).

        ``point_batch`` random (shower, layer) pairs of the training split with all their points (so
        every training point has the same weight in the likelihood); ``rows``: only these pairs of it.
        """
        idx = torch.randint(len(self._pair_size), (self.settings.point_batch,), generator=self._gen)
        self._batch_points = int(self._pair_size[idx].sum())
        idx = idx if rows is None else idx[rows]
        shower, layer, size = self._pair_shower[idx], self._pair_layer[idx], self._pair_size[idx]
        owner = torch.repeat_interleave(torch.arange(len(idx)), size)
        first = torch.cumsum(size, 0) - size
        point = torch.arange(int(size.sum())) - first[owner] + self._pair_start[idx][owner]
        feats = pair_features(self._summary, self._counts, self._layer_e, shower, layer, self.capacity)
        d = self.device
        return (
            feats.to(d), layer.to(d),
            self._p_r[point].long().to(d), self._p_alpha[point].long().to(d), self._p_y[point].to(d),
            owner.to(d),
        )  # fmt: skip

    def train_step(self, ctx: StepContext) -> dict[str, float]:
        flow, points, s = self._modules["shower_flow"], self._modules["point_model"], self.settings
        if min(s.shower_batch, s.point_batch) < getattr(ctx, "world_size", 1):
            raise ValueError(
                f"factorised: shower_batch and point_batch must be >= the {ctx.world_size} "
                f"data-parallel processes, got {s.shower_batch} and {s.point_batch}"
            )
        x1, cond, x0, t = self.shower_batch(rows_of(ctx, s.shower_batch))
        with ctx.autocast():
            loss_shower = global_mean(ctx, flow.loss(x1, cond, x0, t, s.sigma_min), len(x1), s.shower_batch)
        ctx.optimise("shower", loss_shower)
        feats, layer, r, alpha, y, owner = self.point_batch(rows_of(ctx, s.point_batch))
        with ctx.autocast():
            terms = points.nll(feats, layer, r, alpha, y, owner)
            terms = {k: global_mean(ctx, v, len(r), self._batch_points) for k, v in terms.items()}
            loss_points = terms["r"] + terms["alpha"] + terms["energy"]
        ctx.optimise("points", loss_points)
        return {
            "loss_shower": float(loss_shower.detach()),
            "loss_points": float(loss_points.detach()),
            "nll_r": float(terms["r"].detach()),
            "nll_alpha": float(terms["alpha"].detach()),
            "nll_energy": float(terms["energy"].detach()),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._gen.set_state(state["generator"])

    # ------------------------------------------------------------------ validation and export
    def sampler(self) -> FactorisedSampler:
        """A sampler over the family's current modules (the loop swaps in EMA weights before validating)."""
        return FactorisedSampler(
            self._modules["shower_flow"], self._modules["point_model"], self.transform, self.y_range,
            self.grid, self.settings.ode_steps, self.settings.placement, self.device,
        )  # fmt: skip

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
        figures["collided_fraction"] = counts["n_collided"] / max(counts["n_points"], 1)
        return figures

    def export_config(self) -> dict[str, Any]:
        return {
            "settings": dataclasses.asdict(self.settings),
            "shower_transform": self.transform.to_dict(),
            "y_range": list(self.y_range),
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
    ) -> FactorisedSampler:
        settings = FactorisedSettings(**config["settings"])
        grid = tuple(int(v) for v in config["grid"])
        if geometry is not None and tuple(geometry.grid_shape) != grid:
            raise ValueError(
                f"model trained for grid {grid}, geometry {geometry.name} is {geometry.grid_shape}"
            )
        modules = _build_modules(settings, *grid)
        for name, module in modules.items():
            module.load_state_dict(state[name])
            module.to(device).eval()
        transform_ = ShowerTransform.from_dict(config["shower_transform"])
        return FactorisedSampler(
            modules["shower_flow"], modules["point_model"], transform_, tuple(config["y_range"]), grid,
            settings.ode_steps, settings.placement, device,
        )  # fmt: skip

    @classmethod
    def needs_multiplicity(cls) -> bool:
        return False
