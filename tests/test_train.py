"""Training stage and the shared loop: settings, schedule, EMA, RNG snapshots, validation-based
selection, exact resume after a stop or SIGKILL, stale checkpoints, bad inputs.

The loop is exercised with a tiny real family (tests/toy_family.py: a Gaussian fitted by maximum
likelihood); the families' own learning tests are in test_factorised.py, test_mdma_flow.py and
test_mdma_gan.py.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import toy_family  # registers the "toy-gaussian" family

from pipelines import cli
from pipelines import train as T
from pipelines.device import autocast_dtype, resolve_device
from pipelines.io.clouds import Clouds, write_clouds
from pipelines.io.errors import BusyError, DataError
from pipelines.models.family import get_family, register_family
from pipelines.models.settings import FAMILY_SPECS
from pipelines.models.store import load_model, read_model
from pipelines.training.checkpoint import (
    CHECKPOINT_FORMAT,
    checkpoint_lock,
    checkpoint_paths,
    latest_checkpoint,
    prune_checkpoints,
    rng_state,
    set_rng_state,
)
from pipelines.training.loop import EMA, lr_factor
from pipelines.training.settings import LoopSettings, split_settings
from pipelines.transforms import jet_transform, save_transform, shower_transform

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)

# Small run used by the resume tests.
RUN = {
    "num_threads": 1,
    "checkpoint_every": 4,
    "log_every": 2,
    "schedule_steps": 20,
    "warmup_steps": 3,
    "progress": False,
    "validate_every": 5,
    "lr": 0.05,
}
TOTAL = 20
FAMILY = "toy-gaussian"


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


def _argv(
    files: dict[str, Path], out: Path, settings: dict, kind: str = "jets", family: str = FAMILY
) -> list[str]:
    return [
        "--clouds", str(files["clouds"]), "--transforms", str(files["transforms"]), "--kind", kind,
        "--family", family, "--settings", json.dumps(settings), "--checkpoint-dir", str(out / "ckpt"),
        "--out-model", str(out / "model.pt"), "--out-curve", str(out / "curve.csv"),
        "--out-summary", str(out / "summary.json"), "--device", "cpu",
    ]  # fmt: skip


def _final_state(out: Path) -> dict:
    return torch.load(checkpoint_paths(out / "ckpt")[-1], weights_only=True)


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


def test_settings_split_between_loop_and_family() -> None:
    loop, own = split_settings(FAMILY, {"lr": 1, "max_steps": 5, "ema_decay": 0.9})
    assert own.lr == 1.0 and isinstance(own.lr, float) and loop.max_steps == 5 and loop.ema_decay == 0.9
    assert loop.total_schedule_steps == 5 and loop.select == "best"
    bad = [
        ({"learning_rate": 1e-3}, "family 'toy-gaussian' takes no settings \\['learning_rate'\\]"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"max_steps": True}, "max_steps"),
        ({"lr": "fast"}, "lr"),
        ({"max_steps": 0}, "max_steps"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"amp": "int8"}, "amp"),
        ({"select": "first"}, "select"),
        ({"max_steps": None}, "max_steps and/or max_minutes"),
        ({"max_steps": None, "max_minutes": 5}, "schedule_steps"),
    ]
    for values, message in bad:
        with pytest.raises(ValueError, match=message):
            split_settings(FAMILY, values)
    with pytest.raises(ValueError, match="unknown model family 'gan2'.*known families"):
        split_settings("gan2", {})
    assert LoopSettings(max_steps=None, max_minutes=5, schedule_steps=100).total_schedule_steps == 100


def test_config_checks_need_no_torch_and_agree_with_the_family_classes() -> None:
    """The workflow checks settings at start-up without torch; the specs match the family classes."""
    code = (
        "import sys; from pipelines.training.settings import split_settings;"
        "from pipelines.models.settings import family_spec;"
        "split_settings('mdma-gan', {'max_steps': 3, 'hidden': 8}); family_spec('factorised');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'scipy', 'sklearn')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    for name, spec in FAMILY_SPECS.items():
        cls = get_family(name)
        assert (cls.Settings, tuple(cls.kinds), cls.needs_multiplicity()) == (
            spec.settings,
            spec.kinds,
            spec.needs_multiplicity,
        )

    class Impostor(toy_family.ToyGaussian):
        kinds = ("showers",)  # the registered toy-gaussian models jets

    with pytest.raises(TypeError, match="disagrees with its spec"):
        register_family(Impostor)


def test_lr_schedule_hand_values() -> None:
    assert lr_factor(0, warmup=10, total=110, final=0.1) == pytest.approx(0.1)
    assert lr_factor(9, warmup=10, total=110, final=0.1) == pytest.approx(1.0)
    assert lr_factor(10, warmup=10, total=110, final=0.1) == pytest.approx(1.0)
    assert lr_factor(60, warmup=10, total=110, final=0.1) == pytest.approx(0.55)  # cos(pi/2) = 0
    assert lr_factor(110, warmup=10, total=110, final=0.1) == pytest.approx(0.1)
    assert lr_factor(500, warmup=10, total=110, final=0.1) == pytest.approx(0.1)


def test_ema_hand_values() -> None:
    """shadow <- d shadow + (1 - d) w with d = min(decay, (1 + k) / (10 + k)) at update k."""
    layer = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    ema = EMA({"m": layer}, decay=0.5)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    ema.update()  # d = 2/11
    assert ema.shadow["m"]["weight"].item() == pytest.approx(9 / 11)
    ema.update()  # d = 3/12
    assert ema.shadow["m"]["weight"].item() == pytest.approx(0.25 * 9 / 11 + 0.75)
    for _ in range(20):
        ema.update()  # d reaches the decay 0.5 and the shadow converges to the weight
    assert ema.shadow["m"]["weight"].item() == pytest.approx(1.0, abs=1e-5)


def test_device_resolution_falls_back_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what SLURM sets for a (fake) GPU
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
    assert autocast_dtype("auto", torch.device("cpu")) is None
    with pytest.raises(ValueError):
        resolve_device("tpu")


def test_rng_snapshot_round_trip(tmp_path: Path) -> None:
    import random

    torch.manual_seed(3)
    np.random.seed(3)  # noqa: NPY002 (the global state is what the snapshot covers)
    random.seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    first = (torch.rand(4), np.random.random(4), [random.random() for _ in range(4)])  # noqa: NPY002
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    second = (torch.rand(4), np.random.random(4), [random.random() for _ in range(4)])  # noqa: NPY002
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


# ------------------------------------------------------------------------------------------ learning


def test_loop_fits_the_toy_family_and_exports_the_best_validated_model(tmp_path: Path) -> None:
    """The Gaussian's mean moves onto the training points' mean; the exported model is the EMA at the
    validation step with the smallest figure, and the curve holds the validation figures."""
    clouds = _jet_clouds(200, seed=4)
    clouds.points[:, 0] += 2.0  # the target is far from where the model starts (0)
    write_clouds(tmp_path / "c.h5", clouds)
    save_transform(tmp_path / "t.json", jet_transform().fit(clouds.points.astype(np.float64)))
    files = {"clouds": tmp_path / "c.h5", "transforms": tmp_path / "t.json"}
    settings = {**RUN, "max_steps": 200, "schedule_steps": 200, "validate_every": 20, "ema_decay": 0.9}
    assert T.main(_argv(files, tmp_path, settings)) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    sampler, payload = load_model(tmp_path / "model.pt", None, None)
    train_mean = clouds.points[np.repeat(clouds.split == 0, clouds.lengths)].mean(axis=0)
    assert np.allclose(sampler.mu.detach().numpy(), train_mean, atol=0.05)
    assert summary["exported_step"] == payload["extra"]["exported_step"]
    curve = (tmp_path / "curve.csv").read_text().splitlines()
    header = curve[0].split(",")
    figures = {int(r.split(",")[0]): r.split(",")[header.index("val_figure")] for r in curve[1:]}
    validated = {step: float(v) for step, v in figures.items() if v}
    assert sorted(validated) == list(range(20, 201, 20))
    assert summary["exported_step"] == min(validated, key=validated.get)
    assert summary["best_validation_figure"] == pytest.approx(min(validated.values()))
    assert validated[200] < 0.2 * validated[20]


def test_training_log_is_plain_lines_with_losses_and_validation_figures(
    jet_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Not on a terminal (a job's log), progress is a line each tenth of the budget, never a '\\r'."""
    settings = {**RUN, "max_steps": TOTAL, "progress": True}
    assert T.main(_argv(jet_files, tmp_path, settings)) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("train: ")]
    steps = [int(line.split()[1].split("/")[0]) for line in lines]
    assert set(range(2, TOTAL + 1, 2)) <= set(steps) and steps == sorted(steps)
    assert all(f"/{TOTAL} step (" in line for line in lines)
    assert "val_figure=" not in lines[0] and "loss=" in lines[0]  # first validation at step 5
    assert "validated_at=20 val_figure=" in lines[-1], err


