"""Training throughput (showers/s) and peak memory of the dataset-2-size MDMA on synthetic showers.

Synthetic showers mimic dataset 2: incident energy log-uniform in [1 GeV, 1 TeV], hit count rising
with energy (about 1,600 on average, clipped to [120, 5600]), points drawn on the 45 x 16 x 9 grid and
passed through a fitted shower transform, as in training. One warm-up step is not timed.

    python benchmarks/bench_train.py                       # CPU, a few steps, small batches
    python benchmarks/bench_train.py --device cuda --max-tokens 300000 --steps 50
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.batching import BucketBatchSampler, CloudDataset  # noqa: E402
from pipelines.geometry import load_geometry  # noqa: E402
from pipelines.io.clouds import Clouds  # noqa: E402
from pipelines.models.mdma import count_parameters, dataset2_config  # noqa: E402
from pipelines.train import BatchStream, Trainer, TrainSettings, resolve_device  # noqa: E402
from pipelines.transforms import shower_transform  # noqa: E402


def synthetic_showers(n_showers: int, seed: int = 0) -> Clouds:
    """Dataset-2-like shower point clouds (energy MeV, layer, alpha, r)."""
    geometry = load_geometry("2")
    rng = np.random.default_rng(seed)
    e_inc = 10 ** rng.uniform(3, 6, n_showers)
    n = np.clip(1150 * (e_inc / 3e4) ** 0.35 * rng.lognormal(0, 0.15, n_showers), 120, 5600).astype(np.int64)
    p = int(n.sum())
    layer = np.minimum(rng.gamma(4.0, 3.0, p), geometry.n_layers - 1).astype(np.int64)
    alpha = rng.integers(0, geometry.n_alpha, p)
    r = np.minimum(rng.exponential(2.0, p), geometry.n_r - 1).astype(np.int64)
    energy = rng.lognormal(0.0, 2.0, p)
    points = np.stack([energy, layer, alpha, r], axis=1)
    return Clouds(
        points,
        np.concatenate([[0], np.cumsum(n)]),
        e_inc[:, None],
        ("energy", "layer", "alpha", "r"),
        ("incident_energy",),
        np.zeros(n_showers, np.int8),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--steps", type=int, default=3, help="timed generator steps (n_critic critic steps each)")
    p.add_argument("--max-tokens", type=int, default=20_000, help="padded points per batch")
    p.add_argument("--showers", type=int, default=400, help="synthetic training showers")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    clouds = synthetic_showers(args.showers)
    transform = shower_transform(load_geometry("2")).fit(
        clouds.points[:200_000].astype(np.float64), rng=np.random.default_rng(0)
    )
    size = dataset2_config()
    settings = TrainSettings(
        hidden=size.hidden,
        n_blocks=size.n_blocks,
        heads=size.heads,
        noise_dim=size.noise_dim,
        critic_hidden=size.critic_hidden,
        critic_blocks=size.critic_blocks,
        max_tokens=args.max_tokens,
        max_steps=args.steps + 1,
        amp=args.amp,
        num_workers=args.workers,
    )
    config = settings.model_config("showers", 4, float(clouds.lengths.mean()))
    trainer = Trainer.create(settings, config, device)
    dataset = CloudDataset(clouds, transform, seed=0)
    stream = BatchStream(dataset, BucketBatchSampler(dataset.lengths, args.max_tokens, seed=0), args.workers)

    trainer.train_step(stream)  # warm-up (allocations, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, n_clouds = time.perf_counter(), 0
    for _ in range(args.steps):
        _, used = trainer.train_step(stream)
        n_clouds += used
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    print(f"device: {device} (amp {trainer.amp_dtype or 'off'}, torch threads {torch.get_num_threads()})")
    print(
        f"generator parameters: {count_parameters(trainer.generator)}, "
        f"critic parameters: {count_parameters(trainer.critic)}"
    )
    print(
        f"synthetic showers: {len(clouds)}, mean hits {clouds.lengths.mean():.0f}, "
        f"max_tokens {args.max_tokens}, n_critic {settings.n_critic}, workers {args.workers}"
    )
    print(
        f"timed steps: {args.steps} in {seconds:.2f} s -> {seconds / args.steps:.3f} s/step, "
        f"{n_clouds / seconds:.1f} showers/s (real showers through the critic)"
    )
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
    print(f"peak process RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
