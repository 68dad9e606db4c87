"""The velocity networks of the flow-matching models (teacher ``cfm`` and its student).

* :class:`EnergyNet`: a residual MLP with FiLM conditioning on (t, log E_inc), for the layer
  energies;
* :class:`ShapeNet`: a 2-D U-Net over (layer, alpha) with the radial bins as channels, circular
  in alpha (:class:`CircularConv`), FiLM-conditioned on (t, E_inc, layer energies), for the
  voxels.

References:
    Perez, Strub, de Vries, Dumoulin, Courville, *FiLM: Visual Reasoning with a General
    Conditioning Layer*, arXiv:1709.07871.
    Ronneberger, Fischer, Brox, *U-Net*, arXiv:1505.04597.
    Favaro, Ore, Palacios Schweitzer, Plehn, *CaloDREAM*, arXiv:2405.09629.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """(B,) in [0, 1] -> (B, dim) sines and cosines of geometrically spaced frequencies."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(1000.0) / max(half - 1, 1)))
    arg = (1000.0 * t.reshape(-1, 1).float()) * freqs[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], 1)


class _FiLMResMLPBlock(nn.Module):
    def __init__(self, width: int, emb: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(emb, 2 * width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb).chunk(2, dim=1)
        z = self.norm(h) * (1 + scale) + shift
        return h + self.fc2(F.silu(self.fc1(F.silu(z))))


class EnergyNet(nn.Module):
    """Velocity field of the layer-energy flow: residual MLP, FiLM on (t, log E_inc)."""

    def __init__(self, n_layers: int, width: int = 256, depth: int = 3, t_dim: int = 32):
        super().__init__()
        self.t_dim = t_dim
        self.embed = nn.Sequential(nn.Linear(t_dim + 1, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(n_layers + 1, width)
        self.blocks = nn.ModuleList(_FiLMResMLPBlock(width, width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, n_layers)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        c = c.reshape(-1, 1).to(x.dtype)
        emb = F.silu(self.embed(torch.cat([sinusoidal_embedding(t, self.t_dim).to(x.dtype), c], 1)))
        h = self.inp(torch.cat([x, c], 1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h)))


# ====================================================================== shape network
class CircularConv(nn.Module):
    """Conv2d over (layer, alpha): circular padding in alpha (periodic), zeros in layer."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.pad = kernel // 2
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(self.pad, 0))

    def forward(self, x: Tensor) -> Tensor:
        p = self.pad
        if p:  # concatenation rather than F.pad(mode="circular"): plain ONNX Slice/Concat
            x = torch.cat([x[..., -p:], x, x[..., :p]], dim=-1)
        return self.conv(x)


def _groups(c: int) -> int:
    for g in (8, 4, 2):
        if c % g == 0:
            return g
    return 1


class _ResBlock(nn.Module):
    def __init__(self, c: int, emb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c), c)
        self.conv1 = CircularConv(c, c)
        self.norm2 = nn.GroupNorm(_groups(c), c, affine=False)
        self.film = nn.Linear(emb, 2 * c)
        self.conv2 = CircularConv(c, c)
        assert self.conv2.conv.bias is not None
        nn.init.zeros_(self.conv2.conv.weight)
        nn.init.zeros_(self.conv2.conv.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class ShapeNet(nn.Module):
    """Velocity field of the shape flow: a 2-D U-Net over (layer, alpha), radial bins as channels.

    Input (B, voxels) in (layer, alpha, r) order, per-layer features (B, k, layers) (appended as
    input channels to every voxel of the layer) and a global condition vector (B, n_global)
    (embedded with t; FiLM in every residual block). A stride-2 circular convolution takes the
    (layers, alpha) grid to half resolution (no full-resolution activations: on a CPU those cost
    mostly memory traffic), ``channels[i]`` is the width of level i (stride 2 between levels),
    ``blocks`` residual blocks per level down and up, ``mid_blocks`` at the bottom. The output
    head predicts every 2 x 2 cell of the full grid from its coarse position ("pixel shuffle"),
    plus a per-voxel linear skip from the input.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        n_layer_features: int,
        n_global: int,
        channels: tuple[int, ...] = (48, 96),
        blocks: int = 1,
        mid_blocks: int = 1,
        emb: int = 128,
        t_dim: int = 32,
    ):
        super().__init__()
        self.n_layers, self.n_alpha, self.n_r = shape
        self.t_dim = t_dim
        self.s_alpha = 2 if self.n_alpha % 2 == 0 else 1  # keep the alpha ring intact
        self.coarse = ((self.n_layers + 1) // 2, self.n_alpha // self.s_alpha)
        c_in = self.n_r + n_layer_features
        c0 = channels[0]
        self.embed = nn.Sequential(nn.Linear(t_dim + n_global, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.stem = CircularConv(c_in, c0, stride=1)
        self.stem.conv.stride = (2, self.s_alpha)
        self.layer_pos = nn.Parameter(torch.zeros(1, c0, self.coarse[0], 1))
        self.down_blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, c in enumerate(channels):
            self.down_blocks.append(nn.ModuleList(_ResBlock(c, emb) for _ in range(blocks)))
            if i + 1 < len(channels):
                self.downs.append(CircularConv(c, channels[i + 1], stride=2))
        self.mid_blocks = nn.ModuleList(_ResBlock(channels[-1], emb) for _ in range(mid_blocks))
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            self.ups.append(CircularConv(channels[i + 1], channels[i]))
            self.up_blocks.append(nn.ModuleList(_ResBlock(channels[i], emb) for _ in range(blocks)))
        self.out_norm = nn.GroupNorm(_groups(c0), c0)
        self.out = nn.Conv2d(c0, self.n_r * 2 * self.s_alpha, 1)
        self.skip = nn.Conv2d(c_in, self.n_r, 1)
        for layer in (self.out, self.skip):
            assert layer.bias is not None
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, layer_features: Tensor, global_cond: Tensor) -> Tensor:
        b = x.shape[0]
        L, A, R = self.n_layers, self.n_alpha, self.n_r
        emb = F.silu(self.embed(torch.cat([sinusoidal_embedding(t, self.t_dim).to(x.dtype), global_cond.to(x.dtype)], 1)))
        h = x.reshape(b, L, A, R).permute(0, 3, 1, 2)  # (B, r, layer, alpha)
        lf = layer_features.to(x.dtype)[:, :, :, None].expand(b, layer_features.shape[1], L, A)
        inp = torch.cat([h, lf], 1)
        h = self.stem(inp) + self.layer_pos
        skips = []
        for i, level in enumerate(self.down_blocks):
            for block in cast(nn.ModuleList, level):
                h = block(h, emb)
            if i < len(self.downs):
                skips.append(h)
                h = self.downs[i](h)
        for block in self.mid_blocks:
            h = block(h, emb)
        for up, level in zip(self.ups, self.up_blocks, strict=True):
            skip = skips.pop()
            h = F.interpolate(h, size=(int(skip.shape[2]), int(skip.shape[3])), mode="nearest")
            h = up(h) + skip
            for block in cast(nn.ModuleList, level):
                h = block(h, emb)
        h = self.out(F.silu(self.out_norm(h)))  # (B, r * 2 * s_alpha, L2, A2)
        l2, a2 = self.coarse
        h = h.reshape(b, R, 2, self.s_alpha, l2, a2).permute(0, 1, 4, 2, 5, 3)
        h = h.reshape(b, R, 2 * l2, self.s_alpha * a2)[:, :, :L, :]
        h = h + self.skip(inp)
        return h.permute(0, 2, 3, 1).reshape(b, L * A * R)
