"""Generation speed of every model family: ms per shower (jet) at batch 1 / 100 / 10,000, decoding included.

Each family is built with its default settings (config.yaml) on embedded GFlash showers; its weights
are the untrained ones (speed does not depend on training). Point families (flow matching, GAN) draw
n from a dataset-2-like p(n) (log-normal, median 1,600 hits) and are voxelised with the configured
collision method; the factorised family draws its own hit counts and decodes without collisions. A
request of B showers covers everything from incident energies to the voxelised shower ("with
conversion"); "without" stops before the voxelisation (for the factorised family both include its
decoding, which is part of the model).

    python benchmarks/bench_sample.py                      # CPU, batch 1 and 100
    python benchmarks/bench_sample.py --full               # CPU, batch 1, 100 and 10,000
    python benchmarks/bench_sample.py --device cuda --full
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from embedded_data import shower_data

from pipelines.device import resolve_device
from pipelines.models.family import family_settings, get_family
from pipelines.models.multiplicity import CategoricalMultiplicity, save_multiplicity
from pipelines.models.store import save_model
from pipelines.sample import SampleSettings, load_sampler, time_generation
from pipelines.transforms import save_transform

FAMILIES = ("factorised", "flow-matching", "mdma-gan")


def ds2_like_multiplicity(n_max: int, seed: int = 0) -> CategoricalMultiplicity:
    """p(n) of a log-normal with median 1,600 and sigma 0.6, restricted to 120..5,600 hits."""
    rng = np.random.default_rng(seed)
    n = np.clip(np.round(rng.lognormal(np.log(1600), 0.6, 200_000)), 120, 5600).astype(np.int64)
    return CategoricalMultiplicity.fit(n, n_max)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100])
    p.add_argument("--full", action="store_true", help="batch sizes 1, 100 and 10,000")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--settings",
        default="{}",
        help='JSON: settings per family, e.g. {"flow-matching": {"ode_steps": 20}}',
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [1, 100, 10_000] if args.full else args.batch_sizes
    device = resolve_device(args.device)
    data = shower_data(300)
    per_family = json.loads(args.settings)
    settings = SampleSettings(timing_batch_sizes=tuple(sizes), timing_max_batch_cpu=max(sizes),
                              timing_repeats=args.repeats, collisions="shift", progress=False)  # fmt: skip
    energies = np.exp(np.random.default_rng(0).uniform(np.log(1e3), np.log(1e6), 10_000))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}; torch {torch.__version__}; {torch.get_num_threads()} CPU thread(s)")
    print(
        f"{'family':<15} {'batch':>7} {'ms/shower without':>18} {'ms/shower with conversion':>26} "
        f"{'parameters':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        save_transform(d / "t.json", data.transform)
        save_multiplicity(d / "m.json", ds2_like_multiplicity(data.geometry.n_voxels))
        for family in args.families:
            cls = get_family(family)
            torch.manual_seed(0)
            model = cls(family_settings(cls, per_family.get(family, {})), data, torch.device("cpu"))
            weights = {k: m.state_dict() for k, m in model.modules().items()}
            extra = {"point_names": list(data.clouds.point_names)}
            save_model(d / "model.pt", family, "showers", model.export_config(), weights, extra)
            sampler = load_sampler(
                d / "model.pt", d / "m.json", d / "t.json", "showers", device, data.geometry
            )
            rows = time_generation(sampler, "showers", energies, settings, seed=1)
            for r in rows:
                print(f"{family:<15} {r['batch_size']:>7} {r['ms_per_sample_without_conversion']:>18.2f} "
                      f"{r['ms_per_sample_with_conversion']:>26.2f} {sampler.parameters:>11}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
