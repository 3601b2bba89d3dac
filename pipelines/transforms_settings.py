"""Settings of the ``fit-transforms`` stage, importable without scipy, so that the workflow checks the
config's ``preprocessing`` block when it starts."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.settings import settings_object


@dataclass(frozen=True)
class FitSettings:
    """Settings of the ``fit-transforms`` stage.

    max_fit_points: fit on at most this many training points (a seeded random subset of whole
        clouds' points; 0 = all). Bounds memory and time on the 1.6e8-point dataset-2 training split.
    """

    max_fit_points: int = 5_000_000

    def __post_init__(self) -> None:
        value = self.max_fit_points
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"max_fit_points must be a non-negative integer, got {value!r}")

    @classmethod
    def from_json(cls, text: str | None) -> FitSettings:
        return cls(**settings_object(text, cls, "fit-transforms"))
