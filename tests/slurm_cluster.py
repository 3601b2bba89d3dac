"""A real single-node SLURM cluster on this machine, for tests and benchmarks.

``start_cluster(root)`` installs Slurm from Debian packages when it is missing (root only), starts
munge (unless it already answers), ``slurmctld`` and ``slurmd`` with their configuration, state and
logs under ``root``, and waits until the node is idle. Clients find the configuration through
``SLURM_CONF`` and, while the cluster runs, a symbolic link /etc/slurm/slurm.conf (created only when
no such file exists, removed at the end): snakemake-executor-plugin-slurm-jobstep 0.6.1 removes every
SLURM_* variable except the job's identity before its nested ``srun``, so ``srun`` inside a job only
finds the default path. The node has a ``cpu`` partition (default) and a ``gpu`` partition
with one fake GPU (a character device standing in for /dev/nvidia0: Slurm schedules it and sets
CUDA_VISIBLE_DEVICES, the job still runs on the CPU). ``MinJobAge`` is large so that ``squeue`` keeps
finished jobs visible (there is no accounting database, so ``sacct`` knows nothing).
``SlurmCluster.stop()`` ends the daemons this module started, by their PID files.

The pytest fixture ``slurm_cluster`` (session scope) wraps this; it skips with the reason when
Slurm cannot be installed or started here. ``python tests/slurm_cluster.py`` starts a cluster by
hand and keeps it up until Enter is pressed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
NODE = "testnode"
CLUSTER = "testcluster"
MIN_JOB_AGE_S = 3600
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
REAL_MEMORY_MB = 64_000  # what the node advertises (config_overrides: not checked against the host)


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started on this machine (the reason is the message)."""


def _run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def ensure_installed() -> None:
    """Install the Debian packages of Slurm and munge when a daemon is missing (needs root + apt)."""
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmUnavailable("Slurm is not installed and cannot be installed (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
    ):
        done = _run(cmd, timeout=900, env=env)
        if done.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")


def munge_works() -> bool:
    """True when a munge daemon answers (``munge -n | unmunge``)."""
    try:
        cred = _run(["munge", "-n"], timeout=10)
        if cred.returncode != 0:
            return False
        return _run(["unmunge"], input=cred.stdout, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, cpus: int) -> str:
    """slurm.conf text for one node with ``cpus`` CPUs and one fake GPU, everything under ``root``."""
    host = socket.gethostname()
    return "\n".join(
        [
            f"ClusterName={CLUSTER}",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "AuthType=auth/munge",
            "SlurmUser=root",
            "SlurmdUser=root",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            f"MinJobAge={MIN_JOB_AGE_S}",
            "KillWait=5",
            "GresTypes=gpu",
            f"StateSaveLocation={root}/state",
            f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/slurmctld.pid",
            f"SlurmdPidFile={root}/slurmd.pid",
            f"SlurmctldLogFile={root}/slurmctld.log",
            f"SlurmdLogFile={root}/slurmd.log",
            f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} "
            f"RealMemory={REAL_MEMORY_MB} Gres=gpu:fake:1 State=UNKNOWN",
            f"PartitionName=cpu Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName=gpu Nodes={NODE} MaxTime=INFINITE State=UP",
            "",
        ]
    )


