"""Length-bucketed batching: coverage, budget, reproducibility, padding, masks, DataLoader use."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipelines.batching import BucketBatchSampler, CloudDataset, collate_clouds
from pipelines.io.clouds import Clouds
from pipelines.transforms import shower_transform

NAMES = ("energy", "layer", "alpha", "r")


def make_lengths(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(np.log(160), 0.6, n)), 12, 560).astype(np.int64)
    lengths[rng.choice(n, 5, replace=False)] = 0  # empty showers are valid clouds
    return lengths


def make_clouds(ds2, n: int = 60, seed: int = 0) -> Clouds:
    rng = np.random.default_rng(seed)
    lengths = make_lengths(n, seed) // 4
    p = int(lengths.sum())
    pts = np.column_stack([rng.lognormal(0, 2, p) + 0.015, rng.integers(0, ds2.n_layers, p),
                           rng.integers(0, ds2.n_alpha, p), rng.integers(0, ds2.n_r, p)])  # fmt: skip
    return Clouds(pts, np.concatenate([[0], np.cumsum(lengths)]), 10 ** rng.uniform(3, 6, (n, 1)), NAMES,
                  ("incident_energy",), np.zeros(n, np.int8))  # fmt: skip


@pytest.fixture(scope="module")
def clouds(ds2):
    return make_clouds(ds2)


@pytest.fixture(scope="module")
def transform(ds2, clouds):
    return shower_transform(ds2).fit(clouds.points.astype(np.float64), rng=np.random.default_rng(0))


# ------------------------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("max_tokens", [400, 3000, 20_000])
def test_every_index_once_and_budget_kept(max_tokens):
    lengths = make_lengths(2000, 1)
    lengths[7] = 5000  # longer than some budgets: a batch of its own
    s = BucketBatchSampler(lengths, max_tokens=max_tokens, seed=3)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        flat = np.concatenate(batches)
        assert np.array_equal(np.sort(flat), np.arange(len(lengths)))
        for b in batches:
            padded = len(b) * max(int(lengths[b].max()), 1)
            assert padded <= max_tokens or len(b) == 1


def test_epochs_differ_and_are_reproducible():
    lengths = make_lengths(3000, 2)
    a = BucketBatchSampler(lengths, 20_000, seed=5)
    b = BucketBatchSampler(lengths, 20_000, seed=5)
    a.set_epoch(1)
    first = list(a)
    a.set_epoch(2)
    second = list(a)
    b.set_epoch(1)
    assert first == list(b)  # same (seed, epoch) -> same batches, whatever the history
    assert first != second
    # batch composition changes, not just the order
    assert {tuple(sorted(x)) for x in first} != {tuple(sorted(x)) for x in second}
    c = BucketBatchSampler(lengths, 20_000, seed=6)
    c.set_epoch(1)
    assert list(c) != first


def test_padding_overhead_hand_made():
    s = BucketBatchSampler([3, 1, 4, 2], max_tokens=6, shuffle=False)
    # sorted 1,2,3,4: [1,2] (3 x 3 = 9 > 6 closes it), [3] (2 x 4 = 8 > 6), [4]
    assert sorted(map(sorted, s)) == [[0], [1, 3], [2]]
    assert s.padding_overhead() == pytest.approx((2 * 2 + 3 + 4) / 10 - 1)
    one = BucketBatchSampler([3, 1, 4, 2], max_tokens=100, shuffle=False)
    assert list(one) == [[1, 3, 0, 2]] and one.padding_overhead() == pytest.approx(16 / 10 - 1)
    empty = BucketBatchSampler([0, 0, 2], max_tokens=100, shuffle=False)
    assert empty.padding_overhead() == pytest.approx(3 * 2 / 2 - 1)
    assert BucketBatchSampler([0, 0], max_tokens=10).padding_overhead() == float("inf")


def test_bucketing_beats_random_batches():
    lengths = make_lengths(3000, 4)
    s = BucketBatchSampler(lengths, 40_000, seed=0)
    mean_b = len(lengths) / len(s)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(lengths))
    chunks = np.array_split(perm, len(s))
    random_overhead = sum(len(c) * lengths[c].max() for c in chunks) / lengths.sum() - 1
    assert s.padding_overhead() < 0.1 < random_overhead
    assert mean_b > 1


def test_drop_last_and_validation():
    lengths = np.full(10, 10)
    keep = BucketBatchSampler(lengths, 30, shuffle=False)
    assert [len(b) for b in keep] == [3, 3, 3, 1]
    drop = BucketBatchSampler(lengths, 30, shuffle=False, drop_last=True)
    assert [len(b) for b in drop] == [3, 3, 3]
    exact = BucketBatchSampler(np.full(9, 10), 30, shuffle=False, drop_last=True)
    assert [len(b) for b in exact] == [3, 3, 3]  # a full last batch is kept
    with pytest.raises(ValueError):
        BucketBatchSampler([1, -2], 10)
    with pytest.raises(ValueError):
        BucketBatchSampler([1, 2], 0)


# ------------------------------------------------------------------------------------------- collate


def test_collate_masks_and_zero_padding():
    sizes = [3, 0, 5]
    items = [(torch.full((n, 4), k + 1.0), torch.tensor([float(k), float(n)])) for k, n in enumerate(sizes)]
    x, mask, cond = collate_clouds(items)
    assert x.shape == (3, 5, 4) and x.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask.tolist() == [[False] * 3 + [True] * 2, [True] * 5, [False] * 5]
    assert torch.all(x[mask] == 0) and torch.all(x[~mask] != 0)
    assert torch.equal(x[2], torch.full((5, 4), 3.0))
    assert cond.tolist() == [[0, 3], [1, 0], [2, 5]]
    x0, mask0, _ = collate_clouds([(torch.zeros(0, 4), torch.zeros(2))] * 2)
    assert x0.shape == (2, 1, 4) and mask0.all()


# ------------------------------------------------------------------------------------------- dataset


def test_dataset_items_reproducible_and_order_independent(clouds, transform):
    ds = CloudDataset(clouds, transform, indices=np.arange(10, 40), seed=7)
    ds.set_epoch(3)
    forward = [ds[i] for i in range(len(ds))]
    backward = [ds[i] for i in reversed(range(len(ds)))][::-1]
    for (pa, ca), (pb, cb) in zip(forward, backward, strict=True):
        assert torch.equal(pa, pb) and torch.equal(ca, cb)
    ds.set_epoch(4)
    k = int(np.argmax(ds.lengths))
    assert not torch.equal(ds[k][0], forward[k][0])  # fresh noise every epoch ...
    inv = transform.inverse_transform(ds[k][0].numpy().astype(np.float64))
    # ... while the bins stay the same (float32 latents still floor back to the stored bins)
    assert np.array_equal(inv[:, 1:], clouds.cloud(10 + k)[:, 1:])


def test_dataset_condition_and_raw_points(clouds):
    ds = CloudDataset(clouds, None, indices=[5, 2])
    pts, cond = ds[1]
    assert torch.equal(pts, torch.from_numpy(clouds.cloud(2)))
    assert cond.tolist() == pytest.approx([clouds.conditions[2, 0], clouds.lengths[2]], rel=1e-6)
    assert ds.condition_names == ("incident_energy", "n")
    assert ds.lengths.tolist() == clouds.lengths[[5, 2]].tolist()
    with pytest.raises(ValueError, match="out of range"):
        CloudDataset(clouds, None, indices=[len(clouds)])


def test_dataloader_end_to_end(clouds, transform):
    ds = CloudDataset(clouds, transform, seed=1)
    sampler = BucketBatchSampler(ds.lengths, max_tokens=400, seed=1)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_clouds, num_workers=0)
    seen = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        ds.set_epoch(epoch)
        n_real = 0
        for (x, mask, cond), idx in zip(loader, sampler, strict=True):
            assert x.shape[:2] == mask.shape and cond.shape == (len(idx), 2)
            assert torch.equal((~mask).sum(1), torch.as_tensor(ds.lengths[idx]))
            assert torch.equal(cond[:, 1], torch.as_tensor(ds.lengths[idx], dtype=torch.float32))
            assert torch.all(x[mask] == 0)
            assert x.shape[0] * x.shape[1] <= 400 or x.shape[0] == 1
            n_real += int((~mask).sum())
        assert n_real == int(clouds.lengths.sum())
        sampler.set_epoch(epoch)
        seen.append(next(iter(loader))[0])
    sampler.set_epoch(0)
    ds.set_epoch(0)
    assert torch.equal(next(iter(loader))[0], seen[0])
