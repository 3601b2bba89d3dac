"""Generation speed of a dataset-2-size MDMA generator: ms per shower, with and without voxelisation.

The generator has the published size (``dataset2_config``, about 66k parameters) with random weights
(speed does not depend on training); the point transform is fitted on random sparse showers; hit
counts follow a dataset-2-like log-normal (median 1,600, clipped to 120..5,600). Each request of
B showers covers n sampling, noise, generator, inverse transform, alpha rotation (without
voxelisation) plus voxelisation and the 15.15 keV threshold (with). With ``--device cuda`` the noise,
the generator and the float64 inverse transform run on the GPU; rotation, energy cleaning and
voxelisation run on the host.

    python benchmarks/bench_sample.py                 # CPU, batch 1 and 100 (small default)
    python benchmarks/bench_sample.py --full          # CPU, batch 1, 100 and 10,000
    python benchmarks/bench_sample.py --device cuda --full
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.geometry import load_geometry  # noqa: E402
from pipelines.models.mdma import build_generator, count_parameters, dataset2_config  # noqa: E402
from pipelines.models.multiplicity import CategoricalMultiplicity  # noqa: E402
from pipelines.pointcloud import voxels_to_points  # noqa: E402
from pipelines.sample import Sampler, SampleSettings, resolve_device, time_generation  # noqa: E402
from pipelines.transforms import shower_transform  # noqa: E402


def ds2_like_multiplicity(n_max: int, seed: int = 0) -> CategoricalMultiplicity:
    """p(n) of a log-normal with median 1,600 and sigma 0.6, restricted to 120..5,600 hits."""
    rng = np.random.default_rng(seed)
    n = np.clip(np.round(rng.lognormal(np.log(1600), 0.6, 200_000)), 120, 5600).astype(np.int64)
    return CategoricalMultiplicity.fit(n, n_max)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100])
    p.add_argument("--full", action="store_true", help="batch sizes 1, 100 and 10,000")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--max-tokens", type=int, default=50_000)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [1, 100, 10_000] if args.full else args.batch_sizes
    geo = load_geometry("2")
    rng = np.random.default_rng(0)
    showers = np.zeros((50, geo.n_voxels), dtype=np.float32)
    hit = rng.random(showers.shape) < 0.25
    showers[hit] = rng.lognormal(-1.0, 2.0, hit.sum()) + 0.016
    points, _ = voxels_to_points(showers, geo)
    transform = shower_transform(geo).fit(points.astype(np.float64), rng=rng)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    config = dataset2_config(mean_n=1600.0)
    generator = build_generator(config).to(device).eval()
    sampler = Sampler(generator, config, transform, ds2_like_multiplicity(geo.n_voxels), device, geo)
    settings = SampleSettings(
        timing_batch_sizes=tuple(sizes), timing_max_batch_cpu=max(sizes), timing_repeats=args.repeats,
        max_tokens=args.max_tokens, progress=False,
    )  # fmt: skip
    energies = np.exp(rng.uniform(np.log(1e3), np.log(1e6), 10_000))
    rows = time_generation(sampler, "showers", energies, settings, seed=1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"MDMA dataset-2 size: {count_parameters(generator)} generator parameters; device {name}; "
        f"torch {torch.__version__}; {torch.get_num_threads()} CPU thread(s)"
    )
    print(f"{'batch':>7} {'ms/shower no voxelisation':>26} {'ms/shower with voxelisation':>28}")
    for r in rows:
        print(f"{r['batch_size']:>7} {r['ms_per_sample_without_conversion']:>26.2f} "
              f"{r['ms_per_sample_with_conversion']:>28.2f}")  # fmt: skip
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
