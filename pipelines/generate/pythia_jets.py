"""Embedded JetNet-like jets from real Pythia 8 events clustered with FastJet.

Physics (defaults; every number is a setting):

- pp collisions at sqrt(s) = 13 TeV, Pythia 8 default tune (Monash) with ISR, FSR, MPI, hadronisation
  and hadron decays all on. Hard 2 -> 2 processes with pT-hat in [800, 1300] GeV:
  ``g``: HardQCD:gg2gg + HardQCD:qqbar2gg (gluon final states);
  ``q``: HardQCD:qq2qq + HardQCD:qqbar2qqbarNew (quark final states);
  ``t``: Top:gg2ttbar + Top:qqbar2ttbar with W -> hadrons forced (24:onIfAny = 1 2 3 4 5);
  ``w``: WeakDoubleBoson:ffbar2WW with W -> hadrons forced;
  ``z``: WeakDoubleBoson:ffbar2gmZgmZ with pure Z exchange (WeakZ0:gmZmode = 2) and Z -> hadrons
  forced (23:onIfAny = 1 2 3 4 5).
  JetNet's W and Z jets are undecayed gauge bosons produced at pT of about 1 TeV and decayed and
  showered by Pythia; boson pair production is the Standard-Model 2 -> 2 process whose two outgoing
  partons are both the boson itself, so the same pT-hat window gives bosons at the jet pt window with
  the same efficiency as top pairs, and matching the leading jet to an outgoing boson (not a recoiling
  quark or gluon, as in W + jet production) keeps every event of the right kind. At pt of 1 TeV the
  decay quarks lie about 2 m / pt = 0.16 (W) to 0.18 (Z) apart, well inside R = 0.8, so the jet mass
  peaks at the boson mass.
- Final-state visible particles (Pythia's isVisible: neutrinos excluded), taken as massless
  (E = |p|, as in JetNet's relative-mass definition, so rapidity = pseudorapidity and the clustering
  distance is the (eta, phi) distance), are clustered with anti-kt, R = 0.8 (E-scheme). A jet with
  several hard prongs has its axis between them, so a few soft constituents (about 0.3 %, carrying
  about 0.02 % of the jet pt) lie up to ~1.1 from the axis, as in any anti-kt sample.
  The leading jet is kept if its pt lies in [800, 1200] GeV, |eta| < 2.5 and it lies
  within Delta R (eta, phi) < 0.8 of an outgoing hard-process parton of the requested type
  (a gluon; a light quark u, d, s; a top quark; a W; a Z); otherwise the event is discarded.
- Constituents are sorted by decreasing pt and stored relative to the jet axis (JetNet layout, see
  :mod:`pipelines.io.jetnet`): eta_rel = eta - eta_jet (pseudorapidity), phi_rel wrapped into [-pi, pi),
  pt_rel = pt / pt_jet; truncated or zero-padded to ``n_particles`` slots. jet_features holds the jet's
  (pt [GeV], pseudorapidity, mass [GeV], number of constituents before truncation).

Seeding: Pythia's Random:seed = seed + 1 (Pythia reads 0 as "seed from the clock"), so a given seed
always gives the same jets.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np

from pipelines.generate.pythia_settings import JetGenSettings
from pipelines.io.jetnet import write_jetnet
from pipelines.jet_types import JET_TYPES, SHUFFLE_STREAM, parse_jet_types, type_code
from pipelines.progress import progress as progress_bar
from pipelines.settings import settings_object

log = logging.getLogger(__name__)

PARTICLE_SLOTS = (30, 150)
MAX_SEED = 899_999_999  # Pythia accepts Random:seed up to 900,000,000

_PROCESSES = {
    "g": ("HardQCD:gg2gg = on", "HardQCD:qqbar2gg = on"),
    "q": ("HardQCD:qq2qq = on", "HardQCD:qqbar2qqbarNew = on"),
    "t": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "24:onMode = off", "24:onIfAny = 1 2 3 4 5"),
    "w": ("WeakDoubleBoson:ffbar2WW = on", "24:onMode = off", "24:onIfAny = 1 2 3 4 5"),
    "z": (
        "WeakDoubleBoson:ffbar2gmZgmZ = on",
        "WeakZ0:gmZmode = 2",
        "23:onMode = off",
        "23:onIfAny = 1 2 3 4 5",
    ),
}
# absolute PDG ids of the hard-process parton a jet of each type must be matched to
_MATCH_IDS = {
    "g": frozenset({21}),
    "q": frozenset({1, 2, 3}),
    "t": frozenset({6}),
    "w": frozenset({24}),
    "z": frozenset({23}),
}
_QUIET = (
    "Print:quiet = on",
    "Init:showProcesses = off",
    "Init:showChangedSettings = off",
    "Init:showChangedParticleData = off",
    "Next:numberCount = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0",
    "Next:numberShowEvent = 0",
)


def _check_args(n_jets: int, jet_type: str, n_particles: int, seed: int) -> None:
    if jet_type not in JET_TYPES:
        raise ValueError(f"jet_type must be one of {JET_TYPES}, got {jet_type!r}")
    if n_particles < 1:
        raise ValueError(f"n_particles must be >= 1, got {n_particles}")
    if n_jets < 1:
        raise ValueError(f"n_jets must be >= 1, got {n_jets}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")


def _make_pythia(jet_type: str, seed: int, settings: JetGenSettings):
    """Configure and initialise a silent, seeded Pythia instance."""
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    lines = [
        *_QUIET,
        "Beams:idA = 2212",
        "Beams:idB = 2212",
        f"Beams:eCM = {settings.sqrt_s_gev}",
        "Random:setSeed = on",
        f"Random:seed = {seed + 1}",
        f"PhaseSpace:pTHatMin = {settings.pthat_min_gev}",
        f"PhaseSpace:pTHatMax = {settings.pthat_max_gev}",
        f"PartonLevel:MPI = {'on' if settings.mpi else 'off'}",
        *_PROCESSES[jet_type],
        *settings.pythia_lines,
    ]
    for line in lines:
        if not pythia.readString(line):
            raise ValueError(f"Pythia rejected the setting {line!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise for jet type {jet_type!r}")
    return pythia


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send C-level stdout to stderr (FastJet prints its banner to stdout on first use)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _visible_final_state(event) -> np.ndarray:
    """Massless (px, py, pz, E = |p|) in GeV of the event's final-state visible particles, (k, 4) float64.

    Particles with pt = 0 (along the beam, no defined pseudorapidity) are dropped.
    """
    out = []
    for i in range(event.size()):
        p = event[i]
        if p.isFinal() and p.isVisible() and p.pT() > 0:
            out.append((p.px(), p.py(), p.pz()))
    p3 = np.asarray(out, dtype=np.float64).reshape(-1, 3)
    return np.column_stack([p3, np.linalg.norm(p3, axis=1)])


def _wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Wrap angles into [-pi, pi)."""
    return (phi + np.pi) % (2 * np.pi) - np.pi


