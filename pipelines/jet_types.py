"""Jet types of JetNet (g, q, t, w, z): their codes, the type column and the one-hot conditions.

JetNet's own loader (the ``jetnet`` package) numbers the types by their place in ("g", "q", "t", "w",
"z") and puts that code as the first jet feature, before (pt, eta, mass, n_particles), when it
loads several types together; the project writes and reads a file of several types the same way
(see :mod:`pipelines.io.jetnet`). Point clouds of a data set of several types carry one condition
column ``type_<letter>`` (one-hot) per type of the data set, after (jet_pt, jet_eta, jet_mass).
Torch-free: the workflow imports it when it checks the config.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

JET_TYPES = ("g", "q", "t", "w", "z")
TYPE_NAMES = {"g": "gluon", "q": "light quark", "t": "top quark", "w": "W boson", "z": "Z boson"}
TYPE_PREFIX = "type_"
#: second word of the seed of the shuffle of several types into one file (generated or merged): the
#: convert stage's split permutes with default_rng(seed) alone, which would else pair with the shuffle
SHUFFLE_STREAM = 0x4A455453


def parse_jet_types(value: str | Sequence[str], where: str = "jet_type") -> tuple[str, ...]:
    """The types a data set names (one letter or a list of distinct letters), in JetNet order.

    ValueError naming ``where`` for an unknown, repeated or missing type.
    """
    if not isinstance(value, str | list | tuple):
        raise ValueError(f"{where}: give a jet type of {list(JET_TYPES)} or a list of them, got {value!r}")
    types = [value] if isinstance(value, str) else list(value)
    if not types:
        raise ValueError(f"{where}: name at least one jet type of {list(JET_TYPES)}")
    for t in types:
        if not isinstance(t, str) or t not in JET_TYPES:
            raise ValueError(f"{where}: unknown jet type {t!r}; allowed: {', '.join(JET_TYPES)}")
    if len(set(types)) != len(types):
        raise ValueError(f"{where}: jet types {types} name a type twice")
    return tuple(t for t in JET_TYPES if t in types)


def type_code(jet_type: str) -> int:
    """JetNet's code of ``jet_type`` (g 0, q 1, t 2, w 3, z 4)."""
    return JET_TYPES.index(jet_type)


def type_letters(codes: np.ndarray) -> list[str]:
    """The letters of integer type codes."""
    return [JET_TYPES[int(c)] for c in np.asarray(codes).reshape(-1)]


def condition_names(types: Sequence[str]) -> tuple[str, ...]:
    """The one-hot condition columns of a data set of ``types`` (none for a single type)."""
    return tuple(f"{TYPE_PREFIX}{t}" for t in types) if len(types) > 1 else ()


def types_of_conditions(names: Sequence[str]) -> tuple[str, ...]:
    """The types whose one-hot columns are among the condition ``names`` (in their order)."""
    return tuple(n[len(TYPE_PREFIX) :] for n in names if n.startswith(TYPE_PREFIX))


def one_hot(codes: np.ndarray, types: Sequence[str]) -> np.ndarray:
    """(N, len(types)) float64 one-hot rows of type ``codes``; ValueError for a code not in ``types``."""
    codes = np.asarray(codes).reshape(-1)
    known = np.array([type_code(t) for t in types])
    hit = codes[:, None] == known[None, :]
    if not hit.any(axis=1).all():
        bad = sorted(set(type_letters(codes[~hit.any(axis=1)])))
        raise ValueError(f"jet types {bad} are not among the model's types {list(types)}")
    return hit.astype(np.float64)


def codes_of_one_hot(one_hot_rows: np.ndarray, types: Sequence[str]) -> np.ndarray:
    """Type codes (N,) int64 of one-hot rows over ``types``."""
    rows = np.asarray(one_hot_rows, dtype=np.float64)
    known = np.array([type_code(t) for t in types], dtype=np.int64)
    return known[np.argmax(rows, axis=1)]
