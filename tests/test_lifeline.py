"""Stages end when the process that started them dies (pipelines.lifeline), leaving no output.

Each test builds a process tree: a launcher python (standing in for Snakemake) that starts the stage
through ``pipelines.cli.entry`` (what ``python -m pipelines`` runs), directly or through
``bash -c "set -euo pipefail; ..."`` as Snakemake's shell rules do; the launcher is then SIGKILLed.
The stage is :mod:`tests.slow_stage`, registered in the child only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import lifeline

REPO = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")

STAGE = (
    "import sys; from pipelines import cli; "
    "cli.STAGES['wait'] = cli.Stage('tests.slow_stage', 'writes part of its output, then waits'); "
    "sys.argv = ['pipelines', 'wait', sys.argv[1], sys.argv[2]]; cli.entry()"
)


def _launcher(through_shell: bool) -> str:
    """Python source of the launcher: starts the stage, prints its shell-or-stage PID, then sleeps."""
    stage = [sys.executable, "-c", STAGE]
    if through_shell:
        import shlex

        argv = ["bash", "-c", "set -euo pipefail; " + shlex.join(stage) + ' "$0" "$1" 2> "$2"']
    else:
        argv = stage
    return (
        "import subprocess, sys, time\n"
        f"argv = {argv!r} + sys.argv[1:3] + sys.argv[3:]\n"
        "p = subprocess.Popen(argv, stderr=open(sys.argv[3], 'w'))\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(300)\n"
    )


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stage_pid(first_child: int, through_shell: bool) -> int:
    if not through_shell:
        return first_child
    children = Path(f"/proc/{first_child}/task/{first_child}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _kill_launcher_and_watch(tmp_path: Path, through_shell: bool) -> tuple[Path, str]:
    out, ready, err = tmp_path / "out" / "result.json", tmp_path / "ready", tmp_path / "stage.err"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop(lifeline.OPT_OUT, None)
    launcher = subprocess.Popen(
        [sys.executable, "-c", _launcher(through_shell), str(out), str(ready), str(err)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        first_child = int(launcher.stdout.readline())
        assert _wait_for(ready.exists, 60), "the stage did not start"
        stage = _stage_pid(first_child, through_shell)
        assert _alive(stage)
        assert [p.name for p in out.parent.iterdir()] != [], "the stage's temporary file exists"
        launcher.kill()
        launcher.wait()
        ended = _wait_for(lambda: not _alive(stage), 5)
        if not ended:
            os.kill(stage, signal.SIGKILL)
        assert ended, "the stage outlived its launcher by more than 5 s"
    finally:
        launcher.kill()
        launcher.wait()
        launcher.stdout.close()
    return out, err.read_text()


@linux_only
def test_stage_ends_with_its_parent_and_leaves_no_output(tmp_path: Path) -> None:
    out, stderr = _kill_launcher_and_watch(tmp_path, through_shell=False)
    assert list(out.parent.iterdir()) == []  # neither the output nor its temporary file
    assert "stopped by SIGTERM" in stderr and "nothing was left half-written" in stderr


@linux_only
def test_stage_under_a_shell_ends_when_the_shells_parent_dies(tmp_path: Path) -> None:
    out, stderr = _kill_launcher_and_watch(tmp_path, through_shell=True)
    assert list(out.parent.iterdir()) == []
    assert "stopped by SIGTERM" in stderr


def test_sigterm_raises_terminated_so_context_managers_clean_up(tmp_path: Path) -> None:
    from pipelines.io.atomic import atomic_path

    previous = signal.getsignal(signal.SIGTERM)
    lifeline.install_sigterm_handler()
    try:
        with pytest.raises(lifeline.Terminated) as caught, atomic_path(tmp_path / "x.h5") as tmp:
            tmp.write_text("partial")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert caught.value.code == 143
    assert list(tmp_path.iterdir()) == []


@linux_only
def test_proc_readers_follow_this_process() -> None:
    assert lifeline.proc_parent(os.getpid()) == os.getppid()
    assert lifeline.proc_name(os.getpid()) != ""
    assert lifeline.proc_parent(2**22 + 12345) is None  # above pid_max: no such process


def test_opt_out_and_other_platforms_install_only_the_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(lifeline, "set_parent_death_signal", lambda: calls.append("prctl") or True)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        lifeline.exit_with_parent({lifeline.OPT_OUT: "1"})
        assert signal.getsignal(signal.SIGTERM) is lifeline._on_sigterm
        monkeypatch.setattr(sys, "platform", "darwin")
        lifeline.exit_with_parent({})
        assert calls == []
    finally:
        signal.signal(signal.SIGTERM, previous)
