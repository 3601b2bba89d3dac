import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.geometry import load_geometry
from pipelines.pointcloud import (
    POINT_DTYPES,
    POINT_NAMES,
    points_to_voxels,
    voxels_to_columns,
    voxels_to_points,
)
from tests.conftest import random_showers


def test_points_of_a_hand_made_shower(ds2):
    showers = np.zeros((2, 6480), dtype=np.float32)
    showers[0, ds2.flat_index(3, 5, 7)] = 2.5
    showers[0, ds2.flat_index(44, 15, 8)] = 0.1
    points, lengths = voxels_to_points(showers, ds2)
    np.testing.assert_array_equal(lengths, [2, 0])
    np.testing.assert_array_equal(points, np.array([[2.5, 3, 5, 7], [0.1, 44, 15, 8]], np.float32))


@pytest.mark.parametrize("name", ["2", "3", "1-photons", "1-pions"])
def test_round_trip_is_exact_for_every_geometry(name):
    geometry = load_geometry(name)
    energies, showers = random_showers(geometry, 6, seed=5, occupancy=0.3)
    showers[2] = 0  # a zero-hit shower stays an empty cloud
    points, lengths = voxels_to_points(showers, geometry)
    assert lengths[2] == 0
    back, collided = points_to_voxels(points, lengths, geometry)
    assert collided == 0
    np.testing.assert_array_equal(back, showers)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 6),
    occupancy=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
    log_scale=st.floats(-6, 6),
)
def test_round_trip_property(n, occupancy, seed, log_scale):
    geometry = load_geometry("2")
    rng = np.random.default_rng(seed)
    showers = np.where(
        rng.random((n, geometry.n_voxels)) < occupancy,
        rng.uniform(1e-3, 1.0, (n, geometry.n_voxels)) * 10.0**log_scale,
        0.0,
    ).astype(np.float32)
    points, lengths = voxels_to_points(showers, geometry)
    assert lengths.sum() == np.count_nonzero(showers)
    back, collided = points_to_voxels(points, lengths, geometry)
    np.testing.assert_array_equal(back, showers)
    assert collided == 0


def test_out_of_grid_coordinates_are_clamped(ds2):
    points = np.array([[1.0, -3.2, 99.0, 8.7], [2.0, 45.9, 15.999, 9.0], [3.0, np.nan, 0.5, 0.5]], np.float32)
    showers, collided = points_to_voxels(points, np.array([3]), ds2)
    assert showers[0, ds2.flat_index(0, 15, 8)] == 1.0
    assert showers[0, ds2.flat_index(44, 15, 8)] == 2.0
    assert showers[0, ds2.flat_index(0, 0, 0)] == 3.0
    assert collided == 0


def test_coordinates_are_floored_in_their_own_precision(ds2):
    """float64 coordinates just below an integer stay in the lower bin (no float32 rounding)."""
    points = np.array([[1.0, 4.9999999999, 2.9999999999, 6.9999999999]])
    for collisions in ("sum", "shift"):
        showers, _ = points_to_voxels(points, np.array([1]), ds2, collisions=collisions)
        assert showers[0, ds2.flat_index(4, 2, 6)] == 1.0
    showers, _ = points_to_voxels(np.array([[3, 4, 2, 6]], dtype=np.int16), np.array([1]), ds2)
    assert showers[0, ds2.flat_index(4, 2, 6)] == 3.0


def test_infinite_coordinates_are_clamped_to_the_grid_edges(ds2):
    points = np.array([[1.0, np.inf, -np.inf, np.inf], [2.0, -np.inf, np.inf, -np.inf]], np.float32)
    showers, collided = points_to_voxels(points, np.array([1, 1]), ds2)
    assert showers[0, ds2.flat_index(44, 0, 8)] == 1.0
    assert showers[1, ds2.flat_index(0, 15, 0)] == 2.0
    assert collided == 0


@pytest.mark.parametrize("name", ["2", "1-pions"])
def test_columns_are_the_points_in_their_storage_dtypes(name):
    geometry = load_geometry(name)
    _, showers = random_showers(geometry, 5, seed=2, occupancy=0.2)
    points, lengths = voxels_to_points(showers, geometry)
    columns, col_lengths = voxels_to_columns(showers, geometry)
    np.testing.assert_array_equal(col_lengths, lengths)
    assert list(columns) == list(POINT_NAMES)
    for j, name in enumerate(POINT_NAMES):
        assert columns[name].dtype == np.dtype(POINT_DTYPES[name])
        np.testing.assert_array_equal(columns[name].astype(np.float32), points[:, j])


def test_voxelisation_in_chunks_equals_one_pass(ds2):
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 400, 7)
    points = np.column_stack(
        [
            rng.uniform(0, 5, lengths.sum()),
            rng.uniform(-1, 46, lengths.sum()),
            rng.uniform(0, 16, lengths.sum()),
            rng.uniform(0, 9, lengths.sum()),
        ]
    ).astype(np.float32)
    whole, collided = points_to_voxels(points, lengths, ds2)
    chunked, collided_chunked = points_to_voxels(points, lengths, ds2, chunk_voxels=2 * ds2.n_voxels)
    np.testing.assert_array_equal(chunked, whole)
    assert collided == collided_chunked > 0


