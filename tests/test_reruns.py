"""Incremental reruns: after a full run, a change reruns exactly the jobs it can affect.

One module-scoped workflow run on a temporary copy of the repository (tests/workflow_runner.py, i.e.
``snakemake.api``, each call in a fresh Python process so that ``pipelines`` and its code hashes come
from the copy, not from the checkout the tests import). The run uses the tiny configuration with one
data set given as user files (``source: files``, written from the embedded Pythia jets). Each case
first brings the workflow up to date, then makes one change, runs, and compares the set of rules whose
outputs were rewritten (read from file modification times) with the expected set.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_runner import REPO, STAGE_RULES, changed, copy_repository, output_mtimes

pytestmark = pytest.mark.slow

DATASET = "userjets"
MODEL = "tiny"

# Run the workflow through the API in a fresh interpreter; print the seconds run_workflow took and
# whether it imported torch (the workflow's own start-up must not: benchmarks/bench_workflow_overhead.py
# times it).
RUNNER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from workflow_runner import run_workflow
targets = tuple(sys.argv[4:])
start = time.perf_counter()
run_workflow(Path.cwd(), configfile=Path(sys.argv[2]), dryrun=sys.argv[3] == "dry", targets=targets)
print(json.dumps({"seconds": time.perf_counter() - start, "torch": "torch" in sys.modules}))
"""

ALL_STAGES = set(STAGE_RULES) - {"generate_showers", "generate_jets"}  # user files: nothing generated
#: the rules downstream of the evaluation (all import the report code)
REPORT_STAGES = {"metrics_table", "report", "compare"}


def rule_of(path: str) -> str | None:
    """The rule writing ``path`` (relative to the workdir), None for undeclared caches."""
    parts = Path(path).parts
    if parts[0] != "results" or parts[1] == "cache":
        return None
    rest = parts[2:]
    if rest[0] == "data":
        if rest[1].endswith(".summary.json"):
            return "validate_data"
        return "generate_jets" if parts[1] == "jets" else "generate_showers"
    if len(rest) == 1:
        return {"clouds.h5": "convert", "transforms.json": "fit_transforms", "comparison.html": "compare"}[
            rest[0]
        ]
    run_files = {
        "multiplicity.json": "train_multiplicity",
        "multiplicity.png": "train_multiplicity",
        "model.pt": "train",
        "training_curve.csv": "train",
        "training_summary.json": "train",
        "samples.h5": "sample",
        "timing.json": "sample",
        "report.html": "report",
    }
    if rest[1] in run_files:
        return run_files[rest[1]]
    if rest[1] == "evaluation" and rest[2].startswith("metrics.") and rest[2] != "metrics.json":
        return "metrics_table"
    return {"evaluation": "evaluate", "plots": "report"}[rest[1]]


def rules_rerun(files: set[str]) -> set[str]:
    return {rule for rule in map(rule_of, files) if rule is not None}


class Workdir:
    """A copy of the repository with its configuration; runs the workflow in a subprocess."""

    def __init__(self, root: Path, config: dict):
        self.root = root
        self.config_path = root / "rerun-config.yaml"
        self.write_config(config)

    def write_config(self, config: dict) -> None:
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def run(self, dryrun: bool = False, targets: tuple[str, ...] = ()) -> tuple[dict, str]:
        """{"seconds": spent in run_workflow, "torch": whether torch was imported} and the output."""
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(self.root)}
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                RUNNER,
                str(REPO / "tests"),
                str(self.config_path),
                "dry" if dryrun else "run",
                *targets,
            ],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert done.returncode == 0, f"workflow failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr

    def rerun_after(self, change) -> set[str]:
        """Bring the workflow up to date, apply ``change()``, run; the output files rewritten."""
        self.run()
        before = output_mtimes(self.root)
        change()
        self.run()
        return changed(before, output_mtimes(self.root))


def assert_trained_from_scratch(workdir: Workdir) -> None:
    """A rerun of ``train`` after a change upstream must not resume the old run's final checkpoint."""
    summary = json.loads((workdir.root / "results" / DATASET / MODEL / "training_summary.json").read_text())
    assert summary["resumed_from_step"] == 0, "train reran but continued from a stale checkpoint"
    assert (
        summary["steps_this_run"]
        == summary["steps"]
        == workdir.config["models"][MODEL]["training"]["max_steps"]
    )


