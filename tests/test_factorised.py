"""The factorised shower family: transforms, learning, sampling, resumption and settings."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from pipelines.generate.gflash import generate_showers
from pipelines.geometry import THRESHOLD_MEV
from pipelines.io.clouds import Clouds
from pipelines.models import factorised
from pipelines.models.factorised import FactorisedFamily, FactorisedSettings
from pipelines.models.family import FAMILIES, ShowerSampler, TrainingData, family_settings
from pipelines.models.point_model import PointParams, sample_points
from pipelines.models.shower_flow import ShowerFlow, ShowerTransform, shower_tables
from pipelines.pointcloud import voxels_to_points

SMALL = {"shower_hidden": 64, "shower_blocks": 2, "point_hidden": 32, "point_blocks": 2, "ode_steps": 4}


@pytest.fixture(scope="module")
def data(ds2) -> TrainingData:
    energies, showers = generate_showers(120, ds2, seed=3, progress=False)
    points, lengths = voxels_to_points(showers, ds2)
    split = np.zeros(len(energies), dtype=np.int8)
    split[100:] = 1
    clouds = Clouds(points, np.concatenate([[0], np.cumsum(lengths)]), energies[:, None],
                    ("energy", "layer", "alpha", "r"), ("incident_energy",), split)  # fmt: skip
    return TrainingData("showers", clouds, None, np.arange(100), np.arange(100, 120),
                        float(lengths.mean()), 7, ds2)  # fmt: skip


def make_family(data: TrainingData, **overrides) -> FactorisedFamily:
    torch.manual_seed(0)
    return FactorisedFamily(FactorisedSettings(**{**SMALL, **overrides}), data, torch.device("cpu"))


class Ctx:
    """The loop's side of a step: one AdamW per parameter group."""

    device = torch.device("cpu")
    step = 0

    def __init__(self, family: FactorisedFamily) -> None:
        mods = family.modules()
        self.opts = {
            g.name: torch.optim.AdamW([p for m in g.modules for p in mods[m].parameters()], lr=g.lr)
            for g in family.param_groups()
        }

    def autocast(self):
        return nullcontext()

    def optimise(self, group: str, loss: torch.Tensor) -> None:
        self.opts[group].zero_grad()
        loss.backward()
        self.opts[group].step()


def tables(data: TrainingData):
    sub = data.clouds.select(data.train_idx)
    counts, layer_e = shower_tables(sub.points[:, 0], sub.points[:, 1], sub.lengths, 45)
    return sub.conditions[:, 0], counts, layer_e


# ----------------------------------------------------------------------------- shower-level transform


def test_transform_round_trip_is_exact(data):
    e_inc, counts, layer_e = tables(data)
    tr = ShowerTransform.fit(e_inc, counts, layer_e, 144, seed=1)
    assert json.loads(json.dumps(tr.to_dict())) == tr.to_dict()  # plain JSON
    rng = np.random.default_rng(0)
    for u in (0.5, torch.as_tensor(rng.uniform(1e-6, 1 - 1e-6, counts.shape))):
        x = tr.forward(e_inc, counts, layer_e, u=u, fill=torch.as_tensor(rng.normal(size=counts.shape)))
        assert x.shape == (len(e_inc), 91)
        ratio, hit_energy, back = tr.inverse(x, e_inc)
        assert torch.equal(back, torch.as_tensor(counts))  # integers exactly, whatever the dequantisation
        np.testing.assert_allclose(ratio.numpy(), layer_e.sum(1) / e_inc, rtol=1e-10)
        hit = counts > 0
        np.testing.assert_allclose((hit_energy.numpy() * counts)[hit], layer_e[hit], rtol=1e-10)
        dec_counts, dec_layers = tr.decode(x, e_inc)
        assert torch.equal(dec_counts, torch.as_tensor(counts))
        np.testing.assert_allclose(dec_layers.numpy(), layer_e, rtol=1e-10, atol=0)


