"""Settings of the multiplicity model (stage ``train-multiplicity``), importable without scipy, so that
the workflow checks every model's ``multiplicity:`` block when it starts."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.settings import settings_object

#: multiplicity models (:mod:`pipelines.models.multiplicity`)
MULTIPLICITY_FAMILIES = ("auto", "mixture", "categorical")


@dataclass(frozen=True)
class MultiplicitySettings:
    """Hyperparameters of ``train-multiplicity`` (JSON keys of ``--settings``).

    lr: Adam learning rate of the mixture fit. seed: seed of the subsample, minibatches and
    initialisation.
    """

    family: str = "auto"  # "auto" (mixture for showers, categorical for jets), "mixture", "categorical"
    n_components: int = 4  # mixture components
    hidden: int = 32  # MLP width (two tanh layers)
    steps: int = 1000  # Adam steps
    batch_size: int = 4096  # clouds per Adam step (seeded minibatches; full batch if larger than the data)
    lr: float = 0.01
    seed: int = 0
    max_train: int = 100_000  # clouds used for the fit (seeded subsample above this)
    n_max: int | None = None  # largest n; None: geometry voxel count (showers) / slot count (jets)
    smoothing: float = 0.0  # categorical pseudo-count added to every n in 0..n_max

    def __post_init__(self) -> None:
        if self.family not in MULTIPLICITY_FAMILIES:
            raise ValueError(f"family must be one of {MULTIPLICITY_FAMILIES}, got {self.family!r}")
        for key in ("n_components", "hidden", "steps", "batch_size", "max_train"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0 or self.smoothing < 0:
            raise ValueError("lr must be > 0 and smoothing >= 0")
        if self.n_max is not None and self.n_max < 1:
            raise ValueError(f"n_max must be >= 1, got {self.n_max}")

    @classmethod
    def from_json(cls, text: str | None) -> MultiplicitySettings:
        return cls(**settings_object(text, cls, "multiplicity"))
