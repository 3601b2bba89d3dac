"""Stages end when the process that started them dies, so no orphan writes results.

A stage started by Snakemake runs as ``snakemake -> bash -c "..." -> python -m pipelines <stage>``.
If Snakemake is killed, the shell lives on, so on Linux a stage watches both:

- its parent: ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` (libc through ctypes) makes the kernel send SIGTERM
  when the parent dies; a parent that died before the call is caught by comparing ``getppid()`` with
  the parent seen before it;
- where the parent is a shell, the shell's parent: a daemon thread checks every
  :data:`POLL_SECONDS` that the shell still has it (a shell whose parent died is re-parented).

SIGTERM (from either, or from a user or a batch system) raises :class:`Terminated` in the main thread,
so the atomic writers (:mod:`pipelines.io.atomic`) remove their temporary files and no output is left
half-written. On other platforms (macOS has no parent-death signal) only the SIGTERM handler is
installed. ``PIPELINES_OUTLIVE_PARENT=1`` in the environment turns the watch off (for a stage run by
hand under ``nohup``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.5
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox"})
OPT_OUT = "PIPELINES_OUTLIVE_PARENT"


class Terminated(SystemExit):
    """Raised by the SIGTERM handler: the stage stops, ``finally`` blocks and context managers run."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def _on_sigterm(signum: int, frame: object) -> None:
    print(
        f"error: stopped by {signal.Signals(signum).name} (the workflow was stopped or its parent "
        "process died); outputs not finished were removed, nothing was left half-written",
        file=sys.stderr,
    )
    raise Terminated(signum)


def install_sigterm_handler() -> None:
    """SIGTERM raises :class:`Terminated` (exit status 143) instead of ending the process unwound."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def proc_parent(pid: int) -> int | None:
    """Parent PID of ``pid`` from ``/proc/<pid>/stat``, None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def proc_name(pid: int) -> str:
    """The command name of ``pid`` (``/proc/<pid>/comm``), "" if unknown."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def set_parent_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Ask the Linux kernel to send ``signum`` when the parent dies; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def _watch_grandparent(shell: int, grandparent: int) -> None:
    while proc_parent(shell) == grandparent:
        time.sleep(POLL_SECONDS)
    log.error("the process that started shell %d (PID %d) has ended: stopping", shell, grandparent)
    os.kill(os.getpid(), signal.SIGTERM)


def exit_with_parent(environ: Mapping[str, str] = os.environ) -> None:
    """Install the SIGTERM handler and, on Linux, the watch described in the module docstring."""
    install_sigterm_handler()
    if environ.get(OPT_OUT) == "1" or not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    if not set_parent_death_signal():
        return
    if os.getppid() != parent:  # the parent died before the kernel was asked to tell us
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if proc_name(parent) in SHELLS:
        grandparent = proc_parent(parent)
        if grandparent is not None and grandparent > 1:
            threading.Thread(
                target=_watch_grandparent, args=(parent, grandparent), name="lifeline", daemon=True
            ).start()
