"""MDMA: mean-field attention GAN for variable-size point clouds (arXiv:2408.04997).

Generator: per-point Gaussian noise -> GLU gated by the condition -> global token initialised as
sum(points) / mean_n -> L mean-field blocks -> per-point output (zero at padded slots).
Critic: the same blocks on (transformed) points, head on [final token, condition] -> scalar score;
its linear layers carry weight norm or spectral norm.

Condition vector (:func:`make_condition`): showers [log(E_inc / MeV) - 10, n / mean_n];
jets [n / mean_n].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.io.atomic import atomic_path
from pipelines.io.errors import DataError
from pipelines.models.blocks import NORMS, GLUGate, MeanFieldBlock, make_linear, masked_sum, zero_padding

KINDS = ("showers", "jets")
FORMAT_VERSION = 1


def condition_dim(kind: str) -> int:
    """Length of the model's condition vector for ``kind``."""
    if kind == "showers":
        return 2
    if kind == "jets":
        return 1
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def make_condition(
    raw_conditions: torch.Tensor | np.ndarray, lengths: torch.Tensor | np.ndarray, kind: str, mean_n: float
) -> torch.Tensor:
    """Model condition (B, cond_dim) float32 from raw per-cloud conditions and hit counts.

    showers: raw_conditions[:, 0] is the incident energy in MeV -> [log(E_inc / MeV) - 10, n / mean_n];
    jets: [n / mean_n] (the raw jet features are not used).
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
        return n_term
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one MDMA generator/critic pair.

    mean_n: the training set's mean hit count (normalises the token initialisation and the
    condition). The defaults are a tiny CPU model; :func:`dataset2_config` is the published size.
    """

    kind: str = "showers"
    point_dim: int = 4
    cond_dim: int = 2
    hidden: int = 16
    n_blocks: int = 2
    heads: int = 2
    noise_dim: int = 4
    critic_hidden: int = 16
    critic_blocks: int = 2
    critic_norm: str = "weight"
    mean_n: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.cond_dim != condition_dim(self.kind):
            raise ValueError(f"cond_dim {self.cond_dim} does not match kind {self.kind!r}")
        positive = ("point_dim", "hidden", "n_blocks", "heads", "noise_dim", "critic_hidden", "critic_blocks")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden % self.heads or self.critic_hidden % self.heads:
            raise ValueError(f"hidden sizes must be divisible by heads ({self.heads})")
        if self.critic_norm not in NORMS:
            raise ValueError(f"critic_norm must be one of {NORMS}, got {self.critic_norm!r}")
        if not self.mean_n > 0:
            raise ValueError(f"mean_n must be positive, got {self.mean_n}")

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
        critic_norm="weight",
        mean_n=mean_n,
    )


class MDMAGenerator(nn.Module):
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
    ) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.mean_n = float(mean_n)
        self.embed = GLUGate(noise_dim, cond_dim, hidden)
        self.blocks = nn.ModuleList(MeanFieldBlock(hidden, cond_dim, heads) for _ in range(n_blocks))
        self.head = nn.Linear(hidden, point_dim)

    def forward(self, noise: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Generated (transformed-space) points, exactly zero at padded slots."""
        x = zero_padding(self.embed(zero_padding(noise, mask), cond), mask)
        token = masked_sum(x, mask) / self.mean_n
        for block in self.blocks:
            x, token = block(x, token, cond, mask)
        return zero_padding(self.head(x), mask)


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
    ) -> None:
        super().__init__()
        self.mean_n = float(mean_n)
        self.embed = GLUGate(point_dim, cond_dim, hidden, norm)
        self.blocks = nn.ModuleList(MeanFieldBlock(hidden, cond_dim, heads, norm) for _ in range(n_blocks))
        self.head_in = make_linear(hidden + cond_dim, hidden, norm)
        self.head_out = make_linear(hidden, 1, norm)

    def features(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final global token (B, hidden): the features used by the mean-field matching term."""
        h = zero_padding(self.embed(zero_padding(x, mask), cond), mask)
        token = masked_sum(h, mask) / self.mean_n
        for block in self.blocks:
            h, token = block(h, token, cond, mask)
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


def build_generator(config: ModelConfig) -> MDMAGenerator:
    """Generator for ``config``."""
    return MDMAGenerator(
        config.point_dim,
        config.cond_dim,
        config.hidden,
        config.n_blocks,
        config.heads,
        config.noise_dim,
        mean_n=config.mean_n,
    )


def build_critic(config: ModelConfig) -> MDMACritic:
    """Critic for ``config``."""
    return MDMACritic(
        config.point_dim,
        config.cond_dim,
        config.critic_hidden,
        config.critic_blocks,
        config.heads,
        mean_n=config.mean_n,
        norm=config.critic_norm,
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def save_generator(
    path: str | Path, generator: MDMAGenerator, config: ModelConfig, extra: dict[str, Any] | None = None
) -> None:
    """Write {"format_version", "config", "state_dict", "extra"} atomically (torch.save, no pickled objects).

    ``extra`` must hold only weights_only-loadable values (numbers, strings, lists, dicts, tensors).
    """
    payload = {
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


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
        generator = build_generator(config)
        generator.load_state_dict(payload["state_dict"])
    except (ValueError, RuntimeError, TypeError) as err:
        raise DataError(f"{path}: generator does not match its config: {err}") from err
    generator.to(map_location).eval()
    return generator, config, payload["extra"]
