"""Settings of the ``sample`` stage, importable without torch, so that the workflow checks the config's
``sampling: settings:`` block when it starts."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.settings import settings_object

ENERGY_SOURCES = ("resample", "log_uniform")


@dataclass(frozen=True)
class SampleSettings:
    """Settings of the ``sample`` stage (JSON keys of ``--settings``)."""

    collisions: str = "sum"  # "sum" or "shift" (move colliding points to free neighbouring voxels)
    n_from_reference: bool = False  # take n from the resampled reference cloud instead of the model
    energy_source: str = "resample"  # showers: "resample" (with replacement) or "log_uniform"
    batch_size: int = 1000  # clouds per generator call at most
    max_tokens: int = 50_000  # padded points per generator call at most (larger suits a GPU)
    chunk_size: int = 10_000  # clouds converted (inverse transform, voxelisation) at a time
    timing: bool = True  # measure timing.json figures (otherwise only the generation summary)
    timing_batch_sizes: tuple[int, ...] = (1, 100, 10_000)  # batch sizes timed for timing.json
    timing_max_batch_cpu: int = 1000  # on CPU larger timing batch sizes are capped to this
    timing_repeats: int = 3  # timing runs per batch size (median reported)
    progress: bool = True  # tqdm progress bar on stderr

    def __post_init__(self) -> None:
        if self.collisions not in ("sum", "shift"):
            raise ValueError(f"collisions must be 'sum' or 'shift', got {self.collisions!r}")
        if self.energy_source not in ENERGY_SOURCES:
            raise ValueError(f"energy_source must be one of {ENERGY_SOURCES}, got {self.energy_source!r}")
        if self.n_from_reference and self.energy_source != "resample":
            raise ValueError("n_from_reference needs energy_source 'resample' (n must pair with its energy)")
        for key in ("batch_size", "max_tokens", "chunk_size", "timing_max_batch_cpu", "timing_repeats"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        sizes = self.timing_batch_sizes
        if not sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in sizes):
            raise ValueError(f"timing_batch_sizes must be positive integers, got {sizes!r}")

    @classmethod
    def from_json(cls, text: str | None) -> SampleSettings:
        return cls(**settings_object(text, cls, "sample"))