def _hard_partons(process) -> list[tuple[int, float, float]]:
    """(|PDG id|, eta, phi) of the two outgoing partons of the hard 2 -> 2 process."""
    return [(process[i].idAbs(), process[i].eta(), process[i].phi()) for i in (5, 6)]


def jet_record(
    constituents: np.ndarray, jet_p4: np.ndarray, n_particles: int
) -> tuple[np.ndarray, np.ndarray]:
    """Convert one jet to the JetNet layout.

    ``constituents`` (k, 4) and ``jet_p4`` (4,) are (px, py, pz, E) in GeV. Returns
    (particle_features (n_particles, 4), jet_features (4,)) as float64.
    """
    px, py, pz, e = constituents.T
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / pt)
    phi = np.arctan2(py, px)
    jpx, jpy, jpz, je = jet_p4
    jet_pt = math.hypot(jpx, jpy)
    jet_eta = math.asinh(jpz / jet_pt)
    jet_phi = math.atan2(jpy, jpx)
    jet_mass = math.sqrt(max(je * je - jpx * jpx - jpy * jpy - jpz * jpz, 0.0))

    order = np.argsort(-pt, kind="stable")[:n_particles]
    k = len(order)
    particles = np.zeros((n_particles, 4))
    particles[:k, 0] = eta[order] - jet_eta
    particles[:k, 1] = _wrap_phi(phi[order] - jet_phi)
    particles[:k, 2] = pt[order] / jet_pt
    particles[:k, 3] = 1.0
    return particles, np.array([jet_pt, jet_eta, jet_mass, len(constituents)])


def _delta_r(eta1: float, phi1: float, eta2: float, phi2: float) -> float:
    return math.hypot(eta1 - eta2, float(_wrap_phi(np.float64(phi1 - phi2))))


