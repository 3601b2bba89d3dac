"""Resumable training state on disk: RNG snapshots, atomic checkpoint files, resume checks.

A checkpoint ``ckpt-<step>.pt`` holds only tensors and plain values (loadable with
``torch.load(weights_only=True)``). It is resumed only when it was written for the same family,
settings (apart from budget and bookkeeping keys), model config and inputs (content hashes and
code version): anything else would silently continue a different experiment.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.io.atomic import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2
_CKPT_RE = re.compile(r"^ckpt-(\d{9})\.pt$")


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
    """Checkpoint files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _CKPT_RE.match(p.name))


def write_checkpoint(directory: Path, state: dict[str, Any], keep: int) -> Path:
    """Atomically write ``state`` as ckpt-<step>.pt and delete all but the newest ``keep``."""
    path = directory / f"ckpt-{state['step']:09d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in checkpoint_paths(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint (older ones are tried if the newest is unreadable)."""
    for stale in directory.glob(".ckpt-*.part") if directory.is_dir() else []:
        stale.unlink(missing_ok=True)  # left by a job killed while writing
    for path in reversed(checkpoint_paths(directory)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a damaged file can fail inside the unpickler in many ways
            log.warning("skipping unreadable checkpoint %s: %s", path, err)
            continue
        if isinstance(state, dict) and state.get("format_version") == CHECKPOINT_FORMAT:
            return path, state
        log.warning("skipping %s: not a checkpoint of format %d", path, CHECKPOINT_FORMAT)
    return None


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
