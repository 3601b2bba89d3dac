"""Energy-flow polynomials against brute-force sums over particle tuples and an independent graph count.

Default weights are the raw pt (jetnet / energyflow ``normed=None``); ``normalised=True`` divides by sum pt.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipelines.metrics import efp


def _canonical(edges: tuple[tuple[int, int], ...], n_vertices: int) -> tuple[tuple[int, int], ...]:
    """Isomorphism-invariant form of a multigraph: smallest sorted edge list over all relabellings."""
    best = None
    for perm in itertools.permutations(range(n_vertices)):
        form = tuple(sorted(tuple(sorted((perm[a], perm[b]))) for a, b in edges))
        if best is None or form < best:
            best = form
    return best


def _is_connected(edges: tuple[tuple[int, int], ...]) -> bool:
    vertices = {v for e in edges for v in e}
    seen, todo = set(), [next(iter(vertices))]
    while todo:
        v = todo.pop()
        if v not in seen:
            seen.add(v)
            todo.extend(b if a == v else a for a, b in edges if v in (a, b))
    return seen == vertices


def _connected_classes(max_degree: int) -> set[tuple[tuple[int, int], ...]]:
    """Classes of connected loop-free multigraphs with 1..max_degree edges (exhaustive labelled search)."""
    n = max_degree + 1  # a connected graph with d edges has at most d + 1 vertices
    pairs = list(itertools.combinations(range(n), 2))
    classes = set()
    for d in range(1, max_degree + 1):
        for edges in itertools.combinations_with_replacement(pairs, d):
            if _is_connected(edges):
                classes.add(_canonical(edges, n))
    return classes


def _brute_force(graph: efp.Graph, z: np.ndarray, theta: np.ndarray) -> float:
    """The EFP definition itself: sum over all vertex -> particle assignments."""
    total = 0.0
    for tup in itertools.product(range(len(z)), repeat=graph.n_vertices):
        term = 1.0
        for i in tup:
            term *= z[i]
        for a, b in graph.edges:
            term *= theta[tup[a], tup[b]]
        total += term
    return total


def _random_jets(rng: np.random.Generator, counts: list[int], n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    particles = np.zeros((len(counts), n_slots, 3))
    mask = np.ones((len(counts), n_slots), dtype=bool)
    for j, n in enumerate(counts):
        particles[j, :n, 0] = rng.normal(0.0, 0.3, n)
        particles[j, :n, 1] = rng.uniform(-np.pi, np.pi, n)  # wide spread: the phi wrapping matters
        particles[j, :n, 2] = rng.uniform(0.01, 1.0, n)
        mask[j, :n] = False
    return particles, mask


def _theta(eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    d_phi = np.array([[np.arctan2(np.sin(a - b), np.cos(a - b)) for b in phi] for a in phi])
    return np.sqrt(np.subtract.outer(eta, eta) ** 2 + d_phi**2)


def test_graph_counts_match_independent_enumeration():
    classes = _connected_classes(4)
    by_degree = [sum(len(c) == d for c in classes) for d in range(1, 5)]
    assert by_degree == [1, 2, 5, 12]  # connected multigraphs with d = 1..4 edges
    module_forms = {_canonical(g.edges, g.n_vertices) for g in efp.CONNECTED}
    assert module_forms == classes
    assert len(efp.CONNECTED) == 20
    for g in efp.CONNECTED:
        assert _is_connected(g.edges)
        assert g.n_vertices == len({v for e in g.edges for v in e})

    # all graphs with d <= 4: the trivial graph plus every multiset of connected graphs of total degree <= 4
    expected = 1 + sum(
        1
        for r in range(1, 5)
        for combo in itertools.combinations_with_replacement(sorted(classes), r)
        if sum(map(len, combo)) <= 4
    )
    assert expected == 36
    assert len(efp.GRAPHS) == 36 == len(efp.EFP_NAMES) == len(set(efp.EFP_NAMES))
    component_forms = {
        tuple(sorted(_canonical(efp.CONNECTED[k].edges, efp.CONNECTED[k].n_vertices) for k in g.components))
        for g in efp.GRAPHS
    }
    assert len(component_forms) == 36
    assert all(g.degree <= 4 for g in efp.GRAPHS)


def test_prime_n4_d4_are_the_five_connected_graphs_with_four_vertices_and_edges():
    assert len(efp.PRIME_N4_D4) == 5
    forms = set()
    for i in efp.PRIME_N4_D4:
        g = efp.GRAPHS[i]
        assert g.connected and g.degree == 4 and g.n_vertices == 4 and _is_connected(g.edges)
        forms.add(_canonical(g.edges, 4))
    all_n4_d4 = {c for c in _connected_classes(4) if len(c) == 4 and len({v for e in c for v in e}) == 4}
    assert forms == all_n4_d4


@pytest.mark.parametrize("normalised", [False, True])
@pytest.mark.parametrize("counts", [[3, 4], [5]])
def test_every_efp_matches_brute_force(counts, normalised):
    rng = np.random.default_rng(sum(counts))
    particles, mask = _random_jets(rng, counts, n_slots=6)
    values = efp.efps(particles, mask, normalised=normalised)
    assert values.shape == (len(counts), 36)
    for j, n in enumerate(counts):
        pt = particles[j, :n, 2]
        z = pt / pt.sum() if normalised else pt
        theta = _theta(particles[j, :n, 0], particles[j, :n, 1])
        for i, g in enumerate(efp.GRAPHS):
            assert values[j, i] == pytest.approx(_brute_force(g, z, theta), rel=1e-10, abs=1e-14), g.name


def test_two_particle_hand_values_and_phi_wrapping():
    # particles at phi = 3.1 and -3.1: the wrapped angle is 2 pi - 6.2, not 6.2
    # pt (0.6, 0.2) do not sum to 1: the default (jetnet) weights are these raw pt
    particles = np.array([[[0.1, 3.1, 0.6], [-0.2, -3.1, 0.2]]])
    values = efp.efps(particles)
    theta = np.hypot(0.3, 2 * np.pi - 6.2)
    z1, z2 = 0.6, 0.2
    names = [g.name for g in efp.GRAPHS]
    assert values[0, names.index("trivial")] == pytest.approx(0.8)  # sum pt
    assert values[0, names.index("edge")] == pytest.approx(2 * z1 * z2 * theta)
    assert values[0, names.index("double_edge")] == pytest.approx(2 * z1 * z2 * theta**2)
    # path 0-1-2: sum_j z_j (sum_i z_i theta_ij)^2 = z1 (z2 theta)^2 + z2 (z1 theta)^2
    assert values[0, names.index("path3")] == pytest.approx(z1 * z2 * theta**2 * (z2 + z1))
    assert values[0, names.index("triangle")] == pytest.approx(0.0, abs=1e-15)  # needs 3 distinct particles
    assert values[0, names.index("edge*edge")] == pytest.approx((2 * z1 * z2 * theta) ** 2)
    # normalised weights z = (0.75, 0.25): the trivial EFP is 1
    normed = efp.efps(particles, normalised=True)
    assert normed[0, names.index("trivial")] == pytest.approx(1.0)
    assert normed[0, names.index("edge")] == pytest.approx(2 * 0.75 * 0.25 * theta)


def test_invariant_under_permutation_padding_and_pt_scale():
    rng = np.random.default_rng(7)
    counts = [1, 2, 7, 12, 12, 30]
    particles, mask = _random_jets(rng, counts, n_slots=30)
    base = efp.efps(particles, mask)

    perm = rng.permutation(30)
    assert np.allclose(efp.efps(particles[:, perm], mask[:, perm]), base, rtol=1e-12, atol=0)

    padded = np.concatenate([particles, np.zeros((len(counts), 9, 3))], axis=1)
    padded_mask = np.concatenate([mask, np.ones((len(counts), 9), dtype=bool)], axis=1)
    assert np.allclose(efp.efps(padded, padded_mask), base, rtol=1e-12, atol=0)
    # zero-pt particles drop out even without a mask
    assert np.allclose(efp.efps(np.where(mask[..., None], 0.0, particles)), base, rtol=1e-12, atol=0)
    # masked slots holding garbage are ignored
    garbage = np.where(mask[..., None], rng.normal(size=particles.shape) ** 2, particles)
    assert np.allclose(efp.efps(garbage, mask), base, rtol=1e-12, atol=0)
    # raw pt weights: scaling every pt by c scales the EFP of a graph with N vertices by c^N
    scaled = particles * np.array([1.0, 1.0, 3.7])
    n_vertices = np.array([sum(efp.CONNECTED[k].n_vertices for k in g.components) or 1 for g in efp.GRAPHS])
    assert n_vertices.min() == 1 and n_vertices.max() == 8  # the trivial graph; edge^4
    assert np.allclose(efp.efps(scaled, mask), base * 3.7**n_vertices, rtol=1e-12, atol=0)
    # normalised weights: the pt scale drops out
    normed = efp.efps(particles, mask, normalised=True)
    assert np.allclose(efp.efps(scaled, mask, normalised=True), normed, rtol=1e-12, atol=0)
    # normalised = raw EFP / (sum pt)^N
    total = np.where(mask, 0.0, particles[:, :, 2]).sum(axis=1)
    assert np.allclose(normed, base / total[:, None] ** n_vertices, rtol=1e-12, atol=0)
    # one jet at a time gives the same as the batch (chunking by multiplicity is transparent)
    single = np.concatenate([efp.efps(particles[j : j + 1], mask[j : j + 1]) for j in range(len(counts))])
    assert np.allclose(single, base, rtol=1e-12, atol=0)
    # a single-particle jet: every EFP with an edge vanishes; the trivial one is its pt
    assert base[0, 0] == particles[0, 0, 2] and np.all(base[0, 1:] == 0.0)


def test_disconnected_efps_are_products_of_components():
    rng = np.random.default_rng(3)
    particles, mask = _random_jets(rng, [6, 9], n_slots=9)
    values = efp.efps(particles, mask)
    connected_col = {g.components[0]: i for i, g in enumerate(efp.GRAPHS) if len(g.components) == 1}
    for i, g in enumerate(efp.GRAPHS):
        if len(g.components) > 1:
            product = np.prod([values[:, connected_col[k]] for k in g.components], axis=0)
            assert np.allclose(values[:, i], product, rtol=1e-12)


def test_empty_jet_and_bad_input():
    values = efp.efps(np.zeros((2, 4, 3)), np.ones((2, 4), dtype=bool))
    assert np.all(values == 0.0)
    with pytest.raises(ValueError, match="pt_rel must be >= 0"):
        efp.efps(np.array([[[0.0, 0.0, -1.0], [0.1, 0.1, 1.0]]]))
    with pytest.raises(ValueError, match="NaN"):
        efp.efps(np.array([[[np.nan, 0.0, 1.0]]]))
    with pytest.raises(ValueError, match="shape"):
        efp.efps(np.zeros((2, 3)))
