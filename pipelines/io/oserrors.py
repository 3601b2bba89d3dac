"""One clear line for an OS error that stops a stage: which file, what happened, how much space.

Outputs are written through :mod:`pipelines.io.atomic` (a temporary file renamed into place when
complete), so a stage stopped by a full disk, a quota, a read-only file system or a permission error
leaves no half-written output: the line says so.
"""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

#: Errors of writing, with a short name for the message; space figures are added for the first two.
WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
SPACE_ERRORS = (errno.ENOSPC, errno.EDQUOT)


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``: binary units, three significant figures."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def error_number(err: OSError) -> int | None:
    """``err.errno``, or the ``errno = N`` that h5py writes into its messages instead."""
    if err.errno is not None:
        return err.errno
    found = re.search(r"errno = (\d+)", str(err))
    return int(found.group(1)) if found else None


def _file_named(err: OSError) -> str | None:
    if err.filename is not None:
        return str(err.filename)
    found = re.search(r"name = '([^']*)'", str(err))
    return found.group(1) if found else None


def free_space(path: str | Path) -> tuple[int, int] | None:
    """(free, total) bytes of the file system holding ``path`` (its nearest existing folder), if known."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return None
    return usage.free, usage.total


def describe_os_error(err: OSError) -> str:
    """The one-line message (without ``error:``) for an OS error that ended a stage."""
    number = error_number(err)
    output = getattr(err, "output_path", None)
    named = _file_named(err)
    if named is not None and output is not None and Path(named).name.startswith(f".{Path(output).name}."):
        named = None  # the output's temporary file: name the output itself
    file = named or (str(output) if output is not None else "(file not known)")
    what = WRITE_ERRORS.get(number) if number is not None else None
    reason = what or err.strerror or str(err)
    parts = [f"{file}: {reason}" + (f" ({errno.errorcode[number]})" if number in errno.errorcode else "")]
    if output is not None and str(output) != file:
        parts.append(f"while writing {output}")
    if number in SPACE_ERRORS:
        needed = getattr(err, "bytes_needed", None)
        if needed is not None:
            parts.append(f"it needed {format_bytes(needed)}")
        space = free_space(output if output is not None else file)
        if space is not None:
            parts.append(f"{format_bytes(space[0])} free of {format_bytes(space[1])} on that file system")
    if output is not None or what is not None:
        parts.append(
            "nothing was left half-written (outputs are written to a temporary file that is removed "
            "on failure and renamed into place only when complete)"
        )
    return "; ".join(parts)
