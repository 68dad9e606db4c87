"""Energy/shape factorisation of a shower, as in CaloDREAM (Favaro et al., arXiv:2405.09629).

A shower (B, voxels) in MeV is split into

* its layer energies ``E_l`` (B, layers), described by :class:`SequentialFractions`:
  ``u_0 = E_tot / (s E_inc)`` and ``u_{l+1} = E_l / sum_{k >= l} E_k`` (the share of the energy
  still to deposit that layer ``l`` takes), all in [0, 1];
* its shape, :class:`ShapeNormalize`: every voxel divided by its layer's energy, so each
  non-empty layer sums to one.

Empty layers (all voxels zero) have all-zero fractions and round-trip to zeros; so do the
sequential fractions after the last non-empty layer (defined as 0).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from caloforge.geometry import Geometry
from caloforge.transforms.base import Transform
from caloforge.transforms.elementwise import _masked_sum


class LayerSum(nn.Module):
    """Per-layer sums ``(B, voxels) -> (B, layers)`` and the reverse broadcast :meth:`expand`.

    Regular geometries (every layer the same binning) use reshapes, which export to ONNX as
    such; irregular ones (DS1) a scatter over a voxel-to-layer index."""

    # buffers (registered in __init__), declared for the type checker
    index: Tensor

    def __init__(self, geometry: Geometry):
        super().__init__()
        self.n_layers = geometry.n_layers
        self.n_voxels = geometry.n_voxels
        self.regular = geometry.is_regular
        sizes = np.diff(geometry.layer_offsets)
        index = torch.from_numpy(np.repeat(np.arange(self.n_layers), sizes)).long()
        self.register_buffer("index", index, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.regular:
            return x.reshape(x.shape[0], self.n_layers, -1).sum(-1)
        out = torch.zeros(x.shape[0], self.n_layers, dtype=x.dtype, device=x.device)
        return out.index_add(1, self.index, x)

    def expand(self, per_layer: Tensor) -> Tensor:
        """(B, layers) -> (B, voxels): every voxel gets its layer's value."""
        if self.regular:
            b = per_layer.shape[0]
            per = self.n_voxels // self.n_layers
            return per_layer[:, :, None].expand(b, self.n_layers, per).reshape(b, self.n_voxels)
        return per_layer[:, self.index]


