"""Stage ``merge-jets``: JetNet files of one jet type each (as JetNet is published) -> one file of
several types with JetNet's type column (:mod:`pipelines.io.jetnet`), the jets shuffled together (seeded).

The i-th file holds jets of the i-th type given; a file that has a type column must hold that type only.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.io.errors import DataError
from pipelines.io.jetnet import read_jet_types, read_jetnet, write_jetnet
from pipelines.jet_types import SHUFFLE_STREAM, parse_jet_types, type_code, type_letters

log = logging.getLogger(__name__)


def merge_jets(
    paths: Sequence[str | Path], jet_types: Sequence[str], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(particle_features, jet_features (N, 4), type codes (N,)) of the files, shuffled with ``seed``."""
    if len(paths) != len(jet_types):
        raise ValueError(f"{len(paths)} files for {len(jet_types)} jet types {list(jet_types)}")
    pfs, jfs, codes = [], [], []
    for path, jet_type in zip(paths, jet_types, strict=True):
        pf, jf = read_jetnet(path)
        given = read_jet_types(path)
        if given is not None and np.any(given != type_code(jet_type)):
            other = sorted(set(type_letters(given)) - {jet_type})
            raise DataError(f"{path}: holds {other} jets, but it is given as the {jet_type!r} file")
        if pfs and pf.shape[1] != pfs[0].shape[1]:
            raise DataError(f"{path}: {pf.shape[1]} particle slots, {paths[0]} has {pfs[0].shape[1]}")
        pfs.append(pf)
        jfs.append(jf)
        codes.append(np.full(len(jf), type_code(jet_type), dtype=np.int64))
    # not default_rng(seed): the convert stage's split permutation would then put whole types aside
    order = np.random.default_rng([seed, SHUFFLE_STREAM]).permutation(sum(len(c) for c in codes))
    return np.concatenate(pfs)[order], np.concatenate(jfs)[order], np.concatenate(codes)[order]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI of stage ``merge-jets``."""
    parser = argparse.ArgumentParser(prog="merge-jets", description=__doc__.splitlines()[0])
    parser.add_argument("--jet-type", required=True, help="the files' jet types in order, e.g. g,q,t")
    parser.add_argument("--input", required=True, nargs="+", help="JetNet files, one per type, in order")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    parser.add_argument("--out", required=True, help="JetNet file of several types to write")
    args = parser.parse_args(argv)
    given = args.jet_type.split(",")
    parse_jet_types(given, "--jet-type")  # known, distinct
    pf, jf, codes = merge_jets(args.input, given, args.seed)
    write_jetnet(args.out, pf, jf, types=codes)
    log.info("wrote %d jets of types %s to %s", len(jf), ",".join(given), args.out)
    return 0
