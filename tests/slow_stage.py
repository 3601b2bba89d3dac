"""A stage for the lifeline tests: opens its output atomically, writes part of it, says so, then waits.

``main([out, ready])``: ``ready`` is created once the temporary file of ``out`` holds data.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipelines.io.atomic import atomic_path


def main(argv: list[str]) -> int:
    out, ready = argv
    with atomic_path(out) as tmp:
        tmp.write_text("half of the output")
        Path(ready).touch()
        time.sleep(120)
    return 0
