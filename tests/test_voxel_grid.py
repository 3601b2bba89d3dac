"""The voxel-grid shower family: periodic convolutions, grid round trips, sampling, export and learning."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from contextlib import nullcontext
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from pipelines.generate.gflash import generate_showers
from pipelines.geometry import THRESHOLD_MEV
from pipelines.io.clouds import Clouds
from pipelines.models.family import FAMILIES, ShowerSampler, TrainingData
from pipelines.models.settings import VoxelGridSettings, make_settings
from pipelines.models.voxel_blocks import GridUNet, PeriodicConv3d, from_patches, to_patches
from pipelines.models.voxel_grid import (
    FLOOR_MEV,
    GridTransform,
    VoxelGridFamily,
    distribute,
    excess_shares,
    grid_from_points,
    rotate_voxels,
)
from pipelines.pointcloud import voxels_to_points
from tests.workflow_runner import REPO, copy_repository

TINY = {"base_channels": 4, "levels": 2, "emb_dim": 16, "time_dim": 8, "ode_steps": 3, "batch": 16}


def _clouds(energies: np.ndarray, showers: np.ndarray, geometry, n_train: int) -> TrainingData:
    points, lengths = voxels_to_points(showers, geometry)
    split = (np.arange(len(energies)) >= n_train).astype(np.int8)
    clouds = Clouds(points, np.concatenate([[0], np.cumsum(lengths)]), energies[:, None],
                    ("energy", "layer", "alpha", "r"), ("incident_energy",), split)  # fmt: skip
    return TrainingData("showers", clouds, None, np.arange(n_train), np.arange(n_train, len(energies)),
                        float(lengths.mean()), 5, geometry)  # fmt: skip


@pytest.fixture(scope="module")
def gflash(ds2) -> tuple[np.ndarray, np.ndarray, TrainingData]:
    energies, showers = generate_showers(24, ds2, seed=4, progress=False)
    return energies, showers, _clouds(energies, showers, ds2, 20)


class Ctx:
    """The loop's side of a step: one AdamW per parameter group."""

    device = torch.device("cpu")
    step = 0

    def __init__(self, family: VoxelGridFamily, lr: float) -> None:
        mods = family.modules()
        self.opts = {g.name: torch.optim.AdamW([p for m in g.modules for p in mods[m].parameters()], lr=lr)
                     for g in family.param_groups()}  # fmt: skip

    def autocast(self):
        return nullcontext()

    def optimise(self, group: str, loss: torch.Tensor) -> None:
        self.opts[group].zero_grad()
        loss.backward()
        self.opts[group].step()


# ---------------------------------------------------------------------------------------------- blocks
def test_periodic_convolution_wraps_alpha_and_pads_layer_and_r_with_zeros():
    torch.manual_seed(0)
    conv = PeriodicConv3d(1, 1)
    with torch.no_grad():
        conv.conv.weight.fill_(1.0)
        conv.conv.bias.zero_()
    x = torch.zeros(1, 1, 4, 6, 3)
    x[0, 0, 0, 0, 1] = 1.0  # first layer, alpha bin 0, middle ring
    y = conv(x)[0, 0]
    hit = {tuple(int(i) for i in v) for v in torch.nonzero(y)}
    # alpha neighbours of bin 0 are 5 (wrapped) and 1; layer 0 has no neighbour below (no wrap to 3)
    assert hit == {(lay, a, r) for lay in (0, 1) for a in (5, 0, 1) for r in (0, 1, 2)}
    # a shifted input gives the shifted output, for every shift (random weights and input)
    conv = PeriodicConv3d(2, 3)
    x = torch.randn(2, 2, 5, 8, 3)
    for k in range(8):
        torch.testing.assert_close(conv(torch.roll(x, k, dims=3)), torch.roll(conv(x), k, dims=3))


def test_patches_round_trip_and_the_unet_commutes_with_alpha_shifts():
    x = torch.randn(2, 3, 5, 8, 3)
    patches = to_patches(x)
    assert patches.shape == (2, 24, 3, 4, 2)
    torch.testing.assert_close(from_patches(patches, (5, 8, 3)), x, rtol=0, atol=0)
    with pytest.raises(ValueError, match="even number of alpha bins"):
        to_patches(torch.zeros(1, 1, 4, 5, 2))
    torch.manual_seed(1)
    net = GridUNet(1, 1, base=4, levels=2, emb_dim=8)
    torch.nn.init.normal_(net.out.conv.weight)  # the output convolution starts at zero
    emb = torch.randn(2, 8)
    grid = torch.randn(2, 1, 5, 16, 3)
    out = net(grid, emb)
    assert out.shape == grid.shape and out.abs().max() > 0
    for k in (4, 8, 12):  # multiples of 2^levels
        torch.testing.assert_close(net(torch.roll(grid, k, dims=3), emb), torch.roll(out, k, dims=3))


