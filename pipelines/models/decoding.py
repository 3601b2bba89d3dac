"""Collision-free decoding of sampled shower points into voxels (factorised family).

Points are grouped by (shower, layer), the *group* ``shower * n_layers + layer``; each point proposes a
voxel of its layer, indexed within the layer as ``alpha * n_r + r`` (the geometry's voxel order), and
carries an energy (or an unnormalised energy share). :func:`resolve_collisions` gives every point a
voxel of its own:

1. Capacity: a group with more points than the layer has voxels keeps its ``n_alpha * n_r``
   highest-energy points (every voxel of the layer is then hit) and drops the others; rescaling the
   layer afterwards (:func:`scale_to_targets`) gives the dropped energy to the kept points, so the
   layer energy is still exact.
2. A voxel proposed by several points goes to the highest-energy one (equal energies: the earlier
   point in input order).
3. Every other point moves to the nearest voxel of its layer that is free, where "nearest" is the
   grid metric ``d^2 = dr^2 + da^2`` with ``da`` the periodic alpha distance
   ``min(|a' - a|, n_alpha - |a' - a|)`` (one bin in r counts as much as one bin in alpha); equal
   distances go to the smaller r (inwards), then to the smaller ``(a' - a) mod n_alpha`` (the +alpha
   direction first). Movers are placed in rounds: in each round every remaining mover picks the
   nearest voxel that is free at the start of the round; movers of one layer that pick the same voxel
   are served by decreasing energy, the others retry in the next round.

Everything runs in torch on the points' device without Python loops over points or showers (only
the few rounds of step 3 loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch


@lru_cache(maxsize=8)
def _neighbour_order_np(n_alpha: int, n_r: int) -> np.ndarray:
    a = np.repeat(np.arange(n_alpha), n_r)
    r = np.tile(np.arange(n_r), n_alpha)
    da = (a[None, :] - a[:, None]) % n_alpha
    d2 = (r[None, :] - r[:, None]) ** 2 + np.minimum(da, n_alpha - da) ** 2
    key = (d2 * n_r + r[None, :]) * n_alpha + da
    return np.argsort(key, axis=1, kind="stable")


def neighbour_order(n_alpha: int, n_r: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(V, V) int64, V = n_alpha * n_r: row v lists the layer's voxels from v itself to the farthest.

    Voxels are indexed ``alpha * n_r + r``; the metric and the tie-breaking are the module's.
    """
    if n_alpha < 1 or n_r < 1:
        raise ValueError(f"n_alpha and n_r must be positive, got {n_alpha}, {n_r}")
    return torch.as_tensor(_neighbour_order_np(int(n_alpha), int(n_r)), device=device)


@dataclass
class Resolved:
    """Outcome of :func:`resolve_collisions`: per point its voxel (-1 when dropped) and the counts."""

    voxel: torch.Tensor  # (P,) int64 voxel within the layer, -1 for points dropped by the capacity rule
    kept: torch.Tensor  # (P,) bool
    n_moved: int  # points that lost their proposed voxel and moved to a free one
    n_dropped: int  # points beyond a layer's voxel count