# ------------------------------------------------------------------------------------ stage and resume


def test_stage_outputs(straight_run: Path) -> None:
    summary = json.loads((straight_run / "summary.json").read_text())
    assert summary["steps"] == TOTAL and summary["resumed_from_step"] == 0 and summary["device"] == "cpu"
    assert summary["n_train_clouds"] == 55 and summary["settings"]["max_steps"] == TOTAL
    assert summary["family"] == FAMILY and summary["parameters"] == 6 and summary["threads"] == 1
    lines = (straight_run / "curve.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["step", "lr_gauss", "loss"] and "val_figure" in lines[0]
    assert len(lines) == 1 + TOTAL // 2 + 2  # every 2nd step, plus validation-only rows at steps 5 and 15
    payload = read_model(straight_run / "model.pt")
    assert payload["family"] == FAMILY and payload["kind"] == "jets" and payload["extra"]["step"] == TOTAL
    assert payload["extra"]["point_names"] == ["eta_rel", "phi_rel", "pt_rel"]
    ckpts = checkpoint_paths(straight_run / "ckpt")
    assert [p.name for p in ckpts] == ["ckpt-000000016.pt", "ckpt-000000020.pt"]  # the last two kept
    final = _final_state(straight_run)
    assert final["best"]["step"] == summary["exported_step"]
    _assert_same_tensors(payload["weights"]["gauss"], final["best"]["weights"]["gauss"])


def test_final_validation_joins_the_last_log_row(jet_files: dict[str, Path], tmp_path: Path) -> None:
    """6 steps, a log row every 2 and validation every 4: rows 2, 4, 6; step 6 (the end) is validated."""
    settings = {**RUN, "max_steps": 6, "validate_every": 4, "checkpoint_every": 6}
    assert T.main(_argv(jet_files, tmp_path, settings)) == 0
    with open(tmp_path / "curve.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert [r["val_figure"] != "" for r in rows] == [False, True, True] and rows[-1]["loss"] != ""


def _assert_same_run(ref: dict, got: dict) -> None:
    _assert_same_tensors(ref["modules"]["gauss"], got["modules"]["gauss"])
    _assert_same_tensors(ref["ema"]["shadow"]["gauss"], got["ema"]["shadow"]["gauss"])
    for p, state in ref["optimisers"]["gauss"]["state"].items():
        _assert_same_tensors(state, got["optimisers"]["gauss"]["state"][p])
    assert ref["family_state"] == got["family_state"] and ref["best"]["step"] == got["best"]["step"]


def test_stop_and_resume_is_bit_identical(
    straight_run: Path, jet_files: dict[str, Path], tmp_path: Path
) -> None:
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 7})) == 0  # "killed" after step 7
    (tmp_path / "model.pt").unlink()
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": TOTAL})) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["resumed_from_step"] == 7 and summary["steps"] == TOTAL
    _assert_same_run(_final_state(straight_run), _final_state(tmp_path))
    _assert_same_tensors(
        read_model(straight_run / "model.pt")["weights"]["gauss"],
        read_model(tmp_path / "model.pt")["weights"]["gauss"],
    )
    ref_rows = [r.split(",")[:-1] for r in (straight_run / "curve.csv").read_text().splitlines()]
    got_rows = [r.split(",")[:-1] for r in (tmp_path / "curve.csv").read_text().splitlines()]
    assert ref_rows == got_rows  # identical losses and validation figures, only the wall clock differs


