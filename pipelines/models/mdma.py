"""MDMA: mean-field attention GAN for variable-size point clouds (arXiv:2408.04997).

Generator: per-point Gaussian noise -> GLU gated by the condition; a global token that starts from
a per-cloud Gaussian vector (embedded and gated by the condition) -> L mean-field blocks ->
per-point output in transformed space (zero at padded slots). The per-cloud vector is
sum(point noise) / sqrt(n): exactly N(0, 1) per cloud and independent across clouds, so the
sampling interface stays (noise (B, N, noise_dim), condition, mask) and deterministic, while every
cloud gets its own fluctuation (depth, profile shape, total energy of a shower). With
``cloud_noise=False`` the token starts as sum(embedded points) / mean_n (the original MDMA, whose
token is almost the same for every large cloud).

Shares (:class:`ShareHead`, ``share=True``): one point column (shower energy, jet pt_rel) is a
softmax share over the cloud's points times a per-cloud total drawn by the token, pushed through
that column's fitted forward transform in torch, so the generator still outputs transformed points
while sum(values) = total holds by construction and no value can run off through an exponential
inverse transform.

Critic: the same blocks on (transformed) points, head on [final token, condition] -> scalar score;
its linear layers carry unit-norm rows (``critic_norm="unit"``, Lipschitz without a free gain),
weight norm or spectral norm; ``token_norm`` puts a LayerNorm (no affine) on the token after its
initialisation and after every block. With shares, the critic's condition also holds the cloud's
standardised log(total / reference).

Condition vector (:func:`make_condition`): showers [log(E_inc / MeV) - 10, n / mean_n];
jets [n / mean_n] followed, for a data set of several jet types, by the one-hot type columns.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.io.atomic import atomic_torch_save
from pipelines.io.errors import DataError
from pipelines.models.blocks import GLUGate, MeanFieldBlock, make_linear, masked_sum, zero_padding
from pipelines.models.family import PointSampler
from pipelines.models.settings import GANArchitecture
from pipelines.transforms import Transform

KINDS = ("showers", "jets")
FORMAT_VERSION = 1


#: raw jet conditions before the one-hot type columns: (jet_pt, jet_eta, jet_mass)
JET_RAW_CONDITIONS = 3


def condition_dim(kind: str, n_types: int = 0) -> int:
    """Length of the model's condition vector for ``kind`` (jets: with ``n_types`` one-hot columns)."""
    if kind == "showers":
        return 2
    if kind == "jets":
        return 1 + n_types
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def check_cond_dim(kind: str, cond_dim: int) -> None:
    """ValueError unless ``cond_dim`` is a condition length of ``kind`` (jets: 1 plus any type columns)."""
    ok = cond_dim == condition_dim(kind) if kind == "showers" else cond_dim == 1 or cond_dim >= 3
    if not ok:
        raise ValueError(f"cond_dim {cond_dim} does not match kind {kind!r}")


def with_column(out: torch.Tensor, k: int, column: torch.Tensor) -> torch.Tensor:
    """``out`` (..., d) with its column ``k`` replaced by ``column`` (...) (the share head's output)."""
    return torch.cat([out[..., :k], column.unsqueeze(-1).to(out.dtype), out[..., k + 1 :]], dim=-1)


def make_condition(
    raw_conditions: torch.Tensor | np.ndarray, lengths: torch.Tensor | np.ndarray, kind: str, mean_n: float
) -> torch.Tensor:
    """Model condition (B, cond_dim) float32 from raw per-cloud conditions and hit counts.

    showers: raw_conditions[:, 0] is the incident energy in MeV -> [log(E_inc / MeV) - 10, n / mean_n];
    jets: [n / mean_n, one-hot type] (the raw jet features (pt, eta, mass) are not used; columns after
    them are the one-hot jet type of a data set of several types).
    """
    if mean_n <= 0:
        raise ValueError(f"mean_n must be positive, got {mean_n}")
    raw = torch.as_tensor(raw_conditions)
    n = torch.as_tensor(lengths).to(device=raw.device, dtype=torch.float32).reshape(-1, 1)
    if raw.ndim != 2 or raw.shape[0] != n.shape[0]:
        raise ValueError(
            f"raw_conditions {tuple(raw.shape)} must be (B, c) with B = len(lengths) = {n.shape[0]}"
        )
    n_term = n / float(mean_n)
    if kind == "showers":
        energy = raw[:, :1].to(torch.float64)
        if raw.shape[1] < 1 or not bool(torch.all(energy > 0)):
            raise ValueError("shower conditions need a positive incident energy (MeV) in column 0")
        return torch.cat([(torch.log(energy) - 10.0).to(torch.float32), n_term], dim=1)
    if kind == "jets":
        return torch.cat([n_term, raw[:, JET_RAW_CONDITIONS:].to(torch.float32)], dim=1)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


