"""The MPGAN family: masking, permutation symmetry, a toy learned, settings, export and sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from pipelines.io.clouds import Clouds
from pipelines.models.family import PointSampler, TrainingData, family_settings, get_family
from pipelines.models.mpgan import MPGAN, MPDiscriminator, MPGenerator
from pipelines.models.settings import FAMILY_SPECS, MPGANSettings
from pipelines.training.loop import Run, seed_everything
from pipelines.training.settings import LoopSettings
from pipelines.transforms import jet_transform

CPU = torch.device("cpu")
ARCH = {"hidden": 8, "noise_dim": 4, "iterations": 2, "edge_layers": [8, 8], "node_layers": [8],
        "aggregation": "mean", "edge_distance": True}  # fmt: skip


def jet_data(n_jets: int = 80, seed: int = 0, n_max: int = 12) -> TrainingData:
    rng = np.random.default_rng(seed)
    n = rng.integers(3, n_max + 1, n_jets)
    pt = rng.dirichlet(np.ones(n_max), n_jets)
    pt = np.concatenate([np.sort(p[:k] / p[:k].sum())[::-1] for p, k in zip(pt, n, strict=True)])
    points = np.column_stack([rng.normal(0, 0.1, n.sum()), rng.normal(0, 0.1, n.sum()), pt])
    split = np.zeros(n_jets, np.int8)
    split[int(0.8 * n_jets) :] = 1
    clouds = Clouds(points, np.concatenate([[0], np.cumsum(n)]), np.ones((n_jets, 3)),
                    ("eta_rel", "phi_rel", "pt_rel"), ("jet_pt", "jet_eta", "jet_mass"), split)  # fmt: skip
    train, val = clouds.split_indices(0), clouds.split_indices(1)
    t = jet_transform().fit(clouds.select(train).points)
    return TrainingData("jets", clouds, t, train, val, float(clouds.lengths[train].mean()), seed, None)


def _inputs(b: int = 3, n: int = 7, lengths: tuple[int, ...] = (7, 4, 1)) -> tuple[torch.Tensor, ...]:
    mask = torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]
    return torch.randn(b, n, 4), torch.rand(b, 1), mask


@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_padding_never_influences_real_particles(aggregation: str) -> None:
    torch.manual_seed(0)
    arch = {**ARCH, "aggregation": aggregation}
    gen, disc = MPGenerator(arch, 3, 1, 5.0).eval(), MPDiscriminator(arch, 3, 1).eval()
    noise, cond, mask = _inputs()
    x = torch.randn(3, 7, 3)
    junk_noise = noise.masked_fill(mask.unsqueeze(-1), 0.0) + 50.0 * torch.randn(3, 7, 4) * mask.unsqueeze(-1)
    junk_x = torch.where(mask.unsqueeze(-1), 100.0 * torch.randn(3, 7, 3), x)
    with torch.no_grad():
        out, out_junk = gen(noise, cond, mask), gen(junk_noise, cond, mask)
        assert out.shape == (3, 7, 3) and torch.all(out[mask] == 0)
        assert torch.allclose(out[~mask], out_junk[~mask], atol=1e-6)
        # the padded slots of a jet are also not seen through a longer padding
        longer = torch.cat([mask, torch.ones(3, 5, dtype=torch.bool)], dim=1)
        out_long = gen(torch.cat([noise, torch.randn(3, 5, 4)], dim=1), cond, longer)
        assert torch.allclose(out_long[:, :7][~mask], out[~mask], atol=1e-6)
        scores = disc(x, cond, mask)
        assert scores.shape == (3,) and torch.allclose(scores, disc(junk_x, cond, mask), atol=1e-5)


def test_generator_is_permutation_equivariant_and_discriminator_invariant() -> None:
    torch.manual_seed(1)
    gen, disc = MPGenerator(ARCH, 3, 1, 5.0).eval(), MPDiscriminator(ARCH, 3, 1).eval()
    noise, cond, mask = _inputs(lengths=(7, 7, 7))
    x = torch.randn(3, 7, 3)
    perm = torch.randperm(7)
    with torch.no_grad():
        assert torch.allclose(gen(noise[:, perm], cond, mask), gen(noise, cond, mask)[:, perm], atol=1e-5)
        assert torch.allclose(disc(x[:, perm], cond, mask), disc(x, cond, mask), atol=1e-5)
        # a permutation that moves padding around: the valid particles are what counts
        mask2 = torch.zeros(1, 7, dtype=torch.bool)
        mask2[0, [1, 4]] = True
        a = disc(x[:1], cond[:1], mask2)
        keep = torch.tensor([0, 2, 3, 5, 6])
        b = disc(x[:1, keep], cond[:1], torch.zeros(1, 5, dtype=torch.bool))
        assert torch.allclose(a, b, atol=1e-5)


def test_mean_aggregation_hand_computed() -> None:
    """One round with identity-like layers: the mean message over valid j of leaky(h_i + h_j)."""
    from pipelines.models.mpgan import MessagePassing

    layer = MessagePassing(2, 1, (2,), (2,), "mean", edge_distance=False)
    with torch.no_grad():
        (
            layer.edge_i.weight.copy_(torch.eye(2)),
            layer.edge_i.bias.zero_(),
            layer.edge_j.weight.copy_(torch.eye(2)),
        )
    h = torch.tensor([[[1.0, -2.0], [3.0, 0.5], [9.0, 9.0]]])
    mask = torch.tensor([[False, False, True]])
    msgs = layer.messages(h, mask)
    lrelu = torch.nn.functional.leaky_relu
    expected_0 = (lrelu(h[0, 0] + h[0, 0], 0.2) + lrelu(h[0, 0] + h[0, 1], 0.2)) / 2
    assert torch.allclose(msgs[0, 0], expected_0)


def test_settings_are_checked_and_showers_are_refused() -> None:
    assert FAMILY_SPECS["mpgan"].kinds == ("jets",) and FAMILY_SPECS["mpgan"].needs_multiplicity
    for values, message in [
        ({"iterations": 0}, "mpgan setting iterations must be >= 1"),
        ({"edge_layers": []}, "mpgan setting edge_layers must be a non-empty list"),
        ({"aggregation": "max"}, "mpgan setting aggregation must be one of"),
        ({"loss": "hinge"}, "mpgan setting loss must be one of"),
        ({"critic_dropout": 1.0}, "mpgan setting critic_dropout must lie in [0, 1)"),
        ({"lr_critic": 0.0}, "mpgan setting lr_critic must be a positive number"),
        ({"critic_leading": -1}, "mpgan setting critic_leading must be >= 0"),
        ({"critic_leading": 3, "critic_jet_features": False}, "needs critic_jet_features"),
    ]:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
            family_settings(get_family("mpgan"), values)
    data = jet_data()
    showers = TrainingData("showers", data.clouds, data.transform, data.train_idx, data.val_idx, 5.0, 0)
    with pytest.raises(ValueError, match="does not model 'showers'"):
        MPGAN(MPGANSettings(), showers, CPU)


def test_a_data_set_of_several_jet_types_is_refused() -> None:
    """The MPGAN condition is n / mean_n alone: one-hot jet types would be dropped silently."""
    assert not FAMILY_SPECS["mpgan"].jet_type_condition
    data = jet_data()
    c = data.clouds
    typed = Clouds(c.points, c.offsets, np.column_stack([c.conditions, np.eye(2)[np.arange(len(c)) % 2]]),
                   c.point_names, (*c.condition_names, "type_q", "type_t"), c.split)  # fmt: skip
    several = TrainingData("jets", typed, data.transform, data.train_idx, data.val_idx, data.mean_n, 0)
    with pytest.raises(ValueError, match="models one jet type at a time"):
        MPGAN(MPGANSettings(), several, CPU)
    MPGAN(MPGANSettings(), data, CPU)  # one type: accepted


def test_jet_features_hand_computed() -> None:
    """Two massless particles of pt 0.5 at (eta, phi) = (+-a, 0): m^2 = 2 pt1 pt2 (cosh(2a) - 1)."""
    from pipelines.models.mpgan import JetFeatures, _Identity

    a = 0.1
    x = torch.tensor([[[a, 0.0, 0.5], [-a, 0.0, 0.5], [7.0, 7.0, 7.0]]], dtype=torch.float64)
    mask = torch.tensor([[False, False, True]])
    raw = JetFeatures(_Identity(), torch.zeros(2), torch.ones(2)).raw(x, mask)
    assert raw[0, 0].item() == pytest.approx(np.sqrt(2 * 0.25 * (np.cosh(2 * a) - 1)), rel=1e-9)
    assert raw[0, 1].item() == pytest.approx(1.0)
    scaled = JetFeatures(_Identity(), torch.tensor([0.1, 1.0]), torch.tensor([0.05, 0.5]))(x.float(), mask)
    assert scaled[0].tolist() == pytest.approx([(raw[0, 0].item() - 0.1) / 0.05, 0.0], abs=1e-5)


def test_leading_particle_features_and_the_critic_that_sees_them() -> None:
    """The k leading particles by pt_rel, padding never among them, zeros past a jet's length; the
    discriminator with them stays invariant under permutations and blind to padded slots."""
    from pipelines.models.mpgan import JetFeatures, _Identity

    x = torch.tensor([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [9.0, 9.0, 9.0]]], dtype=torch.float64)
    mask = torch.tensor([[False, False, True]])
    raw = JetFeatures(_Identity(), torch.zeros(11), torch.ones(11), leading=3).raw(x, mask)
    assert raw[0, 2:].tolist() == pytest.approx([0.4, 0.5, 0.6, 0.1, 0.2, 0.3, 0.0, 0.0, 0.0])
    longer = JetFeatures(_Identity(), torch.zeros(14), torch.ones(14), leading=4).raw(x, mask)
    assert torch.equal(longer[0, :11], raw[0]) and longer[0, 11:].abs().sum() == 0
    with pytest.raises(ValueError, match="mean and std need 11 values"):
        JetFeatures(_Identity(), torch.zeros(2), torch.ones(2), leading=3)
    torch.manual_seed(2)
    features = JetFeatures(_Identity(), torch.zeros(17), torch.ones(17), leading=5)
    disc = MPDiscriminator(ARCH, 3, 1, jet_features=features).eval()
    points, cond, mask = torch.rand(3, 7, 3), torch.rand(3, 1), _inputs()[2]
    junk = torch.where(mask.unsqueeze(-1), 100.0 * torch.rand(3, 7, 3), points)
    perm = torch.randperm(7)
    full = torch.zeros(3, 7, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(disc(points, cond, mask), disc(junk, cond, mask), atol=1e-5)
        assert torch.allclose(disc(points[:, perm], cond, full), disc(points, cond, full), atol=1e-5)


def _toy_w1(family: MPGAN, data: TrainingData) -> float:
    """Mean W1 (in units of the real spread) of the three particle features, all training jets."""
    real = data.clouds.select(data.train_idx)
    with torch.no_grad():
        gen = family.generate(real.lengths, seed=3)
    ref = np.asarray(real.points, np.float64)
    return float(np.mean([wasserstein_distance(gen[:, k], ref[:, k]) / ref[:, k].std() for k in range(3)]))


def test_a_toy_is_learned() -> None:
    """Without the calibrated start, training moves the generated marginals onto the toy's."""
    data = jet_data(n_jets=160)
    seed_everything(0)
    settings = MPGANSettings(hidden=16, noise_dim=4, edge_layers=(16,), node_layers=(32,), pt_share=False,
                             critic_jet_features=False, calibrate=False, lr_generator=1e-3, lr_critic=3e-3,
                             max_tokens=400)  # fmt: skip
    family = MPGAN(settings, data, CPU)
    run = Run(family, LoopSettings(seed=0, max_steps=250, warmup_steps=10, ema_decay=0.0), CPU)
    start = _toy_w1(family, data)
    for _ in range(250):
        run.train_step()
    family.generator.eval()
    end = _toy_w1(family, data)
    assert end < 0.5 * start and end < 0.3, (start, end)


