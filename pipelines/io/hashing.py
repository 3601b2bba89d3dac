"""Content hashes of files (cache keys, provenance records, checkpoint fingerprints)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's content, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
