"""Stage ``convert``: CaloChallenge showers or JetNet jets -> ragged point clouds with a seeded split.

Showers become one point per non-zero voxel (E MeV, layer, alpha, r) with the incident energy
as condition; jets become one point per real particle (eta_rel, phi_rel, pt_rel) with the jet's
(pt, eta, mass) as condition and, for a file of several jet types (JetNet's type column), one one-hot
column ``type_<letter>`` per type in the file (:mod:`pipelines.jet_types`). Files are read in chunks,
so memory stays bounded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipelines.geometry import load_geometry
from pipelines.io.calochallenge import check_layout, iter_calochallenge
from pipelines.io.clouds import SPLIT_NAMES, CloudWriter, assign_split
from pipelines.io.errors import DataError
from pipelines.pointcloud import POINT_DTYPES, POINT_NAMES, voxels_to_columns

JET_POINT_NAMES = ("eta_rel", "phi_rel", "pt_rel")
JET_CONDITION_NAMES = ("jet_pt", "jet_eta", "jet_mass")
#: Fewest showers or jets the training split may hold (the validation split must not be empty either
#: when its fraction is non-zero). A floor against a wrong file, not a recommendation: the default
#: embedded data sets train on 3,200 showers and 1,200 jets.
MIN_TRAIN_CLOUDS = 10


def checked_split(path: Path, n: int, fractions: tuple[float, ...], seed: int, unit: str) -> np.ndarray:
    """The seeded split of ``n`` clouds; DataError naming ``path`` if its training split is too small."""
    split = assign_split(n, fractions, seed)
    n_train, n_val = int((split == 0).sum()), int((split == 1).sum())
    if n_train < MIN_TRAIN_CLOUDS:
        raise DataError(
            f"{path}: {n} {unit} give a training split of {n_train} (fractions {list(fractions)}); "
            f"at least {MIN_TRAIN_CLOUDS} are needed to train"
        )
    if n_val == 0 and fractions[1] > 0:
        raise DataError(
            f"{path}: {n} {unit} give an empty validation split (fractions {list(fractions)}); "
            "use a larger file or a larger validation fraction"
        )
    return split


def jets_to_points(particle_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """JetNet particles (N, n, 4) -> points (P, 3) of the real (mask = 1) particles and lengths (N,)."""
    real = particle_features[:, :, 3] > 0.5
    return particle_features[real][:, :3].astype(np.float32), real.sum(axis=1).astype(np.int64)


def convert_showers(path: Path, dataset: str, out: Path, fractions, seed: int, chunk_size: int) -> dict:
    """Convert a CaloChallenge file to point clouds; returns a summary."""
    geometry = load_geometry(dataset)
    n = check_layout(path, geometry)
    split = checked_split(path, n, fractions, seed, "showers")
    with CloudWriter(out, POINT_NAMES, ("incident_energy",), POINT_DTYPES) as writer:
        with tqdm(total=n, desc=f"convert {path.name}", unit="shower", file=sys.stderr) as bar:
            for _, energies, showers in iter_calochallenge(path, geometry, chunk_size):
                columns, lengths = voxels_to_columns(showers, geometry)
                writer.append_columns(columns, lengths, energies[:, None])
                bar.update(len(energies))
        attrs = {
            "kind": "showers",
            "dataset": dataset,
            "source": str(path),
            "split_seed": seed,
            "split_fractions": list(fractions),
        }
        writer.finish(split, attrs)
    return {"clouds": n, "split": {name: int((split == k).sum()) for k, name in SPLIT_NAMES.items()}}


def convert_jets(path: Path, out: Path, fractions, seed: int, chunk_size: int) -> dict:
    """Convert a JetNet file to point clouds; returns a summary."""
    from pipelines.io.jetnet import read_jet_types, read_jetnet
    from pipelines.jet_types import JET_TYPES, condition_names, one_hot

    particles, jets = read_jetnet(path)
    codes = read_jet_types(path)
    types = () if codes is None else tuple(t for k, t in enumerate(JET_TYPES) if np.any(codes == k))
    conditions = jets[:, :3].astype(np.float64)
    if len(types) > 1:
        conditions = np.concatenate([conditions, one_hot(codes, types)], axis=1)
    n = len(jets)
    split = checked_split(path, n, fractions, seed, "jets")
    with CloudWriter(out, JET_POINT_NAMES, JET_CONDITION_NAMES + condition_names(types)) as writer:
        for start in tqdm(range(0, n, chunk_size), desc=f"convert {path.name}", file=sys.stderr):
            points, lengths = jets_to_points(particles[start : start + chunk_size])
            writer.append(points, lengths, conditions[start : start + chunk_size])
        attrs = {
            "kind": "jets",
            "n_particles": int(particles.shape[1]),
            "source": str(path),
            "split_seed": seed,
            "split_fractions": list(fractions),
        }
        if len(types) > 1:
            attrs["jet_types"] = list(types)
        writer.finish(split, attrs)
    return {"clouds": n, "split": {name: int((split == k).sum()) for k, name in SPLIT_NAMES.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines convert", description=__doc__)
    parser.add_argument("--kind", choices=("showers", "jets"), required=True)
    parser.add_argument("--input", type=Path, required=True, help="CaloChallenge or JetNet HDF5 file")
    parser.add_argument("--dataset", default="2", help="CaloChallenge dataset (showers only)")
    parser.add_argument("--split", default="0.8,0.1,0.1", help="train,validation,test fractions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True, help="point-cloud HDF5 file to write")
    args = parser.parse_args(argv)
    fractions = tuple(float(x) for x in args.split.split(","))
    if args.kind == "showers":
        summary = convert_showers(args.input, args.dataset, args.out, fractions, args.seed, args.chunk_size)
    else:
        summary = convert_jets(args.input, args.out, fractions, args.seed, args.chunk_size)
    print(f"wrote {args.out}: {summary}", file=sys.stderr)
    return 0