def generate_jets(
    n_jets: int,
    jet_type: str,
    n_particles: int = 30,
    seed: int = 0,
    settings: JetGenSettings | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n_jets`` leading jets of ``jet_type`` ("g", "q", "t", "w" or "z") with Pythia 8 + FastJet.

    Returns (particle_features (n_jets, n_particles, 4), jet_features (n_jets, 4)), float32, in the
    JetNet layout. Raises RuntimeError if fewer than ``n_jets`` jets pass the selection within
    ``settings.max_events_per_jet * n_jets`` events.
    """
    import fastjet

    settings = settings or JetGenSettings()
    _check_args(n_jets, jet_type, n_particles, seed)
    pythia = _make_pythia(jet_type, seed, settings)
    jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, settings.jet_radius)
    with _stdout_to_stderr():  # FastJet prints its banner on the first clustering in a process
        fastjet.ClusterSequence([fastjet.PseudoJet(1.0, 0.0, 0.0, 1.0)], jet_def)
    match_ids = _MATCH_IDS[jet_type]

    particle_features = np.zeros((n_jets, n_particles, 4), dtype=np.float32)
    jet_features = np.zeros((n_jets, 4), dtype=np.float32)
    n_done = n_events = n_failed = 0
    max_events = settings.max_events_per_jet * n_jets
    bar = progress_bar(total=n_jets, desc=f"pythia {jet_type} jets", unit="jet", disable=not progress)
    with bar:
        while n_done < n_jets:
            if n_events >= max_events:
                raise RuntimeError(
                    f"only {n_done} of {n_jets} {jet_type} jets passed the selection in {n_events} events; "
                    "widen the jet pt window or the pT-hat range"
                )
            n_events += 1
            if not pythia.next():
                n_failed += 1
                continue
            p4 = _visible_final_state(pythia.event)
            pseudojets = [fastjet.PseudoJet(*row) for row in p4.tolist()]
            for i, pj in enumerate(pseudojets):
                pj.set_user_index(i)
            sequence = fastjet.ClusterSequence(pseudojets, jet_def)
            jets = fastjet.sorted_by_pt(sequence.inclusive_jets(0.0))
            if not jets:
                continue
            jet = jets[0]
            if not (settings.jet_pt_min_gev <= jet.pt() <= settings.jet_pt_max_gev):
                continue
            if abs(jet.eta()) >= settings.jet_abs_eta_max:
                continue
            matched = any(
                pid in match_ids and _delta_r(jet.eta(), jet.phi_std(), eta, phi) < settings.match_radius
                for pid, eta, phi in _hard_partons(pythia.process)
            )
            if not matched:
                continue
            index = [c.user_index() for c in jet.constituents()]
            jet_p4 = np.array([jet.px(), jet.py(), jet.pz(), jet.e()])
            particles, features = jet_record(p4[index], jet_p4, n_particles)
            particle_features[n_done] = particles
            jet_features[n_done] = features
            n_done += 1
            bar.update(1)
    log.info("%s jets: %d accepted from %d events (%d failed)", jet_type, n_done, n_events, n_failed)
    return particle_features, jet_features


def generate_types(
    n_jets: int,
    jet_types: Sequence[str],
    n_particles: int = 30,
    seed: int = 0,
    settings: JetGenSettings | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_jets`` jets of each of ``jet_types``, shuffled together (seeded): particle_features,
    jet_features (N, 4) and JetNet type codes (N,). Type k is generated with seed + k
    (mod MAX_SEED + 1), so each type's jets are those of a single-type run with that seed."""
    parts = [
        generate_jets(n_jets, t, n_particles, (seed + k) % (MAX_SEED + 1), settings, progress)
        for k, t in enumerate(jet_types)
    ]
    codes = np.repeat([type_code(t) for t in jet_types], n_jets)
    # a stream of its own: the convert stage's split draws a permutation from default_rng(seed), and
    # the same permutation here would send whole types into the validation and test splits
    order = np.random.default_rng([seed, SHUFFLE_STREAM]).permutation(len(codes))
    pf = np.concatenate([p for p, _ in parts])[order]
    jf = np.concatenate([j for _, j in parts])[order]
    return pf, jf, codes[order]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI of stage ``generate-jets``: write Pythia 8 jets to a JetNet HDF5 file."""
    parser = argparse.ArgumentParser(prog="generate-jets", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jet-type",
        required=True,
        help=f"one of {', '.join(JET_TYPES)}, or several separated by commas (n jets of each, "
        "written with JetNet's type column)",
    )
    parser.add_argument("--n-jets", required=True, type=int, help="jets (of each type)")
    parser.add_argument("--n-particles", type=int, default=30, choices=PARTICLE_SLOTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", default="{}", help="JSON object of JetGenSettings fields")
    parser.add_argument("--out", required=True, help="output .h5 path (JetNet layout)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    settings = JetGenSettings.from_dict(settings_object(args.settings, JetGenSettings, "jet-generator"))
    given = args.jet_type.split(",")
    types = parse_jet_types(given[0] if len(given) == 1 else given, "--jet-type")
    if len(given) == 1:
        pf, jf = generate_jets(
            args.n_jets, types[0], args.n_particles, args.seed, settings, progress=not args.no_progress
        )
        write_jetnet(args.out, pf, jf)
    else:
        pf, jf, codes = generate_types(
            args.n_jets, types, args.n_particles, args.seed, settings, progress=not args.no_progress
        )
        write_jetnet(args.out, pf, jf, types=codes)
    log.info("wrote %d %s jets (%d slots) to %s", len(pf), ",".join(types), args.n_particles, args.out)
    return 0
