"""The workflow as a whole: config validation, a dry run of the default, a real run of a tiny config."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib

import h5py
import numpy as np
import pytest
import yaml

from pipelines.geometry import load_geometry
from pipelines.io.calochallenge import read_calochallenge
from pipelines.io.jetnet import read_jetnet
from tests.workflow_runner import REPO, STAGE_RULES, copy_repository, run_workflow

TINY = REPO / "tests" / "config" / "tiny.yaml"


def _snakemake(workdir, *args) -> subprocess.CompletedProcess:
    exe = shutil.which("snakemake", path=str(REPO / ".venv" / "bin")) or shutil.which("snakemake")
    cmd = [exe] if exe else [sys.executable, "-m", "snakemake"]
    return subprocess.run([*cmd, *args], cwd=workdir, capture_output=True, text=True)


def test_default_config_dry_run_plans_every_stage(tmp_path):
    work = copy_repository(tmp_path)
    res = _snakemake(work, "-n", "--cores", "2")
    assert res.returncode == 0, res.stderr
    for rule in STAGE_RULES:
        assert rule in res.stdout


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(seed="one"), 'config.yaml: seed: "one" is not of type integer'),
        (lambda c: c.update(colour="blue"), "unknown key 'colour'"),
        (lambda c: c["models"]["flow"]["training"].update(max_step=3), "max_step"),
        (lambda c: c["models"]["flow"].update(family="vae"), '"vae" is not allowed; allowed values: '),
        (
            lambda c: c["models"]["flow"]["architecture"].update(critic_hidden=3),
            "takes no settings ['critic_hidden']",
        ),
        (lambda c: c["models"]["flow"]["architecture"].update(hidden="wide"), "hidden"),
        (lambda c: c["runs"].append({"dataset": "jets-top30", "model": "factorised"}), "does not model jets"),
        (
            lambda c: (
                c["models"].update(mp={"family": "mpgan"}),
                c["runs"].append({"dataset": "calo-ds2", "model": "mp"}),
            ),
            "family 'mpgan' does not model showers",
        ),
        (
            lambda c: c["datasets"]["calo-ds2"].update(geometry=2),
            'config.yaml: datasets.calo-ds2.geometry: 2 is not allowed; allowed values: "2", "3", '
            '"1-photons", "1-pions" (write "2"',
        ),
        (
            lambda c: c["report"]["settings"].update(ratio_range=[-1, 2]),
            "config.yaml: report.settings: report setting ratio_range must be [low, high]",
        ),
        (lambda c: c["runs"].append({"dataset": "nope", "model": "flow"}), "unknown data set"),
        (lambda c: c["preprocessing"].update(split=[0.5, 0.2, 0.2]), "must sum to 1"),
        (
            lambda c: (
                c["datasets"]["calo-ds2"].update(geometry="1-photons"),
                c["models"]["factorised"].update(family="voxel-grid", architecture={}),
            ),
            "family 'voxel-grid' models the regular grids of datasets 2 and 3, not the per-layer binning of "
            "dataset 1-photons",
        ),
        (
            lambda c: (
                c["datasets"]["calo-ds2"].update(geometry="1-photons"),
                c["models"]["factorised"].update(architecture={"placement": "independent"}),
            ),
            "the per-layer binning of dataset 1-photons needs placement 'pareto'",
        ),
        (
            lambda c: (
                c["datasets"]["calo-ds2"].update(geometry="1-photons"),
                c.update(export={"enabled": True}),
            ),
            "the ONNX export takes the regular grids of datasets 2 and 3, not the per-layer binning of "
            "dataset 1-photons",
        ),
        (
            lambda c: c["models"]["flow"].update(family="mdma-gan", training={"gpus": 2}),
            "model 'flow': family 'mdma-gan' does not train data-parallel (gpus 2)",
        ),
        (
            lambda c: (
                c["datasets"]["jets-top30"].update(jet_type=["q", "t"]),
                c["models"]["flow"].update(family="mpgan", architecture={}, training={"max_steps": 10}),
            ),
            "family 'mpgan' models one jet type at a time, not the jet types ['q', 't']",
        ),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, edit, message):
    work = copy_repository(tmp_path)
    config = yaml.safe_load((work / "config.yaml").read_text())
    edit(config)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    res = _snakemake(work, "-n", "--cores", "1")
    assert res.returncode != 0
    assert message in res.stdout + res.stderr
    assert "not valid under any of the given schemas" not in res.stdout + res.stderr


def test_own_data_via_configfile_replaces_the_embedded_source(tmp_path):
    """The README's route: a config file of one's own with a `files` source, merged over config.yaml."""
    work = copy_repository(tmp_path / "work")
    for role in ("train", "reference"):
        (tmp_path / f"{role}.h5").write_bytes(b"")  # a dry run only needs the files to exist
    own = {
        "datasets": {
            "calo-ds2": {
                "kind": "showers",
                "geometry": "2",
                "source": {
                    "files": {
                        "train": str(tmp_path / "train.h5"),
                        "reference": str(tmp_path / "reference.h5"),
                    }
                },
            }
        }
    }
    (work / "mine.yaml").write_text(yaml.safe_dump(own))
    res = _snakemake(work, "-n", "-p", "--cores", "1", "--configfile", "mine.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "generate_showers" not in res.stdout and "generate_jets" in res.stdout  # jets stay embedded
    assert f"--input={tmp_path / 'train.h5'}" in res.stdout


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = copy_repository(tmp_path_factory.mktemp("tiny"))
    run_workflow(work, configfile=work / "tests" / "config" / "tiny.yaml")
    return work


@pytest.mark.slow
def test_tiny_run_produces_valid_outputs(tiny_run):
    calo = tiny_run / "results" / "calo" / "tiny-factorised"
    energies, showers = read_calochallenge(calo / "samples.h5", load_geometry("2"))
    assert showers.shape == (60, 6480) and np.all(showers >= 0)
    particles, jets = read_jetnet(tiny_run / "results" / "jets" / "tiny" / "samples.h5")
    assert particles.shape == (60, 30, 4)
    for run in ("calo/tiny-factorised", "jets/tiny"):
        out = tiny_run / "results" / run
        metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
        assert set(metrics["rows"]) == {"model", "real_vs_real"}
        html = (out / "report.html").read_text()
        assert "real" in html and html.count("<img") >= 5
        assert any((out / "plots").glob("*.png"))
        assert (out / "training_summary.json").exists()
    with h5py.File(tiny_run / "results" / "calo" / "clouds.h5") as f:
        assert f["split"].shape == (200,)


@pytest.mark.slow
def test_tiny_run_is_reproducible_and_up_to_date(tiny_run):
    """A second run does nothing; a forced rerun of sampling reproduces the same file."""
    samples = tiny_run / "results" / "calo" / "tiny-factorised" / "samples.h5"
    before = samples.stat().st_mtime_ns
    first = read_calochallenge(samples, load_geometry("2"))[1]
    res = _snakemake(tiny_run, "-n", "--cores", "1", "--configfile", "tests/config/tiny.yaml")
    assert "Nothing to be done" in res.stdout + res.stderr
    res = _snakemake(
        tiny_run,
        "--cores",
        "2",
        "--configfile",
        "tests/config/tiny.yaml",
        "--forcerun",
        "sample",
        "--until",
        "sample",
    )
    assert res.returncode == 0, res.stderr
    assert samples.stat().st_mtime_ns != before
    np.testing.assert_array_equal(read_calochallenge(samples, load_geometry("2"))[1], first)


def test_mpgan_config_adds_its_run_beside_the_default_runs(tmp_path):
    """config/mpgan.yaml keeps the default runs and adds MPGAN on the embedded top jets."""
    work = copy_repository(tmp_path)
    shutil.copytree(REPO / "config", work / "config")
    res = _snakemake(work, "-n", "-p", "--cores", "2", "--configfile", "config/mpgan.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    for run in ("calo-ds2/factorised", "jets-top30/flow", "jets-top30/mpgan"):
        assert f"results/{run}/report.html" in res.stdout
    assert "--family mpgan" in res.stdout and "results/jets-top30/comparison.html" in res.stdout


def test_full_config_plans_a_run_on_real_files(tmp_path):
    """config/full.yaml (published model size, real files) validates and plans every stage."""
    work = copy_repository(tmp_path)
    shutil.copytree(REPO / "config", work / "config")
    full = yaml.safe_load((work / "config" / "full.yaml").read_text())
    for entry in full["datasets"].values():
        for role in ("train", "reference"):
            path = tmp_path / f"{entry['kind']}_{role}.h5"
            path.write_bytes(b"")
            entry["source"]["files"][role] = str(path)
    (work / "config" / "full.yaml").write_text(yaml.safe_dump(full))
    res = _snakemake(work, "-n", "-p", "--cores", "2", "--configfile", "config/full.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "generate_showers" not in res.stdout and "generate_jets" not in res.stdout
    for rule in ("validate_data", "convert", "train", "sample", "evaluate", "report"):
        assert rule in res.stdout
    assert "--real-data" in res.stdout  # published CaloChallenge rows shown for real files


def test_dataset1_config_plans_embedded_photons_with_the_factorised_family(tmp_path):
    """config/dataset1.yaml: GFlash photons in the dataset-1 photon geometry, the factorised family."""
    work = copy_repository(tmp_path)
    shutil.copytree(REPO / "config", work / "config")
    res = _snakemake(work, "-n", "-p", "--cores", "2", "--configfile", "config/dataset1.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "generate-showers --dataset 1-photons" in res.stdout
    assert "--family factorised --dataset 1-photons" in res.stdout
    assert "rule train_multiplicity" not in res.stdout and "rule export" not in res.stdout
    assert "calo-ds2" not in res.stdout and "--real-data" not in res.stdout


def test_ddp_config_asks_for_two_gpus_and_starts_two_processes(tmp_path):
    """config/ddp.yaml: the train job requests gpu=2 and runs the stage under torchrun with 2 processes."""
    work = copy_repository(tmp_path)
    shutil.copytree(REPO / "config", work / "config")
    res = _snakemake(work, "-n", "-p", "--cores", "2", "--configfile", "config/ddp.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    train = res.stdout[res.stdout.index("rule train:") :].split("\n\n")[0]
    assert "gpu=2" in train and "mem_mb=16000" in train, train  # 8 GB per process
    launch = "python -m torch.distributed.run --standalone --nproc-per-node 2 -m pipelines train --clouds"
    assert launch in res.stdout
    assert "results/jets-top30/flow-ddp/model.pt" in train


@pytest.mark.slow
def test_snakemake_report_collects_the_plots(tiny_run):
    res = _snakemake(tiny_run, "--configfile", "tests/config/tiny.yaml", "--report", "workflow_report.html")
    assert res.returncode == 0, res.stderr
    page = (tiny_run / "workflow_report.html").read_text()
    assert "layer_profile" in page and "relative_mass" in page


def test_snakemake_lint_finds_nothing(tmp_path):
    """`snakemake --lint`: every rule names its environment, no shell command reads a global."""
    work = copy_repository(tmp_path)
    res = _snakemake(work, "--lint")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr


def _requirements(lines: list[str]) -> dict[str, str]:
    """Requirement strings by package name (PEP 508 names, without extras)."""
    return {re.split(r"[<>=!~ \[;]", line, maxsplit=1)[0].lower(): line.replace(" ", "") for line in lines}


def test_dependency_pins_agree_across_pyproject_conda_env_and_slurm_profile():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = _requirements(project)
    env = yaml.safe_load((REPO / "workflow" / "envs" / "pipelines.yaml").read_text())
    (pip,) = [entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict)]
    assert _requirements(pip) == pins
    python = [entry for entry in env["dependencies"] if isinstance(entry, str) and entry.startswith("python")]
    assert python == ["python=3.11"]
    plugin = pins["snakemake-executor-plugin-slurm"]
    assert plugin.startswith("snakemake-executor-plugin-slurm>=2.8")
    profile = (REPO / "profiles" / "slurm" / "config.yaml").read_text()
    assert re.findall(r"snakemake-executor-plugin-slurm\S*", profile) == [plugin]
