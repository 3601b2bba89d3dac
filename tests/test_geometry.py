import numpy as np
import pytest

from pipelines.geometry import GeometryError, load_geometry, parse_binning_xml


def test_dataset2_matches_published_table(ds2):
    assert ds2.grid_shape == (45, 16, 9)
    assert ds2.n_voxels == 6480
    np.testing.assert_allclose(ds2.r_edges, np.arange(10) * 4.65)


def test_dataset3_matches_published_table(ds3):
    assert ds3.grid_shape == (45, 50, 18)
    assert ds3.n_voxels == 40500
    np.testing.assert_allclose(ds3.r_edges[-1], 41.85)


@pytest.mark.parametrize(("name", "voxels"), [("1-photons", 368), ("1-pions", 533)])
def test_dataset1_irregular_layers_count_voxels(name, voxels):
    geometry = load_geometry(name)
    assert not geometry.is_regular
    assert geometry.n_voxels == voxels
    assert len(geometry.voxel_index) == voxels
    with pytest.raises(GeometryError, match="irregular"):
        _ = geometry.n_alpha


def test_voxel_order_is_layer_alpha_r_with_r_fastest(ds2):
    idx = ds2.voxel_index
    assert tuple(idx[0]) == (0, 0, 0)
    assert tuple(idx[1]) == (0, 0, 1)
    assert tuple(idx[9]) == (0, 1, 0)
    assert tuple(idx[144]) == (1, 0, 0)
    np.testing.assert_array_equal(ds2.flat_index(idx[:, 0], idx[:, 1], idx[:, 2]), np.arange(6480))


def test_voxel_centres_by_hand(ds2):
    x, y = ds2.voxel_centres_mm
    # voxel (0, 0, 0): r centre 2.325 mm, alpha centre -pi + pi/16
    a = -np.pi + np.pi / 16
    assert x[0] == pytest.approx(2.325 * np.cos(a))
    assert y[0] == pytest.approx(2.325 * np.sin(a))
    assert ds2.voxel_r_mm[8] == pytest.approx(39.525)


def test_bad_xml_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<Bins><Bin><Layer id='0' r_edges='0,2,1' n_bin_alpha='1'/></Bin></Bins>")
    with pytest.raises(GeometryError, match="bad.xml"):
        parse_binning_xml(bad)
    broken = tmp_path / "broken.xml"
    broken.write_text("<Bins><Bin>")
    with pytest.raises(GeometryError, match="broken.xml"):
        parse_binning_xml(broken)
    with pytest.raises(GeometryError, match="unknown"):
        load_geometry("7")