# ---------------------------------------------------------------------------------------------- grids
def test_grid_from_shower_rows_round_trip_and_alpha_rotation(gflash, ds2):
    _, showers, _ = gflash
    points, lengths = voxels_to_points(showers, ds2)
    voxel = torch.as_tensor(ds2.flat_index(points[:, 1], points[:, 2], points[:, 3]))
    owner = torch.repeat_interleave(torch.arange(len(lengths)), torch.as_tensor(lengths))
    grids = grid_from_points(torch.as_tensor(points[:, 0]), voxel, owner, len(lengths), ds2.n_voxels)
    np.testing.assert_array_equal(grids.numpy(), showers)  # exact: one point per hit voxel
    shift = torch.tensor([3, 15, 0] + [1] * (len(lengths) - 3))
    rotated = grid_from_points(torch.as_tensor(points[:, 0]), rotate_voxels(voxel, shift[owner], 16, 9),
                               owner, len(lengths), ds2.n_voxels).numpy().reshape(-1, 45, 16, 9)  # fmt: skip
    for i in range(len(lengths)):
        expected = np.roll(showers[i].reshape(45, 16, 9), int(shift[i]), axis=1)
        np.testing.assert_array_equal(rotated[i], expected)


def _toy_transform(n_features: int, hit_channel: bool = False) -> tuple[GridTransform, np.ndarray]:
    """Two showers on a 2 x 2 x 2 (layer, alpha, r) grid, layer 1 never hit; and their dense y."""
    share = np.array([1.0, 0.0625, 0.0016])  # y = 1, 0.5, 0.2
    shower, layer, ring, alpha = [0, 1, 1], [0, 0, 0], [0, 0, 1], [0, 1, 1]
    e_inc, layer_e, counts = np.array([1e3, 1e5]), np.array([[5.0, 0.0], [8.0, 0.0]]), [[1, 0], [2, 0]]
    t = GridTransform.fit(
        share, shower, layer, ring, 2, 2, e_inc, layer_e, counts, 1.0, n_features, hit_channel
    )
    y = np.full((2, 2, 2, 2), t.empty)
    y[shower, layer, alpha, ring] = share**0.25  # y = share^(1 / 4)
    return t, y


def test_grid_transform_fits_ring_moments_and_round_trips():
    t, y = _toy_transform(1)
    root = np.array([1.0, 0.5, 0.2])
    assert t.empty == pytest.approx(0.2 - root.std())  # 1 standard deviation of the hits below the smallest
    assert t.cond_mean == pytest.approx(np.log(1e8) / 2) and t.cond_std == pytest.approx(np.log(1e2) / 2)
    # ring (layer 0, r 0) holds y = 1, empty | empty, 0.5 over (shower, alpha); ring (0, 1) one 0.2
    e = t.empty
    assert np.array(t.coef)[0, :, 0] == pytest.approx([(1.5 + 2 * e) / 4, (0.2 + 3 * e) / 4])
    ring00 = np.array([1.0, e, e, 0.5])
    assert t.std[0][0] == pytest.approx(ring00.std())
    assert np.array(t.coef)[1, :, 0] == pytest.approx([e, e])  # never hit: the empty level ...
    floor = 0.1 * y.std()  # ... and the floor of the standard deviations
    assert t.std[1] == pytest.approx((floor, floor)) and t.channels == 1
    # the hits' channel: ring (0, 0) holds the hits 1 and 0.5, ring (0, 1) the 0.2, layer 1 none
    t = _toy_transform(1, hit_channel=True)[0]
    assert t.channels == 2
    np.testing.assert_allclose(np.array(t.coef_hit)[:, :, 0], [[0.75, 0.2], [0.0, 0.0]], atol=1e-8)
    floor = 0.1 * root.std()
    np.testing.assert_allclose(t.std_hit, [[0.25, floor], [floor, floor]], rtol=1e-6)
    # with log E_inc (standardised: -1, +1) the mean of each ring is that of each shower's alpha bins
    for k, hit_channel in ((2, False), (3, False), (3, True)):
        t, y = _toy_transform(k, hit_channel)
        e_inc, counts = torch.tensor([1e3, 1e5]), torch.tensor([[1, 0], [2, 0]])
        mean, std = t.moments(e_inc, counts)
        np.testing.assert_allclose(mean[:, 0, 0].numpy(), y[:, 0].mean(axis=1), atol=1e-6)
        resid = y[:, 0] - y[:, 0].mean(axis=1, keepdims=True)
        np.testing.assert_allclose(std[0, 0, 0].numpy(), np.sqrt((resid**2).mean(axis=(0, 1))), rtol=1e-5)
        if k == 2:
            # shower means (1 + e) / 2 at -1, (0.5 + e) / 2 at +1
            np.testing.assert_allclose(np.array(t.coef)[0, 0], [(1.5 + 2 * t.empty) / 4, -0.125], rtol=1e-6)
        # exact round trip: energies -> standardised -> y -> shares of the energy above the threshold
        grid = torch.zeros(2, 2, 2, 2, dtype=torch.float64)
        grid[0, 0, 0, 0], grid[1, 0, 1, 0], grid[1, 0, 1, 1] = 5.0, 3.0, 5.0
        layer_e = torch.tensor([[5.0, 0.0], [8.0, 0.0]], dtype=torch.float64)
        x = t.forward(grid, e_inc, layer_e, counts)
        assert x.dtype == torch.float32 and x.shape == (2, t.channels, 2, 2, 2)
        y_all, y_hit = t.shape(x, e_inc, counts)
        above = excess_shares(grid, layer_e[:, :, None, None], counts[:, :, None, None])
        for back in (t.share(y_all), t.share(y_hit)):
            np.testing.assert_allclose(back[grid > 0].numpy(), above[grid > 0].numpy(), rtol=1e-5)
        assert np.all(y_all[grid == 0].numpy() == pytest.approx(t.empty, abs=1e-6))
        if hit_channel:
            assert np.all(x[:, 1][grid == 0].numpy() == 0.0)  # empty voxels: the ring's mean hit
        assert GridTransform.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    layers = t.layer_condition(torch.tensor([1e3]), torch.tensor([[10.0, 0.0]]), torch.tensor([[1, 0]]))
    assert layers.shape == (1, 2, 2) and float(layers[0, 0, 1]) == pytest.approx(t.layer_empty)