#: the point column generated as shares, per kind (shower energy, jet pt_rel)
SHARE_COLUMNS = {"showers": 0, "jets": 2}


def log_reference(cond: torch.Tensor, kind: str) -> torch.Tensor:
    """log of the per-cloud reference of the share total (B,): log E_inc [MeV] for showers, 0 for jets."""
    dtype = torch.promote_types(cond.dtype, torch.float32)
    if kind == "showers":
        return cond[:, 0].to(dtype) + 10.0
    return torch.zeros(cond.shape[0], device=cond.device, dtype=dtype)


@dataclass(frozen=True)
class ModelConfig(GANArchitecture):
    """Architecture of one MDMA generator/critic pair: the fields of :class:`GANArchitecture` (see there)
    and those of the data.

    kind, point_dim, cond_dim: the data kind, point features and condition length. mean_n: the
    training set's mean hit count (normalises the critic's token initialisation and the condition;
    cloud_noise: see the module docstring). share: the share column is generated as
    softmax shares of a per-cloud total (needs :class:`ShareParams`). periodic: (column, scale,
    shift) of every periodic column, whose turn fraction is scale * x + shift; the critic sees it
    as (cos, sin) of the angle (:func:`periodic_view`). The defaults are a tiny CPU
    model; :func:`dataset2_config` is the published size.
    """

    kind: str = "showers"
    point_dim: int = 4
    cond_dim: int = 2
    mean_n: float = 1.0
    share: bool = False
    periodic: tuple[tuple[int, float, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "periodic", tuple((int(c), float(a), float(b)) for c, a, b in self.periodic))
        if any(not 0 <= c < self.point_dim for c, _, _ in self.periodic):
            raise ValueError(f"periodic columns {self.periodic} must lie in [0, {self.point_dim})")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        check_cond_dim(self.kind, self.cond_dim)
        if not isinstance(self.point_dim, int) or isinstance(self.point_dim, bool) or self.point_dim < 1:
            raise ValueError(f"point_dim must be a positive integer, got {self.point_dim!r}")
        self.check_architecture("model config")
        if not self.mean_n > 0:
            raise ValueError(f"mean_n must be positive, got {self.mean_n}")
        if self.share and SHARE_COLUMNS[self.kind] >= self.point_dim:
            raise ValueError(
                f"share column {SHARE_COLUMNS[self.kind]} does not exist in {self.point_dim}-d points"
            )

    @property
    def critic_cond_dim(self) -> int:
        """The critic's condition length: the model condition, plus log(total / reference) with shares."""
        return self.cond_dim + int(self.share)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of ``dataclasses.asdict``; unknown keys are a ValueError."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}")
        return cls(**data)


def dataset2_config(mean_n: float = 1.0) -> ModelConfig:
    """Shower model of about the published CaloChallenge dataset-2 MDMA size (~66k generator parameters)."""
    return ModelConfig(
        kind="showers",
        point_dim=4,
        cond_dim=2,
        hidden=44,
        n_blocks=3,
        heads=4,
        noise_dim=4,
        critic_hidden=44,
        critic_blocks=3,
        mean_n=mean_n,
    )


@dataclass(frozen=True)
class ShareParams:
    """Fitted constants of a :class:`ShareHead`: the share column's transform and log-total statistics.

    transform: ``to_dict()`` of the share column's fitted forward transform (a Chain starting with
    Log or BoxCox); u_mean, u_std: mean and standard deviation of u = log(total / reference) over
    the training clouds (the head's output scale).
    """

    transform: dict[str, Any]
    u_mean: float
    u_std: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.u_mean) and np.isfinite(self.u_std) and self.u_std > 0):
            raise ValueError(
                f"share u_mean, u_std must be finite with u_std > 0, got {self.u_mean}, {self.u_std}"
            )
        Transform.from_dict(self.transform)  # fails early on a bad description

    def to_dict(self) -> dict[str, Any]:
        return {"transform": self.transform, "u_mean": float(self.u_mean), "u_std": float(self.u_std)}


