"""Padding overhead and batches per epoch: length bucketing vs. random batches of the same mean size.

Cloud sizes follow a dataset-2-like distribution: log-normal around 1,600 hits, clipped to 120-5,600
(CaloChallenge dataset 2: median about 1,600 non-zero voxels). Random batching uses the bucketed
sampler's mean batch size (so both take the same number of optimiser steps per epoch); its padding
is B x (longest cloud in the batch), as collate_clouds pads.

    python benchmarks/bench_batching.py                 # 20,000 clouds (quick)
    python benchmarks/bench_batching.py --n-clouds 100000 --epochs 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipelines.batching import BucketBatchSampler


def dataset2_like_lengths(n: int, seed: int, sigma: float = 0.55) -> np.ndarray:
    """Hit counts: log-normal with median 1,600, clipped to [120, 5600]."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(np.log(1600.0), sigma, n)), 120, 5600).astype(np.int64)


def random_batch_overhead(lengths: np.ndarray, batch_size: int, seed: int) -> tuple[float, int, int]:
    """(padding overhead, batches, largest padded batch) of shuffled fixed-size batches."""
    perm = np.random.default_rng(seed).permutation(len(lengths))
    batches = [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    padded = [len(b) * int(lengths[b].max()) for b in batches]
    return sum(padded) / lengths.sum() - 1.0, len(batches), max(padded)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-clouds", type=int, default=20_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, nargs="+", default=[200_000, 400_000])
    args = p.parse_args()
    lengths = dataset2_like_lengths(args.n_clouds, args.seed)
    q = np.percentile(lengths, [0, 50, 100])
    print(f"{args.n_clouds} clouds, hits min/median/max {q[0]:.0f}/{q[1]:.0f}/{q[2]:.0f}, "
          f"mean {lengths.mean():.0f}")  # fmt: skip
    print(f"{'max_tokens':>10} {'method':>8} {'batches':>8} {'mean B':>7} {'overhead':>9} "
          f"{'max padded':>10} {'pack s':>7}")  # fmt: skip
    for max_tokens in args.max_tokens:
        sampler = BucketBatchSampler(lengths, max_tokens, seed=args.seed)
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            t0 = time.perf_counter()
            n_batches = len(sampler)
            dt = time.perf_counter() - t0
            biggest = max(len(b) * int(lengths[b].max()) for b in sampler.batches())
            print(f"{max_tokens:>10} {'bucket':>8} {n_batches:>8} {len(lengths) / n_batches:>7.1f} "
                  f"{sampler.padding_overhead():>9.4f} {biggest:>10} {dt:>7.3f}  epoch {epoch}")  # fmt: skip
        batch_size = max(1, round(len(lengths) / n_batches))
        overhead, n_rand, biggest = random_batch_overhead(lengths, batch_size, args.seed)
        print(f"{max_tokens:>10} {'random':>8} {n_rand:>8} {batch_size:>7.1f} {overhead:>9.4f} {biggest:>10}")


if __name__ == "__main__":
    main()
