"""Mean-field attention block (MDMA): one global token attends to all points, points read the token.

Shapes: points ``x`` (B, N, h), token (B, 1, h), condition (B, c), mask (B, N) with True = padding.
Cost is linear in N: the single token is the only query. Padded slots stay exactly zero and never
influence valid outputs; clouds with no valid point (n = 0) give finite outputs (no NaN).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrizations

from pipelines.models.settings import NORMS


class UnitNormLinear(nn.Linear):
    """Linear layer whose weight rows are normalised to unit length, with no learnable gain.

    y = (V / ||V||_row) x + b: every output is a 1-Lipschitz function of the input (the published
    MDMA critic's weight normalisation without the free scale ``g``).
    """

    def normalised_weight(self) -> torch.Tensor:
        """The weight actually applied: each row of ``weight`` divided by its Euclidean norm."""
        return self.weight / self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.normalised_weight(), self.bias)


def make_linear(n_in: int, n_out: int, norm: str = "none") -> nn.Module:
    """A Linear layer, optionally with weight norm, spectral norm or unit-norm rows (critic Lipschitz)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if norm == "unit":
        return UnitNormLinear(n_in, n_out)
    layer = nn.Linear(n_in, n_out)
    if norm == "weight":
        return parametrizations.weight_norm(layer)
    if norm == "spectral":
        return parametrizations.spectral_norm(layer)
    return layer


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Set padded slots (mask True) of ``x`` (B, N, k) to exactly zero."""
    return x.masked_fill(mask.unsqueeze(-1), 0.0)


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` (B, N, k) over valid points -> (B, 1, k)."""
    return zero_padding(x, mask).sum(dim=1, keepdim=True)


class GLUGate(nn.Module):
    """Gated linear unit conditioned on a per-cloud vector: GLU(Linear([features, condition]))."""

    def __init__(self, n_in: int, cond_dim: int, n_out: int, norm: str = "none") -> None:
        super().__init__()
        self.proj = make_linear(n_in + cond_dim, 2 * n_out, norm)

    def forward(self, feats: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """feats (B, M, n_in), cond (B, c) -> (B, M, n_out)."""
        cond = cond.unsqueeze(1).expand(-1, feats.shape[1], -1).to(feats.dtype)
        return nn.functional.glu(self.proj(torch.cat([feats, cond], dim=-1)), dim=-1)


class TokenAttention(nn.Module):
    """Multi-head attention with one query (the global token) over N keys, padding-aware.

    Padded keys get probability zero. A cloud with no valid key returns a zero update instead of
    the NaN that a plain softmax over an all -inf row would give.
    """

    def __init__(self, hidden: int, heads: int, norm: str = "none") -> None:
        super().__init__()
        if hidden % heads != 0:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_dim = hidden // heads
        self.q = make_linear(hidden, hidden, norm)
        self.kv = make_linear(hidden, 2 * hidden, norm)
        self.out = make_linear(hidden, hidden, norm)

    def forward(self, token: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """token (B, 1, h), x (B, N, h), mask (B, N) -> attended values (B, 1, h)."""
        b, n, h = x.shape
        q = self.q(token).view(b, 1, self.heads, self.head_dim).transpose(1, 2)  # (B, H, 1, d)
        k, v = self.kv(x).view(b, n, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, H, N, d)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, 1, N)
        key_pad = mask.view(b, 1, 1, n)
        # A finite fill keeps all-padding rows finite; their result is zeroed below.
        scores = scores.masked_fill(key_pad, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1).masked_fill(key_pad, 0.0)
        attended = (weights @ v).transpose(1, 2).reshape(b, 1, h)
        has_points = (~mask).any(dim=1).view(b, 1, 1)
        return self.out(attended) * has_points.to(attended.dtype)


class MeanFieldBlock(nn.Module):
    """One MDMA block.

    token <- token + GLU_cond([token, attention(token, points)]); point <- point + MLP([point, token]).
    """

    def __init__(
        self,
        hidden: int,
        cond_dim: int,
        heads: int,
        norm: str = "none",
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.attention = TokenAttention(hidden, heads, norm)
        self.token_gate = GLUGate(2 * hidden, cond_dim, hidden, norm)
        self.point_in = make_linear(2 * hidden, hidden, norm)
        self.point_out = make_linear(hidden, hidden, norm)
        self.activation = activation or nn.functional.leaky_relu

    def forward(
        self, x: torch.Tensor, token: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, N, h), token (B, 1, h), cond (B, c), mask (B, N) -> (x, token), same shapes."""
        attended = self.attention(token, x, mask)
        token = token + self.token_gate(torch.cat([token, attended], dim=-1), cond)
        tok = token.expand(-1, x.shape[1], -1)
        update = self.point_out(self.activation(self.point_in(torch.cat([x, tok], dim=-1))))
        x = zero_padding(x + update, mask)
        return x, token


class ContextMeanFieldBlock(nn.Module):
    """Pre-norm mean-field block whose token and points also see a per-cloud context vector.

    ``ctx`` (B, k) is e.g. [condition, time embedding] of a flow-matching velocity field:
    token <- token + GLU_ctx([LN(token), attention(LN(token), LN(points))]);
    point <- point + W_out SiLU(W_in FiLM_ctx(LN(point)) + W_tok token) (width ``expansion`` x hidden;
    the token term is computed once per cloud, not per point).
    Padded slots stay exactly zero and never influence valid outputs.
    """

    def __init__(self, hidden: int, ctx_dim: int, heads: int, expansion: int = 2) -> None:
        super().__init__()
        self.point_norm = nn.LayerNorm(hidden)
        self.token_norm = nn.LayerNorm(hidden)
        self.attention = TokenAttention(hidden, heads)
        self.token_gate = GLUGate(2 * hidden, ctx_dim, hidden)
        self.film = nn.Linear(ctx_dim, 2 * hidden)
        self.point_in = nn.Linear(hidden, expansion * hidden)
        self.token_in = nn.Linear(hidden, expansion * hidden, bias=False)
        self.point_out = nn.Linear(expansion * hidden, hidden)

    def forward(
        self, x: torch.Tensor, token: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, N, h), token (B, 1, h), ctx (B, k), mask (B, N) -> (x, token), same shapes."""
        h = self.point_norm(x)
        tok = self.token_norm(token)
        token = token + self.token_gate(torch.cat([tok, self.attention(tok, h, mask)], dim=-1), ctx)
        scale, shift = self.film(ctx.to(h.dtype)).unsqueeze(1).chunk(2, dim=-1)
        hidden = nn.functional.silu(self.point_in(h * (1.0 + scale) + shift) + self.token_in(token))
        return zero_padding(x + self.point_out(hidden), mask), token
