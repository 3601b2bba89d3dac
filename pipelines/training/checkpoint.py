"""Resumable training state on disk: RNG snapshots, atomic checkpoint files, resume checks.

A checkpoint ``ckpt-<step>.pt`` holds only tensors and plain values (loadable with
``torch.load(weights_only=True)``). It is resumed only when it was written for the same family,
settings (apart from budget and bookkeeping keys), model config and inputs (content hashes and
code version): anything else would silently continue a different experiment.

Nothing valid is lost: a checkpoint counts (for resuming and for pruning) only when it loads and
verifies (format and step); pruning deletes only such files, never the newest valid one or the one
just written, and never because of a file it cannot read; stale checkpoints are moved aside into a
dated folder rather than deleted; and one trainer at a time holds the directory (an OS file lock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import random
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.io.atomic import atomic_path
from pipelines.io.errors import BusyError

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2
_CKPT_RE = re.compile(r"^ckpt-(\d{9})\.pt$")
#: the lock file of a checkpoint directory (the OS lock on it matters, not its existence)
LOCK_NAME = "trainer.lock"
#: prefix of the dated folders that stale checkpoints are moved into
STALE_PREFIX = "stale-"
#: errno values of file systems without flock support (some parallel file systems)
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
#: verification results by (path, inode, size, mtime): each file is loaded once to be judged
_verified: dict[tuple[str, int, int, int], str | None] = {}


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain lists (loadable with torch.load(weights_only=True))."""
    np_state = np.random.get_state(legacy=True)  # noqa: NPY002 (the legacy global state)
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": [int(v) for v in py_internal],
            "gauss_next": py_gauss,
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    key = npy["key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))  # noqa: NPY002
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


def checkpoint_paths(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory`` (by name; not necessarily valid), oldest step first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _CKPT_RE.match(p.name) and p.is_file())


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load and verify one checkpoint file; ValueError naming the file and the problem.

    Verified: it loads with ``torch.load(weights_only=True)``, holds a dict of format
    :data:`CHECKPOINT_FORMAT`, and its step is the one its name says.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file can fail inside the unpickler in many ways
        raise ValueError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format_version") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a checkpoint of format {CHECKPOINT_FORMAT}")
    match = _CKPT_RE.match(path.name)
    if match is None or state.get("step") != int(match.group(1)):
        raise ValueError(f"{path}: holds step {state.get('step')!r}, not the step of its name")
    return state


def _file_key(path: Path) -> tuple[str, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path), st.st_ino, st.st_size, st.st_mtime_ns


def _remember(path: Path, problem: str | None) -> None:
    key = _file_key(path)
    if key is not None:
        if len(_verified) > 1000:
            _verified.clear()
        _verified[key] = problem


def _problem(path: Path) -> str | None:
    """Why ``path`` is not a valid checkpoint, or None; each version of a file is loaded once."""
    key = _file_key(path)
    if key is None:
        return f"{path}: vanished"
    if key not in _verified:
        try:
            read_checkpoint(path)
            _remember(path, None)
        except ValueError as err:
            log.warning("%s; it is left in place, neither resumed nor counted when pruning", err)
            _remember(path, str(err))
    return _verified.get(key)


def write_checkpoint(directory: Path, state: dict[str, Any], keep: int) -> Path:
    """Atomically write ``state`` as ckpt-<step>.pt, read it back, and prune (:func:`prune_checkpoints`)."""
    path = directory / f"ckpt-{state['step']:09d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    prune_checkpoints(directory, keep, written=path)
    return path


