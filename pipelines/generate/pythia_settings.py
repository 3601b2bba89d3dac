"""Settings of the Pythia 8 jet generator (stage ``generate-jets``), importable without Pythia, so that
the workflow checks every jet data set's ``embedded: settings:`` block when it starts."""

from __future__ import annotations

import dataclasses

from pipelines.settings import settings_object


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
