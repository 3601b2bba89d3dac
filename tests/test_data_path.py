"""The whole shower data path: voxels -> points -> transform -> inverse -> voxels is exact."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.generate.gflash import generate_showers
from pipelines.geometry import load_geometry
from pipelines.pointcloud import points_to_voxels, voxels_to_points
from pipelines.transforms import load_transform, save_transform, shower_transform


def _round_trip(showers, geometry, transform, rng):
    points, lengths = voxels_to_points(showers, geometry)
    latent = transform.transform(points.astype(np.float64), rng=rng).astype(np.float32)
    back = transform.inverse_transform(latent.astype(np.float64))
    voxels, collided = points_to_voxels(back.astype(np.float32), lengths, geometry)
    return voxels, collided


def test_gflash_showers_survive_the_full_chain(tmp_path):
    geometry = load_geometry("2")
    _, showers = generate_showers(100, geometry, seed=3, progress=False)
    points, _ = voxels_to_points(showers, geometry)
    rng = np.random.default_rng(0)
    save_transform(tmp_path / "t.json", shower_transform(geometry).fit(points.astype(np.float64), rng=rng))
    transform = load_transform(tmp_path / "t.json")
    voxels, collided = _round_trip(showers, geometry, transform, rng)
    assert collided == 0
    hit = showers > 0
    np.testing.assert_array_equal(voxels > 0, hit)
    np.testing.assert_allclose(voxels[hit], showers[hit], rtol=2e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), occupancy=st.floats(0.001, 0.9), dataset=st.sampled_from(["2", "3"]))
def test_random_showers_survive_the_full_chain(seed, occupancy, dataset):
    geometry = load_geometry(dataset)
    rng = np.random.default_rng(seed)
    shape = (3, geometry.n_voxels)
    showers = np.where(rng.random(shape) < occupancy, rng.lognormal(0, 3, shape) + 1e-3, 0).astype(np.float32)
    showers[0, 0] = showers[-1, -1] = 1.0  # first and last voxel of the grid
    points, _ = voxels_to_points(showers, geometry)
    transform = shower_transform(geometry).fit(points.astype(np.float64), rng=rng)
    voxels, collided = _round_trip(showers, geometry, transform, rng)
    assert collided == 0
    np.testing.assert_array_equal(voxels > 0, showers > 0)
    np.testing.assert_allclose(voxels, showers, rtol=2e-6)