def test_transform_standardises_whitens_and_clamps(data):
    e_inc, counts, layer_e = tables(data)
    tr = ShowerTransform.fit(e_inc, counts, layer_e, 144, seed=2)
    s = tr.standardised(e_inc, counts, layer_e)
    np.testing.assert_allclose(s[:, 0].mean().item(), 0.0, atol=1e-9)
    np.testing.assert_allclose(s[:, 0].std(unbiased=False).item(), 1.0, rtol=1e-9)
    # with the noise the whitening was fitted with, z has mean 0, and L L^T is the covariance of the
    # residuals of s after a least-squares line in c, plus the ridge
    gen = torch.Generator().manual_seed(2)
    u = torch.rand(counts.shape, generator=gen, dtype=torch.float64)
    fill = torch.randn(counts.shape, generator=gen, dtype=torch.float64)
    z = tr.forward(e_inc, counts, layer_e, u, fill)
    torch.testing.assert_close(z.mean(0), torch.zeros(91, dtype=torch.float64), atol=1e-8, rtol=0)
    s_fit = tr.standardised(e_inc, counts, layer_e, u, fill).numpy()
    design = np.stack([np.ones(len(e_inc)), tr.condition(e_inc)[:, 0].double().numpy()], axis=1)
    resid = s_fit - design @ np.linalg.lstsq(design, s_fit, rcond=None)[0]
    cov = resid.T @ resid / len(resid)
    cov += 1e-2 * np.mean(np.diag(cov)) * np.eye(91)
    chol = np.array(tr.white_chol)
    np.testing.assert_allclose(chol @ chol.T, cov, rtol=1e-8, atol=1e-12)
    assert np.allclose(np.triu(chol, 1), 0.0)
    torch.testing.assert_close(tr.unwhiten(tr.whiten(s, e_inc), e_inc), s, atol=1e-10, rtol=0)
    # far outside the training range: clamped
    e3 = e_inc[:3]
    ratio, _, cnt = tr.inverse(tr.whiten(torch.full((3, 91), 50.0), e3), e3)
    assert torch.allclose(ratio, torch.tensor(tr.ratio_range[1], dtype=torch.float64))
    assert torch.equal(cnt, torch.as_tensor(tr.count_max).expand(3, -1))
    _, _, cnt = tr.inverse(tr.whiten(torch.full((3, 91), -50.0), e3), e3)
    assert torch.equal(cnt, torch.as_tensor(tr.count_min).expand(3, -1))
    # decoding: layers without hits get no energy, the others share the sampled E_tot
    can_be_empty = torch.as_tensor(tr.count_min) == 0
    s = tr.standardised(e_inc[:5], counts[:5], layer_e[:5])
    empty = (np.log1p(0.5) - torch.tensor(tr.mean[1 + 45 :])) / torch.tensor(tr.std[1 + 45 :])
    s[:, 1 + 45 :] = torch.where(can_be_empty, empty, s[:, 1 + 45 :])
    cnt, energies = tr.decode(tr.whiten(s, e_inc[:5]), e_inc[:5])
    assert torch.equal(cnt[:, ~can_be_empty], torch.as_tensor(counts[:5])[:, ~can_be_empty])
    assert cnt[:, can_be_empty].eq(0).all() and energies[:, can_be_empty].eq(0).all()
    assert energies[:, ~can_be_empty].gt(0).all()
    np.testing.assert_allclose(energies.sum(1).numpy(), layer_e[:5].sum(1), rtol=1e-10)


def test_transform_fit_is_the_same_bit_for_bit_whatever_the_threads(data):
    """The whitening fit uses no threaded BLAS reduction: SLURM and local runs store the same numbers."""
    e_inc, counts, layer_e = tables(data)
    threads = torch.get_num_threads()
    try:
        fits = []
        for n in (1, 2):
            torch.set_num_threads(n)
            fits.append(ShowerTransform.fit(e_inc.copy(), counts.copy(), layer_e.copy(), 144, seed=4))
    finally:
        torch.set_num_threads(threads)
    assert fits[0].to_dict() == fits[1].to_dict()
    chol = np.array(fits[0].white_chol)
    cov = chol @ chol.T
    np.testing.assert_allclose(chol, np.linalg.cholesky(cov), rtol=1e-10, atol=1e-13)


