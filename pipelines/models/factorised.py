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

Per-layer binnings (dataset 1, :class:`LayerLayout`): the family models the filled layers only (the
layers with voxels; the shower-level vector and the layer embedding run over them, in depth order), and
the point model's heads span the largest n_r and n_alpha of those layers with the cells a layer lacks
masked (:mod:`pipelines.models.point_model`); the count clamp and the count features use each layer's
own voxel count. Sampling writes the padded grid and then gathers the geometry's voxels. Only
``placement="pareto"`` is supported there (collision resolution walks a regular grid), and the ONNX
export takes regular grids only. On a regular grid (datasets 2 and 3) nothing of this is active.

Training: each step is one AdamW update of the shower flow (group "shower") and one of the point model
(group "points"); minibatches (showers, (shower, layer) pairs, flow-matching noise and times,
dequantisation and fill noise) come from the family's own CPU torch.Generator seeded from the run
seed, whose state is the family's :meth:`state_dict`, so a resumed run continues the same data stream.
Sampling draws everything from the ``torch_gen`` it is given (same seed, same device: same showers).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class LayerLayout:
    """The layers the family models and their bins: the filled layers of a geometry, in depth order.

    ``n_layers``: layers of the geometry (filled or not); ``filled``: ids of the layers with voxels;
    ``n_alpha`` / ``n_r``: bins of each filled layer. A regular grid has every layer filled with the
    same bins; its layout changes nothing (no masks, no gather, one capacity).
    """

    n_layers: int
    filled: tuple[int, ...]
    n_alpha: tuple[int, ...]
    n_r: tuple[int, ...]

    @classmethod
    def from_geometry(cls, geometry: Any) -> LayerLayout:
        filled = tuple(int(v) for v in geometry.filled_layers)
        return cls(
            n_layers=int(geometry.n_layers),
            filled=filled,
            n_alpha=tuple(int(geometry.layer_n_alpha[i]) for i in filled),
            n_r=tuple(len(geometry.layer_r_edges[i]) - 1 for i in filled),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerLayout:
        return cls(int(d["n_layers"]), *(tuple(int(v) for v in d[k]) for k in ("filled", "n_alpha", "n_r")))

    def to_dict(self) -> dict[str, Any]:
        return {key: value if isinstance(value, int) else list(value) for key, value in asdict(self).items()}

    @property
    def regular(self) -> bool:
        return len(self.filled) == self.n_layers and len(set(self.n_alpha)) == 1 and len(set(self.n_r)) == 1

    @property
    def grid(self) -> tuple[int, int, int]:
        """(modelled layers, largest n_alpha, largest n_r): the padded grid of the point model."""
        return len(self.filled), max(self.n_alpha), max(self.n_r)

    @property
    def capacity(self) -> int | list[int]:
        """Voxels per modelled layer: one number on a regular grid, else a list."""
        caps = [a * r for a, r in zip(self.n_alpha, self.n_r, strict=True)]
        return caps[0] if self.regular else caps

    @property
    def layer_bins(self) -> list[tuple[int, int]] | None:
        """(n_alpha, n_r) per modelled layer for the point model's masks; None on a regular grid."""
        return None if self.regular else list(zip(self.n_alpha, self.n_r, strict=True))

    def compact_layers(self, layer: np.ndarray) -> np.ndarray:
        """Modelled-layer index of geometry layer ids (every id must be a filled layer)."""
        layer = np.asarray(layer, dtype=np.int64)
        filled = np.asarray(self.filled, dtype=np.int64)
        row = np.searchsorted(filled, layer).clip(max=len(filled) - 1)
        if layer.size and not np.array_equal(filled[row], layer):
            raise ValueError(f"points in layers without voxels (filled layers: {list(self.filled)})")
        return row

    def voxel_gather(self) -> np.ndarray:
        """(n_voxels,) index into the flattened padded grid of every geometry voxel, in geometry order
        (layer, alpha, r with r fastest)."""
        _, big_a, big_r = self.grid
        rows = []
        for row, (n_a, n_r) in enumerate(zip(self.n_alpha, self.n_r, strict=True)):
            a, r = np.meshgrid(np.arange(n_a), np.arange(n_r), indexing="ij")
            rows.append(((row * big_a + a) * big_r + r).ravel())
        return np.concatenate(rows).astype(np.int64)

    def layer_energies(self, showers: np.ndarray) -> np.ndarray:
        """(N, modelled layers) float64 energy sums of showers (N, n_voxels) in geometry order."""
        sizes = np.array([a * r for a, r in zip(self.n_alpha, self.n_r, strict=True)])
        if self.regular:
            return showers.reshape(len(showers), len(self.filled), -1).sum(axis=2, dtype=np.float64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return np.add.reduceat(showers.astype(np.float64), starts, axis=1)


def _build_modules(settings: FactorisedSettings, layout: LayerLayout) -> dict[str, nn.Module]:
    n_layers, n_alpha, n_r = layout.grid
    flow = ShowerFlow(1 + 2 * n_layers, settings.shower_hidden, settings.shower_blocks, settings.time_dim)
    points = PointModel(
        n_layers, n_alpha, n_r, settings.point_hidden, settings.point_blocks, settings.n_components,
        layer_bins=layout.layer_bins,
    )  # fmt: skip
    return {"shower_flow": flow, "point_model": points}


def _check_placement(settings: FactorisedSettings, layout: LayerLayout, where: str) -> None:
    if not layout.regular and settings.placement != "pareto":
        raise ValueError(
            f"factorised: placement {settings.placement!r} resolves collisions on a regular grid; the "
            f"per-layer binning of {where} needs placement 'pareto'"
        )


class FactorisedSampler:
    """Generates voxelised showers (the family's :class:`~pipelines.models.family.ShowerSampler`)."""

    def __init__(
        self,
        flow: ShowerFlow,
        points: PointModel,
        transform: ShowerTransform,
        y_range: tuple[float, float],
        layout: LayerLayout,
        ode_steps: int,
        placement: str,
        device: torch.device,
    ) -> None:
        self.flow, self.points, self.transform = flow, points, transform
        self.y_range = (float(y_range[0]), float(y_range[1]))
        self.layout = layout
        self.n_layers, self.n_alpha, self.n_r = layout.grid
        self.ode_steps, self.placement, self.device = ode_steps, placement, device
        self.order = neighbour_order(self.n_alpha, self.n_r, device)
        # per-layer binnings: the geometry's voxels in the padded grid, and the capacity per layer
        self.gather = None if layout.regular else torch.as_tensor(layout.voxel_gather(), device=device)
        capacity = layout.capacity
        self.capacity = capacity if isinstance(capacity, int) else torch.as_tensor(capacity, device=device)

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
        feats = pair_features(summary, counts, layer_e, shower, layer, self.capacity)
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
        if self.gather is not None:
            showers = showers[:, self.gather]
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
    per_layer_geometries = True
    data_parallel = True

    def __init__(self, settings: FactorisedSettings, data: TrainingData, device: torch.device) -> None:
        super().__init__(settings, data, device)
        self.layout = LayerLayout.from_geometry(data.geometry)
        _check_placement(settings, self.layout, f"dataset {data.geometry.name}")
        self.grid = self.layout.grid
        n_l = self.grid[0]
        capacity = self.layout.capacity
        self.capacity = capacity if isinstance(capacity, int) else torch.as_tensor(capacity)
        clouds = data.clouds.select(np.asarray(data.train_idx, dtype=np.int64))
        points = clouds.points
        layer = self.layout.compact_layers(points[:, 1])  # the layer ids themselves on a regular grid
        counts, layer_e = shower_tables(points[:, 0], layer, clouds.lengths, n_l)
        usable = layer_e.sum(axis=1) > 0
        if not usable.any():
            raise ValueError("the training split holds no shower with energy")
        e_inc = clouds.conditions[:, 0]
        self.transform = ShowerTransform.fit(
            e_inc[usable], counts[usable], layer_e[usable], capacity, seed=int(data.seed)
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

        self._modules = _build_modules(settings, self.layout)
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
            self.layout, self.settings.ode_steps, self.settings.placement, self.device,
        )  # fmt: skip

    def _validation_reference(self, n_max: int) -> tuple[np.ndarray, np.ndarray]:
        if self._val_cache is None or self._val_cache[0] != n_max:
            idx = np.asarray(self.data.val_idx, dtype=np.int64)[:n_max]
            sub = self.data.clouds.select(idx)
            layer = self.layout.compact_layers(sub.points[:, 1])
            ref = layer_energies(sub.points[:, 0], layer, sub.lengths, self.grid[0])
            self._val_cache = (n_max, sub.conditions[:, 0].copy(), ref)
        return self._val_cache[1], self._val_cache[2]

    def validate(self, n_max: int, seed: int) -> dict[str, float]:
        e_inc, ref_layers = self._validation_reference(n_max)
        if len(e_inc) == 0:
            return {}
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        showers, counts = self.sampler().sample_showers(e_inc, gen)
        gen_layers = self.layout.layer_energies(showers)
        figures = shower_figures(e_inc, gen_layers, e_inc, ref_layers)
        figures["collided_fraction"] = counts["n_collided"] / max(counts["n_points"], 1)
        return figures

    def export_config(self) -> dict[str, Any]:
        return {
            "settings": dataclasses.asdict(self.settings),
            "shower_transform": self.transform.to_dict(),
            "y_range": list(self.y_range),
            "grid": list(self.grid),
            **({} if self.layout.regular else {"layers": self.layout.to_dict()}),
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
        if "layers" in config:
            layout = LayerLayout.from_dict(config["layers"])
        else:  # a regular grid
            n_l, n_alpha, n_r = grid
            layout = LayerLayout(n_l, tuple(range(n_l)), (n_alpha,) * n_l, (n_r,) * n_l)
        if layout.grid != grid:
            raise ValueError(f"model config: grid {grid} disagrees with its layers {layout.to_dict()}")
        if geometry is not None and LayerLayout.from_geometry(geometry) != layout:
            shape = geometry.grid_shape if geometry.is_regular else "a per-layer binning"
            what = f"grid {grid}" if layout.regular else f"the per-layer binning {layout.to_dict()}"
            raise ValueError(f"model trained for {what}, geometry {geometry.name} is {shape}")
        _check_placement(settings, layout, "the model's geometry")
        modules = _build_modules(settings, layout)
        for name, module in modules.items():
            module.load_state_dict(state[name])
            module.to(device).eval()
        transform_ = ShowerTransform.from_dict(config["shower_transform"])
        return FactorisedSampler(
            modules["shower_flow"], modules["point_model"], transform_, tuple(config["y_range"]), layout,
            settings.ode_steps, settings.placement, device,
        )  # fmt: skip

    @classmethod
    def needs_multiplicity(cls) -> bool:
        return False
