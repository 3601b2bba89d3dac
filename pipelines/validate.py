"""Stage ``validate``: check an input file completely and record what it holds.

Every chunk of a CaloChallenge or JetNet file is read and checked (keys, shapes, NaN/inf,
negative energies, energy range); the JSON summary (content hash, counts, ranges) is what
downstream rules depend on, so a changed input file reruns everything after it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pipelines.geometry import load_geometry
from pipelines.io.atomic import atomic_path
from pipelines.io.calochallenge import iter_calochallenge
from pipelines.io.hashing import file_sha256


def summarise_showers(path: Path, dataset: str) -> dict:
    geometry = load_geometry(dataset)
    n, hits, e_min, e_max, zero = 0, 0, np.inf, 0.0, 0
    for _, energies, showers in iter_calochallenge(path, geometry):
        nnz = np.count_nonzero(showers, axis=1)
        n += len(energies)
        hits += int(nnz.sum())
        zero += int((nnz == 0).sum())
        e_min, e_max = min(e_min, float(energies.min())), max(e_max, float(energies.max()))
    return {
        "kind": "showers",
        "dataset": dataset,
        "showers": n,
        "mean_hits": hits / n,
        "zero_hit_showers": zero,
        "incident_energy_mev": [e_min, e_max],
    }


def summarise_jets(path: Path) -> dict:
    from pipelines.io.jetnet import read_jetnet

    particles, jets = read_jetnet(path)
    n_real = (particles[:, :, 3] > 0.5).sum(axis=1)
    return {
        "kind": "jets",
        "jets": len(jets),
        "particle_slots": int(particles.shape[1]),
        "mean_particles": float(n_real.mean()),
        "jet_pt_gev": [float(jets[:, 0].min()), float(jets[:, 0].max())],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines validate", description=__doc__)
    parser.add_argument("--kind", choices=("showers", "jets"), required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--dataset", default="2", help="CaloChallenge dataset (showers only)")
    parser.add_argument("--out", type=Path, required=True, help="JSON summary to write")
    args = parser.parse_args(argv)
    summary = (
        summarise_showers(args.input, args.dataset) if args.kind == "showers" else summarise_jets(args.input)
    )
    summary = {"file": str(args.input), "sha256": file_sha256(args.input), **summary}
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.input}: valid, {json.dumps(summary)}", file=sys.stderr)
    return 0
