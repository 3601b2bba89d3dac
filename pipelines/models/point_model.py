"""Point level of the factorised family: where a layer's hits lie and how the layer energy is shared.

For a (shower, layer) pair with n_l > 0 hits, one small MLP (:class:`PointModel`) maps the pair's
features (:func:`pair_features`: the layer, log E_inc, the layer's hit count and mean energy per hit,
the hit counts of the adjacent layers, the shower's energy-weighted depth and depth spread, its
E_tot / E_inc and the layer's energy fraction; all derived from the shower-level vector, so they carry
the shower-to-shower fluctuations) to the distribution of one point:

- r ~ Categorical over the n_r rings,
- alpha | r ~ Categorical over the n_alpha bins (learned; rotation-symmetric data gives ~uniform),
- y | r ~ mixture of K Gaussians, y = log(E_point / (E_l / n_l)): the energy relative to the layer's
  mean hit energy; sampled shares exp(y) are normalised within the layer afterwards.

It is trained by maximum likelihood on training points (:meth:`PointModel.nll`); the network runs once
per pair, however many points the pair has. Trained on the hit voxels of showers, n_l p(r) p(alpha | r)
estimates each voxel's occupancy probability (its expected number of hits, at most 1).

Sampling (:func:`sample_points`) places the n_l points of a pair in one of two ways:

- ``"pareto"`` (default): n_l distinct voxels by Pareto order sampling (Rosen 1997) with inclusion
  probabilities pi_v = min(n_l p(r) p(alpha | r), 1 - 1e-6): the n_l voxels with the largest
  logit(pi_v) + Logistic noise. It reproduces the occupancies (a saturated voxel is always taken)
  and never collides, so no point has to move;
- ``"independent"``: every point draws (r, alpha) on its own (the ring counts as one multinomial per
  pair); points that share a voxel are then separated by :mod:`pipelines.models.decoding`.

Each point's y then comes from its ring's mixture (inverse-CDF component, Gaussian, clamped to the
training range of y).

Per-layer binnings (dataset 1): the heads span the largest n_r and n_alpha over the layers, and the
cells a layer does not have (r >= its n_r, alpha >= its n_alpha) are masked: their logits are -inf,
so they have zero probability in the likelihood and a key of -inf in Pareto sampling, and a pair never
gets more points than its layer has voxels. Only the Pareto placement supports such masks (the
collision resolution of ``"independent"`` walks a regular grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipelines.geometry import THRESHOLD_MEV
from pipelines.models.settings import PLACEMENTS
from pipelines.models.shower_flow import depth_summaries

#: Numeric per-(shower, layer) features of :func:`pair_features` (the layer enters as an embedding).
N_NUMERIC = 10
_LOG_SIGMA_RANGE = (-6.0, 3.0)


def shower_summary(cond: torch.Tensor, e_inc: torch.Tensor, layer_e: torch.Tensor) -> torch.Tensor:
    """Per-shower summary (N, 5) float64: [c, depth, depth spread, log(E_tot / E_inc), E_tot].

    ``cond`` (N,) is the standardised log E_inc; depth and spread are the energy-weighted mean layer
    and its standard deviation.
    """
    layer_e = layer_e.double()
    e_tot = layer_e.sum(dim=1)
    depth, spread = depth_summaries(layer_e)
    ratio = torch.log(e_tot.clamp_min(1e-30) / e_inc.double())
    return torch.stack([cond.double(), depth, spread, ratio, e_tot], dim=1)


def pair_features(
    summary: torch.Tensor,
    counts: torch.Tensor,
    layer_e: torch.Tensor,
    shower: torch.Tensor,
    layer: torch.Tensor,
    capacity: int | torch.Tensor,
) -> torch.Tensor:
    """Numeric features (M, N_NUMERIC) float32 of (shower, layer) pairs.

    ``summary`` (N, 5) from :func:`shower_summary`, ``counts`` / ``layer_e`` (N, L); ``shower``, ``layer``
    (M,) index them. ``capacity``: voxels per layer, one number (regular grid) or a tensor (L,) (per-layer
    binnings: each hit count is scaled by the capacity of its own layer).
    """
    n_layers = counts.shape[1]
    shower, layer = shower.long(), layer.long()
    s = summary[shower]
    n = counts[shower, layer].double()
    prev = torch.where(layer > 0, counts[shower, (layer - 1).clamp_min(0)], 0).double()
    nxt = torch.where(layer < n_layers - 1, counts[shower, (layer + 1).clamp_max(n_layers - 1)], 0).double()
    e = layer_e[shower, layer].double()
    if isinstance(capacity, torch.Tensor):
        log_cap = torch.log1p(capacity.to(counts.device).double())
        scale = log_cap[layer]
        scale_prev = log_cap[(layer - 1).clamp_min(0)]
        scale_next = log_cap[(layer + 1).clamp_max(n_layers - 1)]
    else:
        scale = scale_prev = scale_next = math.log1p(capacity)
    mean_hit = torch.where(n > 0, torch.log(e.clamp_min(1e-30) / n.clamp_min(1.0) / THRESHOLD_MEV), 0.0)
    frac = torch.log(e / s[:, 4].clamp_min(1e-30) + 1e-9)
    feats = [
        s[:, 0],
        s[:, 1] / n_layers,
        s[:, 2] / 10.0,
        s[:, 3] * 5.0,
        (layer - s[:, 1]) / 10.0,
        torch.log1p(n) / scale,
        torch.log1p(prev) / scale_prev,
        torch.log1p(nxt) / scale_next,
        mean_hit / 10.0,
        frac / 10.0,
    ]
    return torch.stack(feats, dim=1).float()


@dataclass
class PointParams:
    """Per-pair distribution parameters."""

    r_logits: torch.Tensor  # (M, n_r)
    alpha_logits: torch.Tensor  # (M, n_r, n_alpha)
    mix_logits: torch.Tensor  # (M, n_r, K)
    mu: torch.Tensor  # (M, n_r, K)
    log_sigma: torch.Tensor  # (M, n_r, K)
    valid: torch.Tensor | None = None  # (M, n_r, n_alpha) bool: cells of the pair's layer (None: all)

    def capacity(self) -> torch.Tensor | None:
        """Voxels of each pair's layer (M,) int64, or None on a regular grid (every cell valid)."""
        return None if self.valid is None else self.valid.sum(dim=(1, 2))


