"""Length-bucketed batches of ragged point clouds: sampler, dataset and padding collate (PyTorch).

``BucketBatchSampler`` groups clouds of similar size under a padded-token budget (batch size x
longest cloud in the batch <= ``max_tokens``), ``CloudDataset`` serves transformed clouds with
dequantisation noise redrawn every epoch (reproducible from (seed, epoch, cloud index) whatever the
worker order), and ``collate_clouds`` pads them into (B, n_max, d) with a mask that is True at padding.

Zero-length clouds (showers without any hit above threshold) are valid: they cost one padded slot
in the budget and in the batch (n_max >= 1; their row is all padding).

Typical use::

    ds = CloudDataset(clouds, transform, indices=clouds.split_indices(0), seed=7)
    sampler = BucketBatchSampler(ds.lengths, max_tokens=200_000, seed=7)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_clouds, num_workers=4)
    for epoch in range(n_epochs):
        sampler.set_epoch(epoch); ds.set_epoch(epoch)
        for x, mask, cond in loader: ...

(With ``persistent_workers=True`` the workers keep their own dataset copies and miss ``set_epoch``;
leave it False, the default.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def _epoch_rng(seed: int, epoch: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), *map(int, more)])


class BucketBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices whose padded size (B x max n) stays within ``max_tokens``.

    Each epoch: sort the clouds by length (ties broken at random when ``shuffle``), pack them greedily
    in that order, closing a batch when adding the next cloud would exceed the budget (a cloud longer
    than ``max_tokens`` gets a batch of its own), then shuffle the batch order. With ``shuffle`` the
    packing also starts at a random phase (the first batch gets a random fraction of the budget), so
    batch boundaries, not only batch order, change between epochs. Everything is a function of
    (seed, epoch): call :meth:`set_epoch` before each epoch. A zero-length cloud counts as length 1.

    ``drop_last`` drops the final batch of the packing pass (the longest clouds) when it closed because
    the data ran out rather than because it was full.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ):
        lengths = np.asarray(lengths)
        bad = lengths.size and (lengths.min() < 0 or np.any(lengths != np.floor(lengths)))
        if lengths.ndim != 1 or bad:
            raise ValueError("BucketBatchSampler: lengths must be a 1-d array of non-negative integers")
        if int(max_tokens) < 1:
            raise ValueError(f"BucketBatchSampler: max_tokens must be >= 1, got {max_tokens}")
        self.lengths = lengths.astype(np.int64)
        self.cost = np.maximum(self.lengths, 1)
        self.max_tokens = int(max_tokens)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._batches: list[np.ndarray] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (reproducible from (seed, epoch))."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._batches = None

    def _pack(self) -> list[np.ndarray]:
        n = len(self.cost)
        if n == 0:
            return []
        rng = _epoch_rng(self.seed, self.epoch)
        if self.shuffle:
            order = np.lexsort((rng.random(n), self.cost))
            budget = int(self.max_tokens * (1.0 - rng.random()))  # random phase of the first batch
        else:
            order = np.argsort(self.cost, kind="stable")
            budget = self.max_tokens
        cost = self.cost[order]
        batches: list[np.ndarray] = []
        start, full = 0, True
        for i in range(1, n + 1):
            if i == n:
                full = (i - start + 1) * cost[i - 1] > budget
                break
            # sorted ascending: the newcomer is the longest, so the padded size is (count) x cost[i]
            if (i - start + 1) * cost[i] > budget:
                batches.append(order[start:i])
                start, budget = i, self.max_tokens
        if not (self.drop_last and not full):
            batches.append(order[start:n])
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        return batches

    def batches(self) -> list[np.ndarray]:
        """The current epoch's batches (arrays of dataset indices), in yield order."""
        if self._batches is None:
            self._batches = self._pack()
        return self._batches

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.batches():
            yield b.tolist()

    def __len__(self) -> int:
        return len(self.batches())

    def padding_overhead(self) -> float:
        """Padded tokens / real tokens - 1 over the current epoch (padding as done by collate_clouds)."""
        batches = self.batches()
        padded = sum(len(b) * int(self.cost[b].max()) for b in batches)
        real = sum(int(self.lengths[b].sum()) for b in batches)
        if real == 0:
            return float("inf") if padded else 0.0
        return padded / real - 1.0


class CloudDataset(Dataset):
    """Map-style dataset of transformed clouds: item i -> (points (n, d) float32, cond (c + 1,) float32).

    ``indices`` selects the clouds (default: all); item i is cloud ``indices[i]``. ``transform`` is a
    fitted :class:`pipelines.transforms.PointTransform` (or None for raw points); its dequantisation
    noise comes from ``default_rng([seed, epoch, cloud index])``, so a given (seed, epoch) reproduces
    every item regardless of worker count or order. ``cond`` = [raw Clouds.conditions row..., n] with
    n the number of points (``condition_names`` lists them); normalisation is left to the model.
    """

    def __init__(
        self, clouds: Any, transform: Any = None, indices: Sequence[int] | None = None, seed: int = 0
    ):
        self.clouds = clouds
        self.transform = transform
        n_clouds = len(clouds.offsets) - 1
        self.indices = np.arange(n_clouds) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n_clouds):
            raise ValueError(f"CloudDataset: indices out of range for {n_clouds} clouds")
        if transform is not None and getattr(transform, "is_fitted", True) is False:
            raise ValueError("CloudDataset: the transform is not fitted")
        self.seed = int(seed)
        self.epoch = 0
        self.condition_names = (*tuple(clouds.condition_names), "n")

    def set_epoch(self, epoch: int) -> None:
        """Reseed the dequantisation noise for ``epoch`` (call in the main process before iterating)."""
        self.epoch = int(epoch)

    @property
    def lengths(self) -> np.ndarray:
        """Number of points of each item, (len(self),) int64 (feed this to BucketBatchSampler)."""
        return np.diff(self.clouds.offsets)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        start, stop = int(self.clouds.offsets[j]), int(self.clouds.offsets[j + 1])
        pts = np.asarray(self.clouds.points[start:stop])
        if self.transform is not None:
            pts = self.transform.transform(pts.astype(np.float64), rng=_epoch_rng(self.seed, self.epoch, j))
        cond = np.append(np.asarray(self.clouds.conditions[j], dtype=np.float64), stop - start)
        return (
            torch.from_numpy(np.ascontiguousarray(pts, dtype=np.float32)),
            torch.from_numpy(cond.astype(np.float32)),
        )


def collate_clouds(
    items: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad clouds into x (B, n_max, d) float32 (zeros at padding), mask (B, n_max) bool (True = padding)
    and cond (B, c) float32; n_max >= 1, so an all-empty batch still has one (padding) slot."""
    if len(items) == 0:
        raise ValueError("collate_clouds: empty batch")
    lengths = torch.tensor([p.shape[0] for p, _ in items], dtype=torch.int64)
    d = items[0][0].shape[1]
    n_max = max(int(lengths.max()), 1)
    x = torch.zeros((len(items), n_max, d), dtype=torch.float32)
    for k, (p, _) in enumerate(items):
        x[k, : p.shape[0]] = p
    mask = torch.arange(n_max)[None, :] >= lengths[:, None]
    cond = torch.stack([c for _, c in items]).to(torch.float32)
    return x, mask, cond


def shard_rows(n: int, rank: int, world_size: int) -> slice:
    """Rows of a batch of ``n`` that rank ``rank`` of ``world_size`` works on: every world_size-th row from
    ``rank`` (bucketed batches are sorted by length, so the ranks get clouds of similar sizes)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"shard_rows: rank {rank} outside a world of {world_size}")
    return slice(rank, n, world_size)
