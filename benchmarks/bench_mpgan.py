"""Generation cost against jet size: ms per jet at 30 and 150 particles, MPGAN beside the mean-field families.

MPGAN passes messages between every pair of particles (cost ~ n^2 per jet); the mean-field families
(flow matching: 50 ODE steps of a mean-field attention velocity field; the MDMA GAN: one pass) talk
through one global token (cost ~ n). Each family is built with its default settings (config.yaml;
mpgan: pipelines/models/settings.py) on jet-like clouds with that many slots; the weights are the
untrained ones (speed does not depend on training). One forward pass of the sampler on full jets
(n = slots) in transformed space, no inverse transform, best of ``--repeats``.

    python benchmarks/bench_mpgan.py                      # one thread, batch 100, 30 and 150 particles
    python benchmarks/bench_mpgan.py --threads 2 --batch 50 --families mpgan
"""

from __future__ import annotations

import argparse
import time

import torch
from embedded_data import jet_data

from pipelines.models.family import count_parameters, family_settings, get_family

FAMILIES = ("mpgan", "mdma-gan", "flow-matching")


def ms_per_jet(family: str, n_slots: int, batch: int, repeats: int) -> tuple[float, int]:
    """(best ms per jet of one sampler pass over ``batch`` full jets, trainable parameters)."""
    data = jet_data(200, n_slots=n_slots)
    cls = get_family(family)
    torch.manual_seed(0)
    model = cls(family_settings(cls, {}), data, torch.device("cpu"))
    weights = {k: m.state_dict() for k, m in model.modules().items()}
    sampler = cls.build_sampler(model.export_config(), weights, data.transform, None, torch.device("cpu"))
    noise = torch.randn(batch, n_slots, sampler.noise_dim)
    cond = torch.ones(batch, 1) * n_slots / data.mean_n
    mask = torch.zeros(batch, n_slots, dtype=torch.bool)
    best = float("inf")
    with torch.no_grad():
        sampler(noise[:2], cond[:2], mask[:2])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            sampler(noise, cond, mask)
            best = min(best, time.perf_counter() - start)
    return 1e3 * best / batch, count_parameters(model.modules())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.add_argument("--slots", type=int, nargs="+", default=[30, 150])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; {torch.get_num_threads()} CPU thread(s); batch {args.batch} jets")
    print(f"{'family':<15} {'particles':>9} {'ms/jet':>9} {'parameters':>11}")
    results: dict[tuple[str, int], float] = {}
    for family in args.families:
        for n in args.slots:
            ms, n_params = ms_per_jet(family, n, args.batch, args.repeats)
            results[family, n] = ms
            print(f"{family:<15} {n:>9} {ms:>9.3f} {n_params:>11}", flush=True)
    if len(args.slots) == 2:
        lo, hi = sorted(args.slots)
        for family in args.families:
            print(f"{family}: {hi} / {lo} particles costs x{results[family, hi] / results[family, lo]:.1f} "
                  f"(linear: x{hi / lo:.0f}, quadratic: x{(hi / lo) ** 2:.0f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
