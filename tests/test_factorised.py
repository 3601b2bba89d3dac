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

from pipelines.export import load_factorised
from pipelines.generate.gflash import generate_showers
from pipelines.generate.gflash_settings import GFlashSettings
from pipelines.geometry import THRESHOLD_MEV, Geometry, load_geometry
from pipelines.io.clouds import Clouds
from pipelines.io.errors import DataError
from pipelines.models import factorised
from pipelines.models.factorised import FactorisedFamily, FactorisedSettings
from pipelines.models.family import FAMILIES, ShowerSampler, TrainingData, family_settings
from pipelines.models.point_model import N_NUMERIC, PointModel, PointParams, pareto_keys, sample_points
from pipelines.models.shower_flow import ShowerFlow, ShowerTransform, shower_tables
from pipelines.models.store import load_model, save_model
from pipelines.pointcloud import points_to_voxels, voxels_to_points
from tests.conftest import random_showers

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


def shower_level_draw(sampler, e_inc: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The hit counts and layer energies a sampler's shower level draws for ``seed`` (its first draw)."""
    with torch.no_grad():
        e_t = torch.as_tensor(e_inc)
        x = sampler.flow.sample(
            sampler.transform.condition(e_t), sampler.ode_steps, torch.Generator().manual_seed(seed)
        )
        return sampler.transform.decode(x.double(), e_t)


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
    n_l, layer_e = shower_level_draw(sampler, e, 9)
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


# ----------------------------------------------------------------------------- per-layer binnings (dataset 1)

#: (n_alpha, n_r) of the layers of a small per-layer toy: layers 0 and 3 have no voxels
TOY_LAYERS = {0: None, 1: (1, 3), 2: (4, 5), 3: None}
TOY_R_OCCUPANCY = {1: (0.9, 0.5, 0.1), 2: (0.8, 0.6, 0.4, 0.2, 0.05)}  # hit probability per ring


def toy_geometry() -> Geometry:
    edges = tuple(np.arange(b[1] + 1) * 5.0 if b else np.array([0.0]) for b in TOY_LAYERS.values())
    return Geometry("toy-per-layer", edges, tuple(b[0] if b else 1 for b in TOY_LAYERS.values()))


def per_layer_data(
    geometry: Geometry, showers: np.ndarray, energies: np.ndarray, n_train: int
) -> TrainingData:
    points, lengths = voxels_to_points(showers, geometry)
    split = np.zeros(len(energies), dtype=np.int8)
    split[n_train:] = 1
    clouds = Clouds(points, np.concatenate([[0], np.cumsum(lengths)]), energies[:, None],
                    ("energy", "layer", "alpha", "r"), ("incident_energy",), split)  # fmt: skip
    return TrainingData("showers", clouds, None, np.arange(n_train), np.arange(n_train, len(energies)),
                        float(lengths.mean()), 7, geometry)  # fmt: skip


def toy_showers(geometry: Geometry, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Showers whose voxels are hit with a probability per ring (uniform in alpha), energies lognormal."""
    rng = np.random.default_rng(seed)
    prob = np.concatenate(
        [np.tile(TOY_R_OCCUPANCY[layer], TOY_LAYERS[layer][0]) for layer in geometry.filled_layers]
    )
    hit = rng.random((n, geometry.n_voxels)) < prob
    showers = np.where(hit, rng.lognormal(0.0, 0.5, hit.shape) + 0.1, 0.0).astype(np.float32)
    showers[showers.sum(axis=1) == 0, 0] = 1.0
    return 10 ** rng.uniform(3, 4, n), showers


def ring_occupancy(showers: np.ndarray, geometry: Geometry, layer: int) -> np.ndarray:
    n_alpha, n_r = TOY_LAYERS[layer]
    in_layer = geometry.voxel_index[:, 0] == layer
    return (showers[:, in_layer] > 0).reshape(len(showers), n_alpha, n_r).mean(axis=(0, 1))


def masked_model(seed: int = 0) -> tuple[PointModel, torch.Tensor, torch.Tensor]:
    """A point model over the toy's filled layers (bins (1, 3) and (4, 5)), features of 6 pairs."""
    torch.manual_seed(seed)
    model = PointModel(2, 4, 5, 16, 1, 3, layer_bins=[(1, 3), (4, 5)])
    return model, torch.randn(6, N_NUMERIC), torch.tensor([0, 1, 0, 1, 1, 0])


def test_masked_cells_have_zero_probability_and_finite_gradients():
    model, feats, layer = masked_model()
    p = model(feats, layer)
    assert p.valid is not None and p.capacity().tolist() == [3, 20, 3, 20, 20, 3]
    prob = torch.softmax(p.r_logits, dim=1)[:, :, None] * torch.softmax(p.alpha_logits, dim=2)
    assert torch.all(prob[~p.valid] == 0) and torch.all(prob[p.valid] > 0)
    torch.testing.assert_close(prob.sum(dim=(1, 2)), torch.ones(6))
    r, alpha = torch.tensor([2, 4, 0, 0, 3, 1]), torch.tensor([0, 3, 0, 1, 2, 0])
    terms = model.nll(feats, layer, r, alpha, torch.zeros(6))
    sum(terms.values()).backward()
    assert all(torch.isfinite(v) for v in terms.values())
    assert all(torch.isfinite(q.grad).all() for q in model.parameters() if q.grad is not None)
    with pytest.raises(ValueError, match="outside the bins of its layer"):
        model.nll(feats, layer, torch.tensor([3, 4, 0, 0, 3, 1]), alpha, torch.zeros(6))  # r 3 in layer 0


def test_pareto_never_samples_masked_cells_and_respects_each_layers_capacity():
    model, feats, layer = masked_model(1)
    with torch.no_grad():
        p = model(feats, layer)
    gen = torch.Generator().manual_seed(2)
    for counts in (torch.tensor([3, 20, 5, 25, 7, 1]), torch.tensor([1, 3, 2, 19, 20, 3])):
        for _ in range(20):
            pts = sample_points(p, counts, gen, (-3.0, 3.0), "pareto")
            assert bool(p.valid[pts.pair, pts.r, pts.alpha].all())
            expected = torch.minimum(counts, p.capacity())
            assert torch.equal(torch.bincount(pts.pair, minlength=6), expected)
            cell = (pts.pair * 5 + pts.r) * 4 + pts.alpha
            assert len(torch.unique(cell)) == len(cell) and torch.isfinite(pts.y).all()
    with pytest.raises(ValueError, match="needs a regular grid"):
        sample_points(p, counts, gen, (-3.0, 3.0), "independent")


def test_full_masks_change_nothing():
    """A masked model whose layers all have the full grid gives the unmasked model's numbers."""
    torch.manual_seed(0)
    plain = PointModel(3, 4, 5, 16, 1, 3)
    full = PointModel(3, 4, 5, 16, 1, 3, layer_bins=[(4, 5)] * 3)
    full.load_state_dict(plain.state_dict())
    feats, layer = torch.randn(5, N_NUMERIC), torch.tensor([0, 1, 2, 1, 0])
    a, b = plain(feats, layer), full(feats, layer)
    for name in ("r_logits", "alpha_logits", "mix_logits", "mu", "log_sigma"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    u = torch.rand(5, 20, generator=torch.Generator().manual_seed(3))
    counts = torch.tensor([1, 4, 20, 7, 0])
    assert torch.equal(pareto_keys(a, counts, u), pareto_keys(b, counts, u))
    assert set(plain.state_dict()) == set(full.state_dict())  # the masks are not stored weights


def test_regular_grid_layout_is_inactive(data):
    family = make_family(data)
    assert family.layout.regular and family.layout.layer_bins is None and family.capacity == 144
    assert not family.modules()["point_model"].masked and family.sampler().gather is None
    assert "layers" not in family.export_config() and family.transform.capacity == 144


def test_per_layer_toy_learns_the_ring_distribution_of_each_layer():
    geometry = toy_geometry()
    energies, showers = toy_showers(geometry, 300, seed=4)
    family = make_family(per_layer_data(geometry, showers, energies, 250), point_lr=3e-3)
    assert family.grid == (2, 4, 5) and family.transform.capacity == [3, 20]
    ctx = Ctx(family)
    for _ in range(1000):
        family.train_step(ctx)
    sampled, counts = family.sampler().sample_showers(energies[:300], torch.Generator().manual_seed(1))
    assert sampled.shape == (300, geometry.n_voxels) and counts["n_collided"] == 0
    for layer in TOY_R_OCCUPANCY:  # hit fraction per ring: model vs the data (0.9 ... 0.05)
        np.testing.assert_allclose(
            ring_occupancy(sampled, geometry, layer), ring_occupancy(showers, geometry, layer), atol=0.08
        )


@pytest.mark.parametrize("name", ["1-photons", "1-pions"])
def test_dataset1_sampling_round_trips_through_voxels_and_the_model_file(name, tmp_path, monkeypatch):
    geometry = load_geometry(name)
    if name == "1-photons":
        energies, showers = generate_showers(
            80, geometry, seed=3, settings=GFlashSettings.from_json("{}", name), progress=False
        )
    else:  # GFlash is electromagnetic: random sparse showers in the pion geometry
        energies, showers = random_showers(geometry, 80, seed=3, occupancy=0.3)
    family = make_family(per_layer_data(geometry, showers, energies, 60))
    filled = geometry.filled_layers
    assert family.layout.filled == tuple(filled) and family.grid == geometry.compact_shape
    ctx = Ctx(family)
    for _ in range(5):
        family.train_step(ctx)
    sampled, counts = family.sampler().sample_showers(energies, torch.Generator().manual_seed(2))
    assert sampled.shape == (80, geometry.n_voxels) and np.isfinite(sampled).all() and sampled.min() >= 0
    assert (
        counts["n_collided"] == 0
        and counts["n_points"] == int((sampled > 0).sum()) + counts["n_below_threshold"]
    )
    points, lengths = voxels_to_points(sampled, geometry)
    assert set(np.unique(points[:, 1]).astype(int)) <= set(filled.tolist())
    back, n_collided = points_to_voxels(points, lengths, geometry)
    assert n_collided == 0
    np.testing.assert_array_equal(back, sampled)
    # before the readout threshold, the layer sums and hit counts are the shower level's exactly
    monkeypatch.setattr(factorised, "THRESHOLD_MEV", 0.0)
    sampler = family.sampler()
    for m in family.modules().values():
        m.eval()
    raw, _ = sampler.sample_showers(energies, torch.Generator().manual_seed(2))
    n_l, layer_e = shower_level_draw(sampler, energies, 2)
    np.testing.assert_allclose(family.layout.layer_energies(raw), layer_e.numpy(), rtol=2e-6, atol=1e-30)
    hits = family.layout.layer_energies((raw > 0).astype(np.float64))
    np.testing.assert_array_equal(hits, n_l.numpy())
    assert (n_l.numpy() <= np.array(family.transform.capacity)).all()
    monkeypatch.undo()
    for m in family.modules().values():
        m.train()
    assert np.isfinite(family.validate(20, 3)["figure"])
    # the model file rebuilds the same sampler for this geometry, and refuses another geometry
    model = tmp_path / "model.pt"
    weights = {key: m.state_dict() for key, m in family.modules().items()}
    save_model(model, "factorised", "showers", family.export_config(), weights)
    sampler, _ = load_model(model, None, geometry, "cpu")
    again, _ = sampler.sample_showers(energies, torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(again, sampled)
    other = load_geometry("1-pions" if name == "1-photons" else "1-photons")
    for wrong in (other, load_geometry("2")):
        with pytest.raises(ValueError, match="model trained for the per-layer binning"):
            load_model(model, None, wrong, "cpu")
    with pytest.raises(DataError, match="ONNX export takes the regular grids"):
        load_factorised(model)


def test_independent_placement_is_refused_on_per_layer_binnings():
    geometry = toy_geometry()
    energies, showers = toy_showers(geometry, 20, seed=1)
    with pytest.raises(ValueError, match="needs placement 'pareto'"):
        make_family(per_layer_data(geometry, showers, energies, 15), placement="independent")
