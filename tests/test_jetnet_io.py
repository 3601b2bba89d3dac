"""JetNet HDF5 reader/writer: exact round trips and every rejected bad input."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipelines.io.errors import DataError
from pipelines.io.jetnet import iter_jetnet, read_jetnet, write_jetnet


def valid_jets() -> tuple[np.ndarray, np.ndarray]:
    """Three hand-made jets with 4 slots: 2 particles, 4 (full, 6 before truncation), 1."""
    pf = np.zeros((3, 4, 4), dtype=np.float32)
    pf[0, :2] = [[0.01, -0.02, 0.7, 1], [-0.3, 0.4, 0.3, 1]]
    pf[1] = [[0.0, 0.0, 0.5, 1], [0.1, 0.1, 0.2, 1], [-0.2, -math.pi, 0.1, 1], [0.5, 0.5, 0.05, 1]]
    pf[2, :1] = [[0.0, 0.0, 1.0, 1]]
    jf = np.array([[1000.0, 0.5, 90.0, 2], [950.0, -1.2, 175.0, 6], [810.0, 2.0, 0.0, 1]], dtype=np.float32)
    return pf, jf


def write_raw(path: Path, **datasets: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


def test_round_trip_exact(tmp_path: Path) -> None:
    pf, jf = valid_jets()
    out = tmp_path / "jets.h5"
    write_jetnet(out, pf, jf)
    pf2, jf2 = read_jetnet(out)
    assert pf2.dtype == np.float32 and jf2.dtype == np.float32
    np.testing.assert_array_equal(pf2, pf)
    np.testing.assert_array_equal(jf2, jf)
    assert [p.name for p in tmp_path.iterdir()] == ["jets.h5"]  # no temp file left behind
    with h5py.File(out) as f:
        assert f["particle_features"].compression == "gzip"


def test_float64_input_stored_as_float32(tmp_path: Path) -> None:
    pf, jf = valid_jets()
    write_jetnet(tmp_path / "a.h5", pf.astype(np.float64), jf.astype(np.float64))
    pf2, jf2 = read_jetnet(tmp_path / "a.h5")
    np.testing.assert_array_equal(pf2, pf)
    np.testing.assert_array_equal(jf2, jf)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 100])
def test_iter_chunks_cover_file(tmp_path: Path, chunk_size: int) -> None:
    pf, jf = valid_jets()
    out = tmp_path / "jets.h5"
    write_jetnet(out, pf, jf)
    chunks = list(iter_jetnet(out, chunk_size))
    assert [c[0] for c in chunks] == list(range(0, 3, chunk_size))
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]), pf)
    np.testing.assert_array_equal(np.concatenate([c[2] for c in chunks]), jf)
    assert all(len(c[1]) <= chunk_size for c in chunks)


def test_reads_file_written_by_plain_h5py(tmp_path: Path) -> None:
    """A file as JetNet ships it (plain h5py, float64, no attributes) reads the same."""
    pf, jf = valid_jets()
    path = write_raw(tmp_path / "g.hdf5", particle_features=pf.astype(np.float64), jet_features=jf)
    pf2, jf2 = read_jetnet(path)
    np.testing.assert_array_equal(pf2, pf)
    np.testing.assert_array_equal(jf2, jf)


def _bad(mutate) -> tuple[np.ndarray, np.ndarray]:
    pf, jf = valid_jets()
    mutate(pf, jf)
    return pf, jf


def _set(arr_name: str, index: tuple, value: float):
    def mutate(pf: np.ndarray, jf: np.ndarray) -> None:
        (pf if arr_name == "pf" else jf)[index] = value

    return mutate


BAD_ARRAYS = {
    "NaN": (_set("pf", (0, 0, 0), np.nan), "NaN"),
    "inf jet": (_set("jf", (1, 0), np.inf), "NaN or inf"),
    "negative pt_rel": (_set("pf", (0, 1, 2), -0.1), "negative pt_rel"),
    "negative jet pt": (_set("jf", (2, 0), -5.0), "negative jet pt"),
    "negative jet mass": (_set("jf", (2, 2), -1.0), "negative jet mass"),
    "mask 0.5": (_set("pf", (0, 1, 3), 0.5), "mask values"),
    "hole in mask": (_set("pf", (1, 2, 3), 0.0), "follows a padded slot"),
    "padding not zero": (_set("pf", (0, 3, 0), 0.2), "padded particles"),
    "phi_rel > pi": (_set("pf", (0, 0, 1), 3.2), "phi_rel outside"),
    "n disagrees": (_set("jf", (0, 3), 3), "disagrees"),
    "n below full mask": (_set("jf", (1, 3), 3), "disagrees"),
    "n not integer": (_set("jf", (2, 3), 1.5), "not a non-negative integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_reader_rejects_bad_values(tmp_path: Path, case: str) -> None:
    mutate, message = BAD_ARRAYS[case]
    pf, jf = _bad(mutate)
    path = write_raw(tmp_path / "bad.h5", particle_features=pf, jet_features=jf)
    with pytest.raises(DataError, match=message) as err:
        read_jetnet(path)
    assert str(path) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_writer_refuses_bad_values_and_writes_nothing(tmp_path: Path, case: str) -> None:
    mutate, message = BAD_ARRAYS[case]
    pf, jf = _bad(mutate)
    out = tmp_path / "out.h5"
    with pytest.raises(DataError, match=message) as err:
        write_jetnet(out, pf, jf)
    assert str(out) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_error_names_the_jet(tmp_path: Path) -> None:
    pf, jf = valid_jets()
    pf[2, 0, 2] = -1.0
    path = write_raw(tmp_path / "bad.h5", particle_features=pf, jet_features=jf)
    with pytest.raises(DataError, match="first at jet 2"):
        read_jetnet(path, chunk_size=1)


def test_n_particles_above_slots_accepted_only_when_full(tmp_path: Path) -> None:
    """Jet 1 fills all 4 slots and came from 6 constituents: fine. Jet 0 is not full: n must be 2."""
    pf, jf = valid_jets()
    path = write_raw(tmp_path / "ok.h5", particle_features=pf, jet_features=jf)
    assert read_jetnet(path)[1][1, 3] == 6
    jf[0, 3] = 6
    write_raw(tmp_path / "bad.h5", particle_features=pf, jet_features=jf)
    with pytest.raises(DataError, match="n_particles = 6 disagrees with 2 real particles"):
        read_jetnet(tmp_path / "bad.h5")


def _structure_cases() -> dict[str, tuple[dict, str]]:
    pf, jf = valid_jets()
    return {
        "missing particle_features": ({"jet_features": jf}, "missing dataset 'particle_features'"),
        "missing jet_features": ({"particle_features": pf}, "missing dataset 'jet_features'"),
        "particle ndim": ({"particle_features": pf[:, :, 0], "jet_features": jf}, "shape"),
        "particle last dim": ({"particle_features": pf[..., :3], "jet_features": jf}, "shape"),
        "jet last dim": ({"particle_features": pf, "jet_features": jf[:, :3]}, "shape"),
        "row counts": ({"particle_features": pf, "jet_features": jf[:2]}, "has 3 jets but"),
        "no jets": ({"particle_features": pf[:0], "jet_features": jf[:0]}, "holds no jets"),
        "strings": (
            {"particle_features": pf, "jet_features": np.array([[b"a"] * 4] * 3)},
            "non-real dtype",
        ),
    }


@pytest.mark.parametrize("case", sorted(_structure_cases()))
def test_reader_rejects_bad_structure(tmp_path: Path, case: str) -> None:
    datasets, message = _structure_cases()[case]
    path = write_raw(tmp_path / "bad.h5", **datasets)
    with pytest.raises(DataError, match=message) as err:
        read_jetnet(path)
    assert str(path) in str(err.value)


def test_reader_rejects_non_hdf5_empty_truncated_and_missing(tmp_path: Path) -> None:
    text = tmp_path / "text.h5"
    text.write_text("eta,phi,pt\n0.1,0.2,0.3\n")
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    pf, jf = valid_jets()
    good = tmp_path / "good.h5"
    write_jetnet(good, pf, jf)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path, message in [
        (text, "not a readable HDF5"),
        (empty, "empty"),
        (truncated, "HDF5|cannot read"),
        (tmp_path / "absent.h5", "no such file"),
    ]:
        with pytest.raises(DataError, match=message) as err:
            read_jetnet(path)
        assert str(path) in str(err.value)


def test_chunk_size_must_be_positive(tmp_path: Path) -> None:
    pf, jf = valid_jets()
    write_jetnet(tmp_path / "a.h5", pf, jf)
    with pytest.raises(ValueError, match="chunk_size"):
        next(iter_jetnet(tmp_path / "a.h5", 0))
