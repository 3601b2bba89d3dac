"""The factorised family's sampler as two fixed-noise torch graphs, for export (ONNX) to fast simulation.

The project's :class:`~pipelines.models.factorised.FactorisedSampler` draws its noise from a
torch.Generator as it goes and handles only the (shower, layer) pairs with hits. The graphs here take
every random number as an input, with fixed shapes, and do the same arithmetic with the same functions:

- :class:`ShowerLevelGraph`: (E_inc (B,) float64 MeV, noise (B, 1 + 2L) float32 N(0, 1)) -> (counts
  (B, L) int64, layer energies (B, L) float64 MeV): the standardised condition, the midpoint ODE solve
  of the shower flow unrolled over its ``ode_steps`` steps, and :meth:`ShowerTransform.decode`.
- :class:`PointGraph`: (E_inc, counts, layer energies, u_voxel, u_component, z (B, L, V) float32) ->
  showers (B, L * V) float32 MeV in the CaloChallenge voxel order (layer, alpha, r): the point model
  for every (shower, layer) pair, Pareto placement of exactly n_l distinct voxels (the largest keys
  logit(pi_v) + logit(u_voxel)), the point of voxel v drawing its log energy share from its ring's
  mixture with ``u_component[..., v]`` and ``z[..., v]``, shares exp(y - y_max) rescaled to the layer
  energy (float64), the 15.15 keV threshold. The noise's voxel index is ``r * n_alpha + alpha``.

With the noise the sampler would draw (:func:`sampler_noise`), the graphs give the sampler's showers
bit for bit. Noise per voxel (not per rank) keeps the result continuous in the keys: only a swap of
the n_l-th and (n_l + 1)-th key of a layer (float rounding of a near tie) changes a layer's voxels.
Only the ``"pareto"`` placement is a fixed-shape computation; ``"independent"`` needs the collision
rounds of :mod:`pipelines.models.decoding` and is not supported here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipelines.geometry import THRESHOLD_MEV
from pipelines.models.factorised import FactorisedSampler
from pipelines.models.flow_matching import midpoint_solve
from pipelines.models.point_model import (
    PointParams,
    log_shares,
    pair_features,
    pareto_keys,
    shower_summary,
)
from pipelines.models.shower_flow import ShowerTransform


def _fresh(transform: ShowerTransform) -> ShowerTransform:
    """A copy without cached tensors (the sampler's may be inference-mode tensors, which tracing rejects)."""
    return ShowerTransform.from_dict(transform.to_dict())


class ShowerLevelGraph(nn.Module):
    """(E_inc, noise) -> (counts, layer energies): the shower level of a factorised sampler."""

    def __init__(self, sampler: FactorisedSampler) -> None:
        super().__init__()
        self.flow, self.steps = sampler.flow, sampler.ode_steps
        self.transform = _fresh(sampler.transform)

    def forward(self, e_inc: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond = self.transform.condition(e_inc)
        x = midpoint_solve(self.flow.frozen_velocity(cond), noise, self.steps)
        return self.transform.decode(torch.nan_to_num(x.double()), e_inc)


class PointGraph(nn.Module):
    """(E_inc, counts, layer energies, voxel / component / Gaussian noise) -> voxelised showers."""

    def __init__(self, sampler: FactorisedSampler) -> None:
        super().__init__()
        if not sampler.layout.regular:
            raise ValueError("the ONNX graphs take regular grids (datasets 2 and 3), not per-layer binnings")
        if sampler.placement != "pareto":
            raise ValueError(
                f"placement {sampler.placement!r} cannot be exported (collision rounds have no fixed "
                "shape); train with placement 'pareto'"
            )
        self.points, self.transform = sampler.points, _fresh(sampler.transform)
        self.grid = (sampler.n_layers, sampler.n_alpha, sampler.n_r)
        self.y_range = sampler.y_range

    def chosen(
        self, e_inc: torch.Tensor, counts: torch.Tensor, layer_e: torch.Tensor, u_voxel: torch.Tensor
    ) -> tuple[PointParams, torch.Tensor, torch.Tensor]:
        """(point parameters of the B * L pairs, voxels by decreasing key (M, V), hit mask (M, V)).

        Voxels are indexed ``r * n_alpha + alpha``; the mask is by voxel: the n_l largest keys are hit.
        """
        n_l, n_alpha, n_r = self.grid
        n_vox = n_alpha * n_r
        b = counts.shape[0]
        cond = self.transform.condition(e_inc)
        summary = shower_summary(cond[:, 0], e_inc, layer_e)
        shower = torch.arange(b, device=counts.device)[:, None].expand(b, n_l).reshape(-1)
        layer = torch.arange(n_l, device=counts.device)[None, :].expand(b, n_l).reshape(-1)
        params = self.points(pair_features(summary, counts, layer_e, shower, layer, n_vox), layer)
        n = counts.reshape(-1).clamp(0, n_vox)
        ranked = torch.argsort(pareto_keys(params, n, u_voxel.reshape(-1, n_vox)), dim=1, descending=True)
        by_rank = torch.arange(n_vox, device=counts.device)[None, :] < n[:, None]
        return params, ranked, torch.zeros_like(by_rank).scatter(1, ranked, by_rank)

    def forward(
        self,
        e_inc: torch.Tensor,
        counts: torch.Tensor,
        layer_e: torch.Tensor,
        u_voxel: torch.Tensor,
        u_component: torch.Tensor,
        z: torch.Tensor,
    ) -> torch.Tensor:
        n_l, n_alpha, n_r = self.grid
        n_vox, b = n_alpha * n_r, counts.shape[0]
        params, _, hit = self.chosen(e_inc, counts, layer_e, u_voxel)
        voxel = torch.arange(n_vox, device=counts.device)
        r = torch.div(voxel, n_alpha, rounding_mode="floor")
        ring = (torch.arange(b * n_l, device=counts.device)[:, None] * n_r + r[None, :]).reshape(-1)
        y = log_shares(params, ring, u_component.reshape(-1), z.reshape(-1), self.y_range)
        share = torch.where(hit, torch.exp(y.reshape(-1, n_vox) - self.y_range[1]), 0.0).double()
        sums = share.sum(dim=1, keepdim=True)
        target = layer_e.reshape(-1, 1).double()
        energy = (share * torch.where(sums > 0, target / torch.where(sums > 0, sums, 1.0), 0.0)).float()
        # from index r * n_alpha + alpha to the geometry's alpha * n_r + r
        out = energy.reshape(-1, n_r, n_alpha).transpose(1, 2).reshape(b, n_l * n_vox)
        return torch.where((out > 0) & (out < THRESHOLD_MEV), 0.0, out)


class ShowerGraph(nn.Module):
    """The whole sampler in one graph: (E_inc, all noise) -> (showers, counts, layer energies)."""

    def __init__(self, sampler: FactorisedSampler) -> None:
        super().__init__()
        self.shower_level, self.point_level = ShowerLevelGraph(sampler), PointGraph(sampler)

    def forward(
        self,
        e_inc: torch.Tensor,
        noise_shower: torch.Tensor,
        u_voxel: torch.Tensor,
        u_component: torch.Tensor,
        z: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        counts, layer_e = self.shower_level(e_inc, noise_shower)
        return self.point_level(e_inc, counts, layer_e, u_voxel, u_component, z), counts, layer_e


@dataclass
class Noise:
    """Every random input of the two graphs for B showers (L layers, V voxels per layer)."""

    shower: torch.Tensor  # (B, 1 + 2L) float32 N(0, 1)
    u_voxel: torch.Tensor  # (B, L, V) float32 U[0, 1), voxel index r * n_alpha + alpha
    u_component: torch.Tensor  # (B, L, V) float32 U[0, 1): mixture component of the voxel's point
    z: torch.Tensor  # (B, L, V) float32 N(0, 1): log energy share of the voxel's point


def sampler_noise(graph: ShowerGraph, e_inc: torch.Tensor, generator: torch.Generator) -> Noise:
    """The noise :meth:`FactorisedSampler.sample_showers` draws from ``generator``, laid out for the graphs.

    The sampler draws the shower-level noise (B, 1 + 2L), then one row of voxel noise per pair with
    hits (row-major pairs), then per point (pair-major, largest key first) a uniform and a Gaussian,
    which go to that point's voxel; entries of voxels without points are 0.5 (uniforms) and 0
    (Gaussians), which the graphs ignore.
    """
    n_l, n_alpha, n_r = graph.point_level.grid
    n_vox, b = n_alpha * n_r, e_inc.numel()
    shower = torch.randn(b, 1 + 2 * n_l, generator=generator)
    with torch.no_grad():
        counts, layer_e = graph.shower_level(e_inc, shower)
    n = counts.reshape(-1).clamp(0, n_vox)
    hit = torch.nonzero(n > 0).reshape(-1)
    u_voxel = torch.full((b * n_l, n_vox), 0.5)
    u_voxel[hit] = torch.rand(len(hit), n_vox, generator=generator)
    with torch.no_grad():
        _, ranked, _ = graph.point_level.chosen(e_inc, counts, layer_e, u_voxel)
    points = torch.arange(n_vox)[None, :] < n[:, None]  # (M, V) by rank
    rows = torch.arange(b * n_l)[:, None].expand(-1, n_vox)[points]
    total = int(n.sum())
    u_component, z = torch.full((b * n_l, n_vox), 0.5), torch.zeros(b * n_l, n_vox)
    u_component[rows, ranked[points]] = torch.rand(total, generator=generator)
    z[rows, ranked[points]] = torch.randn(total, generator=generator)
    shape = (b, n_l, n_vox)
    return Noise(shower, u_voxel.reshape(shape), u_component.reshape(shape), z.reshape(shape))