def test_collisions_are_counted_and_summed(ds2):
    points = np.array([[1.0, 4, 2, 3], [2.0, 4, 2, 3], [4.0, 4, 2, 3], [8.0, 0, 0, 0]], np.float32)
    showers, collided = points_to_voxels(points, np.array([3, 1]), ds2)
    assert collided == 2
    assert showers[0, ds2.flat_index(4, 2, 3)] == 7.0
    assert showers[1, 0] == 8.0


@pytest.mark.parametrize("zero", [0.0, -0.0])
def test_points_with_zero_energy_still_count_as_hits(ds2, zero):
    # a zero-energy point leaves its voxel at 0, yet it occupies it: one collision here, none there
    colliding = np.array([[2.0, 4, 2, 3], [zero, 4, 2, 3], [4.0, 0, 0, 0]], np.float32)
    showers, collided = points_to_voxels(colliding, np.array([3]), ds2, collisions="shift")
    assert collided == 1 and showers.sum() == 6.0 and showers[0, 0] == 4.0
    apart = np.array([[zero, 4, 2, 3], [2.0, 4, 2, 4]], np.float32)
    showers, collided = points_to_voxels(apart, np.array([2]), ds2)
    assert collided == 0 and showers[0, ds2.flat_index(4, 2, 4)] == 2.0 and showers.sum() == 2.0


def test_shift_moves_colliders_to_free_neighbours(ds2):
    points = np.array([[1.0, 4, 2, 3], [2.0, 4, 2, 3], [4.0, 4, 2, 3], [8.0, 4, 2, 4]], np.float32)
    showers, collided = points_to_voxels(points, np.array([4]), ds2, collisions="shift")
    assert collided == 2
    # first point keeps (4,2,3); r+1 is taken by the fourth point, so the others go to r-1 and alpha+1
    assert showers[0, ds2.flat_index(4, 2, 3)] == 1.0
    assert showers[0, ds2.flat_index(4, 2, 2)] == 2.0
    assert showers[0, ds2.flat_index(4, 3, 3)] == 4.0
    assert showers[0, ds2.flat_index(4, 2, 4)] == 8.0
    assert np.count_nonzero(showers) == 4


def test_shift_wraps_alpha_and_stays_inside_the_grid(ds2):
    # a corner voxel (layer 0, alpha 15, r 8): r+1 and layer-1 do not exist
    points = np.array([[1.0, 0, 15, 8]] * 3, np.float32)
    showers, _ = points_to_voxels(points, np.array([3]), ds2, collisions="shift")
    assert showers.sum() == pytest.approx(3.0)
    assert showers[0, ds2.flat_index(0, 15, 7)] == 1.0  # r - 1
    assert showers[0, ds2.flat_index(0, 0, 8)] == 1.0  # alpha + 1 wraps to 0


def test_shift_conserves_energy_on_dense_collisions(ds2):
    rng = np.random.default_rng(0)
    lengths = np.array([500, 0, 300])
    points = np.column_stack(
        [
            rng.uniform(0.1, 1, 800),
            rng.integers(10, 12, 800),
            rng.integers(0, 3, 800),
            rng.integers(0, 3, 800),
        ]
    ).astype(np.float32)
    summed, c1 = points_to_voxels(points, lengths, ds2)
    shifted, c2 = points_to_voxels(points, lengths, ds2, collisions="shift")
    assert c1 == c2 > 0
    np.testing.assert_allclose(summed.sum(axis=1), shifted.sum(axis=1), rtol=1e-5)
    assert np.count_nonzero(shifted) > np.count_nonzero(summed)


def test_bad_arguments(ds2):
    with pytest.raises(ValueError, match="collisions"):
        points_to_voxels(np.zeros((1, 4)), np.array([1]), ds2, collisions="drop")
    with pytest.raises(ValueError, match="do not match"):
        points_to_voxels(np.zeros((2, 4)), np.array([1]), ds2)
    with pytest.raises(ValueError, match="dataset 2"):
        voxels_to_points(np.zeros((1, 10)), ds2)


def test_chunks_with_and_without_collisions_voxelise_alike(ds2):
    """One chunk without collisions (a plain scatter) and one with them (shifted) equal one pass."""
    points = np.array(
        [[1.0, 4, 2, 3], [2.0, 5, 2, 3], [3.0, 4, 2, 3], [4.0, 4, 2, 3], [5.0, 7, 0, 1]], np.float32
    )
    lengths = np.array([2, 3])  # shower 0: two distinct voxels; shower 1: two points collide
    for collisions in ("sum", "shift"):
        whole, collided = points_to_voxels(points, lengths, ds2, collisions=collisions)
        per_shower, collided_chunked = points_to_voxels(
            points, lengths, ds2, collisions=collisions, chunk_voxels=ds2.n_voxels
        )
        np.testing.assert_array_equal(per_shower, whole)
        assert collided == collided_chunked == 1
        assert whole[0, ds2.flat_index(4, 2, 3)] == 1.0 and whole[0, ds2.flat_index(5, 2, 3)] == 2.0
        assert np.count_nonzero(whole[1]) == (3 if collisions == "shift" else 2)
        assert whole[1].sum() == pytest.approx(12.0)
