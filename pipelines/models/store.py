"""Trained-model files: family name, kind, the family's export config and module weights.

A model file holds only plain values and tensors ({"format_version", "family", "kind", "config",
"weights", "extra"}) and is read with ``torch.load(weights_only=True)``; sampling rebuilds the
modules with the family's :meth:`~pipelines.models.family.Family.build_sampler`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipelines.io.atomic import atomic_torch_save
from pipelines.io.errors import DataError
from pipelines.models.family import PointSampler, ShowerSampler, get_family

MODEL_FORMAT = 2


def save_model(
    path: str | Path,
    family: str,
    kind: str,
    config: dict[str, Any],
    weights: dict[str, dict[str, torch.Tensor]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the model file atomically (``extra``: weights_only-loadable values only).

    Identical payloads give byte-identical files (see :func:`~pipelines.io.atomic.atomic_torch_save`).
    """
    payload = {
        "format_version": MODEL_FORMAT,
        "family": family,
        "kind": kind,
        "config": config,
        "weights": {name: {k: v.detach().cpu() for k, v in w.items()} for name, w in weights.items()},
        "extra": dict(extra or {}),
    }
    atomic_torch_save(payload, path)


def read_model(path: str | Path) -> dict[str, Any]:
    """The payload of a model file, checked for its keys (DataError naming the file otherwise)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file can fail inside the unpickler in many ways
        raise DataError(f"{path}: cannot read the model file: {err}") from err
    needed = {"format_version", "family", "kind", "config", "weights", "extra"}
    if not isinstance(payload, dict) or not needed <= set(payload):
        raise DataError(f"{path}: not a model file of this project (needs {sorted(needed)})")
    if payload["format_version"] != MODEL_FORMAT:
        raise DataError(f"{path}: model file format {payload['format_version']}, expected {MODEL_FORMAT}")
    return payload


def load_model(
    path: str | Path, transform: Any, geometry: Any, device: torch.device | str = "cpu"
) -> tuple[PointSampler | ShowerSampler, dict[str, Any]]:
    """(sampler on ``device`` in eval mode, payload) of a model file."""
    payload = read_model(path)
    try:
        cls = get_family(payload["family"])
        sampler = cls.build_sampler(
            payload["config"], payload["weights"], transform, geometry, torch.device(device)
        )
    except (ValueError, RuntimeError, TypeError, KeyError) as err:
        raise DataError(f"{path}: the {payload['family']!r} model does not match its config: {err}") from err
    return sampler, payload