def test_build_sampler_reproduces_the_generator() -> None:
    data = jet_data()
    seed_everything(0)
    family = MPGAN(MPGANSettings(hidden=8, noise_dim=4, max_tokens=200), data, CPU)
    run = Run(family, LoopSettings(seed=0, max_steps=3, warmup_steps=1), CPU)
    for _ in range(3):
        run.train_step()
    config = json.loads(json.dumps(family.export_config()))
    state = {name: m.state_dict() for name, m in family.modules().items()}
    sampler = MPGAN.build_sampler(config, state, data.transform, None, CPU)
    assert isinstance(sampler, PointSampler) and not sampler.training
    assert (sampler.kind, sampler.point_dim, sampler.noise_dim) == ("jets", 3, 4)
    assert sampler.mean_n == pytest.approx(data.mean_n)
    noise, cond, mask = _inputs()
    family.generator.eval()
    with torch.no_grad():
        out = sampler(noise, cond, mask)
        assert torch.equal(out, family.generator(noise, cond, mask))
    pts = family.generate(np.array([5, 9, 2]), seed=1)
    assert np.all(pts[:, 2] > 0) and np.all(np.isfinite(pts))
    with pytest.raises(ValueError, match="config keys"):
        MPGAN.build_sampler({"architecture": config["architecture"]}, state, data.transform, None, CPU)
    with pytest.raises(ValueError, match="aggregation"):
        bad = {**config, "architecture": {**config["architecture"], "aggregation": "max"}}
        MPGAN.build_sampler(bad, state, data.transform, None, CPU)


def test_validation_figure_adds_the_particle_and_jet_pt_distances() -> None:
    data = jet_data()
    seed_everything(0)
    family = MPGAN(MPGANSettings(hidden=8, noise_dim=4, max_tokens=200, critic_leading=4), data, CPU)
    figures = family.validate(10, seed=5)
    assert set(figures) == {"figure", "w1m", "w1p", "w1pt"}
    assert all(np.isfinite(v) and v >= 0 for v in figures.values())
    assert figures["figure"] == pytest.approx(figures["w1m"] + figures["w1p"] + figures["w1pt"])
    assert family.validate(10, seed=5) == figures
