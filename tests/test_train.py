"""Training stage: settings, schedule, RNG snapshots, learning on an easy target, exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipelines import train as T
from pipelines.batching import BucketBatchSampler, CloudDataset
from pipelines.io.clouds import Clouds, write_clouds
from pipelines.io.errors import DataError
from pipelines.models.mdma import load_generator
from pipelines.transforms import jet_transform, save_transform, shower_transform

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

# Small run used by the resume tests: 60 jets, ~6 batches per epoch, so runs cross epochs mid-way.
RUN = {
    "max_tokens": 100,
    "num_threads": 1,
    "checkpoint_every": 4,
    "log_every": 2,
    "schedule_steps": 20,
    "warmup_steps": 3,
    "progress": False,
    "mf_steps": 10,
    "lr_generator": 1e-3,
    "lr_critic": 1e-3,
}
TOTAL = 20


def _jet_clouds(n: int = 60, seed: int = 0) -> Clouds:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 15, n)
    lengths[3] = 0  # an empty jet is valid input
    p = int(lengths.sum())
    pts = np.stack([rng.normal(0, 0.1, p), rng.normal(0, 0.1, p), rng.lognormal(-3, 1, p)], axis=1)
    split = np.zeros(n, np.int8)
    split[-5:] = 1
    return Clouds(
        pts,
        np.concatenate([[0], np.cumsum(lengths)]),
        1 + rng.random((n, 3)),
        ("eta_rel", "phi_rel", "pt_rel"),
        ("jet_pt", "jet_eta", "jet_mass"),
        split,
    )


@pytest.fixture(scope="module")
def jet_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("jets")
    clouds = _jet_clouds()
    write_clouds(d / "clouds.h5", clouds)
    save_transform(d / "transforms.json", jet_transform().fit(clouds.points.astype(np.float64)))
    return {"clouds": d / "clouds.h5", "transforms": d / "transforms.json"}


def _argv(files: dict[str, Path], out: Path, settings: dict, kind: str = "jets") -> list[str]:
    return [
        "--clouds",
        str(files["clouds"]),
        "--transforms",
        str(files["transforms"]),
        "--kind",
        kind,
        "--settings",
        json.dumps(settings),
        "--checkpoint-dir",
        str(out / "ckpt"),
        "--out-model",
        str(out / "model.pt"),
        "--out-curve",
        str(out / "curve.csv"),
        "--out-summary",
        str(out / "summary.json"),
        "--device",
        "cpu",
    ]


def _final_state(out: Path) -> dict:
    path = T.checkpoint_paths(out / "ckpt")[-1]
    return torch.load(path, weights_only=True)


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def straight_run(jet_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    assert T.main(_argv(jet_files, out, {**RUN, "max_steps": TOTAL})) == 0
    return out


# ------------------------------------------------------------------------------------------ settings


def test_settings_defaults_and_validation() -> None:
    s = T.TrainSettings.from_json('{"lr_generator": 1, "max_steps": 5}')
    assert s.lr_generator == 1.0 and isinstance(s.lr_generator, float) and s.n_critic == 3
    assert (s.beta1, s.beta2, s.gp_lambda, s.lr_critic) == (0.0, 0.9, 10.0, 1e-4)
    assert s.total_schedule_steps == 5
    bad = [
        ('{"learning_rate": 1e-3}', "unknown train settings"),
        ('{"n_critic": 2.5}', "n_critic"),
        ('{"n_critic": true}', "n_critic"),
        ('{"hidden": "16"}', "hidden"),
        ('{"n_critic": 0}', "n_critic"),
        ('{"lr_critic": -1e-4}', "lr_critic"),
        ('{"beta1": 1.0}', "beta1"),
        ('{"amp": "int8"}', "amp"),
        ('{"max_steps": null}', "max_steps and/or max_minutes"),
        ('{"max_steps": null, "max_minutes": 5}', "schedule_steps"),
        ('{"hidden": 10, "heads": 4}', "divisible"),
        ('{"critic_norm": "batch"}', "critic_norm"),
        ("[1, 2]", "JSON object"),
        ('{"seed": ', "not valid JSON"),
    ]
    for text, message in bad:
        with pytest.raises(ValueError, match=message):
            T.TrainSettings.from_json(text)
    assert T.TrainSettings.from_json('{"max_steps": null, "max_minutes": 5, "schedule_steps": 100}')


def test_lr_schedule_hand_values() -> None:
    assert T.lr_factor(0, warmup=10, total=110, final=0.1) == pytest.approx(0.1)
    assert T.lr_factor(9, warmup=10, total=110, final=0.1) == pytest.approx(1.0)
    assert T.lr_factor(10, warmup=10, total=110, final=0.1) == pytest.approx(1.0)
    assert T.lr_factor(60, warmup=10, total=110, final=0.1) == pytest.approx(0.55)  # cos(pi/2) = 0
    assert T.lr_factor(110, warmup=10, total=110, final=0.1) == pytest.approx(0.1)
    assert T.lr_factor(500, warmup=10, total=110, final=0.1) == pytest.approx(0.1)


def test_device_resolution_falls_back_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert T.resolve_device("cpu").type == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what SLURM sets for a (fake) GPU
    if not torch.cuda.is_available():
        assert T.resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="CUDA"):
            T.resolve_device("cuda")
    assert T.autocast_dtype("auto", torch.device("cpu")) is None
    with pytest.raises(ValueError):
        T.resolve_device("tpu")


def test_rng_snapshot_round_trip(tmp_path: Path) -> None:
    import random

    torch.manual_seed(3)
    np.random.seed(3)  # noqa: NPY002 (the global state is what the snapshot covers)
    random.seed(3)
    torch.save(T.rng_state(), tmp_path / "rng.pt")
    first = (torch.rand(4), np.random.random(4), [random.random() for _ in range(4)])  # noqa: NPY002
    T.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    second = (torch.rand(4), np.random.random(4), [random.random() for _ in range(4)])  # noqa: NPY002
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


# ------------------------------------------------------------------------------------------ learning


def test_gan_learns_an_easy_target() -> None:
    """1-d points all near 3.0: the critic's Wasserstein estimate rises, then falls as the generator
    (starting near 0) moves its mean onto the data."""
    rng = np.random.default_rng(0)
    n = 64
    lengths = rng.integers(2, 6, n)
    pts = (3.0 + 0.2 * rng.standard_normal((int(lengths.sum()), 1))).astype(np.float32)
    clouds = Clouds(
        pts, np.concatenate([[0], np.cumsum(lengths)]), np.ones((n, 1)), ("v",), ("c",), np.zeros(n, np.int8)
    )
    s = T.TrainSettings(
        hidden=8,
        n_blocks=1,
        critic_hidden=8,
        critic_blocks=1,
        heads=2,
        lr_generator=3e-3,
        lr_critic=3e-3,
        warmup_steps=0,
        lr_final_factor=0.01,
        max_steps=60,
        max_tokens=128,
        gp_lambda=1.0,
        num_threads=1,
    )
    trainer = T.Trainer.create(s, s.model_config("jets", 1, float(lengths.mean())), torch.device("cpu"))
    dataset = CloudDataset(clouds, None, seed=0)
    stream = T.BatchStream(dataset, BucketBatchSampler(dataset.lengths, 128, seed=0))
    mask, cond = torch.zeros(512, 4, dtype=torch.bool), torch.ones(512, 1)

    def generated_mean() -> float:
        with torch.no_grad():
            return trainer.generator(trainer._noise(mask), cond, mask).mean().item()

    start = generated_mean()
    assert abs(start - 3.0) > 2.5  # the target is far from where the generator starts
    means, wasserstein = [], []
    for _ in range(s.max_steps):
        losses, _ = trainer.train_step(stream)
        means.append(generated_mean())
        wasserstein.append(losses["wasserstein"])
    assert all(np.isfinite(wasserstein))
    peak = max(wasserstein)
    assert peak > 3.0  # the critic tells data from the initial generator
    assert abs(np.mean(wasserstein[-10:])) < 0.4 * peak  # ... and much less so at the end
    assert abs(np.mean(means[-10:]) - 3.0) < 0.35 * abs(start - 3.0)


# ------------------------------------------------------------------------------------ stage and resume


def test_stage_outputs(straight_run: Path, jet_files: dict[str, Path]) -> None:
    summary = json.loads((straight_run / "summary.json").read_text())
    assert summary["steps"] == TOTAL and summary["resumed_from_step"] == 0 and summary["device"] == "cpu"
    assert summary["n_train_clouds"] == 55 and summary["settings"]["max_steps"] == TOTAL
    assert summary["showers_per_s"] > 0 and summary["generator_parameters"] > 0
    assert summary["epochs_started"] > 2  # the run crossed epoch boundaries
    lines = (straight_run / "curve.csv").read_text().splitlines()
    assert lines[0].split(",") == list(T.CURVE_COLUMNS) and len(lines) == 1 + TOTAL // 2
    generator, config, extra = load_generator(straight_run / "model.pt")
    assert config.kind == "jets" and config.cond_dim == 1 and extra["step"] == TOTAL
    assert config.mean_n == pytest.approx(summary["mean_n"])
    assert extra["point_names"] == ["eta_rel", "phi_rel", "pt_rel"]
    ckpts = T.checkpoint_paths(straight_run / "ckpt")
    assert [p.name for p in ckpts] == ["ckpt-000000016.pt", "ckpt-000000020.pt"]  # the last two kept
    _assert_same_tensors(generator.state_dict(), _final_state(straight_run)["generator"])


def test_stop_and_resume_is_bit_identical(
    straight_run: Path, jet_files: dict[str, Path], tmp_path: Path
) -> None:
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 7})) == 0  # "killed" after step 7
    (tmp_path / "model.pt").unlink()
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": TOTAL})) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["resumed_from_step"] == 7 and summary["steps"] == TOTAL
    ref, got = _final_state(straight_run), _final_state(tmp_path)
    for key in ("generator", "critic"):
        _assert_same_tensors(ref[key], got[key])
    for key in ("opt_g", "opt_c"):
        for p, state in ref[key]["state"].items():
            _assert_same_tensors(state, got[key]["state"][p])
    assert (ref["epoch"], ref["position"]) == (got["epoch"], got["position"])
    _assert_same_tensors(
        load_generator(straight_run / "model.pt")[0].state_dict(),
        load_generator(tmp_path / "model.pt")[0].state_dict(),
    )
    ref_rows = [r.split(",")[:-1] for r in (straight_run / "curve.csv").read_text().splitlines()]
    got_rows = [r.split(",")[:-1] for r in (tmp_path / "curve.csv").read_text().splitlines()]
    assert ref_rows == got_rows  # identical losses, only the wall-clock column differs


def test_sigkill_mid_run_then_resume_is_bit_identical(
    straight_run: Path, jet_files: dict[str, Path], tmp_path: Path
) -> None:
    settings = {**RUN, "max_steps": 100_000, "checkpoint_every": 1}  # would run for minutes
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pipelines", "train", *_argv(jet_files, tmp_path, settings)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(int(p.name[5:14]) >= 3 for p in T.checkpoint_paths(tmp_path / "ckpt")):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "model.pt").exists()
    killed_at = int(T.checkpoint_paths(tmp_path / "ckpt")[-1].name[5:14])
    assert 3 <= killed_at < TOTAL
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": TOTAL})) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_from_step"] == killed_at
    ref, got = _final_state(straight_run), _final_state(tmp_path)
    for key in ("generator", "critic"):
        _assert_same_tensors(ref[key], got[key])


def test_resume_refuses_other_settings_and_skips_broken_checkpoints(
    jet_files: dict[str, Path], tmp_path: Path
) -> None:
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 8})) == 0
    with pytest.raises(ValueError, match="different settings.*hidden"):
        T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 9, "hidden": 8}))
    newest = T.checkpoint_paths(tmp_path / "ckpt")[-1]
    newest.write_bytes(b"truncated")  # e.g. a disk problem; atomic writes make this rare
    (tmp_path / "ckpt" / ".ckpt-000000009.pt.abc.part").write_bytes(b"partial")  # a write killed midway
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 8})) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_from_step"] == 4
    assert not list((tmp_path / "ckpt").glob("*.part"))


def test_changed_code_or_inputs_never_resume_a_stale_checkpoint(
    jet_files: dict[str, Path], tmp_path: Path
) -> None:
    """The workflow reuses one checkpoint folder: a new code version, new input files or new
    settings must retrain from step 0 (with --restart-on-mismatch) or refuse (without)."""
    summary = tmp_path / "summary.json"
    assert T.main([*_argv(jet_files, tmp_path, {**RUN, "max_steps": 4}), "--code-version", "a"]) == 0
    with pytest.raises(ValueError, match="different inputs.*code_version"):
        T.main([*_argv(jet_files, tmp_path, {**RUN, "max_steps": 6}), "--code-version", "b"])
    argv = [
        *_argv(jet_files, tmp_path, {**RUN, "max_steps": 6}),
        "--code-version",
        "b",
        "--restart-on-mismatch",
    ]
    assert T.main(argv) == 0
    assert json.loads(summary.read_text())["resumed_from_step"] == 0
    assert T.main([*argv[:-1], "--restart-on-mismatch"]) == 0  # same everything: resumes
    assert json.loads(summary.read_text())["resumed_from_step"] == 6
    transforms = tmp_path / "other_transforms.json"
    transforms.write_text(
        jet_files["transforms"].read_text().replace("\n", "\n ")
    )  # same transform, new bytes
    files = {**jet_files, "transforms": transforms}
    argv = [*_argv(files, tmp_path, {**RUN, "max_steps": 6}), "--code-version", "b", "--restart-on-mismatch"]
    assert T.main(argv) == 0
    assert json.loads(summary.read_text())["resumed_from_step"] == 0


def test_bad_inputs_raise_data_errors(jet_files: dict[str, Path], tmp_path: Path) -> None:
    clouds = _jet_clouds()
    clouds.split[:] = 2  # no training clouds
    write_clouds(tmp_path / "test_only.h5", clouds)
    files = {**jet_files, "clouds": tmp_path / "test_only.h5"}
    with pytest.raises(DataError, match="test_only.h5.*training split is empty"):
        T.main(_argv(files, tmp_path, {**RUN, "max_steps": 1}))
    rng = np.random.default_rng(1)
    shower_pts = np.stack(
        [rng.exponential(5.0, 40), rng.integers(0, 3, 40), rng.integers(0, 4, 40), rng.integers(0, 5, 40)],
        axis=1,
    )
    showers = Clouds(
        shower_pts,
        [0, 10, 25, 40],
        [[1000.0], [-5.0], [2e4]],
        ("energy", "layer", "alpha", "r"),
        ("incident_energy",),
        np.zeros(3, np.int8),
    )
    write_clouds(tmp_path / "showers.h5", showers)
    geometry = SimpleNamespace(n_layers=3, n_alpha=4, n_r=5)
    save_transform(
        tmp_path / "st.json",
        shower_transform(geometry).fit(shower_pts.astype(np.float64), rng=np.random.default_rng(0)),
    )
    files = {"clouds": tmp_path / "showers.h5", "transforms": tmp_path / "st.json"}
    with pytest.raises(DataError, match="showers.h5.*non-positive incident energies"):
        T.main(_argv(files, tmp_path, {**RUN, "max_steps": 1}, kind="showers"))
    files = {"clouds": jet_files["clouds"], "transforms": tmp_path / "st.json"}
    with pytest.raises(DataError, match="st.json.*do not match"):
        T.main(_argv(files, tmp_path, {**RUN, "max_steps": 1}))
    with pytest.raises(DataError, match="clouds.h5.*incident_energy"):
        T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 1}, kind="showers"))


def test_shower_training_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 12, 30)
    p = int(lengths.sum())
    pts = np.stack(
        [rng.exponential(5.0, p), rng.integers(0, 3, p), rng.integers(0, 4, p), rng.integers(0, 5, p)], axis=1
    )
    showers = Clouds(
        pts,
        np.concatenate([[0], np.cumsum(lengths)]),
        10 ** rng.uniform(3, 6, (30, 1)),
        ("energy", "layer", "alpha", "r"),
        ("incident_energy",),
        np.zeros(30, np.int8),
    )
    write_clouds(tmp_path / "showers.h5", showers)
    geometry = SimpleNamespace(n_layers=3, n_alpha=4, n_r=5)
    save_transform(
        tmp_path / "st.json",
        shower_transform(geometry).fit(pts.astype(np.float64), rng=np.random.default_rng(0)),
    )
    files = {"clouds": tmp_path / "showers.h5", "transforms": tmp_path / "st.json"}
    assert T.main(_argv(files, tmp_path, {**RUN, "max_steps": 3}, kind="showers")) == 0
    generator, config, _ = load_generator(tmp_path / "model.pt")
    assert config.cond_dim == 2 and config.point_dim == 4
    assert config.mean_n == pytest.approx(lengths.mean())
    losses = json.loads((tmp_path / "summary.json").read_text())["final_losses"]
    assert all(np.isfinite(v) for v in losses.values())
