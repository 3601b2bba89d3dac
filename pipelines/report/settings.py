"""Settings of the ``report`` stage, importable without matplotlib, so that the workflow checks the
config's ``report: settings:`` block when it starts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipelines.report import published

if TYPE_CHECKING:
    from pipelines.report.plots import PlotStyle


@dataclass(frozen=True)
class ReportSettings:
    """Report appearance; pass as ``--settings '{"title": ..., "dpi": 110}'`` (unknown keys: ValueError)."""

    #: page title; empty: the project and the runs with their families (html.default_title).
    title: str = ""
    #: PNG resolution, dots per inch.
    dpi: int = 110
    #: figure width, inches.
    figure_width: float = 6.0
    #: legend name of the reference sample.
    reference_label: str = "Reference"
    #: line colours of the runs, in --labels order (cycled).
    colours: tuple[str, ...] = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e")
    #: y range of ratio panels and ratio images.
    ratio_range: tuple[float, float] = (0.5, 1.5)
    #: shower layers drawn as images; empty: where the reference's cumulative energy reaches 20/50/80 %.
    shower_layers: tuple[int, ...] = ()
    #: moving-average window of the training curves, entries; 0: about 1/50 of the curve, 1: none.
    smoothing: int = 0
    #: published CaloChallenge submissions shown with --real-data (plus the best by high-level AUC).
    published_models: tuple[str, ...] = published.DEFAULT_MODELS
    #: also write every plot as PDF (vector graphics) beside its PNG in the plots folder.
    pdf: bool = False

    def __post_init__(self) -> None:
        if not 20 <= self.dpi <= 600:
            raise ValueError(f"report setting dpi must be within 20..600, got {self.dpi}")
        if not 1.0 <= self.figure_width <= 30.0:
            raise ValueError(
                f"report setting figure_width must be within 1..30 inches, got {self.figure_width}"
            )
        if not self.colours:
            raise ValueError("report setting colours must name at least one colour")
        low, high = self.ratio_range
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high):
            raise ValueError(
                f"report setting ratio_range must be [low, high] with 0 <= low < high, got {self.ratio_range}"
            )
        if self.smoothing < 0:
            raise ValueError(f"report setting smoothing must be >= 0, got {self.smoothing}")
        if any(layer < 0 for layer in self.shower_layers):
            raise ValueError(f"report setting shower_layers must be non-negative, got {self.shower_layers}")

    def style(self, run_index: int = 0) -> PlotStyle:
        """The plot style of run ``run_index`` (matplotlib is imported here, not with the settings)."""
        from pipelines.report.plots import PlotStyle

        return PlotStyle(
            dpi=self.dpi,
            width=self.figure_width,
            reference_label=self.reference_label,
            colour=self.colours[run_index % len(self.colours)],
            ratio_range=self.ratio_range,
            pdf=self.pdf,
        )
