"""Read and write jets in the JetNet HDF5 layout.

Layout (one jet type per file, see docs/data-formats.md):

- ``particle_features`` (N, n, 4) float32: (eta_rel, phi_rel, pt_rel, mask) per particle, particles
  sorted by decreasing pt; ``mask`` is 1 for a real particle and 0 for padding (JetNet's own
  convention, the opposite of the project's in-memory "True = padding" masks); padded rows are all zero.
  eta_rel = eta_particle - eta_jet, phi_rel = phi_particle - phi_jet wrapped into [-pi, pi),
  pt_rel = pt_particle / pt_jet.
- ``jet_features`` (N, 4) float32: (pt [GeV], eta, mass [GeV], n_particles). A file of several jet
  types has (N, 5): (type, pt, eta, mass, n_particles), the type column first with JetNet's codes
  (g 0, q 1, t 2, w 3, z 4; :mod:`pipelines.jet_types`), as JetNet's own loader returns several types.
  :func:`read_jetnet` and :func:`iter_jetnet` return the four features; :func:`read_jet_types` the codes.

``n_particles`` is the number of jet constituents before truncation to the n slots, so it may exceed
the number of real particles in the file when every slot is filled (JetNet's 30-particle files); when
some slots are padding no truncation happened and it must equal the number of real particles.

Features are floating point (float32 in JetNet; strings and integers are refused). The reader
checks all of the above except the pt ordering (not required of user files) and raises
:class:`~pipelines.io.errors.DataError` naming the file and the problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError
from pipelines.jet_types import JET_TYPES

PARTICLE_KEY = "particle_features"
JET_KEY = "jet_features"
PARTICLE_FEATURES = ("eta_rel", "phi_rel", "pt_rel", "mask")
JET_FEATURES = ("pt", "eta", "mass", "n_particles")
# float32 rounding of a value wrapped into [-pi, pi) may land a hair outside the interval
_PHI_TOL = 1e-5


def _check_shapes(name: str, particle_shape: tuple[int, ...], jet_shape: tuple[int, ...]) -> None:
    """Raise DataError unless the two shapes form a non-empty JetNet pair."""
    if len(particle_shape) != 3 or particle_shape[2] != 4:
        raise DataError(f"{name}: '{PARTICLE_KEY}' must have shape (N, n_particles, 4), got {particle_shape}")
    if len(jet_shape) != 2 or jet_shape[1] not in (4, 5):
        raise DataError(
            f"{name}: '{JET_KEY}' must have shape (N, 4), or (N, 5) with JetNet's type column first, "
            f"got {jet_shape}"
        )
    if particle_shape[0] != jet_shape[0]:
        raise DataError(
            f"{name}: '{PARTICLE_KEY}' has {particle_shape[0]} jets but '{JET_KEY}' has {jet_shape[0]}"
        )
    if particle_shape[0] == 0:
        raise DataError(f"{name}: holds no jets")
    if particle_shape[1] == 0:
        raise DataError(f"{name}: '{PARTICLE_KEY}' has zero particle slots")


def validate_jets(name: str, particle_features: np.ndarray, jet_features: np.ndarray, start: int = 0) -> None:
    """Raise DataError (naming ``name``) unless the arrays are a valid JetNet chunk.

    ``start`` is the index of the chunk's first jet in the file, used in messages. ``jet_features``
    may carry the type column first (N, 5); its values must be JetNet type codes.
    """
    pf = np.asarray(particle_features)
    jf = np.asarray(jet_features)
    _check_shapes(name, pf.shape, jf.shape)
    for key, arr in ((PARTICLE_KEY, pf), (JET_KEY, jf)):
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise DataError(f"{name}: '{key}' has non-real dtype {arr.dtype}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise DataError(
                f"{name}: '{key}' has integer dtype {arr.dtype}; JetNet features are floating point"
            )
        bad = ~np.isfinite(arr)
        if bad.any():
            jet = start + int(np.argwhere(bad)[0][0])
            raise DataError(f"{name}: '{key}' holds NaN or inf (first at jet {jet})")

    def fail(problem: str, rows: np.ndarray) -> None:
        raise DataError(f"{name}: {problem} (first at jet {start + int(np.flatnonzero(rows)[0])})")

    if jf.shape[1] == 5:
        code = jf[:, 0]
        bad = (code != np.round(code)) | (code < 0) | (code >= len(JET_TYPES))
        if bad.any():
            fail(f"type column holds a value other than JetNet's codes 0..{len(JET_TYPES) - 1}", bad)
        jf = jf[:, 1:]

    mask = pf[..., 3]
    real = mask == 1
    bad = ~(real | (mask == 0))
    if bad.any():
        fail("mask values other than 0 and 1", bad.any(axis=1))
    # real particles first, then padding: once a slot is padding every later slot is padding
    pad_then_real = (~real[:, :-1]) & real[:, 1:]
    if pad_then_real.any():
        fail("a real particle (mask 1) follows a padded slot (mask 0)", pad_then_real.any(axis=1))
    bad = (~real) & (pf[..., :3] != 0).any(axis=-1)
    if bad.any():
        fail("padded particles (mask 0) with non-zero features", bad.any(axis=1))
    bad = pf[..., 2] < 0
    if bad.any():
        fail("negative pt_rel", bad.any(axis=1))
    bad = np.abs(pf[..., 1]) > np.pi + _PHI_TOL
    if bad.any():
        fail("phi_rel outside [-pi, pi]", bad.any(axis=1))

    if (jf[:, 0] < 0).any():
        fail("negative jet pt", jf[:, 0] < 0)
    if (jf[:, 2] < 0).any():
        fail("negative jet mass", jf[:, 2] < 0)
    n_jet = jf[:, 3]
    bad = (n_jet < 0) | (n_jet != np.round(n_jet))
    if bad.any():
        fail("n_particles is not a non-negative integer", bad)
    n_real = real.sum(axis=1)
    n_slots = pf.shape[1]
    # untruncated jets (some padding) must match exactly; full jets may have had more constituents
    bad = np.where(n_real < n_slots, n_jet != n_real, n_jet < n_real)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{name}: n_particles = {n_jet[i]:g} disagrees with {n_real[i]} real particles in the mask "
            f"({n_slots} slots; first at jet {start + i})"
        )


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from err


def _datasets(path: Path, f: h5py.File) -> tuple[h5py.Dataset, h5py.Dataset]:
    out = []
    for key in (PARTICLE_KEY, JET_KEY):
        if key not in f:
            raise DataError(f"{path}: missing dataset '{key}' (found {sorted(f.keys())})")
        if not isinstance(f[key], h5py.Dataset):
            raise DataError(f"{path}: '{key}' is not a dataset")
        out.append(f[key])
    _check_shapes(str(path), out[0].shape, out[1].shape)
    return out[0], out[1]


def iter_jetnet(path: str | Path, chunk_size: int = 10000) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, particle_features, jet_features)`` float32 chunks of at most ``chunk_size`` jets.

    Each chunk is validated before it is yielded; a bad chunk raises DataError naming the file.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    path = Path(path)
    with _open(path) as f:
        pds, jds = _datasets(path, f)
        n_jets = pds.shape[0]
        for start in range(0, n_jets, chunk_size):
            stop = min(start + chunk_size, n_jets)
            try:
                pf = np.asarray(pds[start:stop])
                jf = np.asarray(jds[start:stop])
            except (OSError, TypeError, ValueError) as err:
                raise DataError(f"{path}: cannot read jets {start}:{stop} ({err})") from err
            validate_jets(str(path), pf, jf, start=start)
            yield start, pf.astype(np.float32, copy=False), jf[:, -4:].astype(np.float32, copy=False)


def read_jetnet(path: str | Path, chunk_size: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    """Read a whole JetNet file: ``(particle_features (N, n, 4), jet_features (N, 4))``, both float32."""
    path = Path(path)
    with _open(path) as f:
        pds, jds = _datasets(path, f)
        pf = np.empty(pds.shape, dtype=np.float32)
        jf = np.empty((jds.shape[0], 4), dtype=np.float32)
    for start, p_chunk, j_chunk in iter_jetnet(path, chunk_size):
        pf[start : start + len(p_chunk)] = p_chunk
        jf[start : start + len(j_chunk)] = j_chunk
    return pf, jf


def read_jet_types(path: str | Path) -> np.ndarray | None:
    """JetNet type codes (N,) int64 of a file with the type column, None for a file of one type."""
    path = Path(path)
    with _open(path) as f:
        _, jds = _datasets(path, f)
        if jds.shape[1] != 5:
            return None
        codes = np.asarray(jds[:, 0])
    bad = (codes != np.round(codes)) | (codes < 0) | (codes >= len(JET_TYPES))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: type column holds a value other than JetNet's codes (first at jet {i})")
    return codes.astype(np.int64)


def write_jetnet(
    path: str | Path,
    particle_features: np.ndarray,
    jet_features: np.ndarray,
    types: np.ndarray | None = None,
) -> None:
    """Validate and write jets atomically (gzip-compressed float32) in the JetNet layout.

    ``types``: JetNet type codes (N,), written as the first jet feature (a file of several types).
    """
    path = Path(path)
    pf = np.asarray(particle_features)
    jf = np.asarray(jet_features)
    if types is not None:
        codes = np.asarray(types).reshape(-1, 1)
        if len(codes) != len(jf) or jf.ndim != 2 or jf.shape[1] != 4:
            raise ValueError(f"types ({len(codes)}) must match jet_features (N, 4), got {jf.shape}")
        jf = np.concatenate([codes.astype(jf.dtype if jf.dtype.kind == "f" else np.float32), jf], axis=1)
    validate_jets(f"refusing to write {path}", pf, jf)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(PARTICLE_KEY, data=pf.astype(np.float32, copy=False), compression="gzip")
        f.create_dataset(JET_KEY, data=jf.astype(np.float32, copy=False), compression="gzip")
        f.attrs["particle_features"] = ",".join(PARTICLE_FEATURES)
        f.attrs["jet_features"] = ",".join((("type",) if jf.shape[1] == 5 else ()) + JET_FEATURES)