def cloud_log_ratio(
    values: np.ndarray, lengths: np.ndarray, raw_conditions: np.ndarray, kind: str
) -> np.ndarray:
    """u = log(total / reference) per cloud (N,) from raw share-column values (P,) (empty clouds: NaN)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    cloud = np.repeat(np.arange(len(lengths)), lengths)
    totals = np.bincount(cloud, np.asarray(values, np.float64), len(lengths))
    reference = np.asarray(raw_conditions, np.float64)[:, 0] if kind == "showers" else np.ones(len(lengths))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(totals > 0, np.log(totals / reference), np.nan)


def fit_share_params(
    values: np.ndarray, lengths: np.ndarray, raw_conditions: np.ndarray, kind: str, column_transform: Any
) -> ShareParams:
    """:class:`ShareParams` from the raw share-column values (P,) of training clouds and their conditions."""
    u = cloud_log_ratio(values, lengths, raw_conditions, kind)[np.asarray(lengths) > 0]
    if u.size == 0 or not np.all(np.isfinite(u)):
        raise ValueError("share column: need non-empty clouds, each with a positive total")
    return ShareParams(column_transform.to_dict(), float(u.mean()), float(max(u.std(), 1e-3)))


def cloud_noise(noise: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-cloud noise (B, 1, k): sum of the valid points' noise (B, N, k) divided by sqrt(n).

    For i.i.d. N(0, 1) point noise this is exactly N(0, 1) per cloud and independent across clouds
    (a cloud without points gets 0); padded slots never contribute.
    """
    n = (~mask).sum(dim=1).clamp_min(1).to(noise.dtype).view(-1, 1, 1)
    return masked_sum(noise, mask) / n.sqrt()


