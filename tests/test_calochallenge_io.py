import h5py
import numpy as np
import pytest

from pipelines.io.calochallenge import iter_calochallenge, read_calochallenge, write_calochallenge
from pipelines.io.errors import DataError
from tests.conftest import random_showers


def _write_raw(path, energies, showers):
    with h5py.File(path, "w") as f:
        f.create_dataset("incident_energies", data=energies)
        f.create_dataset("showers", data=showers)


def test_round_trip_is_exact(tmp_path, ds2):
    energies, showers = random_showers(ds2, 7, seed=1)
    path = tmp_path / "s.h5"
    write_calochallenge(path, energies, showers)
    e, s = read_calochallenge(path, ds2)
    np.testing.assert_allclose(e, energies.astype(np.float32))
    np.testing.assert_array_equal(s, showers)
    with h5py.File(path) as f:
        assert f["incident_energies"].shape == (7, 1)
        assert f["showers"].dtype == np.float32
        assert f["showers"].compression == "gzip"


def test_chunks_cover_the_file_in_order(tmp_path, ds2):
    energies, showers = random_showers(ds2, 11, seed=2)
    path = tmp_path / "s.h5"
    write_calochallenge(path, energies, showers)
    starts = [start for start, e, s in iter_calochallenge(path, ds2, chunk_size=4)]
    assert starts == [0, 4, 8]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e, s: (e, s[:, :100]), "100 voxels per shower"),
        (lambda e, s: (e[:3], s), "incident energies"),
        (lambda e, s: (e, s.reshape(len(s), 45, 144)), "expected"),
        (lambda e, s: (e, np.where(np.arange(s.size).reshape(s.shape) == 5, np.nan, s)), "NaN"),
        (lambda e, s: (e, np.where(np.arange(s.size).reshape(s.shape) == 5, -1.0, s)), "negative"),
        (lambda e, s: (np.full_like(e, 1e12), s), "outside"),
        (lambda e, s: (e[:0], s[:0]), "no showers"),
    ],
)
def test_bad_content_names_file_and_problem(tmp_path, ds2, mutate, message):
    energies, showers = random_showers(ds2, 5, seed=3)
    e, s = mutate(energies.reshape(-1, 1), showers)
    path = tmp_path / "bad.h5"
    _write_raw(path, e, s)
    with pytest.raises(DataError, match=message) as err:
        read_calochallenge(path, ds2)
    assert "bad.h5" in str(err.value)


def test_missing_key_not_hdf5_empty_and_truncated(tmp_path, ds2):
    path = tmp_path / "nokey.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("energies", data=np.ones((2, 1)))
    with pytest.raises(DataError, match="missing dataset 'incident_energies'"):
        read_calochallenge(path, ds2)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(DataError, match="not an HDF5 file"):
        read_calochallenge(text, ds2)
    empty = tmp_path / "empty.h5"
    empty.touch()
    with pytest.raises(DataError, match="empty"):
        read_calochallenge(empty, ds2)
    good = tmp_path / "good.h5"
    write_calochallenge(good, *random_showers(ds2, 50, seed=4))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.h5"):
        read_calochallenge(truncated, ds2)
    with pytest.raises(DataError, match="does not exist"):
        read_calochallenge(tmp_path / "nope.h5", ds2)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "out.h5"
    with pytest.raises(ValueError):
        write_calochallenge(path, np.ones(3), np.ones((4, 10)))
    original = h5py.Group.create_dataset

    def fail_on_showers(self, name, *args, **kwargs):
        if name == "showers":
            raise OSError("disk full")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", fail_on_showers)
    with pytest.raises(OSError, match="disk full"):
        write_calochallenge(path, np.ones(4), np.ones((4, 10)))
    assert list(tmp_path.iterdir()) == []


def _chunked(path, energies, showers, rows, **options):
    with h5py.File(path, "w") as f:
        f.create_dataset("incident_energies", data=energies.reshape(-1, 1))
        f.create_dataset("showers", data=showers, chunks=(rows, showers.shape[1]), **options)


@pytest.mark.parametrize(
    "options",
    [
        {"compression": "gzip"},  # inflated by the project's own reader
        {"compression": "gzip", "shuffle": True},  # HDF5's reading
        {"compression": "gzip", "chunks_of_half_rows": True},
        {},
    ],
)
def test_reads_split_across_stored_chunks_are_exact(tmp_path, ds2, options):
    energies, showers = random_showers(ds2, 23, seed=5)
    path = tmp_path / "s.h5"
    if options.pop("chunks_of_half_rows", False):
        with h5py.File(path, "w") as f:
            f.create_dataset("incident_energies", data=energies.reshape(-1, 1))
            f.create_dataset("showers", data=showers, chunks=(5, ds2.n_voxels // 2), **options)
    else:
        _chunked(path, energies, showers, 5, **options)
    for chunk_size in (3, 5, 7, 23, 100):
        parts = list(iter_calochallenge(path, ds2, chunk_size=chunk_size))
        assert [start for start, _, _ in parts] == list(range(0, 23, chunk_size))
        np.testing.assert_array_equal(np.concatenate([s for _, _, s in parts]), showers)


def test_corrupt_compressed_chunk_names_file_and_row(tmp_path, ds2):
    energies, showers = random_showers(ds2, 10, seed=6)
    path = tmp_path / "corrupt.h5"
    _chunked(path, energies, showers, 5, compression="gzip")
    with h5py.File(path, "r+") as f:
        _, data = f["showers"].id.read_direct_chunk((5, 0))
        f["showers"].id.write_direct_chunk((5, 0), data[:2] + bytes(len(data) - 2))
    with pytest.raises(DataError, match="corrupt.h5: corrupt compressed showers at row 5"):
        read_calochallenge(path, ds2)
