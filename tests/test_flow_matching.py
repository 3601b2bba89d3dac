"""Flow matching (pipelines.models.flow_matching): OT path, midpoint solver, time features, a fitted toy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from pipelines.models.flow_matching import TimeMLP, midpoint_solve, ot_path, time_features

torch.set_num_threads(1)


def _toy(c: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x ~ N(2c, (0.1 + 0.5 |c|)^2)."""
    return 2.0 * c + (0.1 + 0.5 * c.abs()) * torch.randn(c.shape, generator=gen)


def test_flow_matching_fits_a_conditional_1d_toy() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    net = TimeMLP(dim=1, cond_dim=1, hidden=64, n_layers=3, time_dim=16)
    steps, batch = 400, 512
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    for _ in range(steps):
        c = torch.rand(batch, 1, generator=gen) * 2 - 1
        x1 = _toy(c, gen)
        t = torch.rand(batch, generator=gen)
        xt, target = ot_path(torch.randn(batch, 1, generator=gen), x1, t[:, None], 1e-4)
        loss = (net(xt, t, c) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        c = torch.rand(4000, 1, generator=gen) * 2 - 1
        x = midpoint_solve(lambda x, t: net(x, t, c), torch.randn(4000, 1, generator=gen), 40)
        assert wasserstein_distance(x[:, 0].numpy(), _toy(c, gen)[:, 0].numpy()) < 0.05
        # |c| has a kink at c = 0 (true std 0.1 there) that a smooth network rounds off; away from
        # it the conditional spread is learned to 10 %, and the conditional mean everywhere.
        for value in (-0.8, -0.4, 0.0, 0.4, 0.8):
            cond = torch.full((3000, 1), value)
            xs = midpoint_solve(
                lambda x, t, cond=cond: net(x, t, cond), torch.randn(3000, 1, generator=gen), 40
            )
            assert abs(float(xs.mean()) - 2 * value) < 0.05, value
            if value != 0.0:
                assert float(xs.std()) / (0.1 + 0.5 * abs(value)) == pytest.approx(1.0, abs=0.1), value


def test_ot_path_endpoints_and_target() -> None:
    gen = torch.Generator().manual_seed(0)
    x0, x1 = (
        torch.randn(5, 3, generator=gen, dtype=torch.float64),
        torch.randn(5, 3, generator=gen, dtype=torch.float64),
    )
    sigma = 1e-3
    xt0, u = ot_path(x0, x1, torch.zeros(5, 1, dtype=torch.float64), sigma)
    torch.testing.assert_close(xt0, x0, rtol=0, atol=0)
    torch.testing.assert_close(u, x1 - (1 - sigma) * x0, rtol=0, atol=1e-15)
    xt1, _ = ot_path(x0, x1, torch.ones(5, 1, dtype=torch.float64), sigma)
    torch.testing.assert_close(xt1, x1 + sigma * x0, rtol=0, atol=1e-15)  # x1 up to sigma_min noise
    assert float((xt1 - x1).abs().max()) <= sigma * float(x0.abs().max()) + 1e-15
    # the target is the exact time derivative of the (linear) path, for every t
    t = torch.rand(5, 1, generator=gen, dtype=torch.float64) * 0.9
    h = 0.05
    forward, _ = ot_path(x0, x1, t + h, sigma)
    back, target = ot_path(x0, x1, t, sigma)
    torch.testing.assert_close((forward - back) / h, target, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 4, 10, 40])
def test_midpoint_solve_has_the_midpoint_rule_s_error(steps: int) -> None:
    x0 = torch.tensor([[1.0], [-2.5]], dtype=torch.float64)
    x = midpoint_solve(lambda x, t: -x, x0, steps)
    h = 1.0 / steps
    # one midpoint step of dx/dt = -x multiplies by 1 - h + h^2 / 2 exactly
    torch.testing.assert_close(x, x0 * (1 - h + h * h / 2) ** steps, rtol=1e-12, atol=0)
    if steps >= 10:  # second order: global error -> e^-1 h^2 / 6 (the local error is h^3 / 6 per step)
        error = float(x[0, 0]) - math.exp(-1)
        assert error == pytest.approx(math.exp(-1) * h * h / 6, rel=0.1)


def test_midpoint_solve_passes_per_row_times_and_is_exact_for_linear_time() -> None:
    seen: list[torch.Tensor] = []

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(t.clone())
        return (2 * t).view(-1, 1).to(x.dtype).expand_as(x)  # dx/dt = 2t -> x(1) = x(0) + 1

    x0 = torch.tensor([[0.0, 1.0], [3.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    x = midpoint_solve(velocity, x0, 4)
    torch.testing.assert_close(x, x0 + 1.0, rtol=0, atol=1e-7)
    assert all(t.shape == (3,) for t in seen)
    torch.testing.assert_close(
        torch.stack(seen)[:, 0], torch.tensor([0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875])
    )


@pytest.mark.parametrize("steps", [0, -3])
def test_midpoint_solve_rejects_fewer_than_one_step(steps: int) -> None:
    with pytest.raises(ValueError, match="steps"):
        midpoint_solve(lambda x, t: x, torch.zeros(2, 1), steps)


def test_time_features_shapes_values_and_odd_dim() -> None:
    t = torch.linspace(0, 1, 12).view(3, 4)
    f = time_features(t, 16)
    assert f.shape == (3, 4, 16) and f.dtype == torch.float32
    torch.testing.assert_close(f[..., :8] ** 2 + f[..., 8:] ** 2, torch.ones(3, 4, 8))  # sin^2 + cos^2
    torch.testing.assert_close(time_features(torch.zeros(2), 6), torch.tensor([[0.0] * 3 + [1.0] * 3] * 2))
    assert not torch.allclose(time_features(torch.tensor([0.3]), 8), time_features(torch.tensor([0.31]), 8))
    with pytest.raises(ValueError, match="even"):
        time_features(t, 7)


def test_time_mlp_shapes() -> None:
    net = TimeMLP(dim=3, cond_dim=2, hidden=8, n_layers=2, time_dim=4)
    out = net(torch.randn(5, 3), torch.rand(5), torch.randn(5, 2))
    assert out.shape == (5, 3) and np.isfinite(out.detach().numpy()).all()