class ShareHead(nn.Module):
    """One point column as softmax shares of a per-cloud total, returned in transformed space.

    u = u_mean + u_std * Linear([token, condition]) is log(total / reference) (reference: E_inc for
    showers, 1 for jets); value_i = softmax(-softplus(-logits) over the cloud's points)_i * total
    (the soft cap at 0 bounds how far one share can rise above the rest); the column's
    forward transform is applied to log(value_i) (exact for tiny shares). Returns (transformed
    column (B, N), standardised u (B,)); padded slots are zero. Computed in at least float32.
    """

    def __init__(self, hidden: int, cond_dim: int, kind: str, params: ShareParams) -> None:
        super().__init__()
        self.kind, self.params = kind, params
        self.transform = Transform.from_dict(params.transform)
        self.total = nn.Linear(hidden + cond_dim, 1)

    def forward(
        self, logits: torch.Tensor, token: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = torch.promote_types(logits.dtype, torch.float32)  # at least float32 (also under autocast)
        u_std = self.total(torch.cat([token.squeeze(1), cond.to(token.dtype)], dim=-1)).squeeze(-1).to(dtype)
        u = self.params.u_mean + self.params.u_std * u_std
        # soft cap at 0: no point's share can run far above the bulk of its cloud (a linear head
        # gives heavy upper tails, one point holding a large part of the cloud's total)
        logits = -nn.functional.softplus(-logits.to(dtype))
        logits = logits.masked_fill(mask, torch.finfo(dtype).min)
        log_share = torch.log_softmax(logits, dim=1)
        log_value = log_share + (log_reference(cond, self.kind) + u).unsqueeze(1)
        # padded slots get a harmless value: their huge negative log share would overflow the
        # transform (lambda < 0) and turn the zero gradient there into NaN
        z = self.transform.transform_log_torch(log_value.masked_fill(mask, 0.0))
        return z.masked_fill(mask, 0.0), u_std


class MDMAGenerator(PointSampler):
    """Noise (B, N, noise_dim) + condition (B, c) + mask (B, N) -> points (B, N, point_dim)."""

    def __init__(
        self,
        point_dim: int,
        cond_dim: int,
        hidden: int,
        n_blocks: int,
        heads: int,
        noise_dim: int,
        mean_n: float = 1.0,
        cloud_noise: bool = True,
        share: ShareHead | None = None,
        kind: str = "showers",
    ) -> None:
        super().__init__()
        self.kind, self.point_dim, self.noise_dim, self.mean_n = (
            kind,
            int(point_dim),
            int(noise_dim),
            float(mean_n),
        )
        self.cloud_noise = bool(cloud_noise)
        self.embed = GLUGate(noise_dim, cond_dim, hidden)
        self.token_embed = GLUGate(noise_dim, cond_dim, hidden) if cloud_noise else None
        self.blocks = nn.ModuleList(MeanFieldBlock(hidden, cond_dim, heads) for _ in range(n_blocks))
        self.head = nn.Linear(hidden, point_dim)
        self.share = share
        self.share_column = SHARE_COLUMNS.get(kind, 0)

    def features(
        self, noise: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(final point features (B, N, hidden), final token (B, 1, hidden))."""
        noise = zero_padding(noise, mask)
        x = zero_padding(self.embed(noise, cond), mask)
        if self.token_embed is not None:
            token = self.token_embed(cloud_noise(noise, mask), cond)
        else:
            token = masked_sum(x, mask) / self.mean_n
        for block in self.blocks:
            x, token = block(x, token, cond, mask)
        return x, token

    def generate(
        self, noise: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(points (B, N, point_dim) zero at padding, standardised log(total / reference) (B,) or None)."""
        x, token = self.features(noise, cond, mask)
        out = zero_padding(self.head(x), mask)
        if self.share is None:
            return out, None
        k = self.share_column
        column, u = self.share(out[..., k], token, cond, mask)
        out = with_column(out, k, column)
        return out, u

    def forward(self, noise: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Generated (transformed-space) points, exactly zero at padded slots."""
        return self.generate(noise, cond, mask)[0]

    @torch.no_grad()
    def calibrate(
        self,
        noise: torch.Tensor,
        cond: torch.Tensor,
        mask: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> None:
        """Data-dependent initialisation: rescale the output head so that, on this batch, every raw
        output column over the valid points has mean ``mean`` and standard deviation ``std`` (d,),
        and the share head's standardised log total has mean 0 and standard deviation 1.

        For the share column the raw output is the logit of the share before its soft cap at 0:
        its spread within a cloud sets the spread of the log shares, so ``std`` is matched by the
        within-cloud standard deviation there, and ``mean`` sets how far below the cap the bulk
        starts (the share softmax does not see the level otherwise). A generator starting with the
        data's marginal scale (instead of the narrow output of a random network) does not have to
        learn it first, which is most of what a short training run could otherwise do.
        """
        x, token = self.features(noise, cond, mask)
        raw = zero_padding(self.head(x), mask)
        spread = raw[~mask].std(dim=0)
        if self.share is not None:
            k = self.share_column
            n = (~mask).sum(dim=1, keepdim=True).clamp_min(1)
            centred = (raw[..., k] - raw[..., k].sum(dim=1, keepdim=True) / n)[~mask]
            spread[k] = centred.pow(2).mean().sqrt()
        scale = std.to(raw.dtype) / spread.clamp_min(1e-6)
        self.head.weight.mul_(scale.unsqueeze(1))
        self.head.bias.copy_((self.head.bias - raw[~mask].mean(dim=0)) * scale + mean.to(raw.dtype))
        if self.share is not None:  # the standardised log total: mean 0, standard deviation 1
            total = self.share.total(torch.cat([token.squeeze(1), cond.to(token.dtype)], dim=-1))
            scale = 1.0 / total.std(dim=0).clamp_min(1e-6)
            self.share.total.weight.mul_(scale.unsqueeze(1))
            self.share.total.bias.copy_((self.share.total.bias - total.mean(dim=0)) * scale)


def periodic_view(x: torch.Tensor, periodic: tuple[tuple[int, float, float], ...]) -> torch.Tensor:
    """Points (..., d) with every periodic column replaced by cos of its angle and sin appended.

    The angle is 2 pi (scale * x + shift) for each (column, scale, shift): a critic that sees
    (cos, sin) has no seam where the coordinate wraps, and values a whole turn apart look the same.
    """
    if not periodic:
        return x
    x = x.clone()
    sines = []
    for column, scale, shift in periodic:
        angle = (2.0 * math.pi) * (x[..., column] * scale + shift)
        x[..., column] = torch.cos(angle)
        sines.append(torch.sin(angle))
    return torch.cat([x, torch.stack(sines, dim=-1)], dim=-1)


class MDMACritic(nn.Module):
    """Points (B, N, point_dim) + condition + mask -> Wasserstein critic scores (B,)."""

    def __init__(
        self,
        point_dim: int,
        cond_dim: int,
        hidden: int,
        n_blocks: int,
        heads: int,
        mean_n: float = 1.0,
        norm: str = "weight",
        token_norm: bool = False,
        periodic: tuple[tuple[int, float, float], ...] = (),
    ) -> None:
        super().__init__()
        self.mean_n = float(mean_n)
        self.periodic = tuple(periodic)
        self.embed = GLUGate(point_dim + len(self.periodic), cond_dim, hidden, norm)
        self.blocks = nn.ModuleList(MeanFieldBlock(hidden, cond_dim, heads, norm) for _ in range(n_blocks))
        self.token_norm = nn.LayerNorm(hidden, elementwise_affine=False) if token_norm else nn.Identity()
        self.head_in = make_linear(hidden + cond_dim, hidden, norm)
        self.head_out = make_linear(hidden, 1, norm)

    def features(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final global token (B, hidden): the features used by the mean-field matching term."""
        h = zero_padding(self.embed(zero_padding(periodic_view(x, self.periodic), mask), cond), mask)
        token = self.token_norm(masked_sum(h, mask) / self.mean_n)
        for block in self.blocks:
            h, token = block(h, token, cond, mask)
            token = self.token_norm(token)
        return token.squeeze(1)

    def score(self, token: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Scores (B,) from final tokens (B, hidden) and conditions (B, c)."""
        hidden = nn.functional.leaky_relu(self.head_in(torch.cat([token, cond.to(token.dtype)], dim=-1)))
        return self.head_out(hidden).squeeze(-1)

    def forward_with_features(
        self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (B,), final tokens (B, hidden))."""
        token = self.features(x, cond, mask)
        return self.score(token, cond), token

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.score(self.features(x, cond, mask), cond)


def build_generator(config: ModelConfig, share: ShareParams | None = None) -> MDMAGenerator:
    """Generator for ``config`` (``share`` is required exactly when ``config.share``)."""
    if config.share != (share is not None):
        raise ValueError("share parameters are needed exactly when config.share is set")
    head = ShareHead(config.hidden, config.cond_dim, config.kind, share) if share is not None else None
    return MDMAGenerator(
        config.point_dim,
        config.cond_dim,
        config.hidden,
        config.n_blocks,
        config.heads,
        config.noise_dim,
        mean_n=config.mean_n,
        cloud_noise=config.cloud_noise,
        share=head,
        kind=config.kind,
    )


def build_critic(config: ModelConfig) -> MDMACritic:
    """Critic for ``config`` (its condition is :attr:`ModelConfig.critic_cond_dim` long)."""
    return MDMACritic(
        config.point_dim,
        config.critic_cond_dim,
        config.critic_hidden,
        config.critic_blocks,
        config.heads,
        mean_n=config.mean_n,
        norm=config.critic_norm,
        token_norm=config.token_norm,
        periodic=config.periodic,
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def save_generator(
    path: str | Path, generator: MDMAGenerator, config: ModelConfig, extra: dict[str, Any] | None = None
) -> None:
    """Write {"format_version", "config", "state_dict", "extra"} atomically (torch.save, no pickled objects).

    ``extra`` must hold only weights_only-loadable values (numbers, strings, lists, dicts, tensors).
    A generator with shares keeps its :class:`ShareParams` in ``extra["share"]``.
    """
    if generator.share is not None:
        extra = {**(extra or {}), "share": generator.share.params.to_dict()}
    payload = {
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "extra": dict(extra or {}),
    }
    atomic_torch_save(payload, path)


def load_generator(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[MDMAGenerator, ModelConfig, dict[str, Any]]:
    """Load a :func:`save_generator` file (weights_only) -> (generator in eval mode, config, extra)."""
    path = Path(path)

    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a damaged file can fail inside the unpickler in many ways
        raise DataError(f"{path}: cannot read the generator file: {err}") from err
    if not isinstance(payload, dict) or not {"config", "state_dict", "extra"} <= set(payload):
        raise DataError(f"{path}: not a generator file (needs config, state_dict and extra)")
    try:
        config = ModelConfig.from_dict(payload["config"])
        share = payload["extra"].get("share") if config.share else None
        generator = build_generator(config, ShareParams(**share) if share is not None else None)
        generator.load_state_dict(payload["state_dict"])
    except (ValueError, RuntimeError, TypeError) as err:
        raise DataError(f"{path}: generator does not match its config: {err}") from err
    generator.to(map_location).eval()
    return generator, config, payload["extra"]
