"""Mark reports that do not show the current results: a visible STALE banner.

The Snakefile's ``onstart`` handler marks every existing report the run will remake ("the run started
at T is remaking this report"); a report job that succeeds replaces the page, one that fails is removed
by Snakemake. ``onerror`` turns the banners still there into "the run of T failed before this report was
remade", so a report whose upstream stage failed is never taken for the new one. At the end of every
run (``onsuccess`` and ``onerror``) a report that a run left alone although one of the files it was
made from has changed since (its sha256, recorded in the page, differs: e.g. after ``--until train``)
is marked too. The banner is the first thing in ``<body>``, between :data:`START` and :data:`END`; the
page is rewritten atomically.
"""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from pipelines.io.atomic import atomic_path
from pipelines.io.hashing import file_sha256

START = "<!-- stale-banner -->"
END = "<!-- /stale-banner -->"
STYLE = (
    "background:#c62828;color:#fff;padding:1em 2em;font:600 1.15em sans-serif;"
    "position:sticky;top:0;z-index:10"
)
_BANNER = re.compile(re.escape(START) + ".*?" + re.escape(END) + r"\n?", re.DOTALL)
_BODY = re.compile(r"<body[^>]*>\n?", re.IGNORECASE)
_INPUT = re.compile(r'data-file="([^"]*)" data-sha256="([0-9a-f]{64})"')


def utc_now() -> str:
    """The current time as ``2026-01-31 12:00:00 UTC``."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def started_text(when: str) -> str:
    return (
        f"STALE: the workflow run started {when} is remaking this report; the page below is from an "
        "earlier run. If this banner is still here after that run ended, the run failed or was stopped "
        "before the report was remade."
    )


def failed_text(when: str) -> str:
    return (
        f"STALE: the run of {when} failed before this report was remade; the page below is from an "
        "earlier run and does not match the current inputs."
    )


def outdated_text(files: list[str]) -> str:
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return (
        f"STALE: {shown} changed after this report was made (sha256 differs or file missing); "
        "run the workflow again to remake it."
    )


def banner(text: str) -> str:
    """The banner's HTML (``text`` escaped)."""
    return f'{START}<div id="stale-banner" role="alert" style="{STYLE}">{html.escape(text)}</div>{END}\n'


def stale_text(page: str) -> str | None:
    """The banner text of ``page``, None if it has none."""
    found = _BANNER.search(page)
    if found is None:
        return None
    inner = re.search(r"<div[^>]*>(.*)</div>", found.group(0), re.DOTALL)
    return html.unescape(inner.group(1)) if inner else ""


def mark_stale(path: str | Path, text: str) -> bool:
    """Put a banner saying ``text`` at the top of the page ``path`` (replacing an earlier banner).

    Returns False, changing nothing, if there is no such file.
    """
    path = Path(path)
    try:
        page = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    page = _BANNER.sub("", page, count=1)
    body = _BODY.search(page)
    at = body.end() if body else 0
    mode = path.stat().st_mode & 0o777
    with atomic_path(path) as tmp:
        tmp.write_text(page[:at] + banner(text) + page[at:], encoding="utf-8")
    path.chmod(mode)
    return True


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def mark_started(paths: Iterable[str | Path], when: str) -> list[Path]:
    """``onstart``: mark every existing report of ``paths`` as being remade by the run of ``when``.

    A report that cannot be marked (an OS error) is named in a warning; the run goes on.
    """
    marked = []
    for path in map(Path, paths):
        try:
            if mark_stale(path, started_text(when)):
                marked.append(path)
                _say(f"{path}: marked STALE until the run started {when} has remade it")
        except OSError as err:
            _say(f"warning: {path}: could not be marked stale: {err}")
    return marked


def mark_failed(paths: Iterable[str | Path], when: str) -> list[Path]:
    """``onerror``: reports of ``paths`` still carrying the run's start banner get the failure banner."""
    marked = []
    for path in map(Path, paths):
        try:
            if stale_text(path.read_text(encoding="utf-8")) != started_text(when):
                continue  # remade by this run, removed, or never marked
            if mark_stale(path, failed_text(when)):
                marked.append(path)
                _say(f"{path}: STALE, the run of {when} failed before remaking it (banner added)")
        except FileNotFoundError:
            continue
        except OSError as err:
            _say(f"warning: {path}: could not be marked stale: {err}")
    return marked


def changed_inputs(page: str) -> list[str]:
    """The files the report ``page`` lists as made from whose content is no longer the recorded one.

    Relative paths are taken from the working directory (the workflow's, where the hooks run).
    """
    changed = []
    for file, sha256 in _INPUT.findall(page):
        path = Path(html.unescape(file))
        try:
            if file_sha256(path) != sha256:
                changed.append(str(path))
        except OSError:
            changed.append(str(path))
    return changed


def mark_outdated(paths: Iterable[str | Path]) -> list[Path]:
    """Reports of ``paths`` without a banner whose inputs changed since they were made get one."""
    marked = []
    for path in map(Path, paths):
        try:
            page = path.read_text(encoding="utf-8")
            if stale_text(page) is not None or not (changed := changed_inputs(page)):
                continue
            if mark_stale(path, outdated_text(changed)):
                marked.append(path)
                _say(f"{path}: STALE, {', '.join(changed)} changed after it was made (banner added)")
        except FileNotFoundError:
            continue
        except OSError as err:
            _say(f"warning: {path}: could not be marked stale: {err}")
    return marked
