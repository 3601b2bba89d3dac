"""Stage ``sample``: files that pass the readers, n from the multiplicity model, rotation, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
import torch

from pipelines.geometry import THRESHOLD_MEV
from pipelines.io.calochallenge import read_calochallenge, write_calochallenge
from pipelines.io.clouds import Clouds
from pipelines.io.jetnet import read_jetnet, write_jetnet
from pipelines.models.family import TrainingData, family_settings, get_family
from pipelines.models.multiplicity import MultiplicitySettings, fit_multiplicity, save_multiplicity
from pipelines.models.store import save_model
from pipelines.pointcloud import points_to_voxels, voxels_to_points
from pipelines.sample import (
    Sampler,
    SampleSettings,
    clean_energies,
    generate_points,
    jets_from_points,
    main,
    noise_generator,
    rotate_alpha,
)
from pipelines.transforms import PointTransform, Transform, jet_transform, save_transform, shower_transform

torch.set_num_threads(1)
FAST = {"timing_batch_sizes": [1, 4], "timing_repeats": 1, "batch_size": 16, "progress": False}
TINY_FLOW = {"hidden": 8, "n_blocks": 1, "heads": 1, "time_dim": 8, "ode_steps": 2}


def save_untrained_flow(
    path, kind: str, points: np.ndarray, lengths: np.ndarray, conditions, transform, geometry=None
) -> int:
    """A flow-matching model file with its initial (seeded) weights; returns its weight count."""
    names = ("energy", "layer", "alpha", "r") if kind == "showers" else ("eta_rel", "phi_rel", "pt_rel")
    cond_names = ("incident_energy",) if kind == "showers" else ("jet_pt", "jet_eta", "jet_mass")
    clouds = Clouds(points, np.concatenate([[0], np.cumsum(lengths)]), conditions, names, cond_names,
                    np.zeros(len(lengths), np.int8))  # fmt: skip
    idx = np.arange(len(lengths))
    data = TrainingData(kind, clouds, transform, idx, idx, float(lengths.mean()), 0, geometry)
    cls = get_family("flow-matching")
    torch.manual_seed(0)
    family = cls(family_settings(cls, TINY_FLOW), data, torch.device("cpu"))
    weights = {name: m.state_dict() for name, m in family.modules().items()}
    save_model(path, "flow-matching", kind, family.export_config(), weights, {"point_names": list(names)})
    return sum(int(v.numel()) for w in weights.values() for v in w.values() if v.dtype.is_floating_point)


@pytest.fixture(scope="module")
def shower_inputs(tmp_path_factory, ds2):
    """Tiny random generator, fitted transform and multiplicity model, and a 40-shower reference file."""
    d = tmp_path_factory.mktemp("showers")
    rng = np.random.default_rng(0)
    ref_e = np.exp(rng.uniform(np.log(2e3), np.log(5e4), 40))
    showers = np.zeros((40, ds2.n_voxels), dtype=np.float32)
    hits = rng.random(showers.shape) < 0.006
    showers[hits] = rng.lognormal(0.0, 1.5, hits.sum()) + 0.05
    write_calochallenge(d / "ref.h5", ref_e, showers)
    points, lengths = voxels_to_points(showers, ds2)
    save_transform(d / "t.json", shower_transform(ds2).fit(points.astype(np.float64), rng=rng))
    e_train = np.exp(rng.uniform(np.log(1e3), np.log(1e5), 1500))
    n_train = rng.poisson(3 * (e_train / 1e3) ** 0.5)
    mult = fit_multiplicity(
        n_train, "showers", ds2.n_voxels, e_train, MultiplicitySettings(steps=250, batch_size=512)
    )
    save_multiplicity(d / "m.json", mult)
    transform = shower_transform(ds2).fit(points.astype(np.float64), rng=np.random.default_rng(1))
    params = save_untrained_flow(d / "g.pt", "showers", points, lengths, ref_e[:, None], transform, ds2)
    return {"dir": d, "ref_e": ref_e, "ref_n": lengths, "mult": mult, "params": params}


def _run_showers(inp, out_name: str, seed: int = 1, n: int = 50, **settings) -> list[str]:
    d = inp["dir"]
    args = ["--model", str(d / "g.pt"), "--multiplicity", str(d / "m.json"),
            "--transforms", str(d / "t.json"), "--reference", str(d / "ref.h5"), "--kind", "showers",
            "--dataset", "2", "--n-samples", str(n), "--seed", str(seed),
            "--settings", json.dumps({**FAST, **settings}), "--out", str(d / f"{out_name}.h5"),
            "--out-timing", str(d / f"{out_name}.json"), "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    return args


def test_shower_sample_file_is_valid_and_follows_the_multiplicity_model(shower_inputs, ds2) -> None:
    _run_showers(shower_inputs, "a")
    d = shower_inputs["dir"]
    energies, showers = read_calochallenge(d / "a.h5", ds2)  # the validating reader accepts it
    assert energies.shape == (50,) and showers.shape == (50, ds2.n_voxels)
    # incident energies are resampled from the reference
    assert np.all(np.isin(energies.astype(np.float32), shower_inputs["ref_e"].astype(np.float32)))
    assert np.all(np.isfinite(showers)) and showers.min() >= 0
    assert not np.any((showers > 0) & (showers < THRESHOLD_MEV))
    timing = json.loads((d / "a.json").read_text())
    gen = timing["generation"]
    # the total hit count matches the model's expectation given these energies (5 sigma)
    pmf = shower_inputs["mult"].pmf(energies)
    k = np.arange(pmf.shape[1])
    mean, var = pmf @ k, pmf @ k**2 - (pmf @ k) ** 2
    assert abs(gen["n_points"] - mean.sum()) < 5 * np.sqrt(var.sum())
    # exact bookkeeping: every point is a hit unless it collided, fell below threshold or was clipped
    written = int(np.count_nonzero(showers))
    assert written <= gen["n_points"] - gen["n_collided"]
    lost = (
        gen["n_collided"]
        + gen["n_voxels_below_threshold"]
        + gen["n_negative_clipped"]
        + gen["n_nonfinite_clipped"]
    )
    assert written >= gen["n_points"] - lost


def test_timing_json_has_the_required_keys(shower_inputs) -> None:
    _run_showers(shower_inputs, "timed", n=8)
    t = json.loads((shower_inputs["dir"] / "timed.json").read_text())
    assert t["device"] == "cpu" and t["torch_version"] == torch.__version__ and t["device_name"]
    assert t["generator_parameters"] == shower_inputs["params"]
    assert [row["batch_size"] for row in t["timing"]] == [1, 4]
    for row in t["timing"]:
        assert row["ms_per_sample_with_conversion"] >= row["ms_per_sample_without_conversion"] > 0
    assert {"n_collided", "collided_fraction", "n_points", "n_negative_clipped"} <= set(t["generation"])
    assert t["settings"]["collisions"] == "sum"


def test_timing_batch_sizes_are_capped_on_cpu(shower_inputs) -> None:
    _run_showers(shower_inputs, "cap", n=4, timing_batch_sizes=[1, 30], timing_max_batch_cpu=6)
    rows = json.loads((shower_inputs["dir"] / "cap.json").read_text())["timing"]
    assert [(r["requested_batch_size"], r["batch_size"]) for r in rows] == [(1, 1), (30, 6)]


def test_sampling_is_seeded(shower_inputs, ds2) -> None:
    d = shower_inputs["dir"]
    for name, seed in (("s1", 4), ("s2", 4), ("s3", 5)):
        _run_showers(shower_inputs, name, seed=seed, n=12, timing=False)
    a, b, c = (read_calochallenge(d / f"{name}.h5", ds2) for name in ("s1", "s2", "s3"))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_n_from_reference_takes_the_hit_count_of_the_resampled_shower(shower_inputs, ds2) -> None:
    _run_showers(shower_inputs, "r", n=30, collisions="shift", n_from_reference=True, timing=False)
    d = shower_inputs["dir"]
    energies, showers = read_calochallenge(d / "r.h5", ds2)
    gen = json.loads((d / "r.json").read_text())["generation"]
    ref = dict(
        zip(shower_inputs["ref_e"].astype(np.float32).tolist(), shower_inputs["ref_n"].tolist(), strict=True)
    )
    n_ref = np.array([ref[e] for e in energies.astype(np.float32).tolist()])
    assert gen["n_points"] == n_ref.sum()
    assert np.all(np.count_nonzero(showers, axis=1) <= n_ref)


class Tracer(torch.nn.Module):
    """Stand-in generator whose output tells where each point came from:
    (log(E_inc / MeV) - 10, slot index, first noise component, n / mean_n + 1000 at padded slots)."""

    kind, point_dim, noise_dim, mean_n = "showers", 4, 4, 8.0

    def forward(self, noise, cond, mask):
        b, m, _ = noise.shape
        slot = torch.arange(m, dtype=torch.float32).expand(b, m)
        return torch.stack([cond[:, :1].expand(b, m), slot, noise[..., 0],
                            cond[:, 1:2].expand(b, m) + 1000.0 * mask], dim=-1)  # fmt: skip


def _tracer_sampler() -> Sampler:
    names = ("energy", "layer", "alpha", "r")
    unit = {"type": "Standardize", "mean": 0.0, "std": 1.0}
    identity = PointTransform(names, {k: Transform.from_dict(unit) for k in names})
    return Sampler(Tracer(), identity, None, torch.device("cpu"))


def test_generate_points_puts_every_point_in_its_cloud_with_fresh_noise() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 30, 60)
    lengths[[3, 17]] = 0
    energies = np.exp(rng.uniform(np.log(1e3), np.log(1e6), (60, 1)))
    sampler = _tracer_sampler()
    pts = generate_points(sampler, energies, lengths, noise_generator(sampler.device, 5), 7, 100)
    assert pts.shape == (lengths.sum(), 4) and pts.dtype == np.float64
    cloud = np.repeat(np.arange(60), lengths)
    e32 = (np.log(energies[:, 0]) - 10.0).astype(np.float32)
    np.testing.assert_array_equal(pts[:, 0], e32[cloud])  # clouds in input order
    np.testing.assert_array_equal(pts[:, 1], np.concatenate([np.arange(k) for k in lengths]))
    np.testing.assert_array_equal(pts[:, 3], (lengths / np.float32(8.0)).astype(np.float32)[cloud])  # no pads
    noise = pts[:, 2]
    assert len(np.unique(noise)) == len(noise)  # one fresh draw per real point
    assert scipy.stats.kstest(noise, "norm").pvalue > 1e-3
    # seeded; independent of the batching (noise is drawn once per request, in sorted-cloud order)
    again = generate_points(sampler, energies, lengths, noise_generator(sampler.device, 5), 1000, 10_000)
    np.testing.assert_array_equal(again, pts)
    other = generate_points(sampler, energies, lengths, noise_generator(sampler.device, 6), 7, 100)
    assert not np.array_equal(other[:, 2], noise)
    assert generate_points(sampler, energies[:2], np.zeros(2, int), noise_generator("cpu", 0)).shape == (0, 4)


def test_generate_points_needs_the_noise_generator_on_the_model_device() -> None:
    sampler = _tracer_sampler()
    sampler.device = torch.device("meta")
    with pytest.raises(ValueError, match="torch_gen is on cpu"):
        generate_points(sampler, np.ones((1, 1)), np.ones(1, int), noise_generator("cpu", 0))


def test_alpha_rotation_preserves_energy_and_hits_and_rolls_the_grid(ds2) -> None:
    rng = np.random.default_rng(3)
    lengths = np.array([5, 0, 7])
    points = np.stack([rng.uniform(0.1, 2.0, 12), rng.integers(0, 45, 12), rng.integers(0, 16, 12),
                       rng.integers(0, 9, 12)], axis=1).astype(np.float32)  # fmt: skip
    shifts = np.array([3, 9, 15])
    rotated = rotate_alpha(points, lengths, shifts, ds2.n_alpha)
    before, _ = points_to_voxels(points, lengths, ds2)
    after, _ = points_to_voxels(rotated.astype(np.float32), lengths, ds2)
    np.testing.assert_allclose(after.sum(axis=1), before.sum(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(np.count_nonzero(after, axis=1), np.count_nonzero(before, axis=1))
    for i, k in enumerate(shifts):
        expected = np.roll(before[i].reshape(ds2.grid_shape), k, axis=1)
        np.testing.assert_array_equal(after[i].reshape(ds2.grid_shape), expected)


def test_clean_energies_zeroes_and_counts_nan_and_negative() -> None:
    e, n_bad, n_neg = clean_energies(np.array([1.0, np.nan, -2.0, np.inf, 0.5]))
    np.testing.assert_array_equal(e, [1.0, 0.0, 0.0, 0.0, 0.5])
    assert (n_bad, n_neg) == (2, 1)


def test_jets_from_points_sorts_pads_and_computes_jet_features() -> None:
    # jet 0: pt_rel 0.25 and 0.75 at eta_rel 0, phi_rel -+0.1; jet 1: empty; jet 2: one particle
    pts = np.array([[0.0, -0.1, 0.25], [0.0, 0.1, 0.75], [0.2, 3.5, 1.0]])
    pf, jf, counts = jets_from_points(pts, np.array([2, 0, 1]), 4, np.array([100.0, 50.0, 10.0]), np.zeros(3))
    assert pf.shape == (3, 4, 4)
    np.testing.assert_allclose(pf[0, :2, 2], [0.75, 0.25])  # sorted by decreasing pt_rel
    np.testing.assert_array_equal(pf[:, :, 3], [[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    assert np.all(pf[1] == 0) and np.all(pf[0, 2:] == 0)
    np.testing.assert_allclose(pf[2, 0, 1], 3.5 - 2 * np.pi, rtol=1e-6)  # phi wrapped into [-pi, pi)
    p1, p2 = 75.0, 25.0
    pt = np.hypot((p1 + p2) * np.cos(0.1), (p1 - p2) * np.sin(0.1))
    mass = np.sqrt(2 * p1 * p2 * (1 - np.cos(0.2)))
    np.testing.assert_allclose(jf[0], [pt, 0.0, mass, 2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jf[2], [10.0, 0.2, 0.0, 1], rtol=1e-5, atol=2e-3)
    assert counts["n_points"] == 3 and counts["n_negative"] == 0


def test_jet_sample_passes_the_reader_and_respects_the_slots(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n_slots, m = 10, 60
    n_ref = rng.integers(1, n_slots + 1, m)
    pf = np.zeros((m, n_slots, 4), dtype=np.float32)
    for i, k in enumerate(n_ref):
        pt = np.sort(rng.dirichlet(np.ones(k)))[::-1]
        pf[i, :k] = np.stack([rng.normal(0, 0.1, k), rng.normal(0, 0.1, k), pt, np.ones(k)], axis=1)
    jf = np.stack([rng.uniform(900, 1100, m), rng.normal(0, 1, m), rng.uniform(50, 150, m), n_ref], axis=1)
    write_jetnet(tmp_path / "ref.h5", pf, jf)
    real = pf[..., 3] == 1
    save_transform(tmp_path / "t.json", jet_transform().fit(pf[real][:, :3].astype(np.float64)))
    save_multiplicity(tmp_path / "m.json", fit_multiplicity(n_ref, "jets", n_slots))
    transform = jet_transform().fit(pf[real][:, :3].astype(np.float64))
    save_untrained_flow(tmp_path / "g.pt", "jets", pf[real][:, :3], n_ref, jf[:, :3], transform)
    args = ["--model", str(tmp_path / "g.pt"), "--multiplicity", str(tmp_path / "m.json"),
            "--transforms", str(tmp_path / "t.json"), "--reference", str(tmp_path / "ref.h5"),
            "--kind", "jets", "--n-samples", "40", "--seed", "2", "--settings", json.dumps(FAST),
            "--out", str(tmp_path / "j.h5"), "--out-timing", str(tmp_path / "j.json"),
            "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    gpf, gjf = read_jetnet(tmp_path / "j.h5")
    assert gpf.shape == (40, n_slots, 4) and gjf.shape == (40, 4)
    n = (gpf[..., 3] == 1).sum(axis=1)
    np.testing.assert_array_equal(n, gjf[:, 3])
    assert set(n.tolist()) <= set(n_ref.tolist())  # categorical MLE: only counts seen in training
    assert np.all(np.diff(gpf[..., 2], axis=1) <= 0)  # sorted by pt_rel, padding last
    assert np.all(gpf[..., 2] >= 0) and np.all(gjf[:, 2] >= 0)
    t = json.loads((tmp_path / "j.json").read_text())
    assert t["kind"] == "jets" and len(t["timing"]) == 2


def test_bad_settings_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown sample settings"):
        SampleSettings.from_json('{"colisions": "sum"}')
    with pytest.raises(ValueError, match="collisions"):
        SampleSettings.from_json('{"collisions": "add"}')
    with pytest.raises(ValueError, match="n_from_reference"):
        SampleSettings.from_json('{"n_from_reference": true, "energy_source": "log_uniform"}')
