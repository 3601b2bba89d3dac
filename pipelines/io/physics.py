"""Physics and unit checks of input files, beyond their layout (run by the ``validate`` stage).

The readers (:mod:`pipelines.io.calochallenge`, :mod:`pipelines.io.jetnet`) check structure: keys,
shapes, dtypes, NaN/inf, signs. The checks here catch files that are well formed but hold the wrong
physics or units. Each finding names the file, the first offending row (shower or jet index) and
the rule. A finding that cannot be meant (voxel and incident energies in different units, a file with
no energy at all, a jet without particles) raises :class:`DataError`; one a physicist may mean (an
incident energy outside the documented range of the data set) is returned as a warning, recorded in
the stage's summary JSON and shown by the report. The thresholds below are the documented contract
(README.md, "Input checks").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.io.errors import DataError

# ------------------------------------------------------------------------------------------ showers

#: Documented incident-energy range per CaloChallenge dataset, MeV: electrons log-uniform in 1 GeV to
#: 1 TeV (datasets 2 and 3); photons and pions at powers of two from 256 MeV to 4.2 TeV (dataset 1).
#: Showers outside it (beyond a relative tolerance for float32 rounding) are a warning.
INCIDENT_RANGE_MEV = {
    "2": (1.0e3, 1.0e6),
    "3": (1.0e3, 1.0e6),
    "1-photons": (2.0**8, 2.0**22),
    "1-pions": (2.0**8, 2.0**22),
}
#: Relative tolerance on :data:`INCIDENT_RANGE_MEV`.
INCIDENT_RANGE_TOLERANCE = 0.01
#: A file whose largest incident energy is at most the documented upper edge times this (1 GeV for
#: datasets 2 and 3) is taken for a file in GeV: error.
GEV_FILE_FRACTION = 1.0e-3
#: Documented range of E_tot / E_inc per shower (sum of the voxel energies over the incident energy;
#: about 1 in datasets 2 and 3, whose energies are divided by the sampling fraction; 0.48 to 1.46 for
#: GFlash showers at 1 GeV). A non-empty shower outside it is a warning.
ENERGY_RATIO_RANGE = (0.2, 2.0)
#: The median E_tot / E_inc of the non-empty showers outside this range means that voxel energies and
#: incident energies are in different units (a factor 1000 for GeV vs MeV): error.
ENERGY_RATIO_UNITS_RANGE = (0.03, 30.0)

# --------------------------------------------------------------------------------------------- jets

#: pt_rel = pt_particle / pt_jet above this (1 plus float32 and jet-definition slack) is a warning.
PT_REL_MAX = 1.001
#: Documented range of sum(pt_rel) over a jet's stored particles: 1 to 1.1 for untruncated jets, lower
#: for jets truncated to 30 particles (0.59 to 1.02 for Pythia 8 jets). Outside it: a warning.
SUM_PT_REL_RANGE = (0.3, 1.3)
#: A median sum(pt_rel) above this means pt_rel holds absolute pt (GeV), not pt / pt_jet: error.
SUM_PT_REL_ABSOLUTE = 10.0
#: Documented jet pt range, GeV (JetNet jets have pt around 1 TeV; 6.5 TeV is the beam energy at 13 TeV).
JET_PT_RANGE_GEV = (100.0, 6500.0)
#: A median jet pt above this (100 TeV, in GeV) means jet pt in MeV: error.
JET_PT_MEV_MEDIAN_GEV = 1.0e5


def _first(rows: np.ndarray, start: int) -> int:
    """File index of the first True entry of ``rows`` (a chunk starting at ``start``)."""
    return start + int(np.flatnonzero(rows)[0])


class _Tally:
    """Count of rows breaking one rule and the first of them (file index and value)."""

    def __init__(self) -> None:
        self.count = 0
        self.first: tuple[int, float] | None = None

    def add(self, bad: np.ndarray, values: np.ndarray, start: int) -> None:
        n = int(np.count_nonzero(bad))
        if n and self.first is None:
            i = int(np.flatnonzero(bad)[0])
            self.first = (start + i, float(values[i]))
        self.count += n

    @property
    def example(self) -> tuple[int, float]:
        """(file index, value) of the first row breaking the rule; only when ``count`` > 0."""
        if self.first is None:
            raise RuntimeError("no row breaks the rule")
        return self.first


class ShowerChecks:
    """Physics checks of a CaloChallenge file fed chunk by chunk (see the module constants)."""

    def __init__(self, path: str | Path, dataset: str = "2"):
        if dataset not in INCIDENT_RANGE_MEV:
            raise ValueError(f"no documented incident-energy range for dataset {dataset!r}")
        self.path = Path(path)
        self.incident_range = INCIDENT_RANGE_MEV[dataset]
        self.n = 0
        self.e_max = (-np.inf, -1)  # (largest incident energy, its shower)
        self.zero = _Tally()
        self.outside = _Tally()
        self.ratio = _Tally()
        self.ratios: list[np.ndarray] = []  # E_tot / E_inc of the non-empty showers

    def update(self, start: int, energies: np.ndarray, showers: np.ndarray) -> None:
        """Add one validated chunk: incident energies (n,) MeV and voxel energies (n, n_voxels) MeV."""
        self.n += len(energies)
        i = int(np.argmax(energies))
        if energies[i] > self.e_max[0]:
            self.e_max = (float(energies[i]), start + i)
        low, high = self.incident_range
        tol = INCIDENT_RANGE_TOLERANCE
        self.outside.add((energies < low * (1 - tol)) | (energies > high * (1 + tol)), energies, start)
        e_tot = showers.sum(axis=1, dtype=np.float64)
        empty = e_tot == 0
        self.zero.add(empty, e_tot, start)
        ratio = e_tot / energies
        r_low, r_high = ENERGY_RATIO_RANGE
        self.ratio.add(~empty & ((ratio < r_low) | (ratio > r_high)), ratio, start)
        self.ratios.append(ratio[~empty])

    def finish(self) -> list[str]:
        """Raise DataError for a file that cannot be meant; return the warnings (one string each)."""
        p, n = self.path, self.n
        low, high = self.incident_range
        if self.e_max[0] <= high * GEV_FILE_FRACTION:
            raise DataError(
                f"{p}: every incident energy is at most {high * GEV_FILE_FRACTION:g} MeV (largest "
                f"{self.e_max[0]:g} at shower {self.e_max[1]}); the data set covers {low:g} to "
                f"{high:g} MeV: is the file in GeV? (rule: energies in MeV)"
            )
        if self.zero.count == n:
            raise DataError(f"{p}: all {n} showers are empty (no voxel energy; first: shower 0)")
        median = float(np.median(np.concatenate(self.ratios)))
        u_low, u_high = ENERGY_RATIO_UNITS_RANGE
        if not u_low <= median <= u_high:
            row, value = self.ratio.example  # every shower is far outside too
            raise DataError(
                f"{p}: median E_tot/E_inc of the non-empty showers is {median:.3g} (first outside "
                f"[{ENERGY_RATIO_RANGE[0]:g}, {ENERGY_RATIO_RANGE[1]:g}]: shower {row}, {value:.3g}), "
                f"outside [{u_low:g}, {u_high:g}]: voxel energies and incident energies are in "
                "different units (both must be MeV)"
            )
        warnings = []
        if self.outside.count:
            row, value = self.outside.example
            warnings.append(
                f"{p}: {self.outside.count} of {n} showers have an incident energy outside the "
                f"documented {low:g} to {high:g} MeV "
                f"(first: shower {row}, {value:g} MeV)"
            )
        if self.zero.count:
            warnings.append(
                f"{p}: {self.zero.count} of {n} showers are empty (no voxel energy; first: shower "
                f"{self.zero.example[0]})"
            )
        if self.ratio.count:
            row, value = self.ratio.example
            warnings.append(
                f"{p}: {self.ratio.count} of {n} showers have E_tot/E_inc outside the documented "
                f"[{ENERGY_RATIO_RANGE[0]:g}, {ENERGY_RATIO_RANGE[1]:g}] (first: shower {row}, {value:.3g})"
            )
        return warnings


class JetChecks:
    """Physics checks of a JetNet file fed chunk by chunk (see the module constants).

    ``n_particles``: the configured number of particle slots per jet (the data set's ``geometry``),
    or None to accept any.
    """

    def __init__(self, path: str | Path, n_particles: int | None = None):
        self.path = Path(path)
        self.n_particles = n_particles
        self.n = 0
        self.pt_rel = _Tally()
        self.sum_pt_rel = _Tally()
        self.jet_pt = _Tally()
        self.sums: list[np.ndarray] = []
        self.pts: list[np.ndarray] = []

    def update(self, start: int, particles: np.ndarray, jets: np.ndarray) -> None:
        """Add one validated chunk: particle features (n, slots, 4), jet features (n, 4)."""
        p = self.path
        if start == 0 and self.n_particles is not None and particles.shape[1] != self.n_particles:
            raise DataError(
                f"{p}: {particles.shape[1]} particle slots per jet, but the data set is configured "
                f"with geometry {self.n_particles} (the slot count must match the file)"
            )
        self.n += len(jets)
        real = particles[:, :, 3] == 1
        pt_rel = particles[:, :, 2]
        empty = ~real.any(axis=1)
        if empty.any():
            raise DataError(
                f"{p}: jet {_first(empty, start)} has no particles (mask 0 in every slot; "
                f"{int(empty.sum())} such jets in rows {start}..{start + len(jets) - 1})"
            )
        zero_pt = real & (pt_rel == 0)
        if zero_pt.any():
            jet = int(np.flatnonzero(zero_pt.any(axis=1))[0])
            slot = int(np.flatnonzero(zero_pt[jet])[0])
            raise DataError(
                f"{p}: jet {start + jet}, particle {slot} is real (mask 1) with pt_rel 0 "
                "(a real particle must carry momentum)"
            )
        top = pt_rel.max(axis=1)
        self.pt_rel.add(top > PT_REL_MAX, top, start)
        sums = pt_rel.sum(axis=1, dtype=np.float64)
        s_low, s_high = SUM_PT_REL_RANGE
        self.sum_pt_rel.add((sums < s_low) | (sums > s_high), sums, start)
        pt = jets[:, 0].astype(np.float64)
        j_low, j_high = JET_PT_RANGE_GEV
        self.jet_pt.add((pt < j_low) | (pt > j_high), pt, start)
        self.sums.append(sums)
        self.pts.append(pt)

    def finish(self) -> list[str]:
        """Raise DataError for a file that cannot be meant; return the warnings (one string each)."""
        p, n = self.path, self.n
        sums, pts = np.concatenate(self.sums), np.concatenate(self.pts)
        median = float(np.median(sums))
        if median > SUM_PT_REL_ABSOLUTE:
            i = int(np.argmax(sums > SUM_PT_REL_ABSOLUTE))
            raise DataError(
                f"{p}: median sum(pt_rel) per jet is {median:.3g} (jet {i}: {sums[i]:.3g}), above "
                f"{SUM_PT_REL_ABSOLUTE:g}: pt_rel must be pt_particle / pt_jet, not pt in GeV"
            )
        median = float(np.median(pts))
        if median > JET_PT_MEV_MEDIAN_GEV:
            i = int(np.argmax(pts > JET_PT_MEV_MEDIAN_GEV))
            raise DataError(
                f"{p}: median jet pt is {median:.4g} GeV (jet {i}: {pts[i]:.4g}), above "
                f"{JET_PT_MEV_MEDIAN_GEV:g} GeV: is jet pt in MeV? (rule: jet pt in GeV)"
            )
        warnings = []
        for tally, rule, fmt in (
            (self.pt_rel, f"a particle with pt_rel above {PT_REL_MAX:g}", ".4g"),
            (
                self.sum_pt_rel,
                f"sum(pt_rel) outside the documented [{SUM_PT_REL_RANGE[0]:g}, {SUM_PT_REL_RANGE[1]:g}]",
                ".4g",
            ),
            (
                self.jet_pt,
                f"jet pt outside the documented {JET_PT_RANGE_GEV[0]:g} to {JET_PT_RANGE_GEV[1]:g} GeV",
                ".5g",
            ),
        ):
            if tally.count:
                row, value = tally.example
                first = f"first: jet {row}, {value:{fmt}}"
                warnings.append(f"{p}: {tally.count} of {n} jets have {rule} ({first})")
        return warnings
