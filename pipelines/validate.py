"""Stage ``validate``: check an input file completely and record what it holds.

Every chunk of a CaloChallenge or JetNet file is read and checked: layout (keys, shapes, dtypes,
NaN/inf, negative energies) by the readers, physics and units by :mod:`pipelines.io.physics`. A bad
file is an error naming the file, the row and the rule, and no summary is written; findings a
physicist may mean are warnings, listed under ``"warnings"`` in the JSON summary (content hash,
counts, ranges) that downstream rules depend on, so a changed input file reruns everything after it.
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
from pipelines.io.errors import DataError
from pipelines.io.hashing import file_sha256
from pipelines.io.physics import JetChecks, ShowerChecks


def summarise_showers(path: Path, dataset: str) -> dict:
    """Summary of a CaloChallenge file of CaloChallenge ``dataset``, with its warnings."""
    geometry = load_geometry(dataset)
    checks = ShowerChecks(path, dataset)
    n, hits, e_min, e_max, zero = 0, 0, np.inf, 0.0, 0
    for start, energies, showers in iter_calochallenge(path, geometry):
        checks.update(start, energies, showers)
        nnz = np.count_nonzero(showers, axis=1)
        n += len(energies)
        hits += int(nnz.sum())
        zero += int((nnz == 0).sum())
        e_min, e_max = min(e_min, float(energies.min())), max(e_max, float(energies.max()))
    warnings = checks.finish()
    return {
        "kind": "showers",
        "dataset": dataset,
        "showers": n,
        "mean_hits": hits / n,
        "zero_hit_showers": zero,
        "incident_energy_mev": [e_min, e_max],
        "warnings": warnings,
    }


def summarise_jets(path: Path, n_particles: int | None = None) -> dict:
    """Summary of a JetNet file, with its warnings; ``n_particles``: the configured slot count."""
    from pipelines.io.jetnet import iter_jetnet

    checks = JetChecks(path, n_particles)
    n, real, slots, pt_min, pt_max = 0, 0, 0, np.inf, -np.inf
    for start, particles, jets in iter_jetnet(path):
        checks.update(start, particles, jets)
        n += len(jets)
        real += int((particles[:, :, 3] > 0.5).sum())
        slots = int(particles.shape[1])
        pt_min, pt_max = min(pt_min, float(jets[:, 0].min())), max(pt_max, float(jets[:, 0].max()))
    warnings = checks.finish()
    return {
        "kind": "jets",
        "jets": n,
        "particle_slots": slots,
        "mean_particles": real / n,
        "jet_pt_gev": [pt_min, pt_max],
        "warnings": warnings,
    }


def _slot_count(value: str | None) -> int | None:
    """The ``--dataset`` value of a jet data set: its configured particle slots (30 or 150)."""
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise DataError(
            f"--dataset for jets must be the number of particle slots (30 or 150), got {value!r}"
        ) from None
    if n < 1:
        raise DataError(f"--dataset for jets must be a positive number of particle slots, got {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines validate", description=__doc__)
    parser.add_argument("--kind", choices=("showers", "jets"), required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument(
        "--dataset",
        default=None,
        help="showers: CaloChallenge dataset (default 2); jets: the configured particle slots per jet",
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON summary to write")
    args = parser.parse_args(argv)
    if args.kind == "showers":
        summary = summarise_showers(args.input, args.dataset or "2")
    else:
        summary = summarise_jets(args.input, _slot_count(args.dataset))
    summary = {"file": str(args.input), "sha256": file_sha256(args.input), **summary}
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.input}: valid, {json.dumps(summary)}", file=sys.stderr)
    return 0