def prune_checkpoints(directory: Path, keep: int, written: Path | None = None) -> list[Path]:
    """Delete valid checkpoints older than the newest ``keep`` valid ones; returns what was deleted.

    Only files that load and verify (:func:`read_checkpoint`) count and are ever deleted: a file
    that cannot be read is left in place (with a warning) and takes no valid checkpoint's place.
    The newest valid checkpoint and ``written`` (the file just written) are always kept.
    """
    if keep < 1:
        raise ValueError(f"keep_checkpoints must be >= 1, got {keep}")
    kept, deleted = 0, []
    for path in reversed(checkpoint_paths(directory)):
        problem = _problem(path)
        if problem is not None:
            if path == written:
                log.error("the checkpoint just written does not read back (%s); older ones are kept", problem)
            continue
        if kept < keep or path == written:
            kept += 1
            continue
        path.unlink(missing_ok=True)
        deleted.append(path)
    return deleted


def latest_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads and verifies (unreadable ones are skipped with a warning)."""
    for stale in directory.glob(".ckpt-*.part") if directory.is_dir() else []:
        stale.unlink(missing_ok=True)  # left by a job killed while writing (the lock excludes a live one)
    for path in reversed(checkpoint_paths(directory)):
        try:
            state = read_checkpoint(path)
        except ValueError as err:
            log.warning("%s; it is left in place, neither resumed nor counted when pruning", err)
            _remember(path, str(err))
            continue
        _remember(path, None)
        return path, state
    return None


def set_aside_checkpoints(directory: Path, reason: str) -> Path | None:
    """Move every checkpoint file of ``directory`` into a new dated folder ``stale-<UTC time>`` in it.

    Returns that folder (None when there was nothing to move). ``reason`` is written beside the
    files (REASON.txt). Nothing is deleted: a checkpoint discarded by mistake can be moved back.
    """
    paths = checkpoint_paths(directory)
    if not paths:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target, n = directory / f"{STALE_PREFIX}{stamp}", 1
    while True:
        try:
            target.mkdir()
            break
        except FileExistsError:
            n += 1
            target = directory / f"{STALE_PREFIX}{stamp}-{n}"
    (target / "REASON.txt").write_text(f"moved aside {stamp}: {reason}\n")
    for path in paths:
        os.replace(path, target / path.name)
    return target


@contextlib.contextmanager
def checkpoint_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive OS lock on ``directory`` (``fcntl.flock`` on its lock file) for the block.

    A second trainer on the same directory gets :class:`BusyError` at once, naming the holder's PID
    and host (read from the lock file). The OS releases the lock when the holder exits, even on
    SIGKILL. On a file system without flock support training goes on, with a warning.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            who = f"PID {holder[0]} on host {holder[1]}" if len(holder) == 2 else "PID not yet recorded"
            raise BusyError(
                f"checkpoint directory {directory} is in use by another trainer ({who}; lock file {path}): "
                "wait for it to finish or stop it, or give this run another --checkpoint-dir"
            ) from None
        except OSError as err:
            if err.errno not in _NO_LOCKS:
                raise
            locked = False
            log.warning("%s: no file locks on this file system (%s); a second trainer is not stopped",
                        path, err)  # fmt: skip
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            if locked:
                os.ftruncate(fd, 0)  # no stale holder named (a killed holder's line is overwritten)
    finally:
        os.close(fd)  # releases the lock


def _diff(old: dict[str, Any], new: dict[str, Any], ignore: frozenset[str] = frozenset()) -> list[str]:
    keys = (set(old) | set(new)) - ignore
    return sorted(k for k in keys if old.get(k) != new.get(k))


def resume_mismatch(state: dict[str, Any], run: dict[str, Any], resumable: frozenset[str]) -> str | None:
    """What differs between a checkpoint and this run, or None.

    ``run`` holds "family", "settings" (all loop and family settings), "config" (the family's
    export config) and "data" (input fingerprint); keys in ``resumable`` may change.
    """
    if state.get("family") != run["family"]:
        return f"family ({state.get('family')!r} vs {run['family']!r})"
    diff = _diff(state["settings"], run["settings"], resumable)
    if diff:
        return f"settings {diff}"
    if state["config"] != run["config"]:
        return "model config"
    changed = _diff(state["data"], run["data"])
    return f"inputs {changed}" if changed else None
