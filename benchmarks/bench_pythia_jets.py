"""Throughput of the Pythia 8 + FastJet jet generator: accepted jets per second per jet type.

Usage: python benchmarks/bench_pythia_jets.py [--n-jets 50] [--n-particles 30] [--types g q t]
       [--settings '{"mpi": false}']   (use --n-jets 1000 for a stable figure)
"""

from __future__ import annotations

import argparse
import json
import time

from pipelines.generate.pythia_jets import JET_TYPES, JetGenSettings, generate_jets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jets", type=int, default=50)
    parser.add_argument("--n-particles", type=int, default=30)
    parser.add_argument("--types", nargs="+", default=list(JET_TYPES), choices=JET_TYPES)
    parser.add_argument("--settings", default="{}", help="JSON object of JetGenSettings fields")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = JetGenSettings.from_dict(json.loads(args.settings))
    print(f"settings: {args.settings}; {args.n_jets} jets, {args.n_particles} slots, 1 process")
    for jet_type in args.types:
        start = time.perf_counter()
        cpu = time.process_time()
        generate_jets(args.n_jets, jet_type, args.n_particles, args.seed, settings, progress=False)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
        print(
            f"{jet_type}: {args.n_jets / wall:7.1f} jets/s wall, {args.n_jets / cpu:7.1f} jets/s CPU "
            f"(incl. Pythia init; {wall:.1f} s wall)"
        )


if __name__ == "__main__":
    main()
