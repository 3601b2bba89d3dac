"""The workflow through SLURM: the project's profile on a real single-node cluster (tests/slurm_cluster.py).

(a) the tiny workflow via ``snakemake --profile profiles/slurm``: every job went through sbatch, the
    GPU rules asked for a GPU on the gpu partition, and the outputs equal those of a local run with
    the same configuration (bit for bit, measured wall times aside);
(b) a training job whose process is killed after its first checkpoint is retried by Snakemake
    (attempt 2, more memory) and resumes from the checkpoint instead of starting over.
The only test-only settings are the status command (this cluster has no accounting database, so
``squeue`` instead of ``sacct``) and a short first status check.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (session fixture)
from workflow_runner import STAGE_RULES, copy_repository

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = "tests/config/tiny.yaml"
CLUSTER_FLAGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2")
GPU_RULES = {"train", "sample"}
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# Measured quantities: wall times and throughputs differ between any two runs.
VOLATILE_KEYS = {"elapsed_s", "wall_time_s", "total_train_time_s", "showers_per_s", "steps_per_s"}
# The pages show measured training minutes and the time they were made.
NOT_COMPARED = ("timing.json", "report.html", "comparison.html", ".png", ".snakemake_timestamp")


def snakemake(
    workdir: Path, args: list[str], env: dict[str, str], log: Path, timeout: float = 1500, on_start=None
) -> str:
    """Run the snakemake CLI in ``workdir``; its combined output (raises with the tail if it fails)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [SNAKEMAKE, *args], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
        if on_start is not None:
            on_start(proc)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(60)
            raise
    text = log.read_text()
    assert rc == 0, f"snakemake {' '.join(args)} failed ({rc}):\n{text[-6000:]}"
    return text


def submissions(log_text: str) -> list[tuple[str, str]]:
    """(SLURM job id, rule) of every sbatch submission in a snakemake log, in order."""
    found = []
    for job_id, path in SUBMITTED.findall(log_text):
        rule = re.search(r"slurm_logs/rule_([A-Za-z0-9_]+)/", path)
        assert rule, f"unexpected SLURM log path {path}"
        found.append((job_id, rule.group(1)))
    return found


