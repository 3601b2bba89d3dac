"""Settings of the GFlash shower generator (stage ``generate-showers``), importable without scipy, so
that the workflow checks every shower data set's ``embedded: settings:`` block when it starts.

Dataset-1 photons (``DATASET_DEFAULTS["1-photons"]``, the defaults under a data set's own keys): the
dataset-1 geometry is the ATLAS calorimeter barrel (layer ids of the binning XML: 0 presampler, 1 strips,
2 middle, 3 back of the liquid-argon EM calorimeter, 12 the first Tile layer; the others are not crossed).
The docs give no depths for it, so these are assumptions, stated here: effective thicknesses, in X0 of
the homogeneous approximation, of 1.5 (presampler with the material in front of it), 4.3 (strips),
16 (middle) and 2 (back), the EM barrel's published depths near eta = 0.2 (about 22 X0 in all); 20 X0
for the Tile layer, which takes what leaks out of the EM calorimeter; an effective Moliere radius of
45 mm (lead / liquid argon, about five times the tungsten stand-in's); a sampling term of 10 %, that
of the ATLAS EM calorimeter. Incident energies: photons at the 15 powers of two from 256 MeV to
4.19 TeV, each equally likely, as dataset 1. GFlash parametrises electromagnetic showers only: there is
no embedded generator for dataset-1 pions.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

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
    incident_energies: "log-uniform" in [e_min_mev, e_max_mev], or "powers-of-two": the powers of two
        within that range, each equally likely (dataset 1).
    layer_depths_x0: effective thickness of every layer of the geometry in X0 (one value per layer, 0 for
        a layer without voxels); empty: ``layer_depth_x0`` for every layer.
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
    incident_energies: str = "log-uniform"
    layer_depths_x0: tuple[float, ...] = ()

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
        if self.incident_energies not in INCIDENT_ENERGIES:
            raise ValueError(
                f"incident_energies must be one of {INCIDENT_ENERGIES}, got {self.incident_energies!r}"
            )
        if self.incident_energies == "powers-of-two" and not self.powers_of_two().size:
            raise ValueError(
                f"no power of two between e_min_mev {self.e_min_mev} and e_max_mev {self.e_max_mev}"
            )
        depths = self.layer_depths_x0
        if any(not _is_real(d) or d < 0 for d in depths) or (depths and not any(d > 0 for d in depths)):
            raise ValueError(
                f"layer_depths_x0 must be non-negative finite numbers, some positive, got {depths!r}"
            )

    def powers_of_two(self) -> np.ndarray:
        """The powers of two (MeV) within [e_min_mev, e_max_mev]."""
        k = np.arange(math.ceil(math.log2(self.e_min_mev)), math.floor(math.log2(self.e_max_mev)) + 1)
        return 2.0**k

    @property
    def critical_energy_mev(self) -> float:
        """Ec = 2.66 (X0[g/cm2] Z / A)^1.1 MeV."""
        return 2.66 * (self.radiation_length_g_cm2 * self.atomic_number / self.atomic_mass) ** 1.1

    @classmethod
    def from_json(cls, text: str | None, dataset: str = "2") -> GFlashSettings:
        """Parse a ``--settings`` JSON object over the ``dataset``'s defaults (unknown keys: ValueError)."""
        return cls(
            **{**DATASET_DEFAULTS.get(str(dataset), {}), **settings_object(text, cls, "generate-showers")}
        )


#: allowed ``incident_energies``
INCIDENT_ENERGIES = ("log-uniform", "powers-of-two")
#: the datasets GFlash can fill (electromagnetic showers): 2 and 3 (electrons), 1-photons
GFLASH_DATASETS = ("1-photons", "2", "3")
#: defaults per dataset under the data set's own settings (see the module docstring for dataset 1)
DATASET_DEFAULTS: dict[str, dict[str, object]] = {
    "1-photons": {
        "e_min_mev": 256.0,
        "e_max_mev": 4194304.0,
        "incident_energies": "powers-of-two",
        "moliere_radius_mm": 45.0,
        "sampling_term": 0.10,
        "layer_depths_x0": (1.5, 4.3, 16.0, 2.0) + (0.0,) * 8 + (20.0,) + (0.0,) * 11,
    },
}
