"""Progress on stderr: a tqdm bar on a terminal, plain lines in a log file.

:func:`progress` takes tqdm's main arguments. When the stream is a terminal it returns a tqdm bar;
otherwise (a job's log file, a pipe) a :class:`LineProgress`, which writes one plain line each
``every_fraction`` of the total and at least every ``every_s`` seconds while it advances, plus a last
line when it closes: counts, rate, elapsed time and the postfix (losses, validation figures), never a
carriage return, so a training log reads as lines (``grep``, ``tail -f``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TextIO

from tqdm import tqdm

#: defaults of the plain lines: at most this many seconds between two, and one per this fraction of the total
EVERY_S = 30.0
EVERY_FRACTION = 0.1


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class LineProgress:
    """A progress counter that writes plain lines (the subset of tqdm's interface the stages use)."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        disable: bool = False,
        leave: bool = True,
        file: TextIO | None = None,
        every_s: float = EVERY_S,
        every_fraction: float = EVERY_FRACTION,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start_n = self.shown_n = initial
        self.disable, self.leave, self.file = disable, leave, file or sys.stderr
        self.every_s, self.every_fraction = every_s, every_fraction
        self.start = self.shown_at = time.monotonic()
        self.postfix = ""
        self.closed = False
        self.next_mark = self._mark_after(initial)

    def _mark_after(self, n: int) -> float:
        """The next count at which a line is due (a multiple of every_fraction x total)."""
        if not self.total or self.every_fraction <= 0:
            return float("inf")
        step = max(self.every_fraction * self.total, 1.0)
        return (n // step + 1) * step

    def line(self) -> str:
        """The current state as one line."""
        elapsed = time.monotonic() - self.start
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        share = f" ({100.0 * self.n / self.total:.0f}%)" if self.total else ""
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        text = (
            f"{self.desc + ': ' if self.desc else ''}{count} {self.unit}{share}, {rate:.3g} {self.unit}/s, "
        )
        text += f"{_duration(elapsed)} elapsed"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _show(self) -> None:
        self.file.write(self.line() + "\n")
        self.file.flush()
        self.shown_n, self.shown_at = self.n, time.monotonic()

    def update(self, n: int = 1) -> None:
        """Advance by ``n``; a line when the next fraction of the total is reached or every_s passed."""
        self.n += n
        if self.disable:
            return
        if self.n >= self.next_mark or time.monotonic() - self.shown_at >= self.every_s:
            self.next_mark = self._mark_after(self.n)
            self._show()

    def set_postfix(
        self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs
    ) -> None:
        """Figures shown at the end of the following lines (``key=value``)."""
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = " ".join(f"{key}={_value(value)}" for key, value in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        """A last line (with ``leave``) unless the last line shows the final count already."""
        if self.closed:
            return
        self.closed = True
        if not self.disable and self.leave and self.n != self.shown_n:
            self._show()

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable | None = None, *, file: TextIO | None = None, **kwargs: Any) -> Any:
    """A tqdm bar when ``file`` (default: stderr) is a terminal, a :class:`LineProgress` otherwise.

    ``kwargs``: tqdm's ``total``, ``desc``, ``unit``, ``initial``, ``disable``, ``leave``; tqdm-only
    display options (``dynamic_ncols``) apply to the bar only.
    """
    stream = file or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(iterable, file=stream, **kwargs)
    own = ("total", "desc", "unit", "initial", "disable", "leave")
    return LineProgress(iterable, file=stream, **{key: kwargs[key] for key in own if key in kwargs})