def slurm_env(cluster: SlurmCluster) -> dict[str, str]:
    return {**cluster.env, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def runs(slurm_cluster: SlurmCluster, tmp_path_factory):  # noqa: F811
    """The tiny workflow through SLURM and, at the same time, locally: (slurm dir, local dir, log)."""
    on_slurm = copy_repository(tmp_path_factory.mktemp("on_slurm"))
    local = copy_repository(tmp_path_factory.mktemp("local"))
    local_log: dict[str, object] = {}

    def run_local() -> None:
        try:
            snakemake(
                local,
                ["--cores", "2", "--configfile", TINY],
                {**os.environ, "OMP_NUM_THREADS": "1"},
                local / "snakemake.out",
            )
        except BaseException as err:  # reported by the test
            local_log["error"] = err

    thread = threading.Thread(target=run_local)
    thread.start()
    try:
        text = snakemake(
            on_slurm,
            ["--profile", "profiles/slurm", *CLUSTER_FLAGS, "--configfile", TINY],
            slurm_env(slurm_cluster),
            on_slurm / "snakemake.out",
        )
    finally:
        thread.join()
    if "error" in local_log:
        raise local_log["error"]  # type: ignore[misc]
    return on_slurm, local, text


def test_every_job_went_through_sbatch(runs, slurm_cluster: SlurmCluster):  # noqa: F811
    workdir, _, text = runs
    jobs = submissions(text)
    rules = {rule for _, rule in jobs}
    assert rules == set(STAGE_RULES)
    # per data set: 2 generate, 2 validate, then 7 stages for the factorised showers (no separate
    # multiplicity model) and 8 for the jets (each with its metrics table), and one comparison page
    assert len(jobs) == 2 * (2 + 2) + (7 + 1) + (8 + 1)
    for job_id, rule in jobs:
        info = slurm_cluster.show_job(job_id)
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (rule, info)
        assert Path(info["WorkDir"]).resolve() == workdir.resolve()
        assert info["Account"].lower() == "change_me"  # the profile's placeholder reached sbatch
        logs = list((workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob(f"{job_id}.log"))
        assert len(logs) == 1 and "Finished jobid" in logs[0].read_text(), (rule, job_id)
        if rule in GPU_RULES:
            assert info["Partition"] == "gpu"
            assert info.get("TresPerJob") == "gres:gpu:1", info  # sbatch --gpus=1
            # the rules' threads (1: see train.smk), 8000 MB * attempt
            assert info["NumCPUs"] == "1" and info["MinMemoryNode"] == "8000M"
        else:
            assert info["Partition"] == "cpu"
            assert "gpu" not in info.get("TRES", "") + info.get("TresPerJob", ""), info
    squeue = slurm_cluster.run("squeue", "-h", "-t", "all", "-o", "%i %T")
    known = dict(line.split() for line in squeue.splitlines())
    assert all(known.get(job_id) == "COMPLETED" for job_id, _ in jobs)


def test_gpu_jobs_saw_the_gpu(runs):
    """Slurm gave the GPU rules CUDA_VISIBLE_DEVICES=0; the fake device made training fall back to CPU."""
    workdir, _, _ = runs
    for run in ("calo/tiny-factorised", "jets/tiny"):
        log = (workdir / "logs" / run / "train.log").read_text()
        assert "no usable CUDA device (CUDA_VISIBLE_DEVICES=0): running on CPU" in log


def read_any(path: Path):
    """Comparable content of one output file."""
    if path.suffix == ".h5":
        content = {}
        with h5py.File(path, "r") as f:
            content["/"] = dict(f.attrs)
            f.visititems(
                lambda name, obj: content.__setitem__(
                    name, (obj[()] if isinstance(obj, h5py.Dataset) else None, dict(obj.attrs))
                )
            )
        return content
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    if path.suffix == ".pt":
        return torch.load(path, map_location="cpu", weights_only=True)
    if path.suffix == ".json":
        return drop_volatile(json.loads(path.read_text()))
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return [drop_volatile(row) for row in csv.DictReader(f)]
    return path.read_bytes()


def drop_volatile(value):
    if isinstance(value, dict):
        return {k: drop_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [drop_volatile(v) for v in value]
    return value


def differences(a, b, where: str) -> list[str]:
    """Places where two loaded outputs differ (arrays and tensors compared exactly)."""
    if isinstance(a, torch.Tensor):
        a = a.numpy()
    if isinstance(b, torch.Tensor):
        b = b.numpy()
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a.keys() ^ b.keys())} only on one side"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return [f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"]
        if a.dtype.kind in "fc":
            if not np.array_equal(a, b, equal_nan=True):
                return [f"{where}: max |diff| {np.nanmax(np.abs(a - b))}"]
            return []
        return [] if np.array_equal(a, b) else [f"{where}: arrays differ"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def test_outputs_equal_a_local_run(runs):
    on_slurm, local, _ = runs
    files = sorted(p.relative_to(local) for p in (local / "results").rglob("*") if p.is_file())
    assert files, "the local run wrote nothing"
    slurm_files = sorted(p.relative_to(on_slurm) for p in (on_slurm / "results").rglob("*") if p.is_file())
    assert slurm_files == files
    compared = [f for f in files if not str(f).endswith(NOT_COMPARED)]
    assert {f.name for f in compared} >= {"samples.h5", "metrics.json", "histograms.npz", "model.pt"}
    problems = [d for f in compared for d in differences(read_any(on_slurm / f), read_any(local / f), str(f))]
    assert not problems, "SLURM and local outputs differ:\n" + "\n".join(problems[:40])


def train_process(workdir: Path, checkpoints: str) -> int | None:
    """PID of the ``pipelines train`` process of this workdir writing to ``checkpoints``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if (
            Path(cwd) == workdir.resolve()
            and args[1:4] == ["-m", "pipelines", "train"]
            and checkpoints in args
        ):
            return int(proc.name)
    return None


def test_killed_training_resumes_from_its_checkpoint(runs, slurm_cluster: SlurmCluster):  # noqa: F811
    """SIGKILL the training process after a checkpoint; the retried SLURM job continues from it."""
    workdir, _, _ = runs
    tiny = yaml.safe_load((workdir / TINY).read_text())
    model = dict(tiny["models"]["tiny"])
    model["training"] = {**model["training"], "max_steps": 10, "checkpoint_every": 2, "keep_checkpoints": 10}
    overlay = workdir / "kill.yaml"
    runs = [{"dataset": "jets", "model": "killed"}]
    overlay.write_text(yaml.safe_dump({"models": {"killed": model}, "runs": runs}))
    checkpoints = "checkpoints/jets/killed"
    killed: dict[str, object] = {}

    def killer(proc: subprocess.Popen) -> None:
        def watch() -> None:
            deadline = time.monotonic() + 900
            while proc.poll() is None and time.monotonic() < deadline:
                ckpts = sorted((workdir / checkpoints).glob("ckpt-*.pt"))
                pid = train_process(workdir, checkpoints) if ckpts else None
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    killed.update(pid=pid, checkpoints=[p.name for p in ckpts])
                    return
                time.sleep(0.2)

        threading.Thread(target=watch, daemon=True).start()

    args = [
        "--profile",
        "profiles/slurm",
        *CLUSTER_FLAGS,
        "--configfile",
        TINY,
        "kill.yaml",
        "--",
        "results/jets/killed/training_summary.json",
    ]
    text = snakemake(workdir, args, slurm_env(slurm_cluster), workdir / "kill.out", on_start=killer)
    assert "pid" in killed, "training finished before a checkpoint could be seen"
    first_step = int(killed["checkpoints"][0][5:14])
    assert first_step > 0

    train_jobs = [job_id for job_id, rule in submissions(text) if rule == "train"]
    assert len(train_jobs) == 2, text[-4000:]
    first, retry = (slurm_cluster.show_job(j) for j in train_jobs)
    assert first["JobState"] == "FAILED" and first["ExitCode"] != "0:0"
    assert retry["JobState"] == "COMPLETED" and retry["ExitCode"] == "0:0"
    assert (first["MinMemoryNode"], retry["MinMemoryNode"]) == ("8000M", "16000M")  # 8000 * attempt
    assert (first["TimeLimit"], retry["TimeLimit"]) == ("02:00:00", "04:00:00")  # 120 min * attempt

    log = (workdir / "logs" / "jets" / "killed" / "train.log").read_text()
    resumed = re.search(r"resuming from (\S+) \(step (\d+)\)", log)
    assert resumed, log[-3000:]
    step = int(resumed.group(2))
    assert step >= first_step
    summary = json.loads((workdir / "results" / "jets" / "killed" / "training_summary.json").read_text())
    assert summary["resumed_from_step"] == step
    assert summary["steps"] == 10 and summary["steps_this_run"] == 10 - step
    with open(workdir / "results" / "jets" / "killed" / "training_curve.csv", newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    # the curve of the killed attempt continues, not restarted: a row per log (every 2 steps) or
    # validation (every 3, and at the end) step
    assert steps == [2, 3, 4, 6, 8, 9, 10]


def test_two_task_job_trains_data_parallel_like_one_process(slurm_cluster: SlurmCluster, tmp_path: Path):  # noqa: F811
    """One sbatch job with 2 tasks: srun starts the training stage twice (gloo on CPU, the launch read
    from SLURM's variables); rank 0 writes the outputs, equal within float tolerance to one process."""
    from test_distributed import FLOW, assert_close, weights
    from test_train import _argv, _jet_clouds

    from pipelines import train as T
    from pipelines.io.clouds import write_clouds
    from pipelines.transforms import jet_transform, save_transform

    clouds = _jet_clouds()
    write_clouds(tmp_path / "clouds.h5", clouds)
    save_transform(tmp_path / "transforms.json", jet_transform().fit(clouds.points.astype(np.float64)))
    files = {"clouds": tmp_path / "clouds.h5", "transforms": tmp_path / "transforms.json"}
    assert T.main(_argv(files, tmp_path / "one", FLOW, family="flow-matching")) == 0
    argv = _argv(files, tmp_path / "two", {**FLOW, "gpus": 2}, family="flow-matching")
    script = tmp_path / "train.sh"
    script.write_text(
        "#!/bin/bash\n"
        "export MASTER_ADDR=127.0.0.1  # this test node's name does not resolve\n"
        f"srun {sys.executable} -m pipelines train {shlex.join(argv)}\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**slurm_env(slurm_cluster), "PYTHONPATH": root}
    done = subprocess.run(
        ["sbatch", "--parsable", "--wait", "--ntasks", "2", "--cpus-per-task", "1", "--mem", "4000",
         "--partition", "cpu", "--output", str(tmp_path / "job.log"), "--chdir", root, str(script)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = (tmp_path / "job.log").read_text() if (tmp_path / "job.log").exists() else ""
    assert done.returncode == 0, done.stderr + log[-4000:]
    info = slurm_cluster.show_job(done.stdout.strip().split(";")[0])
    assert info["JobState"] == "COMPLETED" and info["NumTasks"] == "2", info
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert (summary["world_size"], summary["steps"]) == (2, FLOW["max_steps"])
    assert_close(weights(tmp_path / "one"), weights(tmp_path / "two"), atol=3e-5)