class ShapeNormalize(Transform):
    """Voxels divided by their layer's energy: ``forward(showers, cond=layer_energies)``.

    ``cond`` (B, layers) defaults to the layer sums of the input itself. Empty layers give zero
    fractions. :meth:`inverse` (fractions, layer energies) multiplies back; with ``renormalize``
    (default) it first rescales every layer's fractions to sum to one, so that the output's layer
    energies are exactly the given ones (CaloDREAM's treatment of generated shapes); a layer
    whose fractions are all zero stays zero.
    """

    def __init__(self, geometry: Geometry, renormalize: bool = True):
        super().__init__()
        self.layer_sum = LayerSum(geometry)
        self.renormalize = bool(renormalize)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        e_layer = self.layer_sum(x) if cond is None else cond
        e_vox = self.layer_sum.expand(e_layer.to(x.dtype))
        nonempty = e_vox > 0
        return torch.where(nonempty, x / torch.where(nonempty, e_vox, torch.ones_like(e_vox)), torch.zeros_like(x))

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            raise ValueError("ShapeNormalize.inverse needs the layer energies as cond")
        if self.renormalize:
            total = self.layer_sum.expand(self.layer_sum(y))
            ok = total > 0
            y = torch.where(ok, y / torch.where(ok, total, torch.ones_like(total)), torch.zeros_like(y))
        return y * self.layer_sum.expand(cond.to(y.dtype))

    def log_abs_det_jacobian(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``-sum log E_l`` over the (selected) voxels of non-empty layers, the layer energies
        ``cond`` held fixed (required: with the layer sums of ``x`` itself the map drops one
        dimension per layer and has no determinant). Voxels of empty layers are constant zeros
        and never count."""
        if cond is None:
            raise ValueError("ShapeNormalize.log_abs_det_jacobian needs the layer energies as cond")
        e_vox = self.layer_sum.expand(cond.to(x.dtype))
        ok = e_vox > 0
        terms = torch.where(ok, -torch.log(torch.where(ok, e_vox, torch.ones_like(e_vox))), torch.zeros_like(e_vox))
        return _masked_sum(terms, ok if mask is None else ok & torch.broadcast_to(mask, ok.shape))


class SequentialFractions(Transform):
    """Layer energies (B, L) <-> sequential energy fractions (B, L) in [0, 1]; ``cond`` = E_inc (B,).

    ``u_0 = E_tot / (scale * E_inc)``; ``u_{l+1} = E_l / R_l`` with ``R_l = sum_{k >= l} E_k``
    for l = 0 .. L-2 (0 where ``R_l = 0``); the last layer takes what remains. ``scale`` (a
    buffer) is fitted as ``margin`` times the largest E_tot/E_inc seen (at least 1), keeping u_0
    below one; larger ratios are clipped. Rounding: the inverse subtracts layer by layer, so each
    layer energy carries an absolute error of order float-epsilon * E_tot.
    """

    # buffers (registered in __init__), declared for the type checker
    scale: Tensor

    def __init__(self, n_layers: int, margin: float = 1.1):
        super().__init__()
        self.n_layers = int(n_layers)
        self.margin = float(margin)
        self.register_buffer("scale", torch.tensor(1.0))

    @torch.no_grad()
    def fit(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        if cond is None:
            raise ValueError("SequentialFractions needs the incident energies as cond")
        ratio = x.detach().to(torch.float64).sum(1) / cond.detach().reshape(-1).to(torch.float64)
        self.scale.fill_(max(1.0, self.margin * float(ratio.max())))
        return self.forward(x, cond)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            raise ValueError("SequentialFractions needs the incident energies as cond")
        e_inc = cond.reshape(-1, 1).to(x.dtype)
        remaining = torch.flip(torch.cumsum(torch.flip(x, [1]), 1), [1])  # R_l = sum_{k>=l} E_k
        u0 = (remaining[:, :1] / (self.scale.to(x.dtype) * e_inc)).clamp(max=1.0)
        r = remaining[:, :-1]
        ok = r > 0
        u = torch.where(ok, x[:, :-1] / torch.where(ok, r, torch.ones_like(r)), torch.zeros_like(r))
        return torch.cat([u0, u.clamp(0.0, 1.0)], 1)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        if cond is None:
            raise ValueError("SequentialFractions needs the incident energies as cond")
        e_inc = cond.reshape(-1).to(y.dtype)
        remaining = y[:, 0] * self.scale.to(y.dtype) * e_inc
        out = []
        for layer in range(self.n_layers - 1):
            e = y[:, layer + 1] * remaining
            out.append(e)
            remaining = (remaining - e).clamp(min=0.0)
        out.append(remaining)
        return torch.stack(out, 1)

    def log_abs_det_jacobian(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``-log(scale E_inc) - sum_l log R_l`` (``cond`` = E_inc).

        The inverse builds ``R_0 = u_0 scale E_inc`` and ``E_l = u_{l+1} R_l`` one layer after the
        other, a triangular map with diagonal ``(scale E_inc, R_0, ..., R_{L-2})``; the last layer
        (``R_0`` minus the others) adds a unit-determinant shear. Output ``l + 1`` contributes
        ``-log R_l``; fractions after the last non-empty layer (``R_l = 0``, defined as 0, not a
        variable) and outputs ``mask`` leaves out contribute nothing. The clip of ``u_0`` at one
        (E_tot above the fitted scale) is not a bijection and is ignored."""
        if cond is None:
            raise ValueError("SequentialFractions needs the incident energies as cond")
        e_inc = cond.reshape(-1, 1).to(x.dtype)
        remaining = torch.flip(torch.cumsum(torch.flip(x, [1]), 1), [1])[:, :-1]
        ok = remaining > 0
        tail = torch.where(ok, -torch.log(torch.where(ok, remaining, torch.ones_like(remaining))),
                           torch.zeros_like(remaining))
        terms = torch.cat([-torch.log(self.scale.to(x.dtype) * e_inc), tail], 1)
        return _masked_sum(terms, mask)


_NOISE_TOP = 0.999


class BelowThresholdNoise(Transform):
    """Dequantises the zeros of a thresholded shape: ``forward(fractions, cond=layer_energies)``.

    A readout threshold ``t`` makes every voxel either zero or at least ``t``; in shape space
    (fractions of the layer energy ``E_l``) that is a point mass at zero next to a continuum
    starting at ``t / E_l``. A continuous generative model cannot put mass on a point, and the
    blur it puts around it crosses the threshold as spurious hits in energetic layers, where
    ``t / E_l`` is tiny. Here every zero voxel of a non-empty layer becomes uniform noise on
    ``(0, t / E_l)`` (the dequantisation of CaloFlow, Krause & Shih, arXiv:2106.05285, placed
    below the threshold), so the density is continuous and its lower part *is* "no hit".
    :meth:`inverse` zeroes every fraction below ``t / E_l`` (the readout), which makes the round
    trip exact on thresholded showers: hits are at least ``t / E_l``, noise is below.

    ``forward`` draws from torch's global generator (seeded by training); ``noise=False``
    turns it into the identity (deterministic transforms for tests and evaluation).

    ``floor`` (MeV, at least the threshold; default the threshold) is where :meth:`inverse`
    reads out instead. Real calorimeter data often hold almost no hits just above the threshold
    (here: silicon deposits scaled by 1/0.033 rarely fall below 0.1 MeV), a gap the model blurs
    the top of the noise band into; reading out at the lowest energy the data populate removes
    that blur (see :func:`hit_floor`). With ``floor > threshold`` the round trip is exact only
    for showers without hits between the two.
    """

    def __init__(self, geometry: Geometry, threshold: float, noise: bool = True):
        super().__init__()
        if threshold < 0:
            raise ValueError(f"readout threshold must be >= 0, got {threshold}")
        self.layer_sum = LayerSum(geometry)
        self.threshold = float(threshold)
        self.noise = bool(noise)
        self.floor = float(threshold)

    def _limit(self, cond: Tensor | None, like: Tensor, energy: float | None = None) -> Tensor:
        if cond is None:
            raise ValueError("BelowThresholdNoise needs the layer energies as cond")
        e_vox = self.layer_sum.expand(cond.to(like.dtype))
        ok = e_vox > 0
        energy = self.threshold if energy is None else energy
        return torch.where(ok, energy / torch.where(ok, e_vox, torch.ones_like(e_vox)), torch.zeros_like(e_vox))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        if not self.noise or self.threshold <= 0:
            return x
        # The noise stops 0.1% short of t / E_l: a float32 round trip through logit and
        # standardisation moves values by ~1e-6 relative, and must not lift noise into a hit.
        limit = self._limit(cond, x).clamp(max=1.0) * _NOISE_TOP
        return torch.where(x > 0, x, torch.rand_like(x) * limit)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        if max(self.threshold, self.floor) <= 0:
            return y.clamp(min=0.0)
        return torch.where(y >= self._limit(cond, y, max(self.threshold, self.floor)), y, torch.zeros_like(y))

    def log_abs_det_jacobian(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """Zero: hits pass unchanged, and the noise that replaces a zero does not depend on ``x``
        (its volume is :meth:`log_volume`)."""
        return x.new_zeros(x.shape[0])

    def noise_mask(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """The entries :meth:`forward` replaces by noise: zeros of non-empty layers."""
        return (x <= 0) & (self._limit(cond, x) > 0) if self.noise and self.threshold > 0 else torch.zeros_like(x, dtype=torch.bool)

    def log_volume(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``sum log(width)`` over the dequantised entries (B,): the log volume of the box the
        zeros of ``x`` are spread uniformly over (fraction units, width ``0.999 min(t / E_l, 1)``).

        With it, a density ``q`` of the dequantised fractions bounds the model's probability of
        the zeros (times its density at the hits) from below (Jensen; Theis, van den Oord,
        Bethge, arXiv:1511.01844): ``log P(x) >= E_noise[log q(forward(x))] + log_volume(x)``."""
        limit = self._limit(cond, x).clamp(max=1.0) * _NOISE_TOP
        sel = self.noise_mask(x, cond)
        if mask is not None:
            sel = sel & torch.broadcast_to(mask, sel.shape)
        terms = torch.where(sel, torch.log(torch.where(sel, limit, torch.ones_like(limit))), torch.zeros_like(limit))
        return terms.reshape(terms.shape[0], -1).sum(1)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:g} MeV, floor={self.floor:g} MeV, noise={self.noise}"


def hit_floor(showers: Tensor, threshold: float, quantile: float) -> float:
    """The energy (MeV) below which a fraction ``quantile`` of the hits (voxels >= threshold)
    of ``showers`` lie, never below ``threshold``: where the data start to populate."""
    hits = showers[showers >= threshold] if threshold > 0 else showers[showers > 0]
    if hits.numel() == 0 or quantile <= 0:
        return float(threshold)
    hits = hits.to(torch.float64)
    if hits.numel() > 2_000_000:  # torch.quantile's size limit; a strided subsample is plenty
        hits = hits[:: hits.numel() // 2_000_000 + 1]
    return max(float(threshold), float(torch.quantile(hits, quantile)))
