"""A tiny real model family for testing the shared training loop: a diagonal Gaussian fitted to the
points of jet-like clouds by maximum likelihood (minibatches of points drawn with torch's RNG)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.models.family import (
    Family,
    ParamGroup,
    PointSampler,
    TrainingData,
    global_mean,
    register_family,
    rows_of,
)


class GaussianSampler(PointSampler):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.kind, self.point_dim, self.noise_dim, self.mean_n = "jets", dim, dim, 1.0
        self.mu = nn.Parameter(torch.zeros(dim))
        self.log_sigma = nn.Parameter(torch.zeros(dim))

    def forward(self, noise: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.mu + noise * self.log_sigma.exp()).masked_fill(mask.unsqueeze(-1), 0.0)


@register_family
class ToyGaussian(Family):
    name = "toy-gaussian"
    kinds = ("jets",)
    data_parallel = True

    @dataclasses.dataclass(frozen=True)
    class Settings:
        lr: float = 0.05
        batch: int = 32

    def __init__(self, settings: Any, data: TrainingData, device: torch.device) -> None:
        super().__init__(settings, data, device)
        rows = np.concatenate(
            [np.arange(data.clouds.offsets[i], data.clouds.offsets[i + 1]) for i in data.train_idx]
        )
        self.points = torch.as_tensor(data.clouds.points[rows], dtype=torch.float32)
        self.model = GaussianSampler(self.points.shape[1])
        self.draws = 0

    def modules(self) -> dict[str, nn.Module]:
        return {"gauss": self.model}

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup("gauss", ("gauss",), self.settings.lr)]

    def train_step(self, ctx: Any) -> dict[str, float]:
        idx = torch.randint(0, len(self.points), (self.settings.batch,))
        self.draws += 1
        x = self.points[idx]
        rows = rows_of(ctx, len(x))  # this rank's share of the batch (None: one process)
        x = x if rows is None else x[rows]
        with ctx.autocast():
            z = (x - self.model.mu) / self.model.log_sigma.exp()
            loss = global_mean(ctx, (0.5 * z**2 + self.model.log_sigma).sum(dim=1).mean(), len(x), len(idx))
        ctx.optimise("gauss", loss)
        return {"loss": loss.item()}

    def state_dict(self) -> dict[str, Any]:
        return {"draws": self.draws}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.draws = int(state["draws"])

    def validate(self, n_max: int, seed: int) -> dict[str, float]:
        true = self.points.mean(dim=0)
        return {"figure": float((self.model.mu - true).abs().sum())}

    def export_config(self) -> dict[str, Any]:
        return {"dim": int(self.points.shape[1])}

    @classmethod
    def build_sampler(cls, config, state, transform, geometry, device) -> GaussianSampler:
        sampler = GaussianSampler(int(config["dim"]))
        sampler.load_state_dict(state["gauss"])
        return sampler.to(device).eval()