def _spawn_endless_trainer(files: dict[str, Path], out: Path) -> subprocess.Popen:
    """``python -m pipelines train`` in a child process, checkpointing every step for minutes."""
    settings = {**RUN, "max_steps": 10_000_000, "checkpoint_every": 1}
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    code = "import sys, toy_family; from pipelines.cli import main; sys.exit(main(sys.argv[1:]))"
    command = [sys.executable, "-c", code, "train", *_argv(files, out, settings)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_checkpoint(proc: subprocess.Popen, directory: Path, step: int) -> None:
    deadline = time.monotonic() + 60
    while not any(int(p.name[5:14]) >= step for p in checkpoint_paths(directory)):
        assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.005)


def test_sigkill_mid_run_then_resume_is_bit_identical(
    straight_run: Path, jet_files: dict[str, Path], tmp_path: Path
) -> None:
    proc = _spawn_endless_trainer(jet_files, tmp_path)
    try:
        _wait_for_checkpoint(proc, tmp_path / "ckpt", 3)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "model.pt").exists()
    killed_at = int(checkpoint_paths(tmp_path / "ckpt")[-1].name[5:14])
    assert 3 <= killed_at
    if killed_at >= TOTAL:
        pytest.skip(f"the process reached step {killed_at} before the kill (a very fast machine)")
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": TOTAL})) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_from_step"] == killed_at
    _assert_same_run(_final_state(straight_run), _final_state(tmp_path))


