import numpy as np
import pytest

from pipelines.io.clouds import Clouds, CloudWriter, assign_split, read_clouds, write_clouds
from pipelines.io.errors import DataError


def _clouds():
    lengths = np.array([2, 0, 3])
    points = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    return Clouds(
        points,
        np.r_[0, np.cumsum(lengths)],
        np.array([[1.0], [2.0], [3.0]]),
        ("a", "b", "c"),
        ("e",),
        np.array([0, 1, 2]),
        {"seed": 3},
    )


def test_lengths_cloud_and_select():
    c = _clouds()
    np.testing.assert_array_equal(c.lengths, [2, 0, 3])
    assert c.cloud(1).shape == (0, 3)
    sub = c.select(np.array([2, 1, 0]))
    np.testing.assert_array_equal(sub.lengths, [3, 0, 2])
    np.testing.assert_array_equal(sub.cloud(0), c.cloud(2))
    np.testing.assert_array_equal(sub.cloud(2), c.cloud(0))
    np.testing.assert_array_equal(sub.conditions[:, 0], [3, 2, 1])


def test_file_round_trip(tmp_path):
    c = _clouds()
    write_clouds(tmp_path / "c.h5", c)
    r = read_clouds(tmp_path / "c.h5")
    np.testing.assert_array_equal(r.points, c.points)
    np.testing.assert_array_equal(r.offsets, c.offsets)
    assert r.point_names == ("a", "b", "c") and r.attrs == {"seed": 3}


def test_writer_appends_chunks_and_is_atomic(tmp_path):
    c = _clouds()
    with CloudWriter(tmp_path / "w.h5", c.point_names, c.condition_names) as w:
        w.append(c.points[:2], [2, 0], [[1.0], [2.0]])
        w.append(c.points[2:], [3], [[3.0]])
        w.finish(c.split, c.attrs)
    r = read_clouds(tmp_path / "w.h5")
    np.testing.assert_array_equal(r.offsets, c.offsets)
    np.testing.assert_array_equal(r.points, c.points)
    with pytest.raises(RuntimeError, match="finish"), CloudWriter(tmp_path / "x.h5", ("a",), ("e",)) as w:
        w.append(np.zeros((1, 1)), [1], [[1.0]])
    with pytest.raises(ZeroDivisionError), CloudWriter(tmp_path / "y.h5", ("a",), ("e",)):
        _ = 1 / 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]


def test_writer_takes_columns_and_checks_integer_columns(tmp_path):
    dtypes = {"e": "float32", "k": "uint8"}
    with CloudWriter(tmp_path / "c.h5", ("e", "k"), ("x",), dtypes) as w:
        w.append_columns({"k": np.array([3, 255], np.uint8), "e": np.array([0.5, 1.5])}, [2], [[1.0]])
        with pytest.raises(ValueError, match="not the point columns"):
            w.append_columns({"e": np.zeros(1)}, [1], [[1.0]])
        with pytest.raises(ValueError, match="do not match"):
            w.append_columns({"e": np.zeros(2), "k": np.zeros(2, np.uint8)}, [1], [[1.0]])
        with pytest.raises(ValueError, match="column k holds values that are not uint8"):
            w.append(np.array([[1.0, 2.5]]), [1], [[1.0]])
        with pytest.raises(ValueError, match="column k holds values that are not uint8"):
            w.append(np.array([[1.0, 256.0]]), [1], [[1.0]])
        w.append(np.array([[2.0, 7.0]]), [1], [[2.0]])
        w.finish(np.array([0, 0]), {})
    r = read_clouds(tmp_path / "c.h5")
    np.testing.assert_array_equal(r.points, [[0.5, 3], [1.5, 255], [2.0, 7]])
    np.testing.assert_array_equal(r.offsets, [0, 2, 3])


def test_inconsistent_clouds_are_rejected():
    with pytest.raises(ValueError, match="offsets"):
        Clouds(np.zeros((3, 1)), [0, 2], [[1.0]], ("a",), ("e",), [0])
    with pytest.raises(DataError, match="nothing.h5"):
        read_clouds("nothing.h5")


def test_split_is_seeded_and_has_the_requested_sizes():
    s = assign_split(1000, (0.8, 0.1, 0.1), seed=4)
    np.testing.assert_array_equal(np.bincount(s), [800, 100, 100])
    np.testing.assert_array_equal(s, assign_split(1000, (0.8, 0.1, 0.1), seed=4))
    assert not np.array_equal(s, assign_split(1000, (0.8, 0.1, 0.1), seed=5))
    with pytest.raises(ValueError, match="sum"):
        assign_split(10, (0.5, 0.1, 0.1), seed=0)
