"""Flow-matching family on the MDMA backbone: padding, learning, sampling, data-stream resume, settings."""

from __future__ import annotations

import dataclasses
import io
import json
from contextlib import nullcontext
from typing import Any

import numpy as np
import pytest
import torch

from pipelines.io.clouds import Clouds
from pipelines.models.blocks import ContextMeanFieldBlock
from pipelines.models.family import TrainingData, family_settings, get_family
from pipelines.models.mdma_flow import (
    FlowMatchingFamily,
    FlowMatchingSettings,
    FlowPointSampler,
    MeanFieldVelocity,
    token_batches,
)
from pipelines.transforms import Chain, PointTransform, Standardize, jet_transform, shower_transform

torch.set_num_threads(1)


class Ctx:
    """The loop's side of a training step: AdamW on the family's groups, gradient clipping."""

    def __init__(self, family: FlowMatchingFamily, total_steps: int | None = None) -> None:
        self.device, self.step = torch.device("cpu"), 0
        self.opts = {
            g.name: torch.optim.AdamW(
                [p for m in g.modules for p in family.modules()[m].parameters()],
                lr=g.lr,
                weight_decay=g.weight_decay,
            )
            for g in family.param_groups()
        }
        self.lr = {name: opt.param_groups[0]["lr"] for name, opt in self.opts.items()}
        self.total_steps = total_steps

    def autocast(self) -> Any:
        return nullcontext()

    def optimise(self, group: str, loss: torch.Tensor) -> None:
        opt = self.opts[group]
        if self.total_steps:  # cosine decay, as the loop's schedule
            opt.param_groups[0]["lr"] = (
                self.lr[group] * 0.5 * (1 + np.cos(np.pi * self.step / self.total_steps))
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        self.step += 1


def _toy_clouds(n_clouds: int, seed: int, latent: float = 0.5, width: float = 0.3) -> Clouds:
    """2-d clouds of 4 to 12 points: mean m(n) + latent z (per cloud), spread ``width`` (per point).

    m(n) = (n - 8) / 4 * (1, -1): the condition n / mean_n fixes the shift; z ~ N(0, latent^2) is a
    per-cloud random shift that only the global token can carry. Split: 80 % train, 20 % validation.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 13, n_clouds)
    centre = (lengths[:, None] - 8) / 4 * np.array([1.0, -1.0]) + latent * rng.standard_normal((n_clouds, 2))
    points = np.repeat(centre, lengths, axis=0) + width * rng.standard_normal((lengths.sum(), 2))
    split = (np.arange(n_clouds) >= int(0.8 * n_clouds)).astype(np.int8)
    return Clouds(
        points, np.concatenate([[0], np.cumsum(lengths)]), np.zeros((n_clouds, 1)), ("a", "b"), ("c",), split
    )


def _toy_data(clouds: Clouds, seed: int = 0) -> TrainingData:
    transform = PointTransform(("a", "b"), {"a": Chain([Standardize()]), "b": Chain([Standardize()])})
    train, val = clouds.split_indices(0), clouds.split_indices(1)
    transform.fit(clouds.select(train).points)
    return TrainingData("jets", clouds, transform, train, val, float(clouds.lengths[train].mean()), seed)


def _family(data: TrainingData, **settings: Any) -> FlowMatchingFamily:
    torch.manual_seed(0)
    base = {"hidden": 32, "n_blocks": 2, "heads": 2, "time_dim": 16, "max_tokens": 600, "ode_steps": 20}
    return FlowMatchingFamily(FlowMatchingSettings(**{**base, **settings}), data, torch.device("cpu"))


def _velocity() -> MeanFieldVelocity:
    torch.manual_seed(0)
    net = MeanFieldVelocity(point_dim=3, cond_dim=2, hidden=16, n_blocks=2, heads=4, expansion=2, time_dim=8)
    for p in net.parameters():  # non-trivial weights everywhere (LayerNorm and head included)
        torch.nn.init.normal_(p, std=0.3)
    return net.double()


# ------------------------------------------------------------------------------------- network


def test_padding_changes_nothing_and_padded_outputs_are_zero() -> None:
    net = _velocity()
    gen = torch.Generator().manual_seed(1)
    b, n = 3, 7
    x = torch.randn(b, n, 3, generator=gen, dtype=torch.float64)
    t, cond = (
        torch.rand(b, dtype=torch.float64, generator=gen),
        torch.randn(b, 2, generator=gen, dtype=torch.float64),
    )
    lengths = torch.tensor([7, 4, 1])
    mask = torch.arange(n)[None, :] >= lengths[:, None]
    out = net(x, t, cond, mask)
    assert torch.all(out[mask] == 0)
    # garbage in the padded slots and five more padded slots change no real output
    garbage = torch.where(mask[..., None], 100 * torch.randn(x.shape, generator=gen, dtype=torch.float64), x)
    wide = torch.cat([garbage, torch.randn(b, 5, 3, generator=gen, dtype=torch.float64)], dim=1)
    wide_mask = torch.cat([mask, torch.ones(b, 5, dtype=torch.bool)], dim=1)
    out_wide = net(wide, t, cond, wide_mask)
    torch.testing.assert_close(out_wide[:, :n][~mask], out[~mask], rtol=1e-12, atol=1e-12)
    assert torch.all(out_wide[wide_mask] == 0)
    # a cloud alone gives what it gives in the batch; points are permutation-equivariant
    torch.testing.assert_close(
        net(x[1:2, :4], t[1:2], cond[1:2], mask[1:2, :4])[0], out[1, :4], rtol=1e-12, atol=1e-12
    )
    perm = torch.randperm(n, generator=gen)
    torch.testing.assert_close(
        net(x[:1, perm], t[:1], cond[:1], mask[:1, perm]), out[:1, perm], rtol=1e-12, atol=1e-12
    )
    # the velocity depends on time, the condition and the other points (not a per-point map)
    assert not torch.allclose(net(x, t + 0.1, cond, mask), out)
    assert not torch.allclose(net(x, t, cond + 0.1, mask), out)
    moved = x.clone()
    moved[0, 1:] += 1.0
    assert not torch.allclose(net(moved, t, cond, mask)[0, 0], out[0, 0])


def test_empty_clouds_give_finite_outputs_and_sampler_zeroes_padding() -> None:
    net = _velocity()
    mask = torch.ones(2, 3, dtype=torch.bool)
    out = net(
        torch.randn(2, 3, 3, dtype=torch.float64), torch.rand(2, dtype=torch.float64), torch.zeros(2, 2), mask
    )
    assert torch.all(out == 0)
    sampler = FlowPointSampler(net, "showers", 3, 10.0, ode_steps=3)
    mask = torch.tensor([[False, False, True], [False, True, True]])
    noise = torch.randn(2, 3, 3, dtype=torch.float64)
    pts = sampler(noise, torch.randn(2, 2, dtype=torch.float64), mask)
    assert pts.shape == (2, 3, 3) and torch.all(pts[mask] == 0) and torch.isfinite(pts).all()
    assert (sampler.kind, sampler.point_dim, sampler.noise_dim, sampler.mean_n) == ("showers", 3, 3, 10.0)


def test_context_block_keeps_padding_zero() -> None:
    torch.manual_seed(0)
    block = ContextMeanFieldBlock(hidden=8, ctx_dim=3, heads=2).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    mask = torch.tensor([[False] * 5, [False, False, True, True, True]])
    x = x.masked_fill(mask[..., None], 0.0)
    y, token = block(
        x, torch.randn(2, 1, 8, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64), mask
    )
    assert y.shape == x.shape and token.shape == (2, 1, 8) and torch.all(y[mask] == 0)


def test_token_batches_respect_the_budget() -> None:
    lengths = np.array([5, 0, 12, 3, 3, 7, 12, 1])
    batches = token_batches(lengths, 14)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(int(lengths[b].max()), 1) <= 14


# ------------------------------------------------------------------------------------ learning


def test_training_loss_falls_on_two_blob_jets() -> None:
    """Jet-like toy: every cloud is two tight blobs at +-(1, 0.5) (eta, phi) with log-normal pt."""
    rng = np.random.default_rng(0)
    n_clouds = 200
    lengths = rng.integers(6, 16, n_clouds)
    side = rng.integers(0, 2, lengths.sum()) * 2 - 1
    pts = np.column_stack(
        [
            side * 0.2 + 0.03 * rng.standard_normal(len(side)),
            side * 0.1 + 0.03 * rng.standard_normal(len(side)),
            np.exp(-2 + 0.5 * rng.standard_normal(len(side))),
        ]
    )
    clouds = Clouds(
        pts, np.concatenate([[0], np.cumsum(lengths)]), np.ones((n_clouds, 3)),
        ("eta_rel", "phi_rel", "pt_rel"), ("jet_pt", "jet_eta", "jet_mass"), np.zeros(n_clouds),
    )  # fmt: skip
    transform = jet_transform().fit(pts)
    data = TrainingData(
        "jets", clouds, transform, np.arange(n_clouds), np.arange(0), float(lengths.mean()), 0
    )
    family = _family(data)
    ctx = Ctx(family)
    losses = [family.train_step(ctx)["loss"] for _ in range(150)]
    start, end = np.mean(losses[:10]), np.mean(losses[-30:])
    # An untrained field (output ~ 0) scores E|x1 - x0|^2 / d = 2 on standardised data. The best
    # velocity for Gaussian data (hence the best linear one for any standardised data) scores
    # pi / 2 per dimension; the two blobs let a model that learned their shape go well below it.
    assert start > 1.7
    assert end < np.pi / 2 - 0.15


def test_learns_the_conditional_shift_and_spread() -> None:
    """Clouds centred at m(n) (set by the condition n / mean_n) with per-point spread 0.3."""
    _check_toy_is_matched(latent=0.0, steps=400, mean_atol=0.1)


@pytest.mark.slow
def test_learns_a_per_cloud_latent_shift() -> None:
    """As above plus a random shift per cloud (std 0.5) that only the global token can carry."""
    _check_toy_is_matched(latent=0.5, steps=600, mean_atol=0.2)


def _check_toy_is_matched(latent: float, steps: int, mean_atol: float) -> None:
    width = 0.3
    clouds = _toy_clouds(500, seed=0, latent=latent, width=width)
    family = _family(_toy_data(clouds))
    ctx = Ctx(family, total_steps=steps)
    for _ in range(steps):
        family.train_step(ctx)
    family.velocity.eval()
    n = np.repeat([4, 8, 12], 300)
    with torch.no_grad():
        gen = family.generate(np.zeros((len(n), 1)), n, seed=3)
    offsets = np.concatenate([[0], np.cumsum(n)])
    means = np.add.reduceat(gen, offsets[:-1]) / n[:, None]
    centre = (n[:, None] - 8) / 4 * np.array([[1.0, -1.0]])
    for k in (4, 8, 12):
        # (the training set's own per-n latent means scatter by 0.5 / sqrt(44) = 0.075 when latent = 0.5)
        np.testing.assert_allclose(means[n == k].mean(axis=0), centre[n == k][0], atol=mean_atol)
    within = np.sqrt(np.sum((gen - np.repeat(means, n, axis=0)) ** 2) / (2 * (n.sum() - len(n))))
    assert within == pytest.approx(width, rel=0.1)
    if latent > 0:  # spread of the cloud centres: latent and the points' own mean noise
        spread = np.std(means - centre, axis=0)
        np.testing.assert_allclose(spread, np.sqrt(latent**2 + width**2 * np.mean(1 / n)), rtol=0.15)


# ----------------------------------------------------------------------------------- sampling


def test_seeded_sampling_is_reproducible_and_export_rebuilds_the_sampler() -> None:
    clouds = _toy_clouds(60, seed=1)
    data = _toy_data(clouds)
    family = _family(data, ode_steps=5)
    ctx = Ctx(family)
    for _ in range(3):
        family.train_step(ctx)
    family.velocity.eval()
    n = np.array([5, 0, 9, 12])
    cond = np.zeros((4, 1))
    with torch.no_grad():
        a, b, c = (family.generate(cond, n, seed=s) for s in (7, 7, 8))
    assert a.shape == (26, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # per-cloud results do not depend on how clouds are batched
    with torch.no_grad():
        single = family.generate(cond, n, seed=7, max_tokens=1)
    assert single.shape == a.shape

    config = family.export_config()
    assert json.loads(json.dumps(config)) == config
    state = {name: m.state_dict() for name, m in family.modules().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    sampler = FlowMatchingFamily.build_sampler(config, state, data.transform, None, torch.device("cpu"))
    assert not sampler.training and sampler.ode_steps == 5
    mask = torch.tensor([[False] * 3 + [True], [False] * 4])
    noise = torch.randn(2, 4, 2, generator=torch.Generator().manual_seed(0))
    cond_t = torch.tensor([[0.4], [0.6]])
    with torch.no_grad():
        torch.testing.assert_close(sampler(noise, cond_t, mask), family.sampler()(noise, cond_t, mask))
    with pytest.raises(ValueError, match="config keys"):
        FlowMatchingFamily.build_sampler(
            {**config, "extra": 1}, state, data.transform, None, torch.device("cpu")
        )
    with pytest.raises(ValueError, match="cond_dim"):
        FlowMatchingFamily.build_sampler(
            {**config, "cond_dim": 2}, state, data.transform, None, torch.device("cpu")
        )


def test_sample_stage_generates_with_the_flow_sampler() -> None:
    """The sample stage's generate_points drives the exported sampler (noise, condition, mask)."""
    from pipelines.sample import Sampler, generate_points, noise_generator

    data = _toy_data(_toy_clouds(40, seed=6))
    family = _family(data, ode_steps=4)
    family.train_step(Ctx(family))
    weights = {name: m.state_dict() for name, m in family.modules().items()}
    point_sampler = FlowMatchingFamily.build_sampler(
        family.export_config(), weights, data.transform, None, torch.device("cpu")
    )
    sampler = Sampler(point_sampler, data.transform, None, torch.device("cpu"))
    n = np.array([3, 0, 7, 5])
    pts = generate_points(sampler, np.zeros((4, 1)), n, noise_generator("cpu", 1), max_tokens=16)
    again = generate_points(sampler, np.zeros((4, 1)), n, noise_generator("cpu", 1), max_tokens=1000)
    assert pts.shape == (15, 2) and np.isfinite(pts).all()
    np.testing.assert_allclose(pts, again, rtol=1e-5, atol=1e-6)  # batching does not change clouds


def test_validate_jets_and_showers(ds2) -> None:
    # jets: relative mass W1 against the validation clouds
    rng = np.random.default_rng(0)
    n_clouds = 40
    lengths = rng.integers(3, 10, n_clouds)
    pts = np.column_stack(
        [0.1 * rng.standard_normal((lengths.sum(), 2)), np.exp(-2 + 0.3 * rng.standard_normal(lengths.sum()))]
    )
    clouds = Clouds(
        pts, np.concatenate([[0], np.cumsum(lengths)]), np.ones((n_clouds, 3)),
        ("eta_rel", "phi_rel", "pt_rel"), ("jet_pt", "jet_eta", "jet_mass"), (np.arange(n_clouds) >= 30),
    )  # fmt: skip
    data = TrainingData(
        "jets", clouds, jet_transform().fit(pts), np.arange(30), np.arange(30, 40), float(lengths.mean()), 0
    )
    family = _family(data, ode_steps=4)
    family.train_step(Ctx(family))
    with torch.no_grad():
        figures = family.validate(6, seed=1)
    assert set(figures) == {"figure", "loss", "w1m", "w1m_scaled", "w1p_scaled"}
    assert figures["figure"] == figures["loss"] and all(np.isfinite(v) and v > 0 for v in figures.values())

    # showers: E_tot / E_inc and depth W1 through layer_energies (integer layers, energies >= 0)
    n_clouds = 12
    lengths = rng.integers(5, 30, n_clouds)
    total = int(lengths.sum())
    points = np.column_stack(
        [
            rng.lognormal(0, 1, total),
            rng.integers(0, ds2.n_layers, total),
            rng.integers(0, ds2.n_alpha, total),
            rng.integers(0, ds2.n_r, total),
        ]
    )
    clouds = Clouds(
        points, np.concatenate([[0], np.cumsum(lengths)]), 10 ** rng.uniform(3, 5, (n_clouds, 1)),
        ("energy", "layer", "alpha", "r"), ("incident_energy",), (np.arange(n_clouds) >= 8),
    )  # fmt: skip
    transform = shower_transform(ds2).fit(points.astype(np.float64), rng=np.random.default_rng(0))
    data = TrainingData(
        "showers", clouds, transform, np.arange(8), np.arange(8, 12), float(lengths[:8].mean()), 0, ds2
    )
    family = _family(data, ode_steps=3)
    family.train_step(Ctx(family))
    with torch.no_grad():
        figures = family.validate(500, seed=2)
    assert set(figures) == {"figure", "w1_eratio", "w1_depth", "loss"} and np.isfinite(figures["figure"])
    assert figures["figure"] == pytest.approx(figures["w1_eratio"] + figures["w1_depth"])
    assert family.export_config()["cond_dim"] == 2


# ------------------------------------------------------------------------------ stream, settings


def test_validation_loss_uses_common_random_numbers_and_ranks_training() -> None:
    data = _toy_data(_toy_clouds(200, seed=7))
    family = _family(data)
    idx = np.asarray(data.val_idx)
    state = torch.get_rng_state()
    before = family.validation_loss(idx)
    assert family.validation_loss(idx) == before  # the same draws every time
    torch.testing.assert_close(torch.get_rng_state(), state)  # the training RNG stream is untouched
    ctx = Ctx(family, total_steps=150)
    for _ in range(150):
        family.train_step(ctx)
    after = family.validation_loss(idx)
    assert after < before - 0.3 and after < np.pi / 2  # pi / 2: the best a velocity linear in x_t does


def test_data_stream_resumes_exactly_across_epochs() -> None:
    clouds = _toy_clouds(50, seed=2)
    data = _toy_data(clouds, seed=5)
    family = _family(data, max_tokens=120)
    n_batches = len(family.batches.batches())
    for _ in range(n_batches - 2):
        family.next_batch()
    buf = io.BytesIO()
    torch.save(family.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    expected = [family.next_batch() for _ in range(5)]  # crosses into the next epoch
    assert family.epoch == 1
    other = _family(data, max_tokens=120)
    other.load_state_dict(state)
    for want, got in zip(expected, [other.next_batch() for _ in range(5)], strict=True):
        for w, g in zip(want, got, strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=0)
    # every epoch serves every training cloud once
    fresh = _family(data, max_tokens=120)
    seen = sum(int((~fresh.next_batch()[1]).sum()) for _ in range(n_batches))
    assert seen == int(clouds.lengths[data.train_idx].sum()) and fresh.epoch == 0


def test_training_resumes_bit_identically_from_saved_state() -> None:
    """All randomness comes from torch's global RNG and the (epoch, position) of the stream."""
    data = _toy_data(_toy_clouds(40, seed=4))

    def run(steps: int, state: dict[str, Any] | None = None) -> tuple[FlowMatchingFamily, Ctx]:
        family = _family(data, max_tokens=100)
        ctx = Ctx(family)
        if state is not None:
            family.velocity.load_state_dict(state["velocity"])
            ctx.opts["velocity"].load_state_dict(state["opt"])
            family.load_state_dict(state["family"])
            torch.set_rng_state(state["rng"])
        for _ in range(steps):
            family.train_step(ctx)
        return family, ctx

    torch.manual_seed(11)
    whole, _ = run(12)
    torch.manual_seed(11)
    first, ctx = run(5)
    saved = {
        "velocity": first.velocity.state_dict(),
        "opt": ctx.opts["velocity"].state_dict(),
        "family": first.state_dict(),
        "rng": torch.get_rng_state(),
    }
    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    resumed, _ = run(7, torch.load(buf, weights_only=True))
    assert resumed.epoch == whole.epoch and resumed.position == whole.position and whole.epoch >= 1
    for key, value in whole.velocity.state_dict().items():
        torch.testing.assert_close(resumed.velocity.state_dict()[key], value, rtol=0, atol=0)


def test_model_file_round_trip(tmp_path) -> None:
    from pipelines.models.store import load_model, save_model

    data = _toy_data(_toy_clouds(30, seed=5))
    family = _family(data, ode_steps=4)
    family.train_step(Ctx(family))
    family.velocity.eval()
    weights = {name: m.state_dict() for name, m in family.modules().items()}
    save_model(tmp_path / "model.pt", "flow-matching", "jets", family.export_config(), weights)
    sampler, payload = load_model(tmp_path / "model.pt", data.transform, None, "cpu")
    assert payload["family"] == "flow-matching" and isinstance(sampler, FlowPointSampler)
    noise, mask = torch.randn(3, 6, 2), torch.arange(6)[None, :] >= torch.tensor([[6], [2], [4]])
    cond = torch.tensor([[1.0], [0.3], [0.6]])
    with torch.no_grad():
        torch.testing.assert_close(sampler(noise, cond, mask), family.sampler()(noise, cond, mask))


def test_settings_errors() -> None:
    family = get_family("flow-matching")
    assert family is FlowMatchingFamily and FlowMatchingFamily.kinds == ("showers", "jets")
    assert family_settings(family, {"hidden": 32, "heads": 4}).hidden == 32
    with pytest.raises(ValueError, match="takes no settings"):
        family_settings(family, {"hiden": 32})
    bad = [
        ({"hidden": 30, "heads": 4}, "divisible"),
        ({"time_dim": 7}, "even"),
        ({"n_blocks": 0}, "n_blocks"),
        ({"ode_steps": 0}, "ode_steps"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -1e-3}, "weight_decay"),
        ({"sigma_min": 1.0}, "sigma_min"),
        ({"hidden": 64.5}, "hidden"),
        ({"hidden": "64"}, "hidden"),
    ]
    for values, match in bad:
        with pytest.raises(ValueError, match=match):
            FlowMatchingSettings(**values)
    settings = FlowMatchingSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.hidden = 3  # type: ignore[misc]


def test_rejects_an_empty_training_split_and_unknown_kind() -> None:
    clouds = _toy_clouds(10, seed=0)
    data = _toy_data(clouds)
    with pytest.raises(ValueError, match="training split is empty"):
        FlowMatchingFamily(
            FlowMatchingSettings(), dataclasses.replace(data, train_idx=np.arange(0)), torch.device("cpu")
        )
    with pytest.raises(ValueError, match="does not model"):
        FlowMatchingFamily(
            FlowMatchingSettings(), dataclasses.replace(data, kind="images"), torch.device("cpu")
        )
