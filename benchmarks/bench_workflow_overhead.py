"""Workflow overhead: Snakemake's own cost, apart from the stages' work.

Figures (each printed as one line):
  dryrun_default_s      dry run of the full default workflow (config.yaml) with no outputs yet
  noop_default_s        the same when every output is present and up to date (outputs are empty files
                        created in the DAG's order from ``snakemake --summary``: only the check is timed)
  jobs_default          number of jobs of the default workflow
  slurm_per_job_s       extra wall time per job when N trivial jobs in a chain go through sbatch on the
                        local SLURM cluster (tests/slurm_cluster.py, needs root) instead of running locally
Each workflow call runs in a fresh interpreter (as a user would run it); the time inside
``tests/workflow_runner.run_workflow`` is reported, i.e. without Python start-up.

    python benchmarks/bench_workflow_overhead.py [--repeats 3] [--slurm-jobs 4] [--no-slurm]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from workflow_runner import STAGE_RULES, copy_repository  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TIMED_RUN = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from workflow_runner import run_workflow
start = time.perf_counter()
run_workflow(Path.cwd(), dryrun=True)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def timed_dryrun(workdir: Path) -> tuple[float, str]:
    """Seconds of one dry run through the API in a fresh interpreter, and its log."""
    env = {**os.environ, "PYTHONPATH": str(workdir), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", TIMED_RUN, str(REPO / "tests")],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"], done.stderr


def fake_outputs(workdir: Path) -> None:
    """Create every output (``snakemake --summary``) as an empty file, upstream stages older."""
    summary = subprocess.run(
        [SNAKEMAKE, "--summary", "--cores", "1"],
        cwd=workdir,
        check=True,
        text=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(workdir)},
    ).stdout
    outputs = [line.split("\t")[:3] for line in summary.splitlines()[1:] if "\t" in line]
    now = time.time()
    for path, _, rule in outputs:
        age = len(STAGE_RULES) - STAGE_RULES.index(rule)
        target = workdir / path
        if rule == "report" and not path.endswith(".html"):
            target.mkdir(parents=True, exist_ok=True)  # the plots directory
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        os.utime(target, (now - age, now - age))


def workflow_figures(repeats: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-wf-") as tmp:
        workdir = copy_repository(Path(tmp))
        times = []
        for _ in range(repeats):
            seconds, log = timed_dryrun(workdir)
            times.append(seconds)
        n_jobs = len(re.findall(r"^(?:local)?rule \w+:", log, re.MULTILINE))
        print(f"jobs_default {n_jobs}")
        print(f"dryrun_default_s {statistics.median(times):.3f}  (median of {repeats}; {min(times):.3f} min)")
        fake_outputs(workdir)
        times = []
        for _ in range(repeats):
            seconds, log = timed_dryrun(workdir)
            if "Nothing to be done" not in log:
                raise RuntimeError(f"after --touch the workflow is not up to date:\n{log[-2000:]}")
            times.append(seconds)
        print(f"noop_default_s {statistics.median(times):.3f}  (median of {repeats}; {min(times):.3f} min)")


def chain_snakefile(n: int) -> str:
    """N trivial jobs, each needing the previous one (so SLURM latency adds up)."""
    rules = [
        f'rule all:\n    input: "step{n - 1}.txt"\n',
        'rule first:\n    output: "step0.txt"\n    shell: "echo 0 > {output}"\n',
    ]
    rules.append(
        'rule step:\n    input: lambda wc: f"step{int(wc.i) - 1}.txt"\n'
        '    output: "step{i,[1-9][0-9]*}.txt"\n'
        '    shell: "cat {input} > {output}; echo {wildcards.i} >> {output}"\n'
    )
    return "\n".join(rules)


def run_chain(workdir: Path, args: list[str], env: dict[str, str]) -> float:
    for f in workdir.glob("step*.txt"):
        f.unlink()
    start = time.perf_counter()
    done = subprocess.run([SNAKEMAKE, *args], cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds


def slurm_figures(n_jobs: int) -> None:
    from slurm_cluster import SlurmUnavailable, start_cluster

    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        root = Path(tmp)
        try:
            cluster = start_cluster(root / "cluster")
        except SlurmUnavailable as err:
            print(f"slurm_per_job_s skipped: {err}")
            return
        try:
            workdir = root / "wf"
            (workdir / "profiles").mkdir(parents=True)
            (workdir / "Snakefile").write_text(chain_snakefile(n_jobs))
            shutil.copytree(REPO / "profiles" / "slurm", workdir / "profiles" / "slurm")
            local = run_chain(workdir, ["--cores", "1", "--quiet"], cluster.env)
            flags = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2"]
            slurm = run_chain(workdir, ["--profile", "profiles/slurm", *flags, "--quiet"], cluster.env)
        finally:
            cluster.stop()
    print(f"local_chain_{n_jobs}_jobs_s {local:.2f}")
    print(f"slurm_chain_{n_jobs}_jobs_s {slurm:.2f}  (status checks via squeue, first after 2 s)")
    print(f"slurm_per_job_s {(slurm - local) / n_jobs:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="dry runs per figure (median reported)")
    parser.add_argument("--slurm-jobs", type=int, default=4, help="length of the chain of trivial SLURM jobs")
    parser.add_argument("--no-slurm", action="store_true", help="skip the SLURM figure")
    args = parser.parse_args()
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    workflow_figures(args.repeats)
    if not args.no_slurm:
        slurm_figures(args.slurm_jobs)


if __name__ == "__main__":
    main()