class PointModel(nn.Module):
    """MLP from (layer embedding, numeric pair features) to r, alpha | r and energy | r distributions.

    ``layer_bins`` (per-layer binnings): (n_alpha, n_r) of every layer, each at most (``n_alpha``, ``n_r``);
    the cells beyond a layer's bins get logit -inf. None: a regular grid, nothing is masked.
    """

    def __init__(
        self, n_layers: int, n_alpha: int, n_r: int, hidden: int, n_blocks: int, n_components: int,
        embed_dim: int = 16, layer_bins: list[tuple[int, int]] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.n_layers, self.n_alpha, self.n_r, self.k = n_layers, n_alpha, n_r, n_components
        self.masked = layer_bins is not None
        if layer_bins is not None:
            bins = torch.as_tensor(layer_bins, dtype=torch.long).reshape(-1, 2)
            if len(bins) != n_layers or bool((bins < 1).any()):
                raise ValueError(
                    f"layer_bins needs positive (n_alpha, n_r) for each of the {n_layers} layers"
                )
            if int(bins[:, 0].max()) > n_alpha or int(bins[:, 1].max()) > n_r:
                raise ValueError(
                    f"layer_bins {bins.tolist()} exceed the heads' (n_alpha, n_r) = ({n_alpha}, {n_r})"
                )
            # not persistent: fixed by the geometry, so the weights of a model stay the trained ones only
            self.register_buffer("ring_valid", torch.arange(n_r)[None, :] < bins[:, 1:], persistent=False)
            self.register_buffer(
                "alpha_valid", torch.arange(n_alpha)[None, :] < bins[:, :1], persistent=False
            )
        self.embed = nn.Embedding(n_layers, embed_dim)
        layers: list[nn.Module] = []
        n_in = embed_dim + N_NUMERIC
        for _ in range(n_blocks):
            layers += [nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.SiLU()]
            n_in = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(n_in, n_r + n_r * n_alpha + 3 * n_r * n_components)

    def forward(self, numeric: torch.Tensor, layer: torch.Tensor) -> PointParams:
        h = self.head(self.body(torch.cat([self.embed(layer.long()), numeric], dim=1)))
        m, n_r, n_a, k = h.shape[0], self.n_r, self.n_alpha, self.k
        r_logits, alpha, mix = torch.split(h, [n_r, n_r * n_a, 3 * n_r * k], dim=1)
        mix = mix.reshape(m, n_r, 3, k)
        alpha_logits, valid = alpha.reshape(m, n_r, n_a), None
        if self.masked:
            layer = layer.long()
            ring_ok, alpha_ok = self.ring_valid[layer], self.alpha_valid[layer]
            r_logits = r_logits.masked_fill(~ring_ok, -math.inf)
            alpha_logits = alpha_logits.masked_fill(~alpha_ok[:, None, :], -math.inf)
            valid = ring_ok[:, :, None] & alpha_ok[:, None, :]
        return PointParams(
            r_logits=r_logits,
            alpha_logits=alpha_logits,
            mix_logits=mix[:, :, 0],
            mu=mix[:, :, 1],
            log_sigma=mix[:, :, 2].clamp(*_LOG_SIGMA_RANGE),
            valid=valid,
        )

    def nll(
        self,
        numeric: torch.Tensor,
        layer: torch.Tensor,
        r: torch.Tensor,
        alpha: torch.Tensor,
        y: torch.Tensor,
        owner: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mean negative log-likelihoods per point: {"r", "alpha" (given r), "energy" (y given r)}.

        ``numeric`` (M, N_NUMERIC) and ``layer`` (M,) describe M (shower, layer) pairs; ``r``, ``alpha``,
        ``y`` (P,) are points and ``owner`` (P,) their pair (default: point i belongs to pair i). The
        network runs once per pair, however many points the pair has. A point in a masked cell (outside
        its layer's bins) is a ValueError.
        """
        p = self(numeric, layer)
        r = r.long()
        owner = torch.arange(len(r), device=r.device) if owner is None else owner.long()
        if p.valid is not None and not bool(p.valid[owner, r, alpha.long()].all()):
            raise ValueError("a training point lies outside the bins of its layer")
        nll_r = -torch.log_softmax(p.r_logits.float(), dim=1)[owner, r].mean()
        log_pa = torch.log_softmax(p.alpha_logits.float(), dim=2)
        nll_alpha = -log_pa[owner, r, alpha.long()].mean()
        log_w = torch.log_softmax(p.mix_logits.float(), dim=2)[owner, r]
        mu, log_sigma = p.mu.float()[owner, r], p.log_sigma.float()[owner, r]
        z = (y.float()[:, None] - mu) * torch.exp(-log_sigma)
        log_n = -0.5 * z * z - log_sigma - 0.5 * math.log(2 * math.pi)
        nll_e = -torch.logsumexp(log_w + log_n, dim=1).mean()
        return {"r": nll_r, "alpha": nll_alpha, "energy": nll_e}


def pareto_keys(params: PointParams, counts: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Pareto ranking keys (M, n_r * n_alpha) float32, voxel index ``r * n_alpha + alpha``.

    logit(pi_v) + log(u / (1 - u)) with pi_v = min(n p(r) p(alpha | r), 1 - 1e-6) and ``u`` (M, V) uniform
    noise in [0, 1) (clamped below at 1e-30); the n voxels with the largest keys are the pair's. Masked
    cells (``params.valid``) get the key -inf, every valid cell a finite key.
    """
    n_pairs, n_r, n_alpha = params.alpha_logits.shape
    log_p = torch.log_softmax(params.r_logits.float(), dim=1)[:, :, None]
    log_p = (log_p + torch.log_softmax(params.alpha_logits.float(), dim=2)).reshape(n_pairs, n_r * n_alpha)
    log_pi = (log_p + torch.log(counts.float().clamp_min(1.0))[:, None]).clamp(max=-1e-6)
    key = log_pi - torch.log(-torch.expm1(log_pi))  # logit(pi)
    u = u.clamp(min=1e-30)
    key = key + (torch.log(u) - torch.log1p(-u))  # Logistic noise
    if params.valid is None:
        return key
    valid = params.valid.reshape(n_pairs, n_r * n_alpha)
    return torch.where(valid, key.clamp_min(-torch.finfo(key.dtype).max), -math.inf)


def log_shares(
    params: PointParams, ring: torch.Tensor, u: torch.Tensor, z: torch.Tensor, y_range: tuple[float, float]
) -> torch.Tensor:
    """Log energy shares y (P,) float32 of points in rings ``ring`` (P,) (index pair * n_r + r).

    Mixture component by inverse CDF of the uniform ``u`` (P,), then mu + sigma z with ``z`` (P,)
    standard normal, clamped to ``y_range``.
    """
    k = params.mix_logits.shape[2]
    cdf = torch.cumsum(torch.softmax(params.mix_logits.float().reshape(-1, k), dim=1), dim=1)
    comp = (u[:, None] > cdf[ring]).sum(dim=1).clamp(max=k - 1)
    flat = ring * k + comp
    mu = params.mu.float().reshape(-1).take(flat)
    sigma = torch.exp(params.log_sigma.float().reshape(-1).take(flat))
    return (mu + sigma * z).clamp(*y_range)


def pareto_voxels(
    params: PointParams, counts: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, alpha) of ``counts[g]`` distinct voxels for every pair g by Pareto order sampling, pair-major.

    Inclusion probabilities pi_v = n p(r) p(alpha | r) (the learned expected occupancy, capped below 1);
    the n voxels with the largest logit(pi_v) + Logistic noise are taken (Rosen's Pareto sampling:
    fixed size, inclusion probabilities close to pi_v, saturated voxels always taken). Needs
    counts <= n_r * n_alpha (per-layer binnings: <= the voxels of the pair's layer).
    """
    n_pairs, n_r, n_alpha = params.alpha_logits.shape
    n_vox = n_r * n_alpha
    u = torch.rand(n_pairs, n_vox, generator=generator, device=counts.device)
    ranked = torch.argsort(pareto_keys(params, counts, u), dim=1, descending=True)  # r * n_alpha + alpha
    chosen = ranked[torch.arange(n_vox, device=counts.device)[None, :] < counts[:, None]]
    return torch.div(chosen, n_alpha, rounding_mode="floor"), chosen % n_alpha


def multinomial_counts(n: torch.Tensor, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Counts (M, C) int64 of ``n`` (M,) categorical draws with probabilities ``probs`` (M, C) per row.

    Sequential binomials: k_c ~ Binomial(n - k_<c, p_c / (1 - p_<c)); the last category takes the rest.
    """
    probs = probs.double()
    left = n.double()
    rest = torch.ones_like(left)
    out = torch.zeros(probs.shape, dtype=torch.float64, device=probs.device)
    for c in range(probs.shape[1] - 1):
        p = (probs[:, c] / rest.clamp_min(1e-300)).clamp(0.0, 1.0)
        k = torch.binomial(left, p, generator=generator)
        out[:, c] = k
        left = left - k
        rest = rest - probs[:, c]
    out[:, -1] = left
    return out.long()


@dataclass
class SampledPoints:
    """Sampled points of pairs 0..G-1 (grouped by pair): pair index, r, alpha, log share y."""

    pair: torch.Tensor  # (P,) int64 index of the (shower, layer) pair
    r: torch.Tensor  # (P,) int64
    alpha: torch.Tensor  # (P,) int64
    y: torch.Tensor  # (P,) float32
    distinct: bool  # True when the voxels of each pair are distinct (else collisions must be resolved)


def sample_points(
    params: PointParams,
    counts: torch.Tensor,
    generator: torch.Generator,
    y_range: tuple[float, float],
    placement: str = "pareto",
) -> SampledPoints:
    """``counts[g]`` points for every pair g of ``params`` (``placement``: see the module docstring).

    In "pareto" mode a pair with more points than voxels gets one point per voxel (the capacity rule).
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    device = counts.device
    n_pairs, n_r, n_alpha = params.alpha_logits.shape
    counts = counts.long()
    capacity = params.capacity()
    if capacity is not None and placement != "pareto":
        raise ValueError(f"placement {placement!r} needs a regular grid; per-layer binnings take 'pareto'")
    if placement == "pareto":
        counts = counts.clamp(max=n_r * n_alpha)
        if capacity is not None:
            counts = torch.minimum(counts, capacity)
        r, alpha = pareto_voxels(params, counts, generator)
        pair = torch.repeat_interleave(torch.arange(n_pairs, device=device), counts)
    else:  # independent draws: ring counts by one multinomial per pair, then alpha | r per point
        probs = torch.softmax(params.r_logits.double(), dim=1)
        ring_counts = multinomial_counts(counts, probs, generator).reshape(-1)  # rings g * n_r + r
        ring = torch.repeat_interleave(torch.arange(n_pairs * n_r, device=device), ring_counts)
        pair, r = torch.div(ring, n_r, rounding_mode="floor"), ring % n_r
        cdf_a = torch.cumsum(torch.softmax(params.alpha_logits.float().reshape(-1, n_alpha), dim=1), dim=1)
        u_a = torch.rand(len(ring), generator=generator, device=device)
        alpha = (u_a[:, None] > cdf_a[ring]).sum(dim=1).clamp_(max=n_alpha - 1)
    # energy share: mixture component by inverse CDF, then its Gaussian
    ring = pair * n_r + r
    u = torch.rand(len(ring), generator=generator, device=device)
    z = torch.randn(len(ring), generator=generator, device=device)
    y = log_shares(params, ring, u, z, y_range)
    return SampledPoints(pair, r, alpha, y, distinct=placement == "pareto")
