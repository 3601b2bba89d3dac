"""Settings of the embedded data generators (GFlash showers, Pythia jets), importable without scipy
or Pythia, so that the workflow checks every ``embedded: settings:`` block of the config when it starts."""

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


@dataclasses.dataclass(frozen=True)
class JetGenSettings:
    """Hyperparameters of the jet generator (energies and momenta in GeV).

    sqrt_s_gev: centre-of-mass energy of the pp collisions. pthat_min_gev, pthat_max_gev: range of
    the hard process's pT-hat. jet_radius: anti-kt radius R. jet_pt_min_gev, jet_pt_max_gev: range of
    the leading jet's pt. jet_abs_eta_max: largest |eta| of the leading jet. match_radius: largest
    Delta R (eta, phi) between the jet and a hard-process parton of the requested type. mpi:
    multiparton interactions on. max_events_per_jet: at most this many events per requested jet are
    generated (fewer passing jets is an error). pythia_lines: extra Pythia setting strings, read
    after the defaults.
    """

    sqrt_s_gev: float = 13000.0
    pthat_min_gev: float = 800.0
    pthat_max_gev: float = 1300.0
    jet_radius: float = 0.8
    jet_pt_min_gev: float = 800.0
    jet_pt_max_gev: float = 1200.0
    jet_abs_eta_max: float = 2.5
    match_radius: float = 0.8
    mpi: bool = True
    max_events_per_jet: int = 20
    pythia_lines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        positive = ("sqrt_s_gev", "jet_radius", "jet_abs_eta_max", "match_radius", "max_events_per_jet")
        for key in positive:
            if not getattr(self, key) > 0:
                raise ValueError(f"setting {key} must be > 0, got {getattr(self, key)!r}")
        if not 0 <= self.pthat_min_gev < self.pthat_max_gev:
            raise ValueError(
                f"need 0 <= pthat_min_gev < pthat_max_gev, got {self.pthat_min_gev}, {self.pthat_max_gev}"
            )
        if not 0 <= self.jet_pt_min_gev < self.jet_pt_max_gev:
            raise ValueError(
                f"need 0 <= jet_pt_min_gev < jet_pt_max_gev, got {self.jet_pt_min_gev}, {self.jet_pt_max_gev}"
            )
        if not isinstance(self.mpi, bool):
            raise ValueError(f"setting mpi must be true or false, got {self.mpi!r}")
        if isinstance(self.pythia_lines, str) or not all(isinstance(s, str) for s in self.pythia_lines):
            raise ValueError("setting pythia_lines must be a list of Pythia setting strings")
        object.__setattr__(self, "pythia_lines", tuple(self.pythia_lines))

    @classmethod
    def from_dict(cls, values: dict | None) -> JetGenSettings:
        """Build settings from a JSON object; unknown keys are a ValueError."""
        return cls(**settings_object(values, cls, "jet-generator"))
