"""JetNet metrics and the evaluate-jets stage against hand-computed values and scipy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from pipelines.io.errors import DataError
from pipelines.io.jetnet import write_jetnet
from pipelines.metrics import efp, evaluate_jets, jet_metrics
from pipelines.metrics.jet_metrics import JetMetricSettings

FAST = {"fpd_n_draws": 3, "fpd_n_sizes": 4, "kpd_n_batches": 4, "kpd_batch_size": 200, "num_batches": 3,
        "cov_mmd_num_eval_samples": 20, "cov_mmd_num_batches": 2}  # fmt: skip


def _jetnet_particles(rng: np.random.Generator, n_jets: int, n_slots: int = 30, eta_shift: float = 0.0):
    """Random JetNet-style particle features (N, n, 4): eta_rel, phi_rel, pt_rel (sorted), mask (1 = real)."""
    pf = np.zeros((n_jets, n_slots, 4), dtype=np.float32)
    counts = rng.integers(3, n_slots + 1, n_jets)
    for j, n in enumerate(counts):
        pt = np.sort(rng.exponential(1.0, n))[::-1]
        pf[j, :n, 0] = rng.normal(eta_shift, 0.1, n)
        pf[j, :n, 1] = rng.normal(0.0, 0.1, n)
        pf[j, :n, 2] = pt / pt.sum()
        pf[j, :n, 3] = 1.0
    jf = np.stack([np.full(n_jets, 1000.0), np.zeros(n_jets), np.full(n_jets, 80.0), counts], axis=1)
    return pf, jf.astype(np.float32)


def test_relative_mass_two_particles_hand_computed():
    pt1, pt2, eta1, eta2, phi1, phi2 = 0.6, 0.3, 0.2, -0.1, 0.05, -0.25
    particles = np.array([[[eta1, phi1, pt1], [eta2, phi2, pt2], [9.0, 9.0, 9.0]]])
    mask = np.array([[False, False, True]])  # the padded slot holds garbage that must be ignored
    m2 = 2 * pt1 * pt2 * (np.cosh(eta1 - eta2) - np.cos(phi1 - phi2))
    assert jet_metrics.relative_mass(particles, mask)[0] == pytest.approx(np.sqrt(m2), rel=1e-12)
    # a single massless particle has no mass; mass is invariant under a common eta boost / phi rotation
    assert jet_metrics.relative_mass(np.array([[[0.3, 1.0, 0.9]]]))[0] == pytest.approx(0.0, abs=1e-7)
    moved = particles + np.array([1.3, 2.0, 0.0])
    assert jet_metrics.relative_mass(moved, mask)[0] == pytest.approx(np.sqrt(m2), rel=1e-9)


def test_relative_pt_two_particles_hand_computed():
    pt1, pt2, phi1, phi2 = 0.6, 0.3, 0.05, -0.25
    particles = np.array([[[0.2, phi1, pt1], [-0.1, phi2, pt2], [9.0, 9.0, 9.0]]])
    mask = np.array([[False, False, True]])
    expected = np.sqrt(pt1**2 + pt2**2 + 2 * pt1 * pt2 * np.cos(phi1 - phi2))
    assert jet_metrics.relative_pt(particles, mask)[0] == pytest.approx(expected, rel=1e-12)
    # collinear particles: the plain sum; eta does not enter
    collinear = np.array([[[0.5, 0.1, 0.6], [-2.0, 0.1, 0.3]]])
    assert jet_metrics.relative_pt(collinear)[0] == pytest.approx(0.9, rel=1e-12)
    assert np.array_equal(jet_metrics.make_sample(np.concatenate([particles, 1 - mask[..., None]], 2)).pt,
                          jet_metrics.relative_pt(particles, mask))  # fmt: skip


def test_w1_matches_scipy_and_known_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=500), rng.exponential(size=400)
    batches = [(np.arange(500), np.arange(400))]
    w = jet_metrics.w1_per_batch_jet_features(a, b, batches)
    assert w.shape == (1, 1)
    assert w[0, 0] == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    same = [(np.arange(500), np.arange(500))]
    assert jet_metrics.w1_per_batch_jet_features(a, a + 0.25, same)[0, 0] == pytest.approx(0.25, rel=1e-12)
    assert jet_metrics.w1_per_batch_jet_features(a, a, same)[0, 0] == pytest.approx(0.0, abs=1e-15)
    # two columns are treated independently
    two = jet_metrics.w1_per_batch_jet_features(np.stack([a, a], 1), np.stack([a + 1, a - 2], 1), same)
    assert two[0] == pytest.approx([1.0, 2.0])


def test_w1p_uses_real_particles_only():
    rng = np.random.default_rng(1)
    pf, _ = _jetnet_particles(rng, 50)
    ref = jet_metrics.make_sample(pf)
    shifted_pf = pf.copy()
    shifted_pf[..., 0] = np.where(pf[..., 3] == 1, pf[..., 0] + 0.2, 0.0)  # padding stays exactly zero
    gen = jet_metrics.make_sample(shifted_pf)
    batches = [(np.arange(50), np.arange(50))]
    w = jet_metrics.w1_per_batch_particle_features(ref, gen, batches)[0]
    assert w == pytest.approx([0.2, 0.0, 0.0], abs=1e-6)
    real_eta = pf[..., 0][pf[..., 3] == 1]
    assert w[0] == pytest.approx(wasserstein_distance(real_eta, real_eta + 0.2), abs=1e-6)


def test_batch_size_scales_down_and_batches_are_seeded():
    assert jet_metrics.batch_size_for(100_000, 80_000, 50_000) == 50_000
    assert jet_metrics.batch_size_for(1000, 300, 50_000) == 300
    s = JetMetricSettings(seed=4, num_batches=3)
    b1, b2 = jet_metrics.batch_indices(1000, 300, s), jet_metrics.batch_indices(1000, 300, s)
    assert len(b1) == 3 and all(len(r) == len(g) == 300 for r, g in b1)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(b1, b2, strict=True))
    with pytest.raises(ValueError):
        JetMetricSettings(num_batches=0)


def test_jet_metrics_identical_vs_shifted_samples():
    rng = np.random.default_rng(2)
    pf, _ = _jetnet_particles(rng, 600)
    real = jet_metrics.make_sample(pf)
    settings = JetMetricSettings(**FAST)
    same = jet_metrics.jet_metrics(real, real, settings)
    shifted_pf = pf.copy()
    shifted_pf[..., :2] *= 1.3  # wider jets: heavier, larger EFPs (n = 4, d = 4 EFPs scale as 1.3^4)
    worse = jet_metrics.jet_metrics(real, jet_metrics.make_sample(shifted_pf), settings)

    for name in ("W1M", "W1P", "W1EFP", "FPD"):
        assert worse[name]["value"] > 5 * max(same[name]["value"], 1e-12), name
    assert abs(same["KPD"]["value"]) < worse["KPD"]["value"]
    # wider jets are further from the real jets (COV is too coarse to see it in 2 batches of 20)
    assert worse["MMD"]["value"] > same["MMD"]["value"]
    # COV/MMD: mean and std over the per-batch values
    per_batch = jet_metrics.cov_mmd(real, real, settings)
    assert per_batch.shape == (2, 2)
    assert (same["COV"]["value"], same["COV"]["error"]) == (np.mean(per_batch[:, 0]), np.std(per_batch[:, 0]))
    assert (same["MMD"]["value"], same["MMD"]["error"]) == (np.mean(per_batch[:, 1]), np.std(per_batch[:, 1]))
    # identical samples: FPD and KPD consistent with zero within their quoted errors
    assert same["FPD"]["value"] < 3 * same["FPD"]["error"] + 1e-9
    assert abs(same["KPD"]["value"]) < 3 * same["KPD"]["error"] + 1e-9
    # the W1P mean is the mean of the three features; scaled entries are raw x the published factor
    feats = [same[f"W1P_{f}"]["value"] for f in jet_metrics.PARTICLE_FEATURES]
    assert same["W1P"]["value"] == pytest.approx(np.mean(feats), rel=1e-12)
    factors = {"W1M": 1e3, "W1PT": 1e3, "W1P": 1e3, "W1EFP": 1e5, "FPD": 1e3, "KPD": 1e3}
    for name, factor in factors.items():
        suffix = "_x1e3" if factor == 1e3 else "_x1e5"
        assert worse[name + suffix]["value"] == pytest.approx(worse[name]["value"] * factor, rel=1e-12)
        assert worse[name + suffix]["error"] == pytest.approx(worse[name]["error"] * factor, rel=1e-12)
    assert {f"W1EFP_{n}" for n in jet_metrics.PRIME_EFP_NAMES} <= set(worse)


def _write_pair(tmp_path, n_ref=400, n_gen=300, eta_shift=0.0):
    rng = np.random.default_rng(5)
    ref, gen = tmp_path / "ref.h5", tmp_path / "gen.h5"
    write_jetnet(ref, *_jetnet_particles(rng, n_ref))
    write_jetnet(gen, *_jetnet_particles(rng, n_gen, eta_shift=eta_shift))
    return ref, gen


def _run(tmp_path, ref, gen, settings=None, tag="a"):
    out_m, out_h = tmp_path / f"{tag}" / "metrics.json", tmp_path / f"{tag}" / "histograms.npz"
    argv = ["--reference", str(ref), "--generated", str(gen), "--cache-dir", str(tmp_path / "cache"),
            "--out-metrics", str(out_m), "--out-histograms", str(out_h),
            "--settings", json.dumps(settings or FAST)]  # fmt: skip
    assert evaluate_jets.main(argv) == 0
    return json.loads(out_m.read_text()), dict(np.load(out_h, allow_pickle=False))


def test_evaluate_jets_outputs_follow_the_contract(tmp_path):
    ref, gen = _write_pair(tmp_path, eta_shift=0.05)
    metrics, hist = _run(tmp_path, ref, gen)
    assert metrics["kind"] == "jets" and metrics["dataset"] == "ref"
    rows = metrics["rows"]
    assert set(rows) == {"model", "real_vs_real"} and set(rows["model"]) == set(rows["real_vs_real"])
    for row in rows.values():
        for entry in row.values():
            assert set(entry) == {"value", "error"} and isinstance(entry["value"], float)
    # equal sizes in both rows: halves of 200 reference jets, 200 of the 300 generated
    s = metrics["settings"]
    assert s["n_real_half"] == s["n_real_vs_real_other"] == s["n_generated_used"] == 200
    assert s["w1_batch_size_model"] == s["w1_batch_size_real_vs_real"] == 200
    assert s["cov_mmd_batch_size_model"] == s["cov_mmd_batch_size_real_vs_real"] == 20
    assert {"COV", "MMD", "W1PT", "W1PT_x1e3"} <= set(rows["model"])
    # the generated eta is shifted by 0.05: the model row sees it, the real-vs-real row does not
    assert rows["model"]["W1P_eta_rel"]["value"] == pytest.approx(0.05, abs=0.015)
    assert rows["real_vs_real"]["W1P_eta_rel"]["value"] < 0.02
    # so does the tree test on per-jet features (200 vs 200 jets in both rows)
    assert (
        rows["model"]["cls_trees_jet_auc"]["value"] > 0.7 > rows["real_vs_real"]["cls_trees_jet_auc"]["value"]
    )
    assert (
        metrics["tree_classifier"]["model"]["n_per_class"] == 200
        and metrics["tree_classifier"]["model"]["n_features"] == 93
    )

    names = [h["name"] for h in metrics["histograms"]]
    expected = {
        "jet_relative_mass",
        "jet_relative_pt",
        "particle_eta_rel",
        "particle_phi_rel",
        "particle_pt_rel",
        "multiplicity",
    }
    assert expected | {f"efp_{n}" for n in jet_metrics.PRIME_EFP_NAMES} == set(names)
    for h in metrics["histograms"]:
        edges, r, g = (hist[f"{h['name']}__{k}"] for k in ("edges", "reference", "generated"))
        assert len(edges) == len(r) + 1 == len(g) + 1 and np.all(np.diff(edges) > 0)
        assert 0.0 <= h["separation_power"] <= 1.0
        assert set(h) == {"name", "xlabel", "logx", "logy", "group", "separation_power", "no_overlap"}
    assert hist["multiplicity__reference"].sum() == 400 and hist["multiplicity__generated"].sum() == 300
    # the conventions are named; the defaults are jetnet's EFPs and the batch std of the averaged W1
    conv = metrics["conventions"]
    assert set(conv) == {"efp", "w1_error", "cov_mmd", "separation_edges", "separation_undefined"}
    assert "R = 1," in conv["cov_mmd"] and "cov_mmd" in conv["cov_mmd"]
    assert "normed=None" in conv["efp"] and conv["w1_error"] == jet_metrics.W1_ERRORS["batch_std"]
    assert s["efp_normalised"] is False and s["w1_error"] == "batch_std"


def test_evaluate_jets_efp_and_w1_error_options(tmp_path):
    ref, gen = _write_pair(tmp_path, n_ref=120, n_gen=100)
    raw, _ = _run(tmp_path, ref, gen, tag="raw")
    other, _ = _run(
        tmp_path, ref, gen, {**FAST, "efp_normalised": True, "w1_error": "jetnet_norm"}, tag="opt"
    )
    assert "normed=True" in other["conventions"]["efp"]
    assert other["conventions"]["w1_error"] == jet_metrics.W1_ERRORS["jetnet_norm"]
    # the reference cache keeps both conventions apart; pt_rel sums to 1 in every jet of these files
    # (to float32 rounding), so here both give the same EFPs
    assert len(list((tmp_path / "cache").glob("jetnet_efps_*.npz"))) == 2
    r, o = raw["rows"]["model"], other["rows"]["model"]
    assert o["W1EFP"]["value"] == pytest.approx(r["W1EFP"]["value"], rel=1e-4)
    assert o["W1M"] == r["W1M"] and o["W1P"]["value"] == r["W1P"]["value"]
    # jetnet_norm: the norm of the per-feature errors
    feats = [o[f"W1P_{f}"]["error"] for f in jet_metrics.PARTICLE_FEATURES]
    assert o["W1P"]["error"] == pytest.approx(np.linalg.norm(feats), rel=1e-12)
    with pytest.raises(ValueError, match="w1_error"):
        evaluate_jets.EvaluateJetsSettings(w1_error="sum")


def test_feature_mean_w1_error_conventions_hand_computed():
    # two batches, two features: per-batch W1 (1, 3) and (3, 1)
    per_batch = np.array([[1.0, 3.0], [3.0, 1.0]])
    # batch std: per-batch means (2, 2) -> std 0; jetnet: per-feature stds (1, 1) -> norm sqrt(2)
    assert jet_metrics.feature_mean_w1(per_batch, "batch_std") == (2.0, 0.0)
    value, error = jet_metrics.feature_mean_w1(per_batch, "jetnet_norm")
    assert value == 2.0 and error == pytest.approx(np.sqrt(2.0), rel=1e-15)
    with pytest.raises(ValueError):
        jet_metrics.feature_mean_w1(per_batch, "nope")


def test_reference_cache_is_keyed_and_reused(tmp_path):
    ref, gen = _write_pair(tmp_path, n_ref=60, n_gen=50)
    first, _ = _run(tmp_path, ref, gen, tag="a")
    cached = list((tmp_path / "cache").glob("jetnet_efps_*.npz"))
    assert len(cached) == 1
    key = evaluate_jets.reference_cache_key(ref)
    assert cached[0].name == f"jetnet_efps_{key}.npz"
    assert evaluate_jets.reference_cache_key(ref, efp_normalised=True) != key
    with np.load(cached[0]) as z:
        pf, _ = _jetnet_particles(np.random.default_rng(5), 60)
        assert np.allclose(z["efps"], efp.efps(pf[..., :3], pf[..., 3] == 0))
    values, hit = evaluate_jets.reference_efps(ref, pf, tmp_path / "cache")
    assert hit
    second, _ = _run(tmp_path, ref, gen, tag="b")
    assert second["rows"] == first["rows"]  # seeded: the same numbers from the cache
    # another reference file gets another key
    other = tmp_path / "other.h5"
    write_jetnet(other, *_jetnet_particles(np.random.default_rng(9), 60))
    assert evaluate_jets.reference_cache_key(other) != key


def test_bad_settings_and_bad_files(tmp_path):
    ref, gen = _write_pair(tmp_path, n_ref=40, n_gen=40)
    with pytest.raises(ValueError, match="unknown evaluate-jets settings"):
        evaluate_jets.EvaluateJetsSettings.from_json('{"num_batchs": 3}')
    with pytest.raises(ValueError, match="must be int"):
        evaluate_jets.EvaluateJetsSettings.from_json('{"num_batches": "3"}')
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not an hdf5 file")
    out_m = tmp_path / "x" / "metrics.json"
    with pytest.raises(DataError, match="broken.h5"):
        evaluate_jets.main(["--reference", str(ref), "--generated", str(broken), "--cache-dir",
                            str(tmp_path / "c"), "--out-metrics", str(out_m),
                            "--out-histograms", str(tmp_path / "x" / "h.npz")])  # fmt: skip
    assert not out_m.exists()
    tiny = tmp_path / "tiny.h5"
    write_jetnet(tiny, *_jetnet_particles(np.random.default_rng(1), 3))
    with pytest.raises(DataError, match="at least 4 jets"):
        evaluate_jets.evaluate(ref, tiny, evaluate_jets.EvaluateJetsSettings(), tmp_path / "c")


def test_a_generated_jet_without_particles_is_an_error_naming_file_and_jet(tmp_path):
    ref = tmp_path / "ref.h5"
    write_jetnet(ref, *_jetnet_particles(np.random.default_rng(2), 20))
    pf, jf = _jetnet_particles(np.random.default_rng(3), 20)
    pf[13], jf[13, 3] = 0.0, 0.0  # jet 13 keeps no particle
    gen = tmp_path / "gen.h5"
    write_jetnet(gen, pf, jf)
    with pytest.raises(DataError, match=r"gen\.h5: jet 13 has no particles \(1 such jets\)"):
        evaluate_jets.evaluate(ref, gen, evaluate_jets.EvaluateJetsSettings(), tmp_path / "c")
