"""Write outputs atomically: a failed stage never leaves a half-written file behind.

An OS error raised while an output is written (disk full, quota, read-only file system) leaves the
temporary file removed and carries the output's path as ``err.output_path`` (and, where the writer
knows it, the size it needed as ``err.bytes_needed``), so the entry point can name them.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _annotate(err: OSError, path: Path, needed: int | None = None) -> None:
    """Record the output being written (the innermost one wins) and the bytes it needed, if known."""
    if getattr(err, "output_path", None) is None:
        err.output_path = path  # type: ignore[attr-defined]
    if needed is not None and getattr(err, "bytes_needed", None) is None:
        err.bytes_needed = needed  # type: ignore[attr-defined]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as err:
        _annotate(err, path)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp_path
        if tmp_path.exists():
            tmp_path.chmod(0o666 & ~umask)
        os.replace(tmp_path, path)
    except OSError as err:
        _annotate(err, path)
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; an OS error records ``len(data)`` as the bytes needed."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as err:
        _annotate(err, Path(path), len(data))
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically, the same tensors always giving the same bytes.

    ``torch.save`` to a file names the archive's records after that file, so the random temporary name
    would enter the bytes; saved to memory the records are always named ``archive/``.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())
