"""Collision-free decoding: neighbour order, contested voxels, movers, capacity rule, exact layer sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.models.decoding import (
    move_to_free,
    neighbour_order,
    resolve_collisions,
    scale_to_targets,
    voxelise,
)


def _t(values, dtype=torch.int64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def test_neighbour_order_hand_computed():
    # n_alpha 4, n_r 3; voxel index alpha * 3 + r; from (alpha 0, r 1) = voxel 1:
    # d^2 = 0: itself; d^2 = 1: (a0, r0) = 0 (inner first), (a1, r1) = 4 (+alpha first), (a3, r1) = 10,
    # (a0, r2) = 2; d^2 = 2: (a1, r0) = 3, (a3, r0) = 9, (a1, r2) = 5, (a3, r2) = 11; d^2 = 4: (a2, r1) = 7;
    # d^2 = 5: (a2, r0) = 6, (a2, r2) = 8
    order = neighbour_order(4, 3)
    assert order.shape == (12, 12)
    assert order[1].tolist() == [1, 0, 4, 10, 2, 3, 9, 5, 11, 7, 6, 8]
    # every row is a permutation starting at its own voxel
    assert all(sorted(row) == list(range(12)) and row[0] == v for v, row in enumerate(order.tolist()))


def test_alpha_is_periodic():
    # one ring of 4 alpha bins (n_r = 1): from alpha 0 the periodic neighbour 3 is as near as 1
    assert neighbour_order(4, 1)[0].tolist() == [0, 1, 3, 2]
    # voxels 0 and 1 are taken; the displaced point goes to 3 (distance 1 across the seam), not 2
    res = resolve_collisions(_t([0, 0, 0]), _t([0, 1, 0]), _t([3.0, 2.0, 1.0], torch.float64), 4, 1)
    assert res.voxel.tolist() == [0, 1, 3]
    assert res.n_moved == 1 and res.n_dropped == 0


def test_higher_energy_keeps_contested_voxel_and_other_moves_to_nearest_free():
    group = _t([0, 0, 0])
    energy = _t([1.0, 3.0, 2.0], torch.float64)
    # p0 and p1 want voxel 1: p1 (3.0) keeps it; p2 holds voxel 0; p0 moves along row 1 of the order:
    # 1 (taken), 0 (taken), 4 (free)
    res = resolve_collisions(group, _t([1, 1, 0]), energy, 4, 3)
    assert res.voxel.tolist() == [4, 1, 0]
    assert res.kept.all() and res.n_moved == 1


def test_movers_wanting_the_same_free_voxel_are_served_by_energy():
    # all three want voxel 1: p0 (5) keeps it; p2 (3) and p1 (2) both want voxel 0 next: p2 gets it,
    # p1 takes the next free voxel of row 1, voxel 4
    res = resolve_collisions(_t([7, 7, 7]), _t([1, 1, 1]), _t([5.0, 2.0, 3.0], torch.float64), 4, 3)
    assert res.voxel.tolist() == [1, 4, 0]
    assert res.n_moved == 2


def test_equal_energies_keep_input_order_and_groups_do_not_interact():
    res = resolve_collisions(_t([0, 0, 1]), _t([5, 5, 5]), _t([1.0, 1.0, 1.0], torch.float64), 4, 3)
    assert res.voxel[0] == 5 and res.voxel[1] != 5  # the earlier point keeps the voxel
    assert res.voxel[2] == 5  # another (shower, layer) group: no collision
    assert res.n_moved == 1


def test_capacity_rule_drops_lowest_energies_and_fills_every_voxel():
    # 6 points in a layer of 2 x 2 = 4 voxels: the 4 highest energies are kept, one per voxel
    energy = _t([0.5, 4.0, 3.0, 0.1, 2.0, 1.0], torch.float64)
    res = resolve_collisions(_t([0] * 6), _t([0, 0, 0, 0, 0, 0]), energy, 2, 2)
    assert res.kept.tolist() == [False, True, True, False, True, True]
    assert res.n_dropped == 2
    assert res.voxel[~res.kept].tolist() == [-1, -1]
    assert sorted(res.voxel[res.kept].tolist()) == [0, 1, 2, 3]
    assert res.voxel[1] == 0  # the highest energy keeps the proposed voxel
    # the layer energy stays exact: the dropped energy goes to the kept points
    share = torch.where(res.kept, energy, 0.0)
    e = scale_to_targets(_t([0] * 6), share, _t([10.0], torch.float64))
    assert e.sum().item() == pytest.approx(10.0, rel=1e-15)
    showers = voxelise(_t([0] * 6), res.voxel, e, 1, 1, 4)
    assert torch.count_nonzero(showers) == 4
    assert showers.double().sum().item() == pytest.approx(10.0, rel=1e-6)


def test_move_to_free_rejects_overfull_layers():
    with pytest.raises(ValueError, match="more points than voxels"):
        move_to_free(_t([0, 0, 0]), _t([0, 0, 0]), _t([3.0, 2.0, 1.0]), _t([0]), _t([1, 2]), 2, 1)


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="lie in"):
        resolve_collisions(_t([0]), _t([12]), _t([1.0]), 4, 3)
    with pytest.raises(ValueError, match="equal length"):
        resolve_collisions(_t([0, 0]), _t([1]), _t([1.0]), 4, 3)
    with pytest.raises(ValueError, match="positive"):
        neighbour_order(0, 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_layers_are_collision_free_with_exact_layer_sums(seed):
    rng = np.random.default_rng(seed)
    n_alpha, n_r, n_layers, n_showers = 16, 9, 5, 4
    n_vox = n_alpha * n_r
    counts = rng.integers(0, 200, n_showers * n_layers)  # some layers beyond the 144 voxels
    group = torch.as_tensor(np.repeat(np.arange(len(counts)), counts))
    r = rng.geometric(0.4, len(group)).clip(1, n_r) - 1  # crowded inner rings: many collisions
    voxel = torch.as_tensor(rng.integers(0, n_alpha, len(group)) * n_r + r)
    energy = torch.as_tensor(rng.lognormal(0.0, 1.5, len(group)))
    targets = torch.as_tensor(rng.uniform(1.0, 100.0, len(counts)))
    res = resolve_collisions(group, voxel, energy, n_alpha, n_r)
    kept = res.kept
    assert res.n_dropped == int(np.maximum(counts - n_vox, 0).sum())
    assert np.array_equal(np.bincount(group[kept].numpy(), minlength=len(counts)), np.minimum(counts, n_vox))
    keys = group[kept] * n_vox + res.voxel[kept]
    assert keys.unique().numel() == keys.numel()  # each voxel holds at most one point
    assert res.voxel[kept].min() >= 0 and res.voxel[kept].max() < n_vox
    # a point keeps its proposal unless a higher-energy point of its group proposed the same voxel
    moved = kept & (res.voxel != voxel)
    assert int(moved.sum()) == res.n_moved
    e = scale_to_targets(group, torch.where(kept, energy, 0.0), targets)
    showers = voxelise(group, res.voxel, e, n_showers, n_layers, n_vox).double()
    layer_sums = showers.reshape(-1, n_vox).sum(dim=1)
    expected = torch.where(torch.as_tensor(counts) > 0, targets, 0.0)
    torch.testing.assert_close(layer_sums, expected, rtol=1e-6, atol=0.0)
    assert torch.count_nonzero(showers) == int(np.minimum(counts, n_vox).sum())


def test_displaced_point_is_never_nearer_than_a_free_voxel_it_skipped():
    # one mover: its final voxel is the first free voxel of its neighbour order
    rng = np.random.default_rng(5)
    order = neighbour_order(16, 9)
    taken = rng.choice(144, 100, replace=False)
    voxel = torch.as_tensor(np.concatenate([taken, [taken[0]]]))
    energy = torch.as_tensor(np.concatenate([np.full(100, 10.0), [1.0]]))
    res = resolve_collisions(torch.zeros(101, dtype=torch.int64), voxel, energy, 16, 9)
    free = [v for v in order[taken[0]].tolist() if v not in set(taken.tolist())]
    assert res.voxel[-1] == free[0]