def test_resume_refuses_other_settings_and_skips_broken_checkpoints(
    jet_files: dict[str, Path], tmp_path: Path
) -> None:
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 8})) == 0
    with pytest.raises(ValueError, match="different settings.*batch"):
        T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 9, "batch": 8}))
    newest = checkpoint_paths(tmp_path / "ckpt")[-1]
    newest.write_bytes(b"truncated")  # e.g. a disk problem; atomic writes make this rare
    (tmp_path / "ckpt" / ".ckpt-000000009.pt.abc.part").write_bytes(b"partial")  # a write killed midway
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 8})) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_from_step"] == 4
    assert not list((tmp_path / "ckpt").glob("*.part"))


def test_pruning_counts_and_deletes_only_checkpoints_that_verify(tmp_path: Path) -> None:
    """keep=1: the newest valid checkpoint and the one just written stay; files that do not load or
    verify (empty, old format, a step other than the name's) are neither counted nor deleted."""
    for step in (1, 2, 3, 7):
        torch.save({"format_version": CHECKPOINT_FORMAT, "step": step}, tmp_path / f"ckpt-{step:09d}.pt")
    torch.save({"format_version": CHECKPOINT_FORMAT - 1, "step": 8}, tmp_path / "ckpt-000000008.pt")
    torch.save({"format_version": CHECKPOINT_FORMAT, "step": 3}, tmp_path / "ckpt-000000009.pt")
    (tmp_path / "ckpt-000000010.pt").write_bytes(b"")
    deleted = prune_checkpoints(tmp_path, keep=1, written=tmp_path / "ckpt-000000002.pt")
    assert sorted(p.name for p in deleted) == ["ckpt-000000001.pt", "ckpt-000000003.pt"]
    assert [p.name[5:14] for p in checkpoint_paths(tmp_path)] == [f"{s:09d}" for s in (2, 7, 8, 9, 10)]
    assert latest_checkpoint(tmp_path)[0].name == "ckpt-000000007.pt"