def run_rank(sorted_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(is first of its run, rank within its run) for a sorted 1-d key tensor."""
    n = sorted_keys.numel()
    first = torch.ones(n, dtype=torch.bool, device=sorted_keys.device)
    if n > 1:
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    idx = torch.arange(n, device=sorted_keys.device)
    start = torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), dim=0).values
    return first, idx - start


def resolve_collisions(
    group: torch.Tensor,
    voxel: torch.Tensor,
    energy: torch.Tensor,
    n_alpha: int,
    n_r: int,
    order: torch.Tensor | None = None,
) -> Resolved:
    """Give every point its own voxel of its group's layer (rules in the module docstring).

    ``group`` (P,) int64 ids (any non-negative values), ``voxel`` (P,) int64 proposals in
    [0, n_alpha * n_r), ``energy`` (P,) the priority (higher keeps a contested voxel).
    """
    n_vox = n_alpha * n_r
    device = group.device
    group, voxel = group.long(), voxel.long()
    if group.shape != voxel.shape or group.shape != energy.shape or group.ndim != 1:
        raise ValueError("group, voxel and energy must be 1-d tensors of equal length")
    if voxel.numel() and (int(voxel.min()) < 0 or int(voxel.max()) >= n_vox):
        raise ValueError(f"voxel proposals must lie in [0, {n_vox})")
    if order is None:
        order = neighbour_order(n_alpha, n_r, device)
    n = group.numel()
    final = voxel.clone()
    kept = torch.ones(n, dtype=torch.bool, device=device)
    if n == 0:
        return Resolved(final, kept, 0, 0)

    by_energy = torch.argsort(-energy, stable=True)  # decreasing energy; ties keep input order
    # 1. capacity: rank of each point within its group by decreasing energy
    in_group = by_energy[torch.argsort(group[by_energy], stable=True)]
    _, rank = run_rank(group[in_group])
    over = in_group[rank >= n_vox]
    kept[over] = False
    final[over] = -1
    # 2. each proposed voxel goes to its highest-energy proposer
    candidates = by_energy[kept[by_energy]]
    key = group[candidates] * n_vox + voxel[candidates]
    by_key = torch.argsort(key, stable=True)
    first, _ = run_rank(key[by_key])
    winners, movers = candidates[by_key[first]], candidates[by_key[~first]]
    if movers.numel() == 0:
        return Resolved(final, kept, 0, int(over.numel()))
    final[movers] = move_to_free(group, voxel, energy, winners, movers, n_alpha, n_r, order)
    return Resolved(final, kept, int(movers.numel()), int(over.numel()))


def move_to_free(
    group: torch.Tensor,
    voxel: torch.Tensor,
    energy: torch.Tensor,
    placed: torch.Tensor,
    movers: torch.Tensor,
    n_alpha: int,
    n_r: int,
    order: torch.Tensor | None = None,
) -> torch.Tensor:
    """New voxels of the points ``movers`` (indices): the nearest free voxel of their group's layer.

    ``placed`` (indices) hold their voxels ``voxel[placed]`` (distinct within a group); a mover
    searches from ``voxel[mover]`` by the module's metric, in rounds served by decreasing energy.
    Every group must have at least as many free voxels as movers.
    """
    n_vox = n_alpha * n_r
    device = group.device
    out = torch.empty(movers.numel(), dtype=torch.long, device=device)
    if movers.numel() == 0:
        return out
    if order is None:
        order = neighbour_order(n_alpha, n_r, device)
    groups, mover_group = torch.unique(group[movers], return_inverse=True)
    occupied = torch.zeros(len(groups), n_vox, dtype=torch.bool, device=device)
    pos = torch.searchsorted(groups, group[placed]).clamp_(max=len(groups) - 1)
    hit = groups[pos] == group[placed]
    occupied[pos[hit], voxel[placed[hit]]] = True
    if int((n_vox - occupied.sum(dim=1) - torch.bincount(mover_group, minlength=len(groups))).min()) < 0:
        raise ValueError("a layer has more points than voxels (apply the capacity rule first)")
    slot = torch.arange(movers.numel(), device=device)  # position of each remaining mover in ``out``
    while slot.numel():
        e_order = torch.argsort(-energy[movers[slot]], stable=True)
        slot, mover_group_now = slot[e_order], mover_group[slot[e_order]]
        cand = order[voxel[movers[slot]]]  # (M, V) voxels from nearest to farthest
        free = ~occupied[mover_group_now[:, None], cand]
        target = cand.gather(1, free.to(torch.uint8).argmax(dim=1, keepdim=True)).squeeze(1)
        key = mover_group_now * n_vox + target
        want = torch.argsort(key, stable=True)  # decreasing energy within a wanted voxel
        first, _ = run_rank(key[want])
        served = want[first]
        out[slot[served]] = target[served]
        occupied[mover_group_now[served], target[served]] = True
        slot = slot[torch.sort(want[~first]).values]  # back in decreasing-energy order
    return out


def scale_to_targets(group: torch.Tensor, energy: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Energies (float64) rescaled so that each group's sum equals ``targets[group]``.

    ``group`` (P,) indexes ``targets`` (G,); a group whose energies sum to 0 keeps zeros.
    """
    e = energy.double()
    sums = torch.zeros(targets.shape[0], dtype=torch.float64, device=e.device).index_add_(0, group, e)
    factor = torch.where(sums > 0, targets.double() / torch.where(sums > 0, sums, 1.0), 0.0)
    return e * factor[group]


def voxelise(
    group: torch.Tensor, voxel: torch.Tensor, energy: torch.Tensor, n_showers: int, n_layers: int, n_vox: int
) -> torch.Tensor:
    """Showers (N, n_layers * n_vox) float32 from points with distinct (group, voxel); ``voxel`` -1 skips."""
    out = torch.zeros(n_showers * n_layers * n_vox, dtype=torch.float32, device=energy.device)
    keep = voxel >= 0
    out[group[keep] * n_vox + voxel[keep]] = energy[keep].float()
    return out.view(n_showers, n_layers * n_vox)
