"""Element-wise transforms: logit, standardisation, log-energy conditioning, readout threshold."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from caloforge.transforms.base import Transform


def _masked_sum(terms: Tensor, mask: Tensor | None) -> Tensor:
    """Per-sample sum (B,) of element-wise terms, over the entries ``mask`` selects (all if None)."""
    if mask is not None:
        terms = torch.where(torch.broadcast_to(mask, terms.shape), terms, torch.zeros_like(terms))
    return terms.reshape(terms.shape[0], -1).sum(1)


class Logit(Transform):
    """``y = logit(alpha + (1 - 2 alpha) x)`` for x in [0, 1], as in CaloINN (Ernst et al.,
    arXiv:2312.09290) and CaloDREAM (Favaro et al., arXiv:2405.09629).

    ``alpha`` (default 1e-6) keeps 0 and 1 finite: they map to -/+ logit(1/alpha - 1) ~ -/+13.8.
    :meth:`inverse` clamps to [0, 1] (generated values may fall outside the image of [0, 1]);
    inside that image the round trip is exact up to rounding: the absolute error on x is of the
    order of the float epsilon times ``max(x, alpha)``.
    """

    def __init__(self, alpha: float = 1e-6, clamp: bool = True):
        super().__init__()
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"logit alpha must lie in (0, 0.5), got {alpha}")
        self.alpha = float(alpha)
        self.clamp = bool(clamp)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        p = self.alpha + (1.0 - 2.0 * self.alpha) * x
        return torch.log(p) - torch.log1p(-p)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        x = (torch.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)
        return x.clamp(0.0, 1.0) if self.clamp else x

    def log_abs_det_jacobian(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``sum log((1 - 2 alpha) / (p (1 - p)))``, ``p = alpha + (1 - 2 alpha) x``."""
        p = self.alpha + (1.0 - 2.0 * self.alpha) * x
        return _masked_sum(math.log1p(-2.0 * self.alpha) - torch.log(p) - torch.log1p(-p), mask)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"


class Standardize(Transform):
    """``y = (x - mean) / std`` per feature; mean and std (buffers of ``shape``) fitted over the
    first dimension of the data, optionally over the entries a mask selects. Features with fewer
    than two selected entries keep mean 0 / std 1; std is floored at ``min_std``."""

    # buffers (registered in __init__), declared for the type checker
    mean: Tensor
    std: Tensor

    def __init__(self, shape: int | tuple[int, ...], min_std: float = 1e-3):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.min_std = float(min_std)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    @torch.no_grad()
    def fit(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        # Two passes in float64 over row blocks: bounded memory for DS2/DS3-sized samples.
        x = x.detach()
        m = None if mask is None else torch.broadcast_to(mask, x.shape)
        block = max(1, 2**21 // max(1, x[0].numel()))
        n = torch.zeros(x.shape[1:], dtype=torch.float64, device=x.device)
        s1 = torch.zeros_like(n)
        for a in range(0, x.shape[0], block):
            xb = x[a : a + block].to(torch.float64)
            w = torch.ones_like(xb) if m is None else m[a : a + block].to(torch.float64)
            n += w.sum(0)
            s1 += (w * xb).sum(0)
        mean = s1 / n.clamp(min=1)
        s2 = torch.zeros_like(n)
        for a in range(0, x.shape[0], block):
            xb = x[a : a + block].to(torch.float64)
            w = torch.ones_like(xb) if m is None else m[a : a + block].to(torch.float64)
            s2 += (w * (xb - mean) ** 2).sum(0)
        var = s2 / n.clamp(min=1)
        enough = n >= 2
        mean = torch.where(enough, mean, torch.zeros_like(mean))
        std = torch.where(enough, var.sqrt().clamp(min=self.min_std), torch.ones_like(var))
        self.mean.copy_(mean.reshape(self.mean.shape))
        self.std.copy_(std.reshape(self.std.shape))
        return self.forward(x, cond)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        return y * self.std.to(y.dtype) + self.mean.to(y.dtype)

    def log_abs_det_jacobian(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``-sum log std`` over the (selected) features."""
        return _masked_sum(-torch.log(self.std.to(x.dtype)).expand_as(x), mask)


class LogEnergyScale(Transform):
    """Conditioning on the incident energy: ``c = (log E - log E_min) / (log E_max - log E_min)``,
    in [0, 1] over the training range (fitted: the smallest and largest energy seen)."""

    # buffers (registered in __init__), declared for the type checker
    log_min: Tensor
    log_max: Tensor

    def __init__(self, e_min: float = 1e3, e_max: float = 1e6):
        super().__init__()
        self.register_buffer("log_min", torch.tensor(math.log(e_min)))
        self.register_buffer("log_max", torch.tensor(math.log(e_max)))

    @torch.no_grad()
    def fit(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        log_e = torch.log(x.detach().to(torch.float64))
        lo, hi = log_e.min(), log_e.max()
        if not hi > lo:  # a single energy: a unit-width window around it
            lo, hi = lo - 0.5, hi + 0.5
        self.log_min.copy_(lo)
        self.log_max.copy_(hi)
        return self.forward(x, cond)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        lo, hi = self.log_min.to(x.dtype), self.log_max.to(x.dtype)
        return (torch.log(x) - lo) / (hi - lo)

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        lo, hi = self.log_min.to(y.dtype), self.log_max.to(y.dtype)
        return torch.exp(y * (hi - lo) + lo)

    def log_abs_det_jacobian(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``-sum log(x (log E_max - log E_min))``."""
        lo, hi = self.log_min.to(x.dtype), self.log_max.to(x.dtype)
        return _masked_sum(-torch.log(x) - torch.log(hi - lo), mask)


class Threshold(Transform):
    """The readout threshold: energies below ``threshold`` (MeV) read out as zero.

    Not a bijection but a projection: :meth:`forward` and :meth:`inverse` both apply it, so the
    round trip is exact on thresholded showers (what a detector reads) and a model's output
    passes through it last. ``threshold = 0`` only zeroes negative values."""

    def __init__(self, threshold: float):
        super().__init__()
        if threshold < 0:
            raise ValueError(f"readout threshold must be >= 0, got {threshold}")
        self.threshold = float(threshold)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        keep = x >= self.threshold if self.threshold > 0 else x > 0
        return torch.where(keep, x, torch.zeros_like(x))

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.forward(y, cond)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:g} MeV"
