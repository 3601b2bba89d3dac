"""3-D convolution blocks on the (layer, alpha, r) voxel grid of a shower, periodic in alpha.

Grids are tensors (B, C, n_layers, n_alpha, r). Every convolution pads alpha circularly (the angle
wraps around: bin n_alpha - 1 neighbours bin 0) and layer and r with zeros (the calorimeter ends
there), so a convolution commutes with a cyclic shift of alpha. A stride-2 step halves each axis
(rounding up); an up step interpolates (nearest) back to the skip connection's size and convolves.
Conditioning (time and E_inc) enters every residual block as a per-channel scale and shift (FiLM).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class PeriodicConv3d(nn.Module):
    """Conv3d with kernel k (odd), circular padding k // 2 in alpha and zero padding in layer and r."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"kernel must be odd, got {kernel}")
        self.pad = kernel // 2
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=(self.pad, 0, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = torch.cat([x[:, :, :, -self.pad :], x, x[:, :, :, : self.pad]], dim=3)
        return self.conv(x)


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, periodic conv, FiLM from the embedding, SiLU, periodic conv; plus the input."""

    def __init__(self, channels: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv1 = PeriodicConv3d(channels, channels)
        self.film = nn.Linear(emb_dim, 2 * channels)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.conv2 = PeriodicConv3d(channels, channels)
        nn.init.zeros_(self.conv2.conv.weight)
        nn.init.zeros_(self.conv2.conv.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class Down(nn.Module):
    """Stride-2 periodic convolution: each axis halved (rounded up), c_in -> c_out channels."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = PeriodicConv3d(c_in, c_out, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Up(nn.Module):
    """Nearest-neighbour upsampling to ``size``, then a 1 x 1 x 1 convolution c_in -> c_out."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


def level_channels(base: int, levels: int) -> list[int]:
    """Channels per resolution level: base, 2 base, 4 base, ..."""
    return [base * 2**k for k in range(levels)]


def to_patches(x: torch.Tensor) -> torch.Tensor:
    """(B, C, L, A, R) -> (B, 8 C, ceil(L / 2), A / 2, ceil(R / 2)): every 2 x 2 x 2 block of voxels
    becomes one position with 8 C channels (layer and r padded with zeros to even sizes; A must be even,
    so that no block straddles the alpha seam and a shift of alpha by 2 bins shifts the patches by 1)."""
    b, c, n_l, n_a, n_r = x.shape
    if n_a % 2:
        raise ValueError(f"2 x 2 x 2 patches need an even number of alpha bins, got {n_a}")
    x = F.pad(x, (0, n_r % 2, 0, 0, 0, n_l % 2))
    l2, a2, r2 = x.shape[2] // 2, n_a // 2, x.shape[4] // 2
    x = x.view(b, c, l2, 2, a2, 2, r2, 2).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, 8 * c, l2, a2, r2)


def from_patches(y: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`to_patches`: (B, 8 C, l2, a2, r2) -> (B, C, L, A, R) of grid ``shape``."""
    b, c8, l2, a2, r2 = y.shape
    c = c8 // 8
    y = y.view(b, c, 2, 2, 2, l2, a2, r2).permute(0, 1, 5, 2, 6, 3, 7, 4)
    y = y.reshape(b, c, 2 * l2, 2 * a2, 2 * r2)
    return y[:, :, : shape[0], : shape[1], : shape[2]]


class GridUNet(nn.Module):
    """U-Net on the voxel grid: (B, c_in, L, A, R) and an embedding (B, emb_dim) -> (B, c_out, L, A, R).

    The grid is first cut into 2 x 2 x 2 patches (:func:`to_patches`: a 3-D convolution with few
    channels on the full 6,480-voxel grid costs more than all the rest on a CPU), then ``levels``
    resolutions, each after the first made by a stride-2 step, with ``2^k base`` channels at level k.
    Every level has one residual block on the way up, every coarser level one on the way down too,
    skips added; the output convolution starts at zero. A cyclic shift of alpha by a multiple of
    2^levels bins shifts the output alike.
    """

    def __init__(self, c_in: int, c_out: int, base: int, levels: int, emb_dim: int) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"a grid U-Net needs at least 2 levels, got {levels}")
        ch = level_channels(base, levels)
        self.inp = PeriodicConv3d(8 * c_in, ch[0])
        self.downs = nn.ModuleList([Down(ch[k], ch[k + 1]) for k in range(levels - 1)])
        self.down_blocks = nn.ModuleList([ResBlock(c, emb_dim) for c in ch[1:]])
        self.ups = nn.ModuleList([Up(ch[k + 1], ch[k]) for k in range(levels - 1)])
        self.up_blocks = nn.ModuleList([ResBlock(c, emb_dim) for c in ch[:-1]])
        self.out_norm = nn.GroupNorm(_groups(ch[0]), ch[0])
        self.out = PeriodicConv3d(ch[0], 8 * c_out)
        nn.init.zeros_(self.out.conv.weight)
        nn.init.zeros_(self.out.conv.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape[2:])
        h = self.inp(to_patches(x))
        skips = []
        for down, block in zip(self.downs, self.down_blocks, strict=True):
            skips.append(h)
            h = block(down(h), emb)
        for k in reversed(range(len(self.ups))):
            skip = skips[k]
            h = self.up_blocks[k](skip + self.ups[k](h, tuple(skip.shape[2:])), emb)
        return from_patches(self.out(F.silu(self.out_norm(h))), shape)