@dataclass
class SlurmCluster:
    """A running single-node cluster; ``env`` is what clients (sbatch, squeue, snakemake) need."""

    root: Path
    conf: Path
    started: list[Path] = field(default_factory=list)  # PID files of the daemons started here
    link: Path | None = None  # /etc/slurm/slurm.conf when this cluster created it

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, timeout: float = 60) -> str:
        """Run a Slurm client command against this cluster; its stdout (raises on failure)."""
        done = _run(list(cmd), timeout=timeout, env=self.env)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-N", "-n", NODE, "-o", "%T").strip().split("\n")[0]

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until the node is idle (no jobs left on it)."""
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            try:
                state = self.node_state()
            except RuntimeError as err:
                state = str(err)
            if state == "idle":
                return
            time.sleep(0.5)
        raise SlurmUnavailable(
            f"node {NODE} not idle after {timeout:.0f} s (state: {state}); "
            f"see {self.root}/slurmctld.log and slurmd.log"
        )

    def show_job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict of its Key=Value fields."""
        fields: dict[str, str] = {}
        for token in self.run("scontrol", "-o", "show", "job", job_id).split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        return fields

    def stop(self) -> None:
        """Terminate the daemons started by :func:`start_cluster` (by PID file), slurmd first."""
        for pidfile in reversed(self.started):
            try:
                pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.started.clear()
        if self.link is not None and self.link.is_symlink() and self.link.resolve() == self.conf:
            self.link.unlink()
        self.link = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as ended
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_for_file(path: Path, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return
        time.sleep(0.2)
    tail = log.read_text()[-1500:] if log.is_file() else "(no log)"
    raise SlurmUnavailable(f"{what} did not start within {timeout:.0f} s:\n{tail}")


def link_default_conf(conf: Path) -> Path:
    """Point the default /etc/slurm/slurm.conf at ``conf``; refuses to replace a real configuration."""
    link = DEFAULT_CONF
    if link.is_symlink() and not link.exists():
        link.unlink()  # left behind by a test cluster that was killed
    if link.exists() or link.is_symlink():
        raise SlurmUnavailable(f"{link} exists (a real Slurm configuration?); not replacing it")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(conf)
    return link


def start_munge(root: Path) -> Path | None:
    """Start munged unless one answers already; its PID file, or None if it was running before."""
    if munge_works():
        return None
    key = Path("/etc/munge/munge.key")
    if not key.is_file():
        if shutil.which("mungekey") is None:
            raise SlurmUnavailable(f"{key} is missing and mungekey is not installed")
        _run(["mungekey", "--create", "--keyfile", str(key)])
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    pidfile = run_dir / "munged.pid"
    done = _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--force"])
    if done.returncode != 0:
        raise SlurmUnavailable(f"munged failed to start: {done.stderr.strip()}")
    deadline = time.monotonic() + 15
    while not munge_works():
        if time.monotonic() > deadline:
            raise SlurmUnavailable("munged started but `munge -n | unmunge` does not succeed")
        time.sleep(0.2)
    return pidfile


def start_cluster(root: Path, cpus: int | None = None, timeout: float = 60) -> SlurmCluster:
    """Install (if needed) and start munge, slurmctld and slurmd under ``root``; wait for an idle node."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("starting slurmctld/slurmd as configured here needs root")
    ensure_installed()
    root = Path(root).resolve()
    for sub in ("state", "spool", "dev"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    fake_gpu = root / "dev" / "fake0"
    if not fake_gpu.exists():
        os.mknod(fake_gpu, 0o666 | 0o020000, os.makedev(1, 3))  # a character device like /dev/null
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, cpus or os.cpu_count() or 1))
    (root / "gres.conf").write_text(f"NodeName={NODE} Name=gpu Type=fake File={fake_gpu}\n")
    cluster = SlurmCluster(root=root, conf=conf)
    try:
        cluster.link = link_default_conf(conf)
        munge_pid = start_munge(root)
        if munge_pid is not None:
            cluster.started.append(munge_pid)
        for daemon, args, pidfile in (
            ("slurmctld", ["-i"], root / "slurmctld.pid"),
            ("slurmd", ["-N", NODE], root / "slurmd.pid"),
        ):
            log = root / f"{daemon}.log"
            done = _run([f"/usr/sbin/{daemon}", *args], env=cluster.env)
            if done.returncode != 0:
                raise SlurmUnavailable(f"{daemon} failed ({done.returncode}): {done.stderr.strip()}")
            cluster.started.append(pidfile)
            _wait_for_file(pidfile, timeout, daemon, log)
        cluster.wait_idle(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Body of the session fixture: a cluster for the tests, skipped with the reason if impossible."""
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except SlurmUnavailable as err:
        pytest.skip(f"no local SLURM cluster: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()


slurm_cluster = pytest.fixture(scope="session", name="slurm_cluster")(cluster_fixture)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="slurm-") as tmp:
        c = start_cluster(Path(tmp))
        print(f"cluster up: export SLURM_CONF={c.conf}")
        try:
            input("press Enter to stop it ")
        finally:
            c.stop()
