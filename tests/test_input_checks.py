"""Physics and unit checks of input files: one bad file per rule, each naming the file, the row and the rule.

Errors come from ``python -m pipelines validate`` (exit 1, no summary written); warnings are listed in the
summary JSON. The good files are built so that every quantity is known by hand: E_tot / E_inc = 0.9 per
shower, sum(pt_rel) = 0.95 per jet, jet pt 1 TeV.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipelines.cli import main as cli
from pipelines.io.calochallenge import write_calochallenge
from pipelines.io.errors import DataError
from pipelines.io.jetnet import write_jetnet
from pipelines.transforms import jet_transform, load_transform, save_transform

N_VOXELS = 6480  # dataset 2


def good_showers(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """``n`` showers, E_inc from 10 GeV to 100 GeV (MeV), each E_tot / E_inc = 0.9 in 10 equal voxels."""
    energies = np.geomspace(1e4, 1e5, n)
    showers = np.zeros((n, N_VOXELS), dtype=np.float32)
    for i, e in enumerate(energies):
        showers[i, 100 * i : 100 * i + 10] = 0.09 * e
    return energies, showers


def good_jets(n: int = 12, slots: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """``n`` jets with 3 + i % 5 particles, sum(pt_rel) = 0.95, jet pt 1 TeV, mass 100 GeV."""
    pf = np.zeros((n, slots, 4), dtype=np.float32)
    jf = np.zeros((n, 4), dtype=np.float32)
    for i in range(n):
        k = 3 + i % 5
        pt = np.arange(k, 0, -1, dtype=np.float64)
        pf[i, :k, 0] = np.linspace(-0.2, 0.2, k)
        pf[i, :k, 1] = np.linspace(0.1, -0.1, k)
        pf[i, :k, 2] = 0.95 * pt / pt.sum()
        pf[i, :k, 3] = 1
        jf[i] = [1000.0, 0.1 * i, 100.0, k]
    return pf, jf


def validate(path: Path, kind: str, dataset: str, tmp_path: Path) -> tuple[int, dict | None]:
    """(exit code, summary or None) of the validate stage on ``path``."""
    out = tmp_path / "summary.json"
    out.unlink(missing_ok=True)
    rc = cli(["validate", "--kind", kind, "--dataset", dataset, "--input", str(path), "--out", str(out)])
    return rc, json.loads(out.read_text()) if out.exists() else None


def error_of(path: Path, kind: str, dataset: str, tmp_path: Path, capsys) -> str:
    """The error message of a file that must fail validation, checked to leave no summary behind."""
    rc, summary = validate(path, kind, dataset, tmp_path)
    err = capsys.readouterr().err
    assert rc == 1 and summary is None
    assert not list(tmp_path.glob("*.part")), "half-written output left behind"
    assert err.startswith("error: ") and str(path) in err
    return err


def warnings_of(path: Path, kind: str, dataset: str, tmp_path: Path) -> list[str]:
    rc, summary = validate(path, kind, dataset, tmp_path)
    assert rc == 0 and summary is not None
    return summary["warnings"]


# -------------------------------------------------------------------------------------------- showers


def test_good_showers_pass_without_warnings(tmp_path: Path) -> None:
    path = tmp_path / "good.h5"
    write_calochallenge(path, *good_showers())
    assert warnings_of(path, "showers", "2", tmp_path) == []


def test_showers_in_gev_are_an_error(tmp_path: Path, capsys) -> None:
    energies, showers = good_showers()
    path = tmp_path / "gev.h5"
    write_calochallenge(path, energies / 1000, showers / 1000)  # E_inc 10 to 100 "MeV"
    err = error_of(path, "showers", "2", tmp_path, capsys)
    assert "every incident energy is at most 1000 MeV" in err
    assert "largest 100 at shower 11" in err and "in GeV" in err


def test_voxels_in_gev_incident_in_mev_is_an_error(tmp_path: Path, capsys) -> None:
    energies, showers = good_showers()
    path = tmp_path / "mixed.h5"
    write_calochallenge(path, energies, showers / 1000)  # every E_tot / E_inc = 0.0009
    err = error_of(path, "showers", "2", tmp_path, capsys)
    assert "median E_tot/E_inc of the non-empty showers is 0.0009" in err
    assert "shower 0, 0.0009" in err and "different units" in err


def test_incident_energy_outside_documented_range_is_a_warning(tmp_path: Path) -> None:
    energies, showers = good_showers()
    energies[3], energies[7] = 5e6, 500.0
    showers[3, 300:310], showers[7, 700:710] = 0.09 * 5e6, 0.09 * 500.0
    path = tmp_path / "range.h5"
    write_calochallenge(path, energies, showers)
    (warning,) = warnings_of(path, "showers", "2", tmp_path)
    assert warning.startswith(f"{path}: 2 of 12 showers have an incident energy outside the documented")
    assert "1000 to 1e+06 MeV (first: shower 3, 5e+06 MeV)" in warning


def test_energy_ratio_outside_documented_range_is_a_warning(tmp_path: Path) -> None:
    energies, showers = good_showers()
    showers[5] *= 3.0  # E_tot / E_inc = 2.7
    path = tmp_path / "ratio.h5"
    write_calochallenge(path, energies, showers)
    (warning,) = warnings_of(path, "showers", "2", tmp_path)
    assert warning == (
        f"{path}: 1 of 12 showers have E_tot/E_inc outside the documented [0.2, 2] (first: shower 5, 2.7)"
    )


def test_an_empty_shower_is_a_warning(tmp_path: Path) -> None:
    energies, showers = good_showers()
    showers[4] = 0
    path = tmp_path / "empty.h5"
    write_calochallenge(path, energies, showers)
    (warning,) = warnings_of(path, "showers", "2", tmp_path)
    assert warning == f"{path}: 1 of 12 showers are empty (no voxel energy; first: shower 4)"


def test_all_empty_showers_are_an_error(tmp_path: Path, capsys) -> None:
    energies, showers = good_showers()
    path = tmp_path / "zeros.h5"
    write_calochallenge(path, energies, np.zeros_like(showers))
    err = error_of(path, "showers", "2", tmp_path, capsys)
    assert "all 12 showers are empty (no voxel energy; first: shower 0)" in err


@pytest.mark.parametrize(
    ("key", "data", "what"),
    [
        ("showers", None, "an integer dtype (int32)"),
        ("showers", "bytes", "a string dtype (|S8)"),
        ("incident_energies", None, "an integer dtype (int64)"),
    ],
)
def test_string_or_integer_dtypes_are_an_error(tmp_path: Path, capsys, key: str, data, what: str) -> None:
    energies, showers = good_showers()
    arrays = {"incident_energies": energies.reshape(-1, 1), "showers": showers}
    if key == "showers":
        arrays[key] = showers.astype(np.int32) if data is None else showers.astype("S8")
    else:
        arrays[key] = np.round(energies).astype(np.int64).reshape(-1, 1)
    path = tmp_path / "dtype.h5"
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    err = error_of(path, "showers", "2", tmp_path, capsys)
    assert f"{key!r} has {what}; energies must be floating point MeV" in err


def test_too_few_training_showers_are_an_error(tmp_path: Path, capsys) -> None:
    energies, showers = good_showers(11)  # split 0.8/0.1/0.1: 9 train, 1 validation, 1 test
    path = tmp_path / "few.h5"
    write_calochallenge(path, energies, showers)
    out = tmp_path / "clouds.h5"
    args = ["convert", "--kind", "showers", "--dataset", "2", "--input", str(path), "--out", str(out)]
    assert cli(args) == 1
    err = capsys.readouterr().err
    assert f"{path}: 11 showers give a training split of 9" in err and "at least 10 are needed" in err
    assert not out.exists() and not list(tmp_path.glob(".clouds.h5.*"))
    write_calochallenge(path, *good_showers(12))  # 10 train: accepted
    assert cli(args) == 0 and out.exists()


# ----------------------------------------------------------------------------------------------- jets


def test_good_jets_pass_without_warnings(tmp_path: Path) -> None:
    path = tmp_path / "good.h5"
    write_jetnet(path, *good_jets())
    assert warnings_of(path, "jets", "30", tmp_path) == []


def test_slot_count_must_match_the_configured_geometry(tmp_path: Path, capsys) -> None:
    path = tmp_path / "jets150.h5"
    write_jetnet(path, *good_jets(slots=150))
    err = error_of(path, "jets", "30", tmp_path, capsys)
    assert "150 particle slots per jet, but the data set is configured with geometry 30" in err
    assert warnings_of(path, "jets", "150", tmp_path) == []


def test_pt_rel_above_one_is_a_warning(tmp_path: Path) -> None:
    pf, jf = good_jets()
    pf[2, 0, 2] = 1.2  # the leading particle of jet 2 (5 particles, pt_rel 0.95 * 5 / 15 before)
    path = tmp_path / "ptrel.h5"
    write_jetnet(path, pf, jf)
    warnings = warnings_of(path, "jets", "30", tmp_path)
    assert warnings[0] == f"{path}: 1 of 12 jets have a particle with pt_rel above 1.001 (first: jet 2, 1.2)"
    # sum(pt_rel) = 1.2 + 0.95 * 10 / 15 = 1.8333 breaks the sum rule too
    assert warnings[1] == (
        f"{path}: 1 of 12 jets have sum(pt_rel) outside the documented [0.3, 1.3] (first: jet 2, 1.833)"
    )


def test_low_sum_pt_rel_is_a_warning(tmp_path: Path) -> None:
    pf, jf = good_jets()
    pf[6, :, 2] /= 9.5  # jet 6: sum(pt_rel) = 0.1
    path = tmp_path / "sum.h5"
    write_jetnet(path, pf, jf)
    (warning,) = warnings_of(path, "jets", "30", tmp_path)
    assert warning == (
        f"{path}: 1 of 12 jets have sum(pt_rel) outside the documented [0.3, 1.3] (first: jet 6, 0.1)"
    )


def test_absolute_pt_in_pt_rel_is_an_error(tmp_path: Path, capsys) -> None:
    pf, jf = good_jets()
    pf[:, :, 2] *= 1000.0  # particle pt in GeV instead of pt / pt_jet: sum 950 per jet
    path = tmp_path / "ptgev.h5"
    write_jetnet(path, pf, jf)
    err = error_of(path, "jets", "30", tmp_path, capsys)
    assert "median sum(pt_rel) per jet is 950 (jet 0: 950)" in err and "not pt in GeV" in err


def test_jet_pt_in_mev_is_an_error(tmp_path: Path, capsys) -> None:
    pf, jf = good_jets()
    jf[:, 0] *= 1000.0
    path = tmp_path / "mev.h5"
    write_jetnet(path, pf, jf)
    err = error_of(path, "jets", "30", tmp_path, capsys)
    assert "median jet pt is 1e+06 GeV (jet 0: 1e+06)" in err and "in MeV" in err


def test_jet_pt_outside_documented_range_is_a_warning(tmp_path: Path) -> None:
    pf, jf = good_jets()
    jf[9, 0] = 50.0
    path = tmp_path / "lowpt.h5"
    write_jetnet(path, pf, jf)
    (warning,) = warnings_of(path, "jets", "30", tmp_path)
    assert warning == (
        f"{path}: 1 of 12 jets have jet pt outside the documented 100 to 6500 GeV (first: jet 9, 50)"
    )


def test_real_particle_with_zero_pt_is_an_error(tmp_path: Path, capsys) -> None:
    pf, jf = good_jets()
    pf[8, 2, 2] = 0.0  # jet 8 has 6 real particles; the third loses its pt
    path = tmp_path / "pt0.h5"
    write_jetnet(path, pf, jf)
    err = error_of(path, "jets", "30", tmp_path, capsys)
    assert "jet 8, particle 2 is real (mask 1) with pt_rel 0" in err


def test_jet_without_particles_is_an_error(tmp_path: Path, capsys) -> None:
    pf, jf = good_jets()
    pf[10], jf[10, 3] = 0.0, 0.0
    path = tmp_path / "nojet.h5"
    write_jetnet(path, pf, jf)
    err = error_of(path, "jets", "30", tmp_path, capsys)
    assert "jet 10 has no particles (mask 0 in every slot" in err


def test_integer_jet_features_are_an_error(tmp_path: Path, capsys) -> None:
    pf, jf = good_jets()
    path = tmp_path / "intjets.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("particle_features", data=pf)
        f.create_dataset("jet_features", data=np.round(jf).astype(np.int32))
    err = error_of(path, "jets", "30", tmp_path, capsys)
    assert "'jet_features' has integer dtype int32; JetNet features are floating point" in err


def test_jets_dataset_must_be_a_slot_count(tmp_path: Path, capsys) -> None:
    path = tmp_path / "good.h5"
    write_jetnet(path, *good_jets())
    rc, summary = validate(path, "jets", "two", tmp_path)
    assert rc == 1 and summary is None
    assert "number of particle slots (30 or 150), got 'two'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ transforms


def fitted_jet_transform_doc(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.normal(0, 0.1, 50), rng.normal(0, 0.1, 50), rng.uniform(0.01, 0.5, 50)])
    path = tmp_path / "transforms.json"
    save_transform(path, jet_transform().fit(points))
    return path, json.loads(path.read_text())


@pytest.mark.parametrize(
    ("std", "problem"), [(0.0, "must be positive, got 0.0"), (math.nan, "must be finite")]
)
def test_transforms_with_zero_or_nan_std_fail_at_load(tmp_path: Path, std: float, problem: str) -> None:
    path, doc = fitted_jet_transform_doc(tmp_path)
    load_transform(path)  # the fitted file loads
    doc["transform"]["columns"]["phi_rel"]["steps"][0]["std"] = std
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as info:
        load_transform(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid transform description: column 'phi_rel': Standardize.std")
    assert problem in message


def test_report_reads_the_warnings_of_the_validate_summary(tmp_path: Path) -> None:
    from pipelines.report.html import load_data_summary

    energies, showers = good_showers()
    showers[4] = 0
    path = tmp_path / "empty.h5"
    write_calochallenge(path, energies, showers)
    (warning,) = warnings_of(path, "showers", "2", tmp_path)
    shown = load_data_summary(tmp_path / "summary.json")
    assert shown["file"] == str(path) and shown["warnings"] == [warning] and len(shown["sha256"]) == 64


def test_gev_rule_follows_the_dataset_range() -> None:
    from pipelines.io.physics import ShowerChecks

    energies = 2.0 ** np.arange(8, 23) / 1000  # dataset-1 energies 256 MeV to 4.2 TeV, written in GeV
    showers = np.zeros((len(energies), 368), dtype=np.float32)
    showers[:, 0] = 0.9 * energies
    checks = ShowerChecks("ds1.h5", "1-photons")
    checks.update(0, energies, showers)
    with pytest.raises(
        DataError, match=r"ds1\.h5: every incident energy is at most 4194\.3 MeV \(largest 4194\.3"
    ):
        checks.finish()
    checks = ShowerChecks("ds1.h5", "1-photons")
    checks.update(0, energies * 1000, showers * 1000)  # in MeV: inside 256 MeV to 4.2 TeV, no warning
    assert checks.finish() == []
    with pytest.raises(ValueError, match="no documented incident-energy range for dataset '4'"):
        ShowerChecks("x.h5", "4")
