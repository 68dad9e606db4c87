"""Conditional quantile Gaussianisation of voxel energies (the marginals of a Gaussian copula).

:class:`ConditionalQuantileGaussianizer` maps every voxel of a shower to a standard-normal
variable through the empirical distribution of that voxel's energy *given the incident energy*,
so that a generative model working in the new space gets every per-voxel distribution right by
construction (the identity map already does) and only has to learn how voxels depend on each
other. This is the probability integral transform of a Gaussian copula (Sklar's theorem; see
e.g. Nelsen, *An Introduction to Copulas*, 2006), with the marginals estimated empirically.

Per voxel class ``c`` (with ``pool_alpha``, a class is a (layer, r) pair and the 16 alpha bins of
a ring share one distribution: the detector is symmetric under rotations about the shower axis
for perpendicular incidence; otherwise a class is a voxel) and per incident-energy bin ``k``
(``n_energy_bins`` bins of equal population in log E_inc), it stores

* ``p0[k, c]``: the probability that the voxel reads zero (below the readout threshold);
* ``knots[k, c, :]``: the quantile function of ``log(E_voxel / E_inc)`` over the hits, at
  ``n_knots`` probability levels (0 and 1 included: the smallest and largest hit), equally
  spaced or denser in the tails (``tail_z``, see :func:`knot_levels`).

Between bin centres (the mean log E_inc of each bin) both are interpolated linearly in log E_inc:
the quantile functions are averaged level by level (the displacement interpolation of two 1-D
distributions), so the shift of a shower's depth and width with energy is followed smoothly.

:meth:`forward` (showers MeV -> z, cond = E_inc) draws the zeros uniformly on their probability
interval ``u in (0, p0)`` (a dequantisation in probability space) and maps the hits to
``u = p0 + (1 - p0) F_hit(log(E / E_inc))``; ``z = Phi^-1(u)``. :meth:`inverse` reads
``u = Phi(z)`` back: zero below ``p0``, the interpolated quantile above. The round trip is exact
for hits up to the piecewise-linear interpolation of the quantile function between its knots.

>>> import torch
>>> from caloforge.geometry import get_geometry
>>> g = get_geometry("ds2")
>>> q = ConditionalQuantileGaussianizer(g, n_energy_bins=2, n_knots=33)
>>> e = torch.full((400,), 1e4)
>>> x = torch.where(torch.rand(400, g.n_voxels) < 0.3, torch.rand(400, g.n_voxels) * 10 + 0.1, 0.0)
>>> z = q.fit(x, e)
>>> z.shape, bool(z.mean().abs() < 0.05), bool((z.std() - 1).abs() < 0.05)
(torch.Size([400, 6480]), True, True)
>>> back = q.inverse(z, e)
>>> bool(((back > 0) == (x > 0)).all())
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from caloforge.geometry import Geometry
from caloforge.transforms.base import Transform

_U_EPS = 1e-6  # probabilities are kept in [eps, 1 - eps]: |z| <= 4.75
_U_TOL = 1e-7  # margin between the zeros' and the hits' probability intervals (float32 z)


def knot_levels(n_knots: int, tail_z: float | None = None) -> Tensor:
    """Probability levels of the quantile knots, from 0 to 1: equally spaced, or (``tail_z``)
    equally spaced in normal score between -tail_z and tail_z plus the two end points, which
    puts more knots into both tails (the soft hits and the hottest voxels).

    >>> knot_levels(5).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    >>> [round(v, 3) for v in knot_levels(5, 1.0).tolist()]
    [0.0, 0.159, 0.5, 0.841, 1.0]
    """
    if tail_z is None or n_knots < 4:
        return torch.linspace(0.0, 1.0, n_knots)
    z = torch.linspace(-float(tail_z), float(tail_z), n_knots - 2, dtype=torch.float64)
    inner = 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))
    return torch.cat([torch.zeros(1, dtype=torch.float64), inner, torch.ones(1, dtype=torch.float64)]).float()


def voxel_classes(geometry: Geometry, pool_alpha: bool) -> np.ndarray:
    """Class index of every voxel: (layer, r) pairs when ``pool_alpha`` on a regular geometry,
    else the voxel itself."""
    if pool_alpha and geometry.is_regular:
        n_l, n_a, n_r = geometry.shape
        layer = np.repeat(np.arange(n_l), n_a * n_r)
        r = np.tile(np.arange(n_r), n_l * n_a)
        return layer * n_r + r
    return np.arange(geometry.n_voxels)


class ConditionalQuantileGaussianizer(Transform):
    """Showers (B, voxels) MeV <-> standard-normal z (B, voxels), given E_inc (B,) MeV.

    ``groups`` (optional, one entry per class): classes of one group share a conditioning
    variable, and ``cond`` is then (B, n_groups) (e.g. the energy of each layer, for the voxels
    of that layer) instead of (B,). Rows whose conditioning value is not positive take no part in
    the fit of that group (e.g. the voxels of an empty layer).

    References:
        Sklar, *Fonctions de repartition a n dimensions et leurs marges* (1959): the copula
        decomposition of a joint distribution into marginals and dependence.
    """

    # buffers (registered in __init__), declared for the type checker
    voxel_class: Tensor
    class_group: Tensor
    voxel_group: Tensor
    centres: Tensor
    p0: Tensor
    knots: Tensor
    levels: Tensor

    def __init__(
        self,
        geometry: Geometry | None = None,
        n_energy_bins: int = 10,
        n_knots: int = 65,
        pool_alpha: bool = True,
        *,
        classes: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        threshold: float | None = None,
        tail_z: float | None = None,
    ):
        super().__init__()
        if n_energy_bins < 1 or n_knots < 2:
            raise ValueError("need at least one energy bin and two quantile knots")
        if (geometry is None) == (classes is None):
            raise ValueError("give either a geometry (voxel classes from it) or explicit classes")
        cls = voxel_classes(geometry, pool_alpha) if geometry is not None else np.asarray(classes, dtype=np.int64)
        if threshold is None:
            threshold = geometry.readout_threshold if geometry is not None else 0.0
        self.threshold = float(threshold)
        self.n_classes = int(cls.max()) + 1
        grp = np.zeros(self.n_classes, np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        if grp.shape != (self.n_classes,):
            raise ValueError(f"groups needs one entry per class ({self.n_classes})")
        self.n_groups = int(grp.max()) + 1
        self.n_bins = int(n_energy_bins)
        self.n_knots = int(n_knots)
        self.register_buffer("voxel_class", torch.from_numpy(cls).long(), persistent=False)
        self.register_buffer("class_group", torch.from_numpy(grp).long(), persistent=False)
        self.register_buffer("voxel_group", torch.from_numpy(grp[cls]).long(), persistent=False)
        shape = (self.n_bins,) if groups is None else (self.n_groups, self.n_bins)  # one row of bin centres per group
        self.register_buffer("centres", torch.linspace(math.log(1e3), math.log(1e6), self.n_bins).expand(shape).clone())
        self.register_buffer("p0", torch.full((self.n_bins, self.n_classes), 0.5))
        self.register_buffer("knots", torch.linspace(-10.0, 0.0, self.n_knots).repeat(self.n_bins, self.n_classes, 1))
        self.register_buffer("levels", knot_levels(self.n_knots, tail_z), persistent=False)

    # ------------------------------------------------------------------ fitting
    def _hits(self, x: Tensor) -> Tensor:
        return x >= self.threshold if self.threshold > 0 else x > 0

    def _cond(self, cond: Tensor | None) -> Tensor:
        """(B, n_groups) log conditioning values."""
        if cond is None:
            raise ValueError("ConditionalQuantileGaussianizer needs the incident energies (or group values) as cond")
        c = cond.reshape(cond.shape[0], -1) if cond.dim() > 1 else cond.reshape(-1, 1)
        if c.shape[1] != self.n_groups:
            raise ValueError(f"cond has {c.shape[1]} columns, the transform {self.n_groups} groups")
        return torch.log(c.to(self.knots.dtype).clamp(min=1e-30))

    @torch.no_grad()
    def fit(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None, scale: Tensor | None = None) -> Tensor:
        """Fit on showers ``x`` (MeV) with incident energies ``cond``; returns ``forward(x)``.

        ``scale`` (broadcastable to ``x``): the quantity the values are divided by before the
        logarithm (default: ``cond``, i.e. ``log(E / E_inc)``; needed with groups); e.g. one,
        for values that are fractions already."""
        if scale is None and self.n_groups > 1:
            raise ValueError("with groups, give the scale of the values explicitly")
        log_c = self._cond(cond).double().cpu()
        levels = self.levels.double().cpu()
        centres = torch.empty(self.n_groups, self.n_bins, dtype=torch.float64)
        p0 = torch.ones(self.n_bins, self.n_classes)
        knots = torch.empty(self.n_bins, self.n_classes, self.n_knots)
        vg, vc = self.voxel_group.cpu(), self.voxel_class.cpu()
        for g in range(self.n_groups):
            valid = torch.nonzero(log_c[:, g] > math.log(1e-29)).reshape(-1)
            vox = torch.nonzero(vg == g).reshape(-1)
            cls = vc[vox]
            classes = torch.unique(cls)
            local = torch.searchsorted(classes, cls)  # class -> 0..n-1 within the group
            if len(valid) == 0:  # e.g. a layer no training shower reaches: never hit
                centres[g] = torch.linspace(math.log(1e3), math.log(1e6), self.n_bins, dtype=torch.float64)
                p0[:, classes] = 1.0
                knots[:, classes] = -10.0
                continue
            order = valid[torch.argsort(log_c[valid, g])]
            bins: Sequence[Tensor]
            if len(valid) < self.n_bins:  # too few for the bins: one table for all of them
                bins = [order] * self.n_bins
            else:
                bins = torch.tensor_split(order, self.n_bins)
            for k, rows in enumerate(bins):
                centres[g, k] = log_c[rows, g].mean() + 1e-6 * k * (len(valid) < self.n_bins)
                xs = x[rows][:, vox].detach().cpu().to(torch.float64)
                hit = self._hits(xs)
                if scale is None:
                    sc = log_c[rows, g][:, None]
                elif scale.dim() == 0:
                    sc = torch.log(scale.double().clamp(min=1e-30))
                else:
                    sc = torch.log(torch.broadcast_to(scale, x.shape)[rows][:, vox].double().clamp(min=1e-30))
                y = torch.log(xs.clamp(min=1e-30)) - sc
                n_cls = torch.bincount(local, minlength=len(classes)).double() * len(rows)
                n_hit = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, local, hit.sum(0).double())
                p0[k, classes] = (1.0 - n_hit / n_cls).float()
                b_idx, v_idx = hit.nonzero(as_tuple=True)
                c_hit = local[v_idx]
                y_hit = y[b_idx, v_idx]
                key = torch.argsort(y_hit)
                key = key[torch.argsort(c_hit[key], stable=True)]
                y_sorted, c_sorted = y_hit[key], c_hit[key]
                starts = torch.searchsorted(c_sorted, torch.arange(len(classes)))
                counts = torch.bincount(c_sorted, minlength=len(classes))
                fallback = float(y_hit.median()) if y_hit.numel() else -10.0
                for i, c in enumerate(classes.tolist()):
                    n = int(counts[i])
                    if n == 0:  # never hit in this bin: p0 = 1, knots irrelevant but finite
                        knots[k, c] = fallback
                        continue
                    pos = levels * (n - 1)
                    lo = pos.floor().long()
                    hi = torch.clamp(lo + 1, max=n - 1)
                    seg = y_sorted[int(starts[i]) : int(starts[i]) + n]
                    knots[k, c] = (seg[lo] + (pos - lo) * (seg[hi] - seg[lo])).float()
        self.centres.copy_(centres.reshape(self.centres.shape))
        self.p0.copy_(p0)
        self.knots.copy_(knots)
        return self.forward(x, cond, scale=scale)

    # ------------------------------------------------------------------ helpers
    def _bin_weights(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        """Lower bin index k (B, classes) and the weight w of bin k + 1 (B, classes)."""
        log_c = self._cond(cond)  # (B, G)
        centres = self.centres.reshape(self.n_groups, self.n_bins)
        if self.n_bins == 1:
            zero = torch.zeros(log_c.shape[0], self.n_classes, dtype=torch.long, device=log_c.device)
            return zero, torch.zeros_like(zero, dtype=log_c.dtype)
        k = torch.searchsorted(centres, log_c.T.contiguous()).T - 1  # (B, G)
        k = k.clamp(0, self.n_bins - 2)
        g = torch.arange(self.n_groups, device=log_c.device)[None, :]
        c0, c1 = centres[g, k], centres[g, k + 1]
        w = ((log_c - c0) / (c1 - c0).clamp(min=1e-12)).clamp(0.0, 1.0)
        cg = self.class_group
        return k[:, cg], w[:, cg]

    def _tables(self, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per (shower, class): the flat row index of the lower bin's knots (B, classes), the
        upper bin's weight w (B, classes) and the interpolated zero probability p0 (B, classes)."""
        k, w = self._bin_weights(cond)
        c = torch.arange(self.n_classes, device=k.device)[None, :]
        row = k * self.n_classes + c
        flat = self.p0.reshape(-1)
        p0 = (1 - w) * flat[row] + w * flat[row + self.n_classes] if self.n_bins > 1 else flat[row]
        return row, w, p0

    def _knot(self, row: Tensor, w: Tensor, j: Tensor) -> Tensor:
        """Knot j of the quantile function interpolated between the two bins (1-D inputs)."""
        flat = self.knots.reshape(-1)
        i = row * self.n_knots + j
        if self.n_bins == 1:
            return flat[i]
        return (1 - w) * flat[i] + w * flat[i + self.n_classes * self.n_knots]

    @staticmethod
    def _scale_at(scale: Tensor | None, cond: Tensor, b: Tensor, v: Tensor, shape) -> Tensor:
        if scale is None:
            return cond.reshape(-1)[b]
        if scale.dim() == 0:
            return scale.expand(b.shape)
        return torch.broadcast_to(scale, shape)[b, v]

    # ------------------------------------------------------------------ transforms
    def to_uniform(
        self, x: Tensor, cond: Tensor | None = None, generator: torch.Generator | None = None, scale: Tensor | None = None
    ) -> Tensor:
        """Showers -> u in (0, 1) (float64): the zeros uniform on (0, p0), the hits on [p0, 1]."""
        if cond is None:
            raise ValueError("ConditionalQuantileGaussianizer needs the incident energies as cond")
        row, w, p0c = self._tables(cond)
        vc = self.voxel_class
        p0 = p0c.double()[:, vc]
        # the zeros, kept a margin below p0 so that the round trip through float32 z keeps them zero
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float64) * (p0 - 2 * _U_TOL).clamp(min=0)
        b, v = self._hits(x).nonzero(as_tuple=True)  # ~10% of DS2 voxels: search the knots there only
        if b.numel():
            c = vc[v]
            r, wb = row[b, c], w[b, c]
            y = torch.log(x[b, v].to(self.knots.dtype)) - torch.log(self._scale_at(scale, cond, b, v, x.shape).to(self.knots.dtype).clamp(min=1e-30))
            lo, hi = self._locate(r, wb, y)
            q_lo, q_hi = self._knot(r, wb, lo), self._knot(r, wb, hi)
            frac = ((y - q_lo) / (q_hi - q_lo).clamp(min=1e-12)).clamp(0.0, 1.0)
            lv = self.levels.to(frac.dtype)
            f_hit = lv[lo] + frac * (lv[hi] - lv[lo])
            f_hit = torch.where(y >= self._knot(r, wb, torch.full_like(b, self.n_knots - 1)), torch.ones_like(f_hit), f_hit)
            p = p0[b, v]
            u[b, v] = p + (1 - p) * f_hit.double()
        return u

    def log_density(self, x: Tensor, cond: Tensor | None = None, scale: Tensor | None = None,
                    spacing: int = 4) -> tuple[Tensor, Tensor]:
        """The marginal of every value, as a likelihood: (z, log density), both (B, n) float64.

        A hit contributes the log density of ``v = x / scale``: ``log((1 - p0) f(y)) - log v`` with
        ``y = log v``. The density ``f`` of y is the ``spacing``-spacing estimate at every knot j,
        ``(level[j + m] - level[j - m]) / (knot[j + m] - knot[j - m])`` (Vasicek's m-spacing
        estimator, with m reduced near the ends to keep the window symmetric; the derivative of the piecewise-linear quantile function itself, ``m = 0``,
        is piecewise constant and as noisy as the few showers between two knots, which makes a
        likelihood in E_inc jagged), interpolated linearly in y between knots; beyond the
        smallest or largest knot the edge density decays exponentially in y over the width of
        the edge interval (a tail the empirical quantiles cannot resolve). The result is
        continuous in y and in the conditioning value, and normalised to one (tails included)
        for every conditioning value. Its score is ``Phi^-1(u)`` as in
        :meth:`forward`, without dequantisation. A zero (below the readout threshold) is a
        probability mass: it contributes ``log p0`` and the mean normal score of its interval,
        ``E[z | z < Phi^-1(p0)] = -phi(a) / p0`` with ``a = Phi^-1(p0)``.

        >>> import torch
        >>> q = ConditionalQuantileGaussianizer(classes=__import__("numpy").zeros(1, "int64"), n_energy_bins=1, n_knots=3)
        >>> _ = q.fit(torch.tensor([[1.0], [0.0], [4.0], [2.0]]), torch.ones(4), scale=torch.ones(()))
        >>> z, logd = q.log_density(torch.tensor([[0.0], [2.0]]), torch.ones(2), scale=torch.ones(()), spacing=0)
        >>> # P(zero) = 1/4; at 2: (3/4) x (1/2)/log 2 / 2, halved: the two tails hold as much as the knots
        >>> [round(float(v), 4) for v in logd[:, 0].exp()]
        [0.25, 0.1353]
        """
        if cond is None:
            raise ValueError("ConditionalQuantileGaussianizer needs the incident energies as cond")
        row, w, p0c = self._tables(cond)
        vc = self.voxel_class
        p0 = p0c.double()[:, vc].clamp(_U_EPS, 1.0)
        a = math.sqrt(2.0) * torch.special.erfinv(2 * p0.clamp(max=1 - _U_EPS) - 1)
        z = -torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi) / p0
        logd = torch.log(p0)
        b, v = self._hits(x).nonzero(as_tuple=True)
        if b.numel():
            c = vc[v]
            r, wb = row[b, c], w[b, c]
            log_v = torch.log(x[b, v].double().clamp(min=1e-30)) - torch.log(
                self._scale_at(scale, cond, b, v, x.shape).double().clamp(min=1e-30))
            y = log_v.to(self.knots.dtype)
            lo, hi = self._locate(r, wb, y)
            q_lo, q_hi = self._knot(r, wb, lo).double(), self._knot(r, wb, hi).double()
            width = (q_hi - q_lo).clamp(min=1e-6)
            lv = self.levels.double()
            t = ((y.double() - q_lo) / width).clamp(0.0, 1.0)
            if spacing <= 0:  # the derivative of the piecewise-linear quantile function itself
                dens = (lv[hi] - lv[lo]) / width
            else:
                dens = (1 - t) * self._knot_density(r, wb, lo, spacing) + t * self._knot_density(r, wb, hi, spacing)
            # normalise: the integral at the bins' own knots, interpolated like the knots (the
            # smoothing moves at most a few per cent of the mass, so the interpolation error is
            # second order)
            table = self._integral_table(spacing).reshape(-1)
            dens = dens / (table[r] if self.n_bins == 1 else (1 - wb) * table[r] + wb * table[r + self.n_classes])
            yd = y.double()
            # outside the knots: the edge interval's density, decaying over its width
            below = yd < q_lo
            above = yd > q_hi
            excess = torch.where(below, q_lo - yd, torch.where(above, yd - q_hi, torch.zeros_like(yd)))
            f_hit = lv[lo] + t * (lv[hi] - lv[lo])
            p = p0[b, v]
            u = (p + (1 - p) * f_hit).clamp(_U_EPS, 1 - _U_EPS)
            z[b, v] = math.sqrt(2.0) * torch.special.erfinv(2 * u - 1)
            logd[b, v] = torch.log((1 - p).clamp(min=1e-30)) + torch.log(dens.clamp(min=1e-30)) - excess / width - log_v
        return z, logd

    def _locate(self, r: Tensor, w: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Binary search for the knot interval (lo, hi = lo + 1) of y (1-D inputs; the
        interpolated knots are increasing); y outside the knots gets the edge interval."""
        lo = torch.zeros_like(r)
        hi = torch.full_like(r, self.n_knots - 1)
        for _ in range(max(1, math.ceil(math.log2(self.n_knots - 1)))):
            mid = (lo + hi) // 2
            right = self._knot(r, w, mid) <= y
            lo = torch.where(right, mid, lo)
            hi = torch.where(right, hi, mid)
        return lo, hi

    def _window(self, j: Tensor, spacing: int) -> tuple[Tensor, Tensor]:
        """The knots (j - m', j + m') of the m-spacing estimate at knot j: m' = ``spacing``,
        reduced near the ends to keep the window symmetric (at least one interval)."""
        n = self.n_knots
        half = torch.minimum(j, n - 1 - j).clamp(min=1, max=spacing)
        return (j - half).clamp(min=0), (j + half).clamp(max=n - 1)

    def _knot_density(self, r: Tensor, w: Tensor, j: Tensor, spacing: int) -> Tensor:
        """The density of y at knot j (1-D inputs): the m-spacing estimate over
        :meth:`_window`, ``m = spacing >= 1``."""
        a, c = self._window(j, spacing)
        lv = self.levels.double()
        dq = (self._knot(r, w, c).double() - self._knot(r, w, a).double()).clamp(min=1e-6)
        return (lv[c] - lv[a]) / dq

    def _integral_table(self, spacing: int) -> Tensor:
        """The integral over y of the unnormalised density of :meth:`log_density` for every
        (energy bin, class) (n_bins, n_classes), cached until the knots change: trapezoids
        between the knots (exact for the piecewise-linear density; with ``spacing=0`` the density
        is constant per interval) plus the two exponential tails."""
        key = (spacing, self.knots.data_ptr(), self.knots._version, self.knots.dtype, self.knots.device)
        cache = self.__dict__.setdefault("_integrals", {})
        if key not in cache:
            cache.clear()
            n = self.n_knots
            q = self.knots.reshape(-1, n).double()
            lv = self.levels.double()
            gaps = (q[:, 1:] - q[:, :-1]).clamp(min=1e-6)
            if spacing <= 0:
                d_int = lv.diff() / gaps
                inside = (gaps * d_int).sum(1)
                d_first, d_last = d_int[:, 0], d_int[:, -1]
            else:
                lo, hi = self._window(torch.arange(n, device=q.device), spacing)
                d = (lv[hi] - lv[lo]) / (q[:, hi] - q[:, lo]).clamp(min=1e-6)
                inside = (gaps * 0.5 * (d[:, 1:] + d[:, :-1])).sum(1)
                d_first, d_last = d[:, 0], d[:, -1]
            cache[key] = (inside + d_first * gaps[:, 0] + d_last * gaps[:, -1]).reshape(self.n_bins, self.n_classes)
        return cache[key]

    def from_uniform(self, u: Tensor, cond: Tensor | None = None, scale: Tensor | None = None, threshold: bool = True) -> Tensor:
        """u in (0, 1) -> showers (MeV): zero below p0, the interpolated quantile above."""
        if cond is None:
            raise ValueError("ConditionalQuantileGaussianizer needs the incident energies as cond")
        row, w, p0c = self._tables(cond)
        vc = self.voxel_class
        p0 = p0c[:, vc].to(u.dtype)
        out = torch.zeros(u.shape, dtype=self.knots.dtype, device=u.device)
        b, v = (u >= p0).nonzero(as_tuple=True)
        if b.numel():
            c = vc[v]
            r, wb, p = row[b, c], w[b, c], p0[b, v]
            f = ((u[b, v] - p) / (1 - p).clamp(min=1e-12)).clamp(0.0, 1.0).to(self.knots.dtype)
            lv = self.levels.to(f.dtype)
            j = (torch.bucketize(f, lv, right=True) - 1).clamp(0, self.n_knots - 2)
            t = ((f - lv[j]) / (lv[j + 1] - lv[j])).clamp(0.0, 1.0)
            q0, q1 = self._knot(r, wb, j), self._knot(r, wb, j + 1)
            y = q0 + t * (q1 - q0)
            log_scale = torch.log(self._scale_at(scale, cond, b, v, u.shape).to(y.dtype).clamp(min=1e-30))
            val = torch.exp(y + log_scale)
            if threshold and self.threshold > 0:  # the lowest knot is a hit: only rounding goes below
                val = val.clamp(min=self.threshold)
            out[b, v] = val
        return out

    def forward(
        self, x: Tensor, cond: Tensor | None = None, generator: torch.Generator | None = None, scale: Tensor | None = None
    ) -> Tensor:
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        block = 2048
        for a in range(0, x.shape[0], block):
            sc = scale if scale is None or scale.dim() == 0 else torch.broadcast_to(scale, x.shape)[a : a + block]
            u = self.to_uniform(x[a : a + block], None if cond is None else cond[a : a + block], generator, sc)
            out[a : a + block] = math.sqrt(2.0) * torch.special.erfinv(2 * u.clamp(_U_EPS, 1 - _U_EPS) - 1)
        return out

    def inverse(self, y: Tensor, cond: Tensor | None = None, scale: Tensor | None = None, threshold: bool = True) -> Tensor:
        """z (B, voxels) -> showers MeV (readout threshold applied unless ``threshold`` is False);
        ``scale`` as in :meth:`fit` (values come back multiplied by it)."""
        u = 0.5 * (1 + torch.erf(y.double() / math.sqrt(2.0))) + _U_TOL
        return self.from_uniform(u, cond, scale, threshold)

    def extra_repr(self) -> str:
        return (f"classes={self.n_classes}, groups={self.n_groups}, bins={self.n_bins}, knots={self.n_knots}, "
                f"threshold={self.threshold:g} MeV")