def test_unreadable_files_named_like_later_steps_never_cost_a_valid_checkpoint(
    jet_files: dict[str, Path], tmp_path: Path
) -> None:
    """Two files named like later steps that do not load or verify used to push every valid
    checkpoint (the one just written included) out of the two kept: now they are left alone, the
    valid ones are kept and resumed, and pruning removes only the oldest valid one."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    junk = {"ckpt-999999998.pt": b"truncated", "ckpt-999999999.pt": b"PK\x03\x04 not a whole zip archive"}
    for name, content in junk.items():
        (ckpt / name).write_bytes(content)
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 8})) == 0  # checkpoints at 4 and 8
    assert [p.name for p in checkpoint_paths(ckpt)] == ["ckpt-000000004.pt", "ckpt-000000008.pt", *junk]
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 12})) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_from_step"] == 8
    assert [p.name for p in checkpoint_paths(ckpt)] == ["ckpt-000000008.pt", "ckpt-000000012.pt", *junk]
    assert {name: (ckpt / name).read_bytes() for name in junk} == junk


def test_restart_on_mismatch_moves_stale_checkpoints_into_a_dated_folder(
    jet_files: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A code change under --restart-on-mismatch keeps the old checkpoints, byte for byte, in
    stale-<UTC time>/ with the reason, says where in the log, and never resumes them."""
    ckpt, summary = tmp_path / "ckpt", tmp_path / "summary.json"
    assert T.main([*_argv(jet_files, tmp_path, {**RUN, "max_steps": 8}), "--code-version", "a"]) == 0
    old = {p.name: p.read_bytes() for p in checkpoint_paths(ckpt)}
    assert sorted(old) == ["ckpt-000000004.pt", "ckpt-000000008.pt"]
    restart = [*_argv(jet_files, tmp_path, {**RUN, "max_steps": 4}), "--restart-on-mismatch"]
    before = datetime.now(UTC).replace(microsecond=0)
    with caplog.at_level(logging.WARNING, logger="pipelines.train"):
        assert T.main([*restart, "--code-version", "b"]) == 0
    after = datetime.now(UTC)
    assert json.loads(summary.read_text())["resumed_from_step"] == 0
    (aside,) = ckpt.glob("stale-*")
    assert before <= datetime.strptime(aside.name, "stale-%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) <= after
    assert {p.name: p.read_bytes() for p in checkpoint_paths(aside)} == old
    assert "code_version" in (aside / "REASON.txt").read_text()
    assert f"moved them to {aside}" in caplog.text
    assert [p.name for p in checkpoint_paths(ckpt)] == ["ckpt-000000004.pt"]  # the new run's own
    assert T.main([*restart, "--code-version", "a"]) == 0  # back to code a: step 8 of a is not resumed
    assert json.loads(summary.read_text())["resumed_from_step"] == 0
    assert len(list(ckpt.glob("stale-*"))) == 2


def test_checkpoint_lock_names_the_holder_and_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    lock_file = tmp_path / "trainer.lock"
    with checkpoint_lock(tmp_path):
        assert lock_file.read_text().split() == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(
            BusyError, match=f"{re.escape(str(tmp_path))} is in use.*PID {os.getpid()} on host"
        ):
            with checkpoint_lock(tmp_path):
                pass
    assert lock_file.read_text() == ""  # no holder named once released
    with checkpoint_lock(tmp_path):  # released at the end of the block
        pass

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING), checkpoint_lock(tmp_path):
        assert "no file locks on this file system" in caplog.text


def test_a_second_trainer_on_one_checkpoint_directory_fails_at_once_naming_the_holder(
    jet_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An orphaned trainer still writes the directory: a second one stops before touching it, with
    an error naming the first one's PID; once that process is gone, the next run resumes its state."""
    proc = _spawn_endless_trainer(jet_files, tmp_path)
    try:
        _wait_for_checkpoint(proc, tmp_path / "ckpt", 1)
        start = time.monotonic()
        code = cli.main(["train", *_argv(jet_files, tmp_path, {**RUN, "max_steps": TOTAL})])
        assert time.monotonic() - start < 10 and proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    message = capsys.readouterr().err
    assert code == 1 and f"in use by another trainer (PID {proc.pid} on host" in message, message
    assert not (tmp_path / "model.pt").exists()
    killed_at = int(checkpoint_paths(tmp_path / "ckpt")[-1].name[5:14])
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": killed_at + 2})) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_from_step"] == killed_at


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


def test_a_checkpoint_of_another_family_is_never_resumed(jet_files: dict[str, Path], tmp_path: Path) -> None:
    assert T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 4})) == 0
    state = _final_state(tmp_path)
    state["family"] = "flow-matching"
    torch.save(state, checkpoint_paths(tmp_path / "ckpt")[-1])
    with pytest.raises(ValueError, match="different family"):
        T.main(_argv(jet_files, tmp_path, {**RUN, "max_steps": 6}))
    assert T.main([*_argv(jet_files, tmp_path, {**RUN, "max_steps": 6}), "--restart-on-mismatch"]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["resumed_from_step"] == 0


def test_family_that_does_not_model_the_kind_is_an_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pts = np.stack(
        [rng.exponential(5.0, 40), rng.integers(0, 3, 40), rng.integers(0, 4, 40), rng.integers(0, 5, 40)], 1
    )
    showers = Clouds(pts, [0, 10, 25, 40], [[1000.0], [5.0], [2e4]], ("energy", "layer", "alpha", "r"),
                     ("incident_energy",), np.zeros(3, np.int8))  # fmt: skip
    write_clouds(tmp_path / "showers.h5", showers)
    geometry = SimpleNamespace(n_layers=3, n_alpha=4, n_r=5)
    transform = shower_transform(geometry).fit(pts.astype(np.float64), rng=np.random.default_rng(0))
    save_transform(tmp_path / "st.json", transform)
    files = {"clouds": tmp_path / "showers.h5", "transforms": tmp_path / "st.json"}
    with pytest.raises(ValueError, match="does not model 'showers'"):
        T.main(_argv(files, tmp_path, {**RUN, "max_steps": 1}, kind="showers"))
