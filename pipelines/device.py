"""Device selection, mixed precision and CPU threads, shared by training and sampling."""

from __future__ import annotations

import logging
import os

import torch

from pipelines.training.settings import AMP_MODES

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'auto' (CUDA only when a kernel really runs there, e.g. not under a fake GPU)."""
    if name not in DEVICES:
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cpu":
        return torch.device("cpu")
    try:
        usable = torch.cuda.is_available() and torch.cuda.device_count() > 0
        if usable:
            torch.zeros(1, device="cuda").add_(1).item()
    except (RuntimeError, AssertionError) as err:
        log.warning("CUDA is not usable (%s)", err)
        usable = False
    if usable:
        return torch.device("cuda")
    if name == "cuda":
        raise ValueError("--device cuda requested, but CUDA is not available")
    log.info(
        "no usable CUDA device (CUDA_VISIBLE_DEVICES=%s): running on CPU",
        os.environ.get("CUDA_VISIBLE_DEVICES"),
    )
    return torch.device("cpu")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for ``amp`` on ``device`` (None = full fp32; always None on CPU)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def set_threads(n: int | None) -> None:
    """torch.set_num_threads(n), or from the PIPELINES_NUM_THREADS env var when n is None."""
    if n is None and os.environ.get("PIPELINES_NUM_THREADS"):
        n = int(os.environ["PIPELINES_NUM_THREADS"])
    if n is not None:
        torch.set_num_threads(n)
