"""MDMA generator/critic: symmetries, padding, masked attention, condition vector, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines.io.errors import DataError
from pipelines.models.blocks import TokenAttention
from pipelines.models.mdma import (
    MDMACritic,
    MDMAGenerator,
    ModelConfig,
    build_critic,
    build_generator,
    count_parameters,
    dataset2_config,
    load_generator,
    make_condition,
    save_generator,
)

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


@pytest.mark.parametrize("norm", ["weight", "spectral", "none"])
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
