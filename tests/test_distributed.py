"""Data-parallel training (pipelines/training/distributed.py) on CPU with gloo: two processes started by
torchrun end with the parameters of one process on the same global batches (the toy family with an
uneven split of its batch, SIGKILLed after a checkpoint and resumed; flow matching on ragged,
length-bucketed jets), and the launch checks (environment, GPUs, settings) are exact."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import toy_family  # noqa: F401  (registers "toy-gaussian")
from test_train import _argv, _jet_clouds

from pipelines import train as T
from pipelines.batching import shard_rows
from pipelines.io.clouds import write_clouds
from pipelines.models.store import read_model
from pipelines.training.checkpoint import checkpoint_paths
from pipelines.training.distributed import World, detect_world, local_device, shard_weight
from pipelines.training.settings import split_settings
from pipelines.transforms import jet_transform, save_transform

REPO = Path(__file__).resolve().parents[1]
TOY = {"num_threads": 1, "checkpoint_every": 4, "log_every": 1, "warmup_steps": 2, "progress": False,
       "validate_every": 5, "lr": 0.05, "batch": 33, "ema_decay": 0.9, "schedule_steps": 12}  # fmt: skip
TOTAL = 12
FLOW = {"num_threads": 1, "checkpoint_every": 100, "log_every": 1, "warmup_steps": 1, "progress": False,
        "max_steps": 4, "hidden": 16, "n_blocks": 1, "heads": 2, "time_dim": 8, "max_tokens": 120,
        "ema_decay": 0.0}  # fmt: skip


@pytest.fixture(scope="module")
def jet_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("jets")
    clouds = _jet_clouds()
    write_clouds(d / "clouds.h5", clouds)
    save_transform(d / "transforms.json", jet_transform().fit(clouds.points.astype(np.float64)))
    return {"clouds": d / "clouds.h5", "transforms": d / "transforms.json"}


def spawn(args: list[str], launcher: list[str] | None = None) -> list[subprocess.Popen]:
    """Two training processes (gloo on CPU): started by torchrun (``launcher``: its script part, e.g.
    ``["-m", "pipelines", "train"]``), or without a launcher as ranks 0 and 1 from their environment."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    kw = {"cwd": REPO, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True,
          "start_new_session": True}  # fmt: skip
    if launcher is not None:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
        return [subprocess.Popen([*command, *launcher, *args], env=env, **kw)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    world = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    return [
        subprocess.Popen(
            [sys.executable, "tests/toy_train.py", *args],
            env={**env, **world, "RANK": str(r), "LOCAL_RANK": str(r)},
            **kw,
        )  # fmt: skip
        for r in range(2)
    ]


def finish(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out[-4000:]


def weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return read_model(out / "model.pt")["weights"]


def curve(out: Path) -> np.ndarray:
    rows = (out / "curve.csv").read_text().splitlines()
    return np.array([[float(v or "nan") for v in r.split(",")[:-1]] for r in rows[1:]])  # no wall time


def assert_close(a: dict, b: dict, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for m in a:
        for k in a[m]:
            torch.testing.assert_close(a[m][k], b[m][k], rtol=rtol, atol=atol, msg=f"{m}.{k}")


def test_flow_matching_on_ragged_bucketed_jets_two_processes_equal_one(
    jet_files: dict[str, Path], tmp_path: Path
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert T.main(_argv(jet_files, one, FLOW, family="flow-matching")) == 0
    # the stage's entry point under torchrun, as the workflow launches it
    finish(
        spawn(
            _argv(jet_files, two, {**FLOW, "gpus": 2}, family="flow-matching"), ["-m", "pipelines", "train"]
        )
    )
    # the key bias of attention has a zero gradient up to rounding, which Adam scales up: 1e-5 there, 1e-7
    # elsewhere (weights of size 0.25)
    assert_close(weights(one), weights(two), atol=3e-5)
    # the curve's loss is the global batch's (the ranks' shares added up), not one rank's part
    np.testing.assert_allclose(curve(two), curve(one), rtol=1e-5)
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2


def test_sigkilled_two_process_run_resumes_and_ends_like_one_process(
    jet_files: dict[str, Path], tmp_path: Path
) -> None:
    """The toy's batch of 33 splits 17 + 16 (the ranks' losses are weighted by their shares)."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert T.main(_argv(jet_files, one, {**TOY, "max_steps": TOTAL})) == 0
    procs = spawn(_argv(jet_files, two, {**TOY, "max_steps": 10_000_000, "checkpoint_every": 1, "gpus": 2}))
    try:
        deadline = time.monotonic() + 120
        while not any(int(p.name[5:14]) >= 3 for p in checkpoint_paths(two / "ckpt")):
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, "no training"
            time.sleep(0.005)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert not (two / "model.pt").exists()
    killed_at = int(checkpoint_paths(two / "ckpt")[-1].name[5:14])
    if killed_at >= TOTAL:
        pytest.skip(f"the run reached step {killed_at} before the kill (a very fast machine)")
    finish(spawn(_argv(jet_files, two, {**TOY, "max_steps": TOTAL, "gpus": 2})))
    summary = json.loads((two / "summary.json").read_text())
    assert (summary["resumed_from_step"], summary["steps"], summary["world_size"]) == (killed_at, TOTAL, 2)
    assert_close(weights(one), weights(two))
    np.testing.assert_allclose(curve(two), curve(one), rtol=1e-5, atol=1e-6)
    assert float(weights(two)["gauss"]["mu"].abs().sum()) > 0.05  # the fit moved from its start


def test_launch_environments() -> None:
    torchrun_env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                    "MASTER_ADDR": "node7", "MASTER_PORT": "1234", "SLURM_PROCID": "0"}  # fmt: skip
    assert detect_world(torchrun_env) == World(3, 4, 1, 2, "node7", 1234)
    srun_env = {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_LOCALID": "1",
                "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_JOB_ID": "12345"}  # fmt: skip
    srun_env["MASTER_ADDR"] = "gpu01"
    assert detect_world(srun_env) == World(1, 2, 1, 2, "gpu01", 20000 + 2345)
    # an ordinary batch job (one task) and a plain process train alone
    assert detect_world({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}) == World()
    assert detect_world({}).size == 1
    with pytest.raises(ValueError, match="inconsistent launch"):
        detect_world({"RANK": "2", "WORLD_SIZE": "2"})


def test_more_processes_than_gpus_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"runs 4 processes on this node but it sees 2 GPU\(s\)"):
        local_device(torch.device("cuda"), World(0, 4, 0, 4), visible_gpus=2)
    assert local_device(torch.device("cuda"), World(1, 2, 1, 2), visible_gpus=2) == torch.device("cuda", 1)
    assert local_device(torch.device("cpu"), World(1, 2, 1, 2), visible_gpus=0) == torch.device("cpu")


def test_launch_must_match_the_gpus_setting_and_the_family(
    jet_files: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"gpus=2, but 1 training process\(es\) were started"):
        T.main(_argv(jet_files, tmp_path, {**TOY, "gpus": 2}))
    with pytest.raises(
        ValueError, match=r"'mdma-gan' does not train data-parallel \(gpus 2\); families that"
    ):
        split_settings("mdma-gan", {"gpus": 2})
    with pytest.raises(ValueError, match="gpus must be >= 1"):
        split_settings("flow-matching", {"gpus": 0})
    assert not (tmp_path / "model.pt").exists()


def test_shards_cover_the_batch_once_and_weights_add_up() -> None:
    parts = [list(range(7))[shard_rows(7, r, 3)] for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sum(shard_weight(len(p), 7, 3) for p in parts) == pytest.approx(1.0)
    assert shard_weight(5, 7, 1) is None  # one process: the loss is left untouched
