"""Pythia 8 + FastJet jets: physics of the samples, JetNet layout invariants, seeding, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.generate.pythia_jets import JetGenSettings, generate_jets, jet_record, main
from pipelines.io.jetnet import read_jet_types, read_jetnet, validate_jets

N_JETS = 100
SEED = 11
TOP_MASS_GEV = 172.5


@pytest.fixture(scope="module")
def samples() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """100 jets of each type with 150 slots (about 8 s of CPU in all)."""
    return {t: generate_jets(N_JETS, t, 150, seed=SEED, progress=False) for t in ("t", "g", "q")}


def massless_mass(pf: np.ndarray) -> np.ndarray:
    """Jet mass / jet pt from the massless four-vector sum of the stored (eta_rel, phi_rel, pt_rel)."""
    eta, phi, pt = (pf[..., i].astype(np.float64) for i in range(3))
    e = (pt * np.cosh(eta)).sum(-1)
    px = (pt * np.cos(phi)).sum(-1)
    py = (pt * np.sin(phi)).sum(-1)
    pz = (pt * np.sinh(eta)).sum(-1)
    return np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))


def test_top_jets_peak_at_top_mass_qcd_jets_do_not(samples) -> None:
    masses = {t: samples[t][1][:, 2] for t in samples}
    window = {t: np.mean((m > 140) & (m < 210)) for t, m in masses.items()}
    assert 150 < np.median(masses["t"]) < 200
    # the mode of a 10 GeV histogram sits at the top mass
    counts, edges = np.histogram(masses["t"], bins=np.arange(0, 400, 10))
    assert abs(edges[np.argmax(counts)] + 5 - TOP_MASS_GEV) < 20
    assert np.median(masses["q"]) < 120
    assert np.median(masses["g"]) < 150
    assert window["t"] > 0.6 and window["g"] < 0.35 and window["q"] < 0.3
    # quark jets radiate less than gluon jets (Casimir C_F < C_A): fewer constituents, lighter
    assert np.median(samples["q"][1][:, 3]) < np.median(samples["g"][1][:, 3])
    assert np.median(masses["q"]) < np.median(masses["g"])


@pytest.mark.parametrize("jet_type", ["t", "g", "q"])
def test_layout_invariants(samples, jet_type: str) -> None:
    pf, jf = samples[jet_type]
    settings = JetGenSettings()
    assert pf.shape == (N_JETS, 150, 4) and jf.shape == (N_JETS, 4)
    assert pf.dtype == np.float32 and jf.dtype == np.float32
    validate_jets("sample", pf, jf)  # mask 0/1, padding zero, n consistent, phi_rel in range
    real = pf[..., 3] == 1
    # kinematic selection
    assert np.all((jf[:, 0] >= settings.jet_pt_min_gev) & (jf[:, 0] <= settings.jet_pt_max_gev))
    assert np.all(np.abs(jf[:, 1]) < settings.jet_abs_eta_max)
    # n_particles = mask count unless truncated to the 150 slots
    n_real = real.sum(1)
    np.testing.assert_array_equal(n_real, np.minimum(jf[:, 3], 150))
    # sorted by decreasing pt
    pt = np.where(real, pf[..., 2], -1.0)
    assert np.all(np.diff(pt, axis=1)[real[:, 1:]] <= 0)
    assert np.all(pf[..., 2][real] > 0)
    # phi_rel wrapped into [-pi, pi)
    assert np.all((pf[..., 1] >= -np.pi - 1e-6) & (pf[..., 1] < np.pi + 1e-6))


@pytest.mark.parametrize("jet_type", ["t", "g", "q"])
def test_constituents_within_jet_radius(samples, jet_type: str) -> None:
    """Anti-kt (R = 0.8) jets are cones of radius R around their hard core: the axis of a jet with
    several hard prongs moves a little, so a few soft constituents may lie just beyond R, never far."""
    pf, _ = samples[jet_type]
    real = pf[..., 3] == 1
    dr = np.hypot(pf[..., 0], pf[..., 1])[real]
    pt = pf[..., 2][real]
    assert dr.max() < 1.5 * 0.8
    assert np.mean(dr > 0.8) < 0.01
    assert pt[dr > 0.8].sum() / len(pf) < 2e-3  # pt fraction outside R per jet


@pytest.mark.parametrize("jet_type", ["t", "g", "q"])
def test_momentum_sum_rules(samples, jet_type: str) -> None:
    """E-scheme jet = vector sum of its constituents: in the jet frame sum pt_rel cos(phi_rel) = 1 and
    sum pt_rel sin(phi_rel) = 0; scalar sum pt_rel >= 1; the massless-sum mass is the jet mass.
    Exact (float32 rounding) when not truncated; truncated jets miss only their softest particles."""
    pf, jf = samples[jet_type]
    full = jf[:, 3] <= 150
    assert full.sum() > 0.8 * N_JETS
    pt, phi = pf[..., 2].astype(np.float64), pf[..., 1].astype(np.float64)
    np.testing.assert_allclose((pt * np.cos(phi)).sum(1)[full], 1.0, atol=2e-5)
    np.testing.assert_allclose((pt * np.sin(phi)).sum(1)[full], 0.0, atol=2e-5)
    assert np.all(pt.sum(1)[full] >= 1 - 2e-5) and np.all(pt.sum(1) < 1.1)
    np.testing.assert_allclose(massless_mass(pf[full]) * jf[full, 0], jf[full, 2], rtol=1e-3, atol=0.05)
    sums = (pt * np.cos(phi)).sum(1)[~full]
    assert np.all((sums > 0.95) & (sums < 1 + 2e-5))


def test_thirty_slots_are_the_leading_particles_of_the_same_jets(samples) -> None:
    pf150, jf150 = samples["q"]
    pf30, jf30 = generate_jets(40, "q", 30, seed=SEED, progress=False)
    np.testing.assert_array_equal(pf30, pf150[:40, :30])
    np.testing.assert_array_equal(jf30, jf150[:40])
    assert np.all(pf30[..., 2].sum(1) <= pf150[:40, :, 2].sum(1) + 1e-6)


def test_same_seed_same_jets_other_seed_other_jets(samples) -> None:
    pf, jf = generate_jets(15, "t", 150, seed=SEED, progress=False)
    np.testing.assert_array_equal(pf, samples["t"][0][:15])
    np.testing.assert_array_equal(jf, samples["t"][1][:15])
    pf2, jf2 = generate_jets(15, "t", 150, seed=SEED + 1, progress=False)
    assert not np.array_equal(jf2, jf)


def test_jet_record_by_hand() -> None:
    """Two massless particles at phi = +-3.1 (across the -pi/pi seam) with pt 30 and 10 GeV."""
    a = np.array([30 * np.cos(3.1), 30 * np.sin(3.1), 0.0, 30.0])
    b = np.array([10 * np.cos(-3.1), 10 * np.sin(-3.1), 10 * np.sinh(0.5), 10 * np.cosh(0.5)])
    particles, features = jet_record(np.stack([b, a]), a + b, 3)
    jet = a + b
    jet_pt = np.hypot(jet[0], jet[1])
    jet_phi = np.arctan2(jet[1], jet[0])
    jet_eta = np.arcsinh(jet[2] / jet_pt)
    expected_dphi_a = (3.1 - jet_phi + np.pi) % (2 * np.pi) - np.pi
    expected_dphi_b = (-3.1 - jet_phi + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(particles[0], [0 - jet_eta, expected_dphi_a, 30 / jet_pt, 1])
    np.testing.assert_allclose(particles[1], [0.5 - jet_eta, expected_dphi_b, 10 / jet_pt, 1])
    np.testing.assert_array_equal(particles[2], 0)
    assert abs(expected_dphi_a - expected_dphi_b) < 0.1  # neighbours across the seam, not 2 pi apart
    mass = np.sqrt(jet[3] ** 2 - jet[0] ** 2 - jet[1] ** 2 - jet[2] ** 2)
    np.testing.assert_allclose(features, [jet_pt, jet_eta, mass, 2])
    truncated, features1 = jet_record(np.stack([b, a]), a + b, 1)
    np.testing.assert_allclose(truncated, particles[:1])
    assert features1[3] == 2


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="jet_type"):
        generate_jets(5, "x", 30)  # g, q, t, w and z are known
    with pytest.raises(ValueError, match="seed"):
        generate_jets(5, "g", 30, seed=-1)
    with pytest.raises(ValueError, match="unknown jet-generator settings"):
        JetGenSettings.from_dict({"pt_min": 5})
    with pytest.raises(ValueError, match="jet_pt_min_gev < jet_pt_max_gev"):
        JetGenSettings(jet_pt_min_gev=1200, jet_pt_max_gev=800)
    with pytest.raises(ValueError, match="Pythia rejected"):
        generate_jets(1, "g", 30, settings=JetGenSettings(pythia_lines=("NoSuch:setting = 3",)))


def test_impossible_selection_raises(tmp_path: Path) -> None:
    settings = JetGenSettings(jet_pt_min_gev=5000, jet_pt_max_gev=6000, max_events_per_jet=2)
    with pytest.raises(RuntimeError, match="passed the selection"):
        generate_jets(3, "q", 30, settings=settings, progress=False)


def test_cli_writes_jetnet_file_and_refuses_bad_settings(tmp_path: Path) -> None:
    out = tmp_path / "t.h5"
    settings = json.dumps({"jet_pt_min_gev": 850.0})
    argv = ["--jet-type", "t", "--n-jets", "8", "--n-particles", "30", "--seed", "3"]
    argv += ["--settings", settings, "--out", str(out), "--no-progress"]
    # a fresh process, so that FastJet's first-use banner is exercised too: stdout must stay clean
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run(
        [sys.executable, "-m", "pipelines", "generate-jets", *argv],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    pf, jf = read_jetnet(out)
    assert pf.shape == (8, 30, 4) and np.all(jf[:, 0] >= 850)
    expected = generate_jets(
        8, "t", 30, seed=3, settings=JetGenSettings(jet_pt_min_gev=850.0), progress=False
    )
    np.testing.assert_array_equal(pf, expected[0])
    np.testing.assert_array_equal(jf, expected[1])
    bad = tmp_path / "bad.h5"
    with pytest.raises(ValueError, match="unknown"):
        main(["--jet-type", "g", "--n-jets", "2", "--settings", '{"ptmin": 1}', "--out", str(bad)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.h5"]


@pytest.mark.parametrize("slots", [150, 30])
def test_generated_jets_pass_the_input_checks_without_warnings(samples, slots: int) -> None:
    """The embedded jets meet the documented physics contract, truncated to 30 slots or not."""
    from pipelines.io.physics import JetChecks

    for jet_type, (pf, jf) in samples.items():
        checks = JetChecks(f"pythia-{jet_type}", slots)
        checks.update(0, pf[:, :slots], jf)  # the first 30 slots are the 30-particle file (test above)
        assert checks.finish() == []


def test_w_and_z_jets_peak_at_the_boson_masses_and_carry_their_type(tmp_path: Path) -> None:
    """Boosted hadronic W and Z jets (boson pairs, parton-matched), 12 of each written by the stage with
    JetNet's type column: the median jet mass sits at the boson mass (the median: a few jets catch
    extra radiation and lie far above)."""
    out = tmp_path / "wz.h5"
    argv = ["--jet-type", "z,w", "--n-jets", "12", "--seed", str(SEED), "--settings", '{"mpi": false}']
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    pf, jf = read_jetnet(out)
    codes = read_jet_types(out)
    assert np.bincount(codes, minlength=5).tolist() == [0, 0, 0, 12, 12]
    assert 0 < np.argmax(codes == 4) < 12  # shuffled, not type after type
    for code, boson_mass in ((3, 80.4), (4, 91.2)):
        mass = jf[codes == code, 2]
        assert abs(np.median(mass) - boson_mass) < 6
        assert np.mean(np.abs(mass - boson_mass) < 15) > 0.5
    assert np.median(jf[codes == 4, 2]) > np.median(jf[codes == 3, 2])
    with pytest.raises(ValueError, match="--jet-type: unknown jet type 'x'"):
        main(["--jet-type", "w,x", "--n-jets", "2", "--out", str(tmp_path / "bad.h5")])
    assert not (tmp_path / "bad.h5").exists()