def test_shower_level_loss_falls(data):
    e_inc, counts, layer_e = tables(data)
    tr = ShowerTransform.fit(e_inc, counts, layer_e, 144)
    x1 = tr.forward(e_inc, counts, layer_e).float()
    cond = tr.condition(e_inc)
    torch.manual_seed(0)
    flow = ShowerFlow(91, 128, 2, 16)
    gen = torch.Generator().manual_seed(1)
    x0_eval, t_eval = torch.randn(x1.shape, generator=gen), torch.rand(len(x1), generator=gen)

    def eval_loss() -> float:
        with torch.no_grad():
            return flow.loss(x1, cond, x0_eval, t_eval, 1e-4).item()

    start = eval_loss()
    opt = torch.optim.AdamW(flow.parameters(), lr=3e-3)
    for _ in range(800):
        idx = torch.randint(len(x1), (64,), generator=gen)
        loss = flow.loss(
            x1[idx], cond[idx], torch.randn(64, 91, generator=gen), torch.rand(64, generator=gen), 1e-4
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.7 * start


def test_frozen_velocity_equals_the_network(data):
    flow = ShowerFlow(91, 32, 2, 16).eval()
    cond, x, t = torch.randn(6, 1), torch.randn(6, 91), torch.full((6,), 0.3)
    with torch.no_grad():
        torch.testing.assert_close(flow.frozen_velocity(cond)(x, t), flow(x, t, cond), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- point model and training


def test_point_model_learns_uniform_alpha_on_rotation_symmetric_showers(data):
    fam = make_family(data, point_batch=2000)
    held_out = fam.point_batch()  # a large evaluation batch (GFlash showers are rotation symmetric)
    fam.settings = dataclasses.replace(fam.settings, point_batch=64)
    points = fam.modules()["point_model"]
    with torch.no_grad():
        start = points.nll(*held_out)
    opt = torch.optim.AdamW(points.parameters(), lr=3e-3)
    for _ in range(300):
        terms = points.nll(*fam.point_batch())
        opt.zero_grad()
        (terms["r"] + terms["alpha"] + terms["energy"]).backward()
        opt.step()
    with torch.no_grad():
        end = points.nll(*held_out)
    assert abs(end["alpha"].item() - math.log(16)) < 0.01
    assert end["r"].item() < start["r"].item() - 0.1  # the radial profile is learnt too
    assert end["energy"].item() < start["energy"].item() - 0.5


def test_train_step_updates_both_groups(data):
    fam = make_family(data)
    groups = fam.param_groups()
    assert {g.name for g in groups} == {"shower", "points"} and all(g.ema for g in groups)
    assert sorted(m for g in groups for m in g.modules) == sorted(fam.modules())
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in fam.modules().items()}
    figures = fam.train_step(Ctx(fam))
    assert set(figures) >= {"loss_shower", "loss_points", "nll_r", "nll_alpha", "nll_energy"}
    assert all(math.isfinite(v) for v in figures.values())
    for name, module in fam.modules().items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters(), strict=True))


