"""Settings of the GFlash shower generator (stage ``generate-showers``), importable without scipy, so
that the workflow checks every shower data set's ``embedded: settings:`` block when it starts."""

from __future__ import annotations

import dataclasses
import math

from pipelines.geometry import THRESHOLD_MEV
from pipelines.settings import settings_object


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class GFlashSettings:
    """Settings of the GFlash shower generator (stage ``generate-showers``).

    e_min_mev, e_max_mev: range of the log-uniform incident energies, MeV (>= 100 MeV).
    sampling_term: a of the Gaussian sampling fluctuation a / sqrt(E / GeV) of the visible energy.
    kappa: shape of the per-spot Gamma energy fluctuation (k spots -> Gamma(k kappa, e_spot / kappa)).
    threshold_mev: voxel readout threshold, MeV (CaloChallenge: 0.5 keV / 0.033).
    layer_depth_x0: effective depth of one readout layer in radiation lengths.
    moliere_radius_mm: effective Moliere radius in mm.
    atomic_number, atomic_mass, radiation_length_g_cm2: material (Z, A, X0 in g/cm2) for Ec and the
        Z-dependent parameters.
    substeps_per_layer: depth steps per layer over which the radial profile is integrated.
    """

    e_min_mev: float = 1.0e3
    e_max_mev: float = 1.0e6
    sampling_term: float = 0.15
    kappa: float = 1.0
    threshold_mev: float = THRESHOLD_MEV
    layer_depth_x0: float = 0.8
    moliere_radius_mm: float = 9.3
    atomic_number: float = 74.0
    atomic_mass: float = 183.84
    radiation_length_g_cm2: float = 6.76
    substeps_per_layer: int = 2

    def __post_init__(self) -> None:
        positive = ("e_min_mev", "e_max_mev", "kappa", "layer_depth_x0", "moliere_radius_mm",
                    "atomic_number", "atomic_mass", "radiation_length_g_cm2")  # fmt: skip
        for name in positive + ("sampling_term", "threshold_mev"):
            value = getattr(self, name)
            if not _is_real(value) or value < 0 or (name in positive and value == 0):
                kind = "positive" if name in positive else "non-negative"
                raise ValueError(f"GFlash setting {name} must be a {kind} finite number, got {value!r}")
        steps = self.substeps_per_layer
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"substeps_per_layer must be a positive integer, got {steps!r}")
        if self.e_min_mev < 100.0:
            raise ValueError(f"e_min_mev must be >= 100 MeV (the parametrisation needs ln y > 1.2), "
                             f"got {self.e_min_mev}")  # fmt: skip
        if self.e_max_mev < self.e_min_mev:
            raise ValueError(f"e_max_mev ({self.e_max_mev}) is below e_min_mev ({self.e_min_mev})")

    @property
    def critical_energy_mev(self) -> float:
        """Ec = 2.66 (X0[g/cm2] Z / A)^1.1 MeV."""
        return 2.66 * (self.radiation_length_g_cm2 * self.atomic_number / self.atomic_mass) ** 1.1

    @classmethod
    def from_json(cls, text: str | None) -> GFlashSettings:
        """Parse a ``--settings`` JSON object; unknown keys are a ValueError."""
        return cls(**settings_object(text, cls, "generate-showers"))
