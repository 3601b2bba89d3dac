"""Conditional flow matching (OT path) shared by the flow-matching families.

Path (Lipman et al. 2023, optimal-transport conditional path): x_t = (1 - (1 - sigma_min) t) x_0 + t x_1
with x_0 ~ N(0, 1) (noise) and x_1 a data point; the regression target of the velocity field is
u_t = x_1 - (1 - sigma_min) x_0. Sampling integrates dx/dt = v(x, t) from t = 0 (noise) to t = 1
with the explicit midpoint rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features (..., dim) of times t (...,) in [0, 1]; ``dim`` must be even."""
    if dim % 2:
        raise ValueError(f"time feature dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(1000.0) / max(half - 1, 1))
    )
    angles = 1000.0 * t.float().unsqueeze(-1) * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def ot_path(
    x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, sigma_min: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, target velocity u_t) of the OT conditional path; ``t`` broadcasts against x (e.g. (B, 1))."""
    xt = (1.0 - (1.0 - sigma_min) * t) * x0 + t * x1
    return xt, x1 - (1.0 - sigma_min) * x0


def midpoint_solve(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, steps: int
) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 0 to 1 in ``steps`` explicit midpoint steps.

    ``velocity(x, t)`` gets t as a (B,) tensor (one time per leading-axis row).
    """
    if steps < 1:
        raise ValueError(f"ODE steps must be >= 1, got {steps}")
    x, h = x0, 1.0 / steps
    b = x0.shape[0]
    for i in range(steps):
        t = torch.full((b,), i * h, device=x0.device, dtype=torch.float32)
        x_mid = x + 0.5 * h * velocity(x, t)
        x = x + h * velocity(x_mid, t + 0.5 * h)
    return x


class TimeMLP(nn.Module):
    """Velocity field for vectors: MLP([x, condition, time features]) with SiLU and LayerNorm."""

    def __init__(self, dim: int, cond_dim: int, hidden: int, n_layers: int, time_dim: int = 16) -> None:
        super().__init__()
        self.time_dim = time_dim
        layers: list[nn.Module] = []
        n_in = dim + cond_dim + time_dim
        for _ in range(n_layers):
            layers += [nn.Linear(n_in, hidden), nn.LayerNorm(hidden), nn.SiLU()]
            n_in = hidden
        layers.append(nn.Linear(n_in, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, dim), t (B,), cond (B, c) -> velocity (B, dim)."""
        return self.net(torch.cat([x, cond.to(x.dtype), time_features(t, self.time_dim).to(x.dtype)], dim=-1))