def test_state_dict_resumes_the_data_stream(data):
    fam = make_family(data)
    fam.shower_batch(), fam.point_batch()
    buf = io.BytesIO()
    torch.save(fam.state_dict(), buf)
    expected = (fam.shower_batch(), fam.point_batch())
    other = make_family(data)
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    got = (other.shower_batch(), other.point_batch())
    for a, b in zip(expected, got, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------- sampling


def test_pareto_placement_matches_occupancies_without_collisions():
    # one pair type: 9 rings, 16 alphas; p(r) falls off, alpha uniform; n = 40 points
    r_logits = torch.log(torch.tensor([8.0, 6, 4, 3, 2, 1, 0.5, 0.3, 0.2]))
    n_pairs, n = 4000, 40
    params = PointParams(
        r_logits=r_logits.expand(n_pairs, 9),
        alpha_logits=torch.zeros(n_pairs, 9, 16),
        mix_logits=torch.zeros(n_pairs, 9, 2),
        mu=torch.zeros(n_pairs, 9, 2),
        log_sigma=torch.zeros(n_pairs, 9, 2),
    )
    counts = torch.full((n_pairs,), n)
    pts = sample_points(params, counts, torch.Generator().manual_seed(0), (-5.0, 5.0), "pareto")
    assert pts.distinct and len(pts.r) == n_pairs * n
    key = pts.pair * 144 + pts.r * 16 + pts.alpha
    assert key.unique().numel() == key.numel()  # distinct voxels within every pair
    occupancy = torch.bincount(pts.r, minlength=9).double() / (n_pairs * 16)  # per voxel of each ring
    pi = (n * torch.softmax(r_logits.double(), 0) / 16).clamp(max=1.0)
    torch.testing.assert_close(occupancy, pi, atol=0.03, rtol=0.05)
    # independent draws: the same ring expectations, but points share voxels
    ind = sample_points(params, counts, torch.Generator().manual_seed(0), (-5.0, 5.0), "independent")
    assert not ind.distinct
    per_ring = torch.bincount(ind.r, minlength=9).double() / n_pairs
    torch.testing.assert_close(per_ring, n * torch.softmax(r_logits.double(), 0), rtol=0.03, atol=0.05)


def test_sampling_is_seeded_and_exported_sampler_matches(data):
    fam = make_family(data)
    for m in fam.modules().values():
        m.eval()
    e = np.array([2e3, 5e4, 8e5])
    first, counts = fam.sampler().sample_showers(e, torch.Generator().manual_seed(4))
    again, _ = fam.sampler().sample_showers(e, torch.Generator().manual_seed(4))
    other, _ = fam.sampler().sample_showers(e, torch.Generator().manual_seed(5))
    assert first.shape == (3, 6480) and first.dtype == np.float32
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert set(counts) >= {
        "n_points",
        "n_collided",
        "n_below_threshold",
        "seconds_generate",
        "seconds_convert",
    }
    assert np.all((first == 0) | (first >= THRESHOLD_MEV))
    config = json.loads(json.dumps(fam.export_config()))
    state = {n: m.state_dict() for n, m in fam.modules().items()}
    sampler = FactorisedFamily.build_sampler(config, state, None, data.geometry, torch.device("cpu"))
    assert isinstance(sampler, ShowerSampler)
    exported, _ = sampler.sample_showers(e, torch.Generator().manual_seed(4))
    assert np.array_equal(first, exported)
    assert FAMILIES["factorised"] is FactorisedFamily and not FactorisedFamily.needs_multiplicity()


@pytest.mark.parametrize("placement", ["pareto", "independent"])
def test_sampled_layers_match_the_shower_level_exactly(data, monkeypatch, placement):
    fam = make_family(data, placement=placement)
    for m in fam.modules().values():
        m.eval()
    sampler = fam.sampler()
    e = np.geomspace(1e3, 1e6, 8)
    monkeypatch.setattr(factorised, "THRESHOLD_MEV", 0.0)  # compare before the readout threshold
    showers, counts = sampler.sample_showers(e, torch.Generator().manual_seed(9))
    # the shower level's draw is the first use of the generator: repeat it
    with torch.no_grad():
        e_t = torch.as_tensor(e)
        x = sampler.flow.sample(
            sampler.transform.condition(e_t), sampler.ode_steps, torch.Generator().manual_seed(9)
        )
        n_l, layer_e = sampler.transform.decode(x.double(), e_t)
    per_layer = showers.reshape(8, 45, 144).astype(np.float64)
    np.testing.assert_allclose(per_layer.sum(axis=2), layer_e.numpy(), rtol=2e-6, atol=1e-30)
    assert np.array_equal((per_layer > 0).sum(axis=2), n_l.numpy())  # one point per voxel, none lost
    assert counts["n_points"] == int(n_l.sum())
    assert (counts["n_collided"] == 0) == (placement == "pareto")


def test_validate_gives_finite_figures(data):
    fam = make_family(data)
    with torch.no_grad():
        figures = fam.validate(10, seed=1)
    assert set(figures) >= {"figure", "w1_eratio", "w1_depth", "collided_fraction"}
    assert all(math.isfinite(v) for v in figures.values())


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"hidden": 3}, "takes no settings"),
        ({"shower_hidden": "64"}, "shower_hidden"),
        ({"shower_lr": True}, "shower_lr"),
        ({"ode_steps": 0}, "ode_steps"),
        ({"time_dim": 15}, "time_dim"),
        ({"point_lr": 0.0}, "point_lr"),
        ({"sigma_min": -0.1}, "sigma_min"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"placement": "ring"}, "placement"),
    ],
)
def test_bad_settings_are_clear_errors(values, message):
    with pytest.raises(ValueError, match=message):
        family_settings(FactorisedFamily, values)


def test_settings_defaults_and_json_values():
    s = family_settings(FactorisedFamily, {"sigma_min": 0, "placement": "independent"})
    assert s.sigma_min == 0.0 and isinstance(s.sigma_min, float) and s.placement == "independent"
    assert FactorisedSettings() == family_settings(FactorisedFamily, {})


def test_wrong_kind_is_rejected(data):
    jets = dataclasses.replace(data, kind="jets")
    with pytest.raises(ValueError, match="does not model"):
        FactorisedFamily(FactorisedSettings(**SMALL), jets, torch.device("cpu"))