def test_distribute_keeps_layer_energies():
    # the n highest shares of a layer are hit: the floor each, the rest of the layer energy as shared
    shares = torch.tensor([[[1.0, 0.5, 0.0, 0.25], [0.0] * 4, [0.0] * 4, [0.0, 1.0, 0.0, 0.0]]])
    f = FLOOR_MEV
    layer_e = torch.tensor([[3.0, 0.0, 2.0, 2.5 * f]], dtype=torch.float64)
    e = distribute(shares, torch.tensor([[2, 0, 4, 3]]), layer_e)
    expected = [
        [2 - f / 3, 1 + f / 3, 0, 0],
        [0] * 4,
        [0.5] * 4,
        [f, 1.5 * f, 0, 0],
    ]  # at most E / f hits
    np.testing.assert_allclose(e.numpy(), [expected], rtol=1e-12)


# ---------------------------------------------------------------------------------------------- family
@pytest.mark.parametrize("objective", ["flow-matching", "vae"])
def test_sampler_output_and_export_round_trip(gflash, ds2, objective):
    energies, _, data = gflash
    torch.manual_seed(0)
    family = VoxelGridFamily(VoxelGridSettings(**TINY, objective=objective), data, torch.device("cpu"))
    ctx = Ctx(family, 1e-3)
    family.train_step(ctx)  # non-zero output convolutions
    e_inc = energies[:5]
    showers, counts = family.sampler().sample_showers(e_inc, torch.Generator().manual_seed(3))
    assert isinstance(family.sampler(), ShowerSampler)
    assert showers.shape == (5, ds2.n_voxels) and showers.dtype == np.float32
    assert np.all(showers >= 0) and not np.any((showers > 0) & (showers < THRESHOLD_MEV))
    assert counts["n_points"] == np.count_nonzero(showers) and counts["n_collided"] == 0
    # before the threshold every layer sums to the layer energy the shower flow drew
    with torch.inference_mode():
        layered, layer_e, _ = family.sampler().layered(
            torch.as_tensor(e_inc), torch.Generator().manual_seed(3)
        )
    assert float(layer_e.sum()) > 0
    np.testing.assert_allclose(layered.sum(dim=2).numpy(), layer_e.numpy(), rtol=1e-12, atol=1e-12)
    kept = layered.reshape(5, -1).numpy() >= THRESHOLD_MEV
    np.testing.assert_allclose(showers[kept], layered.reshape(5, -1).numpy()[kept], rtol=1e-6)
    config = json.loads(json.dumps(family.export_config()))
    state = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in family.modules().items()}
    sampler = FAMILIES["voxel-grid"].build_sampler(config, state, None, ds2, torch.device("cpu"))
    again, _ = sampler.sample_showers(e_inc, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(again, showers)
    with pytest.raises(ValueError, match=r"model trained for grid \(45, 16, 9\)"):
        ds3 = SimpleNamespace(name="3", grid_shape=(45, 50, 18))
        FAMILIES["voxel-grid"].build_sampler(config, state, None, ds3, torch.device("cpu"))


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Showers on a 4 x 4 x 2 grid, symmetric in alpha: f E_inc / 4 in every alpha bin of ring 0 of
    layer 1 and f E_inc / 8 in layer 2, with f = 0.6 x lognormal(0, 0.05); E_inc log-uniform 1-100 GeV."""
    rng = np.random.default_rng(seed)
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    f = 0.6 * np.exp(rng.normal(0.0, 0.05, n)) * e_inc
    grids = np.zeros((n, 4, 4, 2), dtype=np.float32)
    grids[:, 1, :, 0] = (f / 4)[:, None]
    grids[:, 2, :, 0] = (f / 8)[:, None]
    return e_inc, grids.reshape(n, -1)


def test_toy_grids_are_learned(tmp_path):
    geometry = SimpleNamespace(
        name="toy", n_layers=4, n_alpha=4, n_r=2, grid_shape=(4, 4, 2), is_regular=True
    )
    e_inc, grids = _toy(300, 0)
    nz = np.nonzero(grids)
    points = np.stack([grids[nz], nz[1] // 8, (nz[1] // 2) % 4, nz[1] % 2], axis=1).astype(np.float32)
    lengths = np.count_nonzero(grids, axis=1)
    clouds = Clouds(points, np.concatenate([[0], np.cumsum(lengths)]), e_inc[:, None], ("energy", "layer",
                    "alpha", "r"), ("incident_energy",), np.zeros(300, dtype=np.int8))  # fmt: skip
    data = TrainingData("showers", clouds, None, np.arange(300), np.arange(0), 2.0, 1, geometry)
    torch.manual_seed(0)
    settings = VoxelGridSettings(base_channels=8, levels=2, emb_dim=32, time_dim=8, ode_steps=10, batch=64)
    family = VoxelGridFamily(settings, data, torch.device("cpu"))
    ctx = Ctx(family, 3e-3)
    test_e, truth = _toy(200, 1)
    losses = [family.train_step(ctx)["loss"] for _ in range(400)]
    # the ring means already hold the toy shapes at the start; flow matching keeps a floor (noise)
    assert np.mean(losses[-30:]) < 0.85 * np.mean(losses[:10])
    showers, _ = family.sampler().sample_showers(test_e, torch.Generator().manual_seed(0))
    hit = truth[0] > 0  # the 8 voxels every toy shower hits
    assert (showers[:, hit] > 0).mean() > 0.9  # the shapes are learned: the 8 hits ranked first ...
    assert np.all(np.count_nonzero(showers, axis=1) <= hit.sum())  # ... of the 8 the shower flow draws
    layers = showers.reshape(len(test_e), 4, 8).sum(axis=2)
    assert np.all(layers[:, [0, 3]] == 0)  # layers never hit in training get no energy
    # (400 steps do not train the shower flow's E_tot / E_inc: tests/test_factorised.py tests it)


# ---------------------------------------------------------------------------------------------- config
def test_settings_errors_name_the_key():
    with pytest.raises(ValueError, match="voxel-grid setting objective must be one of"):
        VoxelGridSettings(objective="gan")
    with pytest.raises(ValueError, match="voxel-grid setting levels must be a positive integer, got 0"):
        make_settings("voxel-grid", {"levels": 0})
    with pytest.raises(ValueError, match="takes no settings \\['hidden'\\]"):
        make_settings("voxel-grid", {"hidden": 3})


def test_voxel_family_on_jets_is_a_config_error_and_config_voxel_plans_the_comparison(tmp_path):
    work = copy_repository(tmp_path / "work")
    shutil.copy2(REPO / "config" / "voxel.yaml", work / "voxel.yaml")
    command = [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", "--configfile", "voxel.yaml"]
    bad = yaml.safe_load((REPO / "config" / "voxel.yaml").read_text())
    bad["runs"].append({"dataset": "jets-top30", "model": "voxel"})
    (work / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = subprocess.run([*command[:-1], "bad.yaml"], cwd=work, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "family 'voxel-grid' does not model jets" in res.stdout + res.stderr
    assert not (work / "results").exists()  # before any job ran
    res = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    calo = next(c for c in re.findall(r"^Shell command: (.* compare .*)$", res.stdout, re.MULTILINE)
                if "--dataset calo-ds2 " in c)  # fmt: skip
    assert "--models factorised voxel " in calo
    assert "results/calo-ds2/factorised/timing.json results/calo-ds2/voxel/timing.json" in calo
    assert "--family voxel-grid" in res.stdout and "results/jets-top30/comparison.html" in res.stdout
