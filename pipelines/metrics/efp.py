"""Energy-flow polynomials (EFPs) of degree <= 4, vectorised over jets.

Definition (Komiske, Metodiev, Thaler, arXiv:1712.07124), measure "hadr", beta = 1:
    theta_ij = sqrt(d_eta_ij^2 + d_phi_ij^2)  (d_phi wrapped into [-pi, pi)),
    EFP_G = sum_{i_1..i_N} z_{i_1} ... z_{i_N} prod_{(k, l) in G} theta_{i_k i_l}
for a multigraph G with N vertices; the degree d of G is its number of edges.  Disconnected graphs
factorise into the product of their connected components.

Weights z_i (the ``normalised`` argument of :func:`efps`):
* default, not normalised: z_i = pt_i as given (pt_rel for JetNet).  This is energyflow's ``normed=None``
  (energyflow >= 1.1), which ``jetnet`` and the published JetNet tables (W1EFP, FPD, KPD) use; scaling
  every pt of a jet by c scales an EFP of a graph with N vertices by c^N.
* ``normalised=True``: z_i = pt_i / sum_j pt_j (energyflow ``normed=True``); the EFPs are then invariant
  under a common pt scale.

There are 20 connected ("prime") multigraphs with 1 <= d <= 4 and 36 multigraphs in all with d <= 4
(including the trivial graph: one vertex, no edge, EFP = sum z: sum pt, or 1 when normalised).  Each
connected graph is evaluated with matrix-vector products (O(n^2) per jet) except the ones holding a
cycle, which need one batched matrix product M @ M with M_ij = sqrt(z_i) theta_ij sqrt(z_j) (O(n^3) per jet).

Column order of ``efps`` (names in ``EFP_NAMES``): by degree d; within a degree connected graphs
before disconnected ones, then by number of vertices n, then in the order of ``CONNECTED``.  The 5
prime graphs with n = 4, d = 4 (the jetnet W1EFP set: square, paw, path with a doubled end edge, path
with a doubled middle edge, star with a doubled edge) are the columns ``PRIME_N4_D4``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Graph:
    """A multigraph: ``edges`` over vertices 0..n_vertices-1 (a repeated pair is a multi-edge)."""

    name: str
    n_vertices: int
    edges: tuple[tuple[int, int], ...]
    components: tuple[int, ...]  # indices into CONNECTED (empty for the trivial graph)

    @property
    def degree(self) -> int:
        return len(self.edges)

    @property
    def connected(self) -> bool:
        return len(self.components) <= 1


class _Blocks:
    """Per-chunk building blocks shared by the connected-graph evaluators (all float64).

    z (B, n); theta (B, n, n); P_k = theta**k elementwise; s_k = P_k z; u = z * s_1;
    M = sqrt(z) theta sqrt(z) and its square M2 (computed lazily: only cyclic graphs need it).
    """

    def __init__(self, z: FloatArray, theta: FloatArray) -> None:
        self.z = z
        self.p1 = theta
        self.p2 = theta * theta
        self.p3 = self.p2 * theta
        self.p4 = self.p2 * self.p2
        self.s1 = _matvec(self.p1, z)
        self.s2 = _matvec(self.p2, z)
        self.s3 = _matvec(self.p3, z)
        self.s4 = _matvec(self.p4, z)
        self.u = z * self.s1
        self.p1u = _matvec(self.p1, self.u)
        self._m: FloatArray | None = None
        self._m2: FloatArray | None = None
        self._m_m2: FloatArray | None = None

    @property
    def m(self) -> FloatArray:
        if self._m is None:
            r = np.sqrt(self.z)
            self._m = r[:, :, None] * self.p1 * r[:, None, :]
        return self._m

    @property
    def m2(self) -> FloatArray:
        if self._m2 is None:
            self._m2 = np.matmul(self.m, self.m)
        return self._m2

    @property
    def m_m2(self) -> FloatArray:
        """Elementwise M * M2: (M * M2)_ij = z_i z_j theta_ij (theta Z theta)_ij."""
        if self._m_m2 is None:
            self._m_m2 = self.m * self.m2
        return self._m_m2


def _matvec(a: FloatArray, v: FloatArray) -> FloatArray:
    """Batched matrix-vector product (B, n, n) x (B, n) -> (B, n)."""
    return np.matmul(a, v[:, :, None])[:, :, 0]


def _sum(x: FloatArray) -> FloatArray:
    return x.reshape(x.shape[0], -1).sum(axis=1)


def _paw(b: _Blocks) -> FloatArray:
    # triangle (i, j, k) with a pendant on i: sum_i s1_i (M^3)_ii, (M^3)_ii = sum_j (M * M2)_ij
    return np.sum(b.s1 * np.sum(b.m_m2, axis=2), axis=1)


def _triangle_double(b: _Blocks) -> FloatArray:
    # triangle with edge (0, 1) doubled: sum_ij z_i z_j theta_ij^2 (theta Z theta)_ij = sum theta * (M * M2)
    return _sum(b.p1 * b.m_m2)


# Connected multigraphs with 1 <= d <= 4: (name, n_vertices, edges, evaluator).
_CONNECTED_SPECS: tuple[
    tuple[str, int, tuple[tuple[int, int], ...], Callable[[_Blocks], FloatArray]], ...
] = (
    # d = 1
    ("edge", 2, ((0, 1),), lambda b: np.sum(b.z * b.s1, axis=1)),
    # d = 2
    ("double_edge", 2, ((0, 1), (0, 1)), lambda b: np.sum(b.z * b.s2, axis=1)),
    ("path3", 3, ((0, 1), (1, 2)), lambda b: np.sum(b.z * b.s1**2, axis=1)),
    # d = 3
    ("triple_edge", 2, ((0, 1),) * 3, lambda b: np.sum(b.z * b.s3, axis=1)),
    ("path3_double", 3, ((0, 1), (0, 1), (1, 2)), lambda b: np.sum(b.z * b.s2 * b.s1, axis=1)),
    ("triangle", 3, ((0, 1), (1, 2), (2, 0)), lambda b: _sum(b.m_m2)),
    ("path4", 4, ((0, 1), (1, 2), (2, 3)), lambda b: np.sum(b.u * b.p1u, axis=1)),
    ("star3", 4, ((0, 1), (0, 2), (0, 3)), lambda b: np.sum(b.z * b.s1**3, axis=1)),
    # d = 4
    ("quadruple_edge", 2, ((0, 1),) * 4, lambda b: np.sum(b.z * b.s4, axis=1)),
    ("path3_triple", 3, ((0, 1),) * 3 + ((1, 2),), lambda b: np.sum(b.z * b.s3 * b.s1, axis=1)),
    ("path3_double_double", 3, ((0, 1), (0, 1), (1, 2), (1, 2)), lambda b: np.sum(b.z * b.s2**2, axis=1)),
    ("triangle_double", 3, ((0, 1), (0, 1), (1, 2), (2, 0)), _triangle_double),
    ("square", 4, ((0, 1), (1, 2), (2, 3), (3, 0)), lambda b: _sum(b.m2 * b.m2)),
    ("paw", 4, ((0, 1), (1, 2), (2, 0), (0, 3)), _paw),
    ("path4_double_end", 4, ((0, 1), (0, 1), (1, 2), (2, 3)), lambda b: np.sum(b.z * b.s2 * b.p1u, axis=1)),
    (
        "path4_double_middle",
        4,
        ((0, 1), (1, 2), (1, 2), (2, 3)),
        lambda b: np.sum(b.u * _matvec(b.p2, b.u), axis=1),
    ),
    ("star3_double", 4, ((0, 1), (0, 1), (0, 2), (0, 3)), lambda b: np.sum(b.z * b.s2 * b.s1**2, axis=1)),
    ("path5", 5, ((0, 1), (1, 2), (2, 3), (3, 4)), lambda b: np.sum(b.z * b.p1u**2, axis=1)),
    ("star4", 5, ((0, 1), (0, 2), (0, 3), (0, 4)), lambda b: np.sum(b.z * b.s1**4, axis=1)),
    ("chair", 5, ((0, 1), (0, 2), (0, 3), (3, 4)), lambda b: np.sum(b.z * b.s1**2 * b.p1u, axis=1)),
)

CONNECTED: tuple[Graph, ...] = tuple(
    Graph(name, n, edges, (k,)) for k, (name, n, edges, _) in enumerate(_CONNECTED_SPECS)
)
_EVALUATORS: tuple[Callable[[_Blocks], FloatArray], ...] = tuple(spec[3] for spec in _CONNECTED_SPECS)

MAX_DEGREE = 4


def _disjoint_union(components: tuple[int, ...]) -> Graph:
    """The graph made of the given connected components, vertices relabelled consecutively."""
    edges: list[tuple[int, int]] = []
    offset = 0
    for k in components:
        g = CONNECTED[k]
        edges.extend((a + offset, b + offset) for a, b in g.edges)
        offset += g.n_vertices
    name = "*".join(CONNECTED[k].name for k in components)
    return Graph(name, offset, tuple(edges), components)


def _all_graphs(max_degree: int) -> tuple[Graph, ...]:
    """All multigraphs with degree <= max_degree: multisets of connected graphs, plus the trivial graph."""
    graphs = [Graph("trivial", 1, (), ())]
    for r in range(1, max_degree + 1):
        for combo in itertools.combinations_with_replacement(range(len(CONNECTED)), r):
            if sum(CONNECTED[k].degree for k in combo) <= max_degree:
                graphs.append(_disjoint_union(combo))
    order = {g.components: i for i, g in enumerate(graphs)}
    return tuple(sorted(graphs, key=lambda g: (g.degree, not g.connected, g.n_vertices, order[g.components])))


GRAPHS: tuple[Graph, ...] = _all_graphs(MAX_DEGREE)
EFP_NAMES: tuple[str, ...] = tuple(f"efp_d{g.degree}_n{g.n_vertices}_{g.name}" for g in GRAPHS)
PRIME_N4_D4: tuple[int, ...] = tuple(
    i for i, g in enumerate(GRAPHS) if g.connected and g.degree == 4 and g.n_vertices == 4
)


def _chunk_size(n_particles: int, budget: int = 65_536) -> int:
    """Jets per chunk: a (B, n, n) float64 block of about ``budget`` elements (512 kB, fits in cache)."""
    return max(1, budget // max(1, n_particles * n_particles))


def _pairwise_angles(eta: FloatArray, phi: FloatArray) -> FloatArray:
    """theta_ij = sqrt(d_eta^2 + d_phi^2) with d_phi wrapped into [-pi, pi]: (B, n) -> (B, n, n)."""
    phi = np.mod(phi + np.pi, 2.0 * np.pi) - np.pi  # O(n): after this |phi_i - phi_j| < 2 pi
    d_phi = np.subtract(phi[:, :, None], phi[:, None, :])
    np.abs(d_phi, out=d_phi)
    np.minimum(d_phi, 2.0 * np.pi - d_phi, out=d_phi)
    np.square(d_phi, out=d_phi)
    d_eta = np.subtract(eta[:, :, None], eta[:, None, :])
    np.square(d_eta, out=d_eta)
    d_eta += d_phi
    return np.sqrt(d_eta, out=d_eta)


def _connected_values(z: FloatArray, eta: FloatArray, phi: FloatArray) -> FloatArray:
    """All connected-graph EFPs for one chunk: (B, n) inputs -> (B, len(CONNECTED))."""
    blocks = _Blocks(z, _pairwise_angles(eta, phi))
    return np.stack([f(blocks) for f in _EVALUATORS], axis=1)


def efps(
    particles: NDArray[np.floating],
    mask: NDArray[np.bool_] | None = None,
    progress: bool = False,
    normalised: bool = False,
) -> FloatArray:
    """All 36 EFPs with d <= 4 for each jet.

    particles: (N, n, 3) (eta_rel, phi_rel (rad), pt_rel >= 0); mask: (N, n) bool, True = padding
    (padded particles get z = 0 and drop out); normalised: weights pt / sum pt instead of pt (see the
    module docstring).  Returns (N, 36) float64, columns as ``EFP_NAMES``.
    A jet without any particle of positive pt has all EFPs (the trivial one included) equal to 0.
    Jets are processed in chunks sorted by multiplicity, each chunk trimmed to its largest jet.
    """
    particles = np.asarray(particles)
    if particles.ndim != 3 or particles.shape[2] < 3:
        raise ValueError(f"particles must have shape (N, n, 3+), got {particles.shape}")
    n_jets, n_max = particles.shape[:2]
    pt = np.asarray(particles[:, :, 2], dtype=np.float64)
    if not np.all(np.isfinite(particles[:, :, :3])):
        raise ValueError("particles hold NaN or inf")
    pad = np.zeros((n_jets, n_max), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if pad.shape != (n_jets, n_max):
        raise ValueError(f"mask must have shape {(n_jets, n_max)}, got {pad.shape}")
    if np.any(pt[~pad] < 0):
        raise ValueError("pt_rel must be >= 0 for every non-padded particle")
    pad = pad | (pt <= 0)
    counts = (~pad).sum(axis=1)

    # Real particles first in each jet (stable), so that a chunk can be trimmed to its largest count.
    order_in_jet = np.argsort(pad, axis=1, kind="stable")
    jet_order = np.argsort(counts, kind="stable")
    out = np.zeros((n_jets, len(GRAPHS)), dtype=np.float64)
    connected = np.zeros((n_jets, len(CONNECTED)), dtype=np.float64)
    trivial = np.zeros(n_jets, dtype=np.float64)  # sum z: sum pt, or 1 when normalised; 0 without particles

    starts = []
    start = 0
    while start < n_jets:  # counts ascend along jet_order: the last jet of a chunk is its widest
        stop = min(n_jets, start + _chunk_size(int(counts[jet_order[start]])))
        stop = min(stop, start + _chunk_size(int(counts[jet_order[stop - 1]])))
        starts.append((start, stop))
        start = stop

    iterator = starts
    if progress:
        from pipelines.progress import progress as progress_bar

        iterator = progress_bar(starts, desc="EFPs", unit="chunk", leave=False)
    for start, stop in iterator:
        jets = jet_order[start:stop]
        width = int(counts[jets].max())
        if width == 0:
            continue
        cols = order_in_jet[jets, :width]
        rows = jets[:, None]
        p = np.asarray(particles[rows, cols, :3], dtype=np.float64)
        keep = ~pad[rows, cols]
        z = np.where(keep, p[:, :, 2], 0.0)
        total = z.sum(axis=1)
        trivial[jets] = 1.0 if normalised else total
        if normalised:
            z = z / total[:, None]
        connected[jets] = _connected_values(z, p[:, :, 0], p[:, :, 1])

    for i, g in enumerate(GRAPHS):
        if not g.components:
            out[:, i] = trivial
        else:
            out[:, i] = np.prod(connected[:, list(g.components)], axis=1)
    return out


def prime_n4_d4(efp_values: FloatArray) -> FloatArray:
    """The 5 prime EFPs with n = 4, d = 4 (the W1EFP set) from the output of ``efps``."""
    return efp_values[:, list(PRIME_N4_D4)]
