import json

import numpy as np
import pytest

from pipelines.cli import main as cli
from pipelines.convert import jets_to_points
from pipelines.io.calochallenge import write_calochallenge
from pipelines.io.clouds import read_clouds
from pipelines.pointcloud import points_to_voxels
from tests.conftest import random_showers


def test_convert_showers_keeps_every_hit_and_records_the_split(tmp_path, ds2):
    energies, showers = random_showers(ds2, 23, seed=8, occupancy=0.05)
    showers[4] = 0
    write_calochallenge(tmp_path / "in.h5", energies, showers)
    out = tmp_path / "clouds.h5"
    assert (
        cli(
            [
                "convert",
                "--kind",
                "showers",
                "--dataset",
                "2",
                "--input",
                str(tmp_path / "in.h5"),
                "--split",
                "0.6,0.2,0.2",
                "--seed",
                "3",
                "--chunk-size",
                "5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    clouds = read_clouds(out)
    assert len(clouds) == 23 and clouds.lengths[4] == 0
    np.testing.assert_allclose(clouds.conditions[:, 0], energies.astype(np.float32))
    back, _ = points_to_voxels(clouds.points, clouds.lengths, ds2)
    np.testing.assert_array_equal(back, showers)
    assert clouds.attrs["split_seed"] == 3
    np.testing.assert_array_equal(np.bincount(clouds.split), [15, 4, 4])


def test_convert_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_text("garbage")
    out = tmp_path / "clouds.h5"
    assert cli(["convert", "--kind", "showers", "--input", str(bad), "--out", str(out)]) == 1
    assert "bad.h5: not an HDF5 file" in capsys.readouterr().err
    assert not out.exists()


def test_validate_writes_a_summary(tmp_path, ds2):
    energies, showers = random_showers(ds2, 9, seed=9, occupancy=0.01)
    showers *= (0.9 * energies / showers.sum(axis=1))[:, None].astype(np.float32)  # E_tot = 0.9 E_inc
    write_calochallenge(tmp_path / "in.h5", energies, showers)
    cli(
        [
            "validate",
            "--kind",
            "showers",
            "--dataset",
            "2",
            "--input",
            str(tmp_path / "in.h5"),
            "--out",
            str(tmp_path / "s.json"),
        ]
    )
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["showers"] == 9
    assert summary["mean_hits"] == pytest.approx(np.count_nonzero(showers) / 9)
    assert len(summary["sha256"]) == 64
    assert summary["warnings"] == []


def test_jets_to_points_keeps_real_particles_only():
    pf = np.zeros((2, 4, 4), np.float32)
    pf[0, :3] = [[0.1, 0.2, 0.5, 1], [0.0, -0.1, 0.3, 1], [0.2, 0.0, 0.2, 1]]
    pf[1, :1] = [[0.0, 0.0, 1.0, 1]]
    points, lengths = jets_to_points(pf)
    np.testing.assert_array_equal(lengths, [3, 1])
    np.testing.assert_array_equal(points[3], [0.0, 0.0, 1.0])