def base_config(root: Path) -> dict:
    """tiny.yaml, one run on the user-file data set (two training steps are enough here)."""
    config = yaml.safe_load((root / "tests" / "config" / "tiny.yaml").read_text())
    jets = config["datasets"]["jets"]
    config["datasets"][DATASET] = {
        "kind": "jets",
        "geometry": jets["geometry"],
        "jet_type": jets["jet_type"],
        "source": {"files": {"train": "userdata/train.h5", "reference": "userdata/reference.h5"}},
    }
    config["models"][MODEL]["training"].update(max_steps=2, checkpoint_every=2)
    config["runs"] = [{"dataset": DATASET, "model": MODEL}]
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Workdir:
    """A fully run workflow on the user files (made by the embedded jet generator of the workflow)."""
    root = copy_repository(tmp_path_factory.mktemp("reruns"))
    wd = Workdir(root, base_config(root))
    wd.run(targets=("results/jets/data/train.h5", "results/jets/data/reference.h5"))
    (root / "userdata").mkdir()
    for role in ("train", "reference"):
        data = (root / "results" / "jets" / "data" / f"{role}.h5").read_bytes()
        (root / "userdata" / f"{role}.h5").write_bytes(data)
    wd.run()
    assert (root / "results" / DATASET / MODEL / "report.html").is_file()
    return wd


def test_nothing_reruns_without_a_change(workdir: Workdir):
    before = output_mtimes(workdir.root)
    info, log = workdir.run(dryrun=True)
    assert "Nothing to be done" in log, log[-3000:]
    assert not info["torch"], "the workflow imported torch to check its config (slow start)"
    workdir.run()
    assert changed(before, output_mtimes(workdir.root)) == set()


def test_report_setting_reruns_only_the_report(workdir: Workdir):
    def change() -> None:
        config = workdir.config
        config["report"]["settings"] = {**config["report"]["settings"], "title": "another title"}
        workdir.write_config(config)

    assert rules_rerun(workdir.rerun_after(change)) == {"report"}


def edit(root: Path, module: str) -> None:
    """A real code change of a module (a new module-level constant), as an edit would make it."""
    path = root / module
    path.write_text(path.read_text() + f"\n_EDITED_BY_TEST_{len(path.read_text())} = True\n")


def test_report_code_edit_reruns_only_the_report_stages(workdir: Workdir):
    files = workdir.rerun_after(lambda: edit(workdir.root, "pipelines/report/plots.py"))
    assert rules_rerun(files) == REPORT_STAGES


def test_training_hyperparameter_reruns_training_onwards(workdir: Workdir):
    def change() -> None:
        config = workdir.config
        config["models"][MODEL]["training"]["lr"] = 2e-4
        config["models"][MODEL]["architecture"]["hidden"] = 12
        workdir.write_config(config)

    assert rules_rerun(workdir.rerun_after(change)) == {"train", "sample", "evaluate"} | REPORT_STAGES
    assert_trained_from_scratch(workdir)


def test_pointcloud_code_edit_reruns_conversion_onwards(workdir: Workdir):
    clouds = workdir.root / "results" / DATASET / "clouds.h5"
    before = hashlib.sha256(clouds.read_bytes()).hexdigest()
    files = workdir.rerun_after(lambda: edit(workdir.root, "pipelines/pointcloud.py"))
    assert rules_rerun(files) == ALL_STAGES - {"validate_data"}
    # The edit does not change what the conversion writes (it is deterministic, byte for byte), and
    # the training code is untouched: the finished checkpoint matches inputs, settings and code, so
    # the rerun of ``train`` reuses it instead of spending the training budget again.
    assert hashlib.sha256(clouds.read_bytes()).hexdigest() == before
    summary = json.loads((workdir.root / "results" / DATASET / MODEL / "training_summary.json").read_text())
    max_steps = workdir.config["models"][MODEL]["training"]["max_steps"]
    assert (summary["resumed_from_step"], summary["steps_this_run"]) == (max_steps, 0)


def test_transforms_code_edit_reruns_fit_transforms_onwards(workdir: Workdir):
    files = workdir.rerun_after(lambda: edit(workdir.root, "pipelines/transforms.py"))
    assert rules_rerun(files) == {"fit_transforms", "train", "sample", "evaluate"} | REPORT_STAGES
    assert_trained_from_scratch(workdir)


def test_changed_input_file_reruns_everything_downstream(workdir: Workdir):
    from pipelines.io.jetnet import read_jetnet, write_jetnet

    path = workdir.root / "userdata" / "train.h5"

    def change() -> None:
        particles, jets = read_jetnet(path)
        write_jetnet(path, particles[:-5], jets[:-5])  # five jets fewer

    files = workdir.rerun_after(change)
    assert rules_rerun(files) == ALL_STAGES
    data = f"results/{DATASET}/data"
    assert f"{data}/train.summary.json" in files and f"{data}/reference.summary.json" not in files
    summary = json.loads((workdir.root / data / "train.summary.json").read_text())
    assert summary["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert_trained_from_scratch(workdir)
