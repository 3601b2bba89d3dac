"""Run the workflow through ``snakemake.api`` on a temporary copy of the repository.

The API applies no profile and chdirs into the working directory, so tests work on a copy and
pass the settings themselves. Which jobs ran is read from the outputs' modification times.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from snakemake.api import (
    ConfigSettings,
    DAGSettings,
    ExecutionSettings,
    OutputSettings,
    ResourceSettings,
    SnakemakeApi,
)
from snakemake.settings.enums import Quietness

REPO = Path(__file__).resolve().parents[1]
#: Every rule of the workflow that writes files, in the order data flows through them.
STAGE_RULES = (
    "generate_showers",
    "generate_jets",
    "validate_data",
    "convert",
    "fit_transforms",
    "train_multiplicity",
    "train",
    "sample",
    "evaluate",
    "metrics_table",
    "report",
    "compare",
)
COPIED = ("Snakefile", "config.yaml", "workflow", "pipelines", "profiles", "tests/config")


def copy_repository(dst: Path) -> Path:
    """Copy what the workflow needs into ``dst`` and return it."""
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    return dst


def run_workflow(
    workdir: Path,
    configfile: Path | None = None,
    dryrun: bool = False,
    cores: int = 2,
    targets: tuple[str, ...] = (),
) -> None:
    """Run (or dry-run) the workflow in ``workdir``; raises if a job fails."""
    configfiles = [configfile] if configfile else []
    with SnakemakeApi(
        OutputSettings(dryrun=dryrun, quiet={Quietness.PROGRESS}, show_failed_logs=True)
    ) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=cores),
            config_settings=ConfigSettings(configfiles=configfiles),
            snakefile=workdir / "Snakefile",
            workdir=workdir,
        )
        dag = workflow.dag(dag_settings=DAGSettings(targets=frozenset(targets)))
        dag.execute_workflow(
            executor="dryrun" if dryrun else "local",
            execution_settings=ExecutionSettings(latency_wait=1),
        )


def output_mtimes(workdir: Path) -> dict[str, int]:
    """Modification time (ns) of every file under results/, keyed by relative path."""
    results = workdir / "results"
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}


def changed(before: dict[str, int], after: dict[str, int]) -> set[str]:
    """Files created or rewritten between two snapshots."""
    return {path for path, mtime in after.items() if before.get(path) != mtime}
