"""MDMA generator/critic: symmetries, padding, masked attention, condition vector, per-cloud noise,
energy shares, the Lipschitz critic, periodic coordinates, calibration, save/load."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import scipy.stats
import torch

from pipelines.io.errors import DataError
from pipelines.models.blocks import TokenAttention, UnitNormLinear, make_linear
from pipelines.models.mdma import (
    MDMACritic,
    MDMAGenerator,
    ModelConfig,
    ShareHead,
    ShareParams,
    build_critic,
    build_generator,
    cloud_log_ratio,
    cloud_noise,
    count_parameters,
    dataset2_config,
    fit_share_params,
    load_generator,
    make_condition,
    periodic_view,
    save_generator,
)
from pipelines.transforms import BoxCox, Chain

torch.set_num_threads(1)


def _models(norm: str = "weight") -> tuple[MDMAGenerator, MDMACritic]:
    torch.manual_seed(0)
    gen = MDMAGenerator(point_dim=3, cond_dim=2, hidden=16, n_blocks=2, heads=4, noise_dim=4, mean_n=5.0)
    critic = MDMACritic(point_dim=3, cond_dim=2, hidden=16, n_blocks=2, heads=4, mean_n=5.0, norm=norm)
    return gen.double().eval(), critic.double().eval()


def _batch(b: int = 3, n: int = 7, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(b, n, 4, generator=g, dtype=torch.float64)
    x = torch.randn(b, n, 3, generator=g, dtype=torch.float64)
    cond = torch.randn(b, 2, generator=g, dtype=torch.float64)
    lengths = torch.tensor([n, n - 3, 1])[:b]
    mask = torch.arange(n)[None, :] >= lengths[:, None]
    return noise, x, cond, mask


def test_generator_is_permutation_equivariant_and_critic_invariant() -> None:
    gen, critic = _models()
    noise, x, cond, mask = _batch()
    perm = torch.randperm(noise.shape[1], generator=torch.Generator().manual_seed(3))
    out = gen(noise, cond, mask)
    out_perm = gen(noise[:, perm], cond, mask[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        critic(x[:, perm], cond, mask[:, perm]), critic(x, cond, mask), rtol=1e-10, atol=1e-12
    )
    assert not torch.allclose(out[0, 0], out[0, 1])  # points differ: the check is not vacuous


@pytest.mark.parametrize("norm", ["weight", "spectral", "none", "unit"])
def test_extra_padding_changes_nothing_and_padded_outputs_are_zero(norm: str) -> None:
    gen, critic = _models(norm)
    noise, x, cond, mask = _batch()
    out = gen(noise, cond, mask)
    assert torch.all(out[mask] == 0)
    assert torch.all(out[~mask] != 0)
    # five more padded slots holding garbage, and garbage in the existing padded slots
    extra = 5
    g = torch.Generator().manual_seed(9)
    noise_big = torch.cat([noise, 1e3 * torch.randn(3, extra, 4, generator=g, dtype=torch.float64)], dim=1)
    noise_big[:, : noise.shape[1]][mask] = 77.0
    x_big = torch.cat([x, torch.full((3, extra, 3), -50.0, dtype=torch.float64)], dim=1)
    x_big[:, : x.shape[1]][mask] = 123.0
    mask_big = torch.cat([mask, torch.ones(3, extra, dtype=torch.bool)], dim=1)
    out_big = gen(noise_big, cond, mask_big)
    torch.testing.assert_close(out_big[:, : noise.shape[1]], out, rtol=1e-10, atol=1e-12)
    assert torch.all(out_big[:, noise.shape[1] :] == 0)
    torch.testing.assert_close(critic(x_big, cond, mask_big), critic(x, cond, mask), rtol=1e-10, atol=1e-12)


def test_empty_clouds_are_finite_and_have_finite_gradients() -> None:
    gen, critic = _models()
    noise, x, cond, _ = _batch()
    mask = torch.ones(3, noise.shape[1], dtype=torch.bool)
    mask[1, :2] = False  # one non-empty cloud among empty ones
    noise.requires_grad_(True)
    x = x.clone().requires_grad_(True)
    out = gen(noise, cond, mask)
    scores = critic(x, cond, mask)
    assert torch.all(out[mask] == 0) and torch.isfinite(out).all() and torch.isfinite(scores).all()
    (out.sum() + scores.sum()).backward()
    grads = [p.grad for p in [*gen.parameters(), *critic.parameters()] if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(x.grad).all() and torch.all(x.grad[mask] == 0)


def test_token_attention_matches_torch_multihead_attention() -> None:
    torch.manual_seed(4)
    hidden, heads = 12, 3
    ours = TokenAttention(hidden, heads).double()
    ref = torch.nn.MultiheadAttention(hidden, heads, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.kv.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.kv.bias]))
        ref.out_proj.weight.copy_(ours.out.weight)
        ref.out_proj.bias.copy_(ours.out.bias)
    token = torch.randn(2, 1, hidden, dtype=torch.float64)
    x = torch.randn(2, 6, hidden, dtype=torch.float64)
    mask = torch.tensor([[False] * 6, [False, False, True, False, True, True]])
    expected, _ = ref(token, x, x, key_padding_mask=mask)
    torch.testing.assert_close(ours(token, x, mask), expected, rtol=1e-10, atol=1e-12)


def test_make_condition_hand_computed() -> None:
    energies = np.array([[math.exp(12.0)], [math.exp(10.0) / math.e]])  # log E - 10 = 2, -1
    cond = make_condition(energies, np.array([30, 0]), "showers", mean_n=20.0)
    assert cond.dtype == torch.float32
    torch.testing.assert_close(cond, torch.tensor([[2.0, 1.5], [-1.0, 0.0]]))
    jets = make_condition(torch.zeros(2, 3), torch.tensor([15, 30]), "jets", mean_n=30.0)
    torch.testing.assert_close(jets, torch.tensor([[0.5], [1.0]]))
    with pytest.raises(ValueError, match="positive incident energy"):
        make_condition(np.array([[0.0]]), np.array([3]), "showers", mean_n=1.0)
    with pytest.raises(ValueError, match="kind"):
        make_condition(np.ones((1, 1)), np.array([3]), "photons", mean_n=1.0)
    with pytest.raises(ValueError, match="mean_n"):
        make_condition(np.ones((1, 1)), np.array([3]), "jets", mean_n=0.0)


def test_model_config_validation_and_sizes() -> None:
    with pytest.raises(ValueError, match="kind"):
        ModelConfig(kind="photons")
    with pytest.raises(ValueError, match="cond_dim"):
        ModelConfig(kind="jets", cond_dim=2)
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(hidden=10, heads=4)
    with pytest.raises(ValueError, match="critic_norm"):
        ModelConfig(critic_norm="batch")
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"hidden": 8, "colour": 1})
    with pytest.raises(ValueError, match="periodic columns"):
        ModelConfig(periodic=((4, 1.0, 0.0),))
    # JSON-like round trip (lists for tuples) gives the same frozen config
    config = ModelConfig(share=True, periodic=((2, 0.29, 0.5),))
    assert ModelConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config
    n_gen = count_parameters(build_generator(dataset2_config()))
    assert 0.95 * 66_000 < n_gen < 1.05 * 66_000
    assert count_parameters(build_critic(ModelConfig())) > 0


def test_save_load_round_trip(tmp_path) -> None:
    config = ModelConfig(kind="jets", point_dim=3, cond_dim=1, hidden=8, n_blocks=1, heads=2, mean_n=12.5)
    torch.manual_seed(5)
    gen = build_generator(config)
    extra = {"step": 17, "point_names": ["eta_rel", "phi_rel", "pt_rel"], "nested": {"a": 1.5}}
    path = tmp_path / "model.pt"
    save_generator(path, gen, config, extra)
    save_generator(tmp_path / "again.pt", gen, config, extra)
    assert (tmp_path / "again.pt").read_bytes() == path.read_bytes()  # identical tensors, identical bytes
    loaded, config2, extra2 = load_generator(path, map_location="cpu")
    assert config2 == config and extra2 == extra and not loaded.training
    raw = torch.load(path, weights_only=True)  # plain containers and tensors only
    assert set(raw) == {"format_version", "config", "state_dict", "extra"}
    noise = torch.randn(2, 5, config.noise_dim)
    mask = torch.tensor([[False] * 5, [False, False, True, True, True]])
    cond = torch.rand(2, 1)
    gen.eval()
    with torch.no_grad():
        assert torch.equal(loaded(noise, cond, mask), gen(noise, cond, mask))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="bad.pt"):
        load_generator(bad)
    torch.save({"config": {"hidden": 8}, "weights": {}}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="other.pt"):
        load_generator(tmp_path / "other.pt")


# ------------------------------------------------------------------------------ per-cloud noise


def test_cloud_noise_is_standard_normal_per_cloud_and_ignores_padding() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 40, (4000,), generator=g)
    mask = torch.arange(40)[None, :] >= lengths[:, None]
    noise = torch.randn(4000, 40, 2, generator=g, dtype=torch.float64)
    z = cloud_noise(noise, mask)
    assert z.shape == (4000, 1, 2)
    for k in range(2):  # exactly N(0, 1) whatever n
        assert scipy.stats.kstest(z[:, 0, k].numpy(), "norm").pvalue > 1e-3
    assert abs(float(np.corrcoef(z[:, 0, 0], z[:, 0, 1])[0, 1])) < 0.05
    garbage = noise.masked_fill(~mask.unsqueeze(-1), 0.0) * 0 + noise
    garbage[mask] = 1e6
    assert torch.equal(cloud_noise(garbage, mask), z)
    assert torch.equal(
        cloud_noise(noise, torch.ones_like(mask)), torch.zeros(4000, 1, 2, dtype=torch.float64)
    )


def test_per_cloud_noise_gives_cloud_to_cloud_fluctuations() -> None:
    """With the token from per-cloud noise, large clouds with equal conditions differ as wholes;
    with the token from sum(point embeddings) / mean_n (the original MDMA) they hardly do: for
    n = mean_n = 2000 that token is a mean over 2000 points, the same for every cloud."""
    spread = {}
    for cloud in (True, False):
        torch.manual_seed(1)
        gen = MDMAGenerator(3, 1, 16, 2, 2, 4, mean_n=2000.0, cloud_noise=cloud, kind="jets")
        noise = torch.randn(64, 2000, 4, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            out = gen(noise, torch.ones(64, 1), torch.zeros(64, 2000, dtype=torch.bool))
        spread[cloud] = float(out.mean(dim=1).std(dim=0).mean())  # spread of per-cloud means
    assert spread[True] > 4 * spread[False]


# ------------------------------------------------------------------------------- energy shares


def _share_params(kind: str = "showers") -> tuple[ShareParams, Chain]:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 50, 200)
    values = rng.lognormal(0.0, 2.0, lengths.sum()) + 0.015
    cond = np.exp(rng.uniform(7, 12, (200, 1)))
    chain = Chain([BoxCox()]).fit(values)
    return fit_share_params(values, lengths, cond, kind, chain), chain


def test_fit_share_params_hand_computed() -> None:
    chain = Chain([BoxCox()]).fit(np.array([1.0, 2.0, 4.0, 8.0]))
    values = np.array([1.0, 3.0, 2.0, 2.0, 4.0])  # totals 4 and 8
    lengths, cond = np.array([2, 0, 3]), np.array([[2.0], [5.0], [4.0]])
    u = cloud_log_ratio(values, lengths, cond, "showers")
    assert u[0] == pytest.approx(math.log(2.0)) and np.isnan(u[1]) and u[2] == pytest.approx(math.log(2.0))
    assert cloud_log_ratio(values, lengths, cond, "jets")[2] == pytest.approx(math.log(8.0))
    params = fit_share_params(values, lengths, cond, "showers", chain)
    assert params.u_mean == pytest.approx(math.log(2.0)) and params.u_std == 1e-3  # floor of the scale
    with pytest.raises(ValueError, match="positive total"):
        fit_share_params(np.zeros(5), lengths, cond, "showers", chain)


@pytest.mark.parametrize("kind", ["showers", "jets"])
def test_share_head_conserves_the_total_exactly(kind: str) -> None:
    """The inverse transform of the generated column sums, per cloud, to reference x exp(u)."""
    params, chain = _share_params(kind)
    unclamped = Chain(chain.steps)  # no fitted range: check the construction, not the clamp
    torch.manual_seed(3)
    head = ShareHead(8, 2, kind, params).double()
    b, n = 6, 30
    lengths = torch.tensor([30, 1, 7, 12, 30, 2])
    mask = torch.arange(n)[None, :] >= lengths[:, None]
    logits = 3.0 * torch.randn(b, n, dtype=torch.float64)
    token = torch.randn(b, 1, 8, dtype=torch.float64)
    cond = torch.tensor(
        [[2.0, 1.0], [-1.0, 0.1], [0.5, 0.3], [1.5, 0.4], [-2.0, 1.0], [0.0, 0.1]], dtype=torch.float64
    )
    with torch.no_grad():
        z, u_std = head(logits, token, cond, mask)
    assert torch.all(z[mask] == 0)
    values = unclamped.inverse_transform_torch(z[~mask]).numpy()
    totals = np.bincount(np.repeat(np.arange(b), lengths.numpy()), values, b)
    u = params.u_mean + params.u_std * u_std.numpy()
    reference = np.exp(cond[:, 0].numpy() + 10.0) if kind == "showers" else np.ones(b)
    np.testing.assert_allclose(totals, reference * np.exp(u), rtol=1e-10)
    assert np.all(values > 0)
    # the shares follow the logits: within a cloud, larger logit -> larger value
    first = values[: int(lengths[0])]
    assert np.array_equal(np.argsort(first), np.argsort(logits[0, :30].numpy()))


def test_generator_with_shares_is_equivariant_and_conserves_energy() -> None:
    params, chain = _share_params()
    config = ModelConfig(hidden=8, heads=2, share=True)
    torch.manual_seed(4)
    gen = build_generator(config, params).double().eval()
    with pytest.raises(ValueError, match="share parameters"):
        build_generator(config)
    noise, _, cond, mask = _batch()
    with torch.no_grad():
        out, u_std = gen.generate(noise, cond, mask)
    perm = torch.randperm(noise.shape[1], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(gen(noise[:, perm], cond, mask[:, perm]), out[:, perm], rtol=1e-9, atol=1e-12)
    energies = Chain(chain.steps).inverse_transform_torch(out[..., 0][~mask]).numpy()
    lengths = (~mask).sum(dim=1).numpy()
    totals = np.bincount(np.repeat(np.arange(3), lengths), energies, 3)
    expected = np.exp(cond[:, 0].numpy() + 10.0 + params.u_mean + params.u_std * u_std.numpy())
    np.testing.assert_allclose(totals, expected, rtol=1e-9)


# --------------------------------------------------------------------- Lipschitz critic, periodic


def test_unit_norm_linear_has_unit_rows_no_gain_and_is_lipschitz() -> None:
    torch.manual_seed(5)
    layer = make_linear(6, 4, "unit")
    assert isinstance(layer, UnitNormLinear)
    assert {name for name, _ in layer.named_parameters()} == {"weight", "bias"}  # no free gain
    with torch.no_grad():
        layer.weight.mul_(37.0)  # the raw scale does not matter
    torch.testing.assert_close(layer.normalised_weight().norm(dim=1), torch.ones(4))
    x, y = torch.randn(500, 6), torch.randn(500, 6)
    change = (layer(x) - layer(y)).abs()
    assert torch.all(change <= (x - y).norm(dim=1, keepdim=True) + 1e-5)  # every output 1-Lipschitz
    expected = x @ (layer.weight / layer.weight.norm(dim=1, keepdim=True)).T + layer.bias
    torch.testing.assert_close(layer(x), expected)


def test_periodic_view_and_critic_see_a_whole_turn_as_the_same_angle() -> None:
    x = torch.tensor([[[0.0, 0.25, 7.0], [1.0, -0.5, 3.0]]], dtype=torch.float64)
    periodic = ((1, 2.0, 0.5),)  # fraction = 2 z + 0.5
    view = periodic_view(x, periodic)
    assert view.shape == (1, 2, 4)
    # fractions 1.0 and -0.5: angles 2 pi and -pi
    torch.testing.assert_close(view[0, :, 1], torch.tensor([1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(view[0, :, 3], torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.equal(view[..., [0, 2]], x[..., [0, 2]]) and torch.equal(periodic_view(x, ()), x)
    torch.manual_seed(6)
    critic = MDMACritic(3, 2, 16, 2, 4, mean_n=5.0, norm="unit", token_norm=True, periodic=periodic).double()
    _, pts, cond, mask = _batch()
    turned = pts.clone()
    turned[..., 1] += 0.5  # one whole turn in fraction units (scale 2)
    torch.testing.assert_close(critic(turned, cond, mask), critic(pts, cond, mask), rtol=1e-9, atol=1e-10)
    half = pts.clone()
    half[..., 1] += 0.25
    assert not torch.allclose(critic(half, cond, mask), critic(pts, cond, mask))


def test_calibrate_sets_output_mean_and_spread() -> None:
    params, _ = _share_params()
    torch.manual_seed(7)
    gen = build_generator(ModelConfig(hidden=8, heads=2, share=True), params).double()
    g = torch.Generator().manual_seed(8)
    noise = torch.randn(32, 60, 4, generator=g, dtype=torch.float64)
    mask = torch.arange(60)[None, :] >= torch.randint(5, 61, (32,), generator=g)[:, None]
    cond = torch.randn(32, 2, generator=g, dtype=torch.float64)
    mean, std = torch.tensor([0.0, -1.0, 2.0, 0.5]), torch.tensor([1.6, 0.5, 2.0, 1.0])
    gen.calibrate(noise, cond, mask, mean, std)
    with torch.no_grad():
        x, token = gen.features(noise, cond, mask)
        raw = gen.head(x)
        total = gen.share.total(torch.cat([token.squeeze(1), cond], dim=-1))
    valid = raw[~mask]
    torch.testing.assert_close(valid.mean(dim=0), mean.double(), atol=1e-9, rtol=0)
    torch.testing.assert_close(valid[:, 1:].std(dim=0), std[1:].double(), atol=1e-9, rtol=0)
    # the share logits: their spread within each cloud is what is matched
    n = (~mask).sum(dim=1, keepdim=True)
    centred = (raw[..., 0] - raw[..., 0].masked_fill(mask, 0).sum(dim=1, keepdim=True) / n)[~mask]
    assert float(centred.pow(2).mean().sqrt()) == pytest.approx(1.6, rel=1e-6)
    assert float(total.mean()) == pytest.approx(0.0, abs=1e-9) and float(total.std()) == pytest.approx(1.0)
