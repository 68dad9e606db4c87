"""Gaussian-copula shower model: exact conditional marginals, full rotation-symmetric dependence.

A shower is described at three levels, each mapped to standard-normal scores by a conditional
quantile transform (:class:`~caloforge.transforms.quantile.ConditionalQuantileGaussianizer`):
the total energy E_tot / E_inc and the 45 layer fractions E_layer / E_tot given E_inc, and the
fraction of its layer's energy in every voxel given that layer's energy (``voxels_given="layer"``,
the default; or given E_inc), the 16 alpha bins of a (layer, ring) sharing one distribution. The
dependence between all 6,480 + 46 scores is a zero-mean Gaussian with a full covariance,
restricted to what the detector's symmetry allows: for perpendicular incidence the distribution
of a shower is invariant under rotations about its axis and under reflections in alpha, so the
covariance is circulant and symmetric in alpha. A real orthonormal Fourier basis in alpha
diagonalises every such matrix into one (layers x rings) block per alpha frequency
(``n_alpha // 2 + 1`` blocks: 9 blocks of 405 x 405 for DS2, the alpha-invariant scalars joined to
the frequency-0 block, against one 6,526 x 6,526 matrix). Fitting these blocks is the same as
fitting the covariance of the training showers augmented with all 16 rotations and both
reflections, done exactly and at no extra cost; sampled showers are alpha-symmetric by
construction, with no random rotation at sampling time.

Sampling draws the Gaussian, maps the scores back (E_tot, then the layer energies renormalised to
sum to E_tot, then the voxel fractions renormalised to sum to one in every layer; a layer that
carries energy gets at least one hit) and, with ``calibrate`` (the default), applies the learned
calibration of the output marginals: a monotone map per (layer, ring) class and incident energy
that takes the distribution of E_voxel / E_inc of the model's own output (fitted on one sample of
the model at the training energies) onto the data's. Renormalisation shifts those distributions
(soft hits too frequent, the hottest voxel too hot); the map puts them back while keeping every
shower's ranks, hence its correlations.

Fitting is closed-form (quantiles and covariances, a few minutes on 2 CPU threads for 20k DS2
showers): ``caloforge train --model copula`` fits and saves, with no optimisation steps.
Optionally (``cov_energy_bins > 1``) the covariance is fitted in bins of equal population in
log E_inc and its Cholesky factors interpolated linearly in log E_inc between bin centres.

>>> import torch
>>> from caloforge.geometry import get_geometry
>>> from caloforge.simulation import ParametricSimulator
>>> g = get_geometry("ds2")
>>> e = torch.exp(torch.empty(600).uniform_(9.3, 11.5))
>>> x = torch.from_numpy(ParametricSimulator("ds2").sample(e.numpy(), __import__("numpy").random.default_rng(0)))
>>> m = GaussianCopula(g, {"n_energy_bins": 3, "n_knots": 33})
>>> m.fit(e, x)
>>> s = m.sample(e[:5], generator=torch.Generator().manual_seed(0))
>>> s.shape, bool((s >= 0).all())
(torch.Size([5, 6480]), True)

References:
    Sklar, *Fonctions de repartition a n dimensions et leurs marges* (1959).
    Liu, Lafferty and Wasserman, *The nonparanormal: semiparametric estimation of high
    dimensional undirected graphs*, JMLR 10 (2009): Gaussian copulas with empirical marginals
    in high dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from caloforge.config import preset
from caloforge.errors import InputError
from caloforge.geometry import Geometry
from caloforge.models.base import ModelConfig, ShowerModel
from caloforge.models.registry import register_model
from caloforge.transforms.quantile import ConditionalQuantileGaussianizer, voxel_classes


def _normalise(v: Tensor, n_groups: int | None) -> Tensor:
    """Divide (B, n) by its row sums, or by the sums of ``n_groups`` equal consecutive groups."""
    if n_groups is None:
        return v / v.sum(1, keepdim=True).clamp(min=1e-30)
    g = v.reshape(v.shape[0], n_groups, -1)
    return (g / g.sum(-1, keepdim=True).clamp(min=1e-30)).reshape(v.shape)


def _ensure_hit(frac: Tensor, z: Tensor, n_layers: int) -> Tensor:
    """Give every layer without a hit one, in its voxel of highest normal score: a layer that
    carries energy has at least one hit (a layer the model leaves empty gets zero energy anyway)."""
    f = frac.reshape(frac.shape[0], n_layers, -1)
    empty = f.sum(-1, keepdim=True) <= 0
    top = torch.zeros_like(f).scatter_(-1, z.reshape(f.shape).argmax(-1, keepdim=True), 1.0)
    return torch.where(empty, top, f).reshape(frac.shape)


def _cholesky(cov: Tensor) -> Tensor:
    """Cholesky factor, with the smallest diagonal jitter that makes it succeed."""
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype)
    jitter = 1e-8
    while True:
        l_f, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        if int(info) == 0:
            return l_f
        jitter *= 10


def alpha_fourier_basis(n_alpha: int) -> tuple[Tensor, Tensor]:
    """Real orthonormal Fourier basis over ``n_alpha`` angular bins: the (n_alpha, n_alpha)
    matrix whose columns are the cos/sin modes, and the frequency (0 .. n_alpha // 2) of each
    column. Rotation- and reflection-invariant covariances are diagonal in it, with equal blocks
    for the cos and the sin mode of a frequency.

    >>> f, freq = alpha_fourier_basis(4)
    >>> bool(torch.allclose(f.T @ f, torch.eye(4), atol=1e-6)), freq.tolist()
    (True, [0, 1, 1, 2])
    """
    a = torch.arange(n_alpha, dtype=torch.float64)
    cols, freq = [torch.full((n_alpha,), 1.0 / math.sqrt(n_alpha), dtype=torch.float64)], [0]
    for f in range(1, (n_alpha + 1) // 2):
        cols.append(math.sqrt(2.0 / n_alpha) * torch.cos(2 * math.pi * f * a / n_alpha))
        cols.append(math.sqrt(2.0 / n_alpha) * torch.sin(2 * math.pi * f * a / n_alpha))
        freq += [f, f]
    if n_alpha % 2 == 0 and n_alpha > 1:
        cols.append(torch.cos(math.pi * a) / math.sqrt(n_alpha))
        freq.append(n_alpha // 2)
    return torch.stack(cols, 1).float(), torch.tensor(freq)


@dataclass(frozen=True)
class CopulaConfig(ModelConfig):
    """Config of :class:`GaussianCopula` (see its docstring for the meaning of each key)."""

    n_energy_bins: int = 12
    n_knots: int = 129
    tail_z: float | None = 3.0
    cov_energy_bins: int = 1
    shrinkage: float = 0.0
    calibrate: bool = True
    keep_total: bool = True
    voxels_given: Literal["layer", "incident"] = "layer"
    likelihood_spacing: int = 16

    def validate(self) -> None:
        if self.cov_energy_bins < 1:
            raise self._error("cov_energy_bins must be at least 1")
        if not 0.0 <= self.shrinkage < 1.0:
            raise self._error("shrinkage must lie in [0, 1)")
        if self.likelihood_spacing < 0:
            raise self._error("likelihood_spacing must be at least 0")
        if self.n_energy_bins < 1 or self.n_knots < 3:
            raise self._error("n_energy_bins must be at least 1 and n_knots at least 3")

    @classmethod
    @preset
    def tiny(cls) -> CopulaConfig:
        """Few energy bins and knots: for tests."""
        return cls(n_energy_bins=3, n_knots=17)


@register_model
class GaussianCopula(ShowerModel):
    """Conditional Gaussian copula p(shower | E_inc) with empirical per-class marginals.

    Config: ``n_energy_bins`` / ``n_knots``: incident-energy bins and quantile knots of the
    marginals; ``tail_z``: knots denser in the tails (see
    :func:`~caloforge.transforms.quantile.knot_levels`; None: equally spaced); ``calibrate``:
    the output calibration; ``keep_total``: rescale every calibrated shower to the E_tot it had
    before the calibration; ``voxels_given``: ``layer`` or ``incident``; ``cov_energy_bins``:
    incident-energy bins of the covariance (1: one covariance for all energies); ``shrinkage``:
    weight of the identity mixed into each correlation block (regularises blocks estimated from
    few showers); ``likelihood_spacing``: the m of the m-spacing density estimate of the
    marginals in :meth:`log_prob` (their smoothing; 0: the piecewise-constant density of the
    fitted quantile function).

    Capabilities: fitted in closed form; a likelihood (:meth:`log_prob`, a pseudo-likelihood:
    see there) with its energy profile (:meth:`likelihood_of_energy`).

    References:
        Liu, Lafferty and Wasserman, JMLR 10 (2009) 2295: the nonparanormal (Gaussian copula
        with empirical marginals).
    """

    name = "copula"
    Config = CopulaConfig
    config: CopulaConfig
    # buffers (registered in __init__), declared for the type checker
    basis: Tensor
    freq: Tensor
    chol0: Tensor
    chol: Tensor
    cov_centres: Tensor
    e_range: Tensor
    layer_of_voxel: Tensor

    def __init__(self, geometry: Geometry, config: CopulaConfig | dict[str, Any] | None = None):
        super().__init__(geometry, config)
        if not geometry.is_regular:
            raise InputError(f"model 'copula' needs a regular geometry (same alpha and r bins in every layer); {geometry.name} is not")
        c = self.config
        n_l, n_a, n_r = geometry.shape
        tail = c.tail_z
        q: dict[str, Any] = {"n_energy_bins": c.n_energy_bins, "n_knots": c.n_knots, "threshold": 0.0, "tail_z": tail}
        # Three levels, each with exact conditional marginals: E_tot / E_inc, the layer
        # fractions E_layer / E_tot and the voxel fractions E_voxel / E_layer (rings pooled in alpha).
        self.total = ConditionalQuantileGaussianizer(classes=np.zeros(1, np.int64), **q)
        self.layers = ConditionalQuantileGaussianizer(classes=np.arange(n_l), **q)
        cls = voxel_classes(geometry, True)
        vq = dict(q, classes=cls, groups=np.arange(n_l * n_r) // n_r) if c.voxels_given == "layer" else dict(q, classes=cls)
        self.voxels = ConditionalQuantileGaussianizer(**vq)
        # Calibration of the output marginals: renormalising the sampled fractions to sum to one
        # distorts the distribution of each voxel's energy; a monotone map per class, conditional
        # on E_inc, takes the model's distribution (``output_model``, fitted on a sample of the
        # model at the training energies) onto the data's (``output_data``).
        oq: dict[str, Any] = {"n_energy_bins": q["n_energy_bins"], "n_knots": q["n_knots"], "tail_z": tail}
        self.output_model = ConditionalQuantileGaussianizer(geometry, **oq)
        self.output_data = ConditionalQuantileGaussianizer(geometry, **oq)
        basis, freq = alpha_fourier_basis(n_a)
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("freq", freq, persistent=False)
        n_f, d, k = n_a // 2 + 1, n_l * n_r, c.cov_energy_bins
        self.n_scalars = 1 + n_l  # the alpha-invariant variables, joined to the frequency-0 block
        self.register_buffer("chol0", torch.eye(d + self.n_scalars).repeat(k, 1, 1))  # (E bins, d + s, d + s)
        self.register_buffer("chol", torch.eye(d).repeat(k, n_f - 1, 1, 1))  # (E bins, freq 1.., d, d)
        self.register_buffer("cov_centres", torch.linspace(math.log(1e3), math.log(1e6), k))
        self.register_buffer("e_range", torch.tensor([1e3, 1e6]))
        self.register_buffer("layer_of_voxel", torch.from_numpy(np.repeat(np.arange(n_l), n_a * n_r)), persistent=False)

    def energy_range(self) -> tuple[float, float]:
        return float(self.e_range[0]), float(self.e_range[1])

    # ------------------------------------------------------------------ fitting
    def _to_modes(self, z: Tensor) -> Tensor:
        """(B, voxels) -> (B, modes, layers * rings): the alpha Fourier coefficients."""
        n_l, n_a, n_r = self.geometry.shape
        z = z.reshape(-1, n_l, n_a, n_r)
        y = torch.einsum("blar,aj->bjlr", z, self.basis)
        return y.reshape(z.shape[0], n_a, n_l * n_r)

    def _from_modes(self, y: Tensor) -> Tensor:
        n_l, n_a, n_r = self.geometry.shape
        y = y.reshape(-1, n_a, n_l, n_r)
        z = torch.einsum("bjlr,aj->blar", y, self.basis)
        return z.reshape(y.shape[0], n_l * n_a * n_r)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Showers (MeV) -> (E_tot, layer energies, voxel fractions of their layer), read out."""
        thr = float(self.geometry.readout_threshold)
        x = torch.where(x >= thr, x, torch.zeros_like(x)) if thr > 0 else x.clamp(min=0)
        n_l = self.geometry.n_layers
        lay = x.reshape(x.shape[0], n_l, -1).sum(-1)
        frac = x / lay[:, self.layer_of_voxel].clamp(min=1e-30)
        return lay.sum(-1, keepdim=True), lay, frac

    @torch.no_grad()
    def fit(self, e_inc: Tensor, showers: Tensor) -> None:
        """Fit marginals, covariance and (with ``calibrate``) the output calibration, in closed form."""
        e = e_inc.reshape(-1).float().cpu()
        x = showers.float().cpu()
        self.e_range.copy_(torch.stack([e.min(), e.max()]))
        tot, lay, frac = self._split(x)
        one = torch.ones(())
        z_s = torch.cat([self.total.fit(tot / e[:, None], e, scale=one), self.layers.fit(lay / tot.clamp(min=1e-30), e, scale=one)], 1)
        z = self.voxels.fit(frac, self._voxel_cond(e, lay), scale=one)
        del frac
        n_l, n_a, n_r = self.geometry.shape
        d, n_f, k, s = n_l * n_r, n_a // 2 + 1, self.chol.shape[0], self.n_scalars
        log_e = torch.log(e.double())
        groups = torch.tensor_split(torch.argsort(log_e), k)
        mult = torch.bincount(self.freq, minlength=n_f).double()
        chol0, chol, centres = torch.empty_like(self.chol0), torch.empty_like(self.chol), []
        for g, rows in enumerate(groups):
            centres.append(float(log_e[rows].mean()))
            cov = torch.zeros(n_f, d, d, dtype=torch.float64)
            cov0 = torch.zeros(d + s, d + s, dtype=torch.float64)
            for a in range(0, len(rows), 2048):
                r = rows[a : a + 2048]
                y = self._to_modes(z[r]).double()  # (b, modes, d)
                cov.index_add_(0, self.freq, torch.einsum("bjd,bje->jde", y, y))
                y0 = torch.cat([y[:, 0], z_s[r].double()], 1)
                cov0 += y0.T @ y0
            cov /= (mult * len(rows))[:, None, None]
            cov0 /= len(rows)
            # The marginals make every variable N(0, 1): rescale so that the implied variances
            # (for a voxel: the average of the diagonal blocks over the alpha modes) are one.
            var = (mult[:, None] * torch.diagonal(cov, dim1=1, dim2=2)).sum(0) / n_a
            sv = torch.cat([1.0 / torch.sqrt(var.clamp(min=1e-12)), 1.0 / torch.sqrt(torch.diagonal(cov0)[d:].clamp(min=1e-12))])
            cov = cov * sv[None, :d, None] * sv[None, None, :d]
            cov0 = cov0 * sv[:, None] * sv[None, :]
            cov[0] = cov0[:d, :d]
            chol0[g] = _cholesky(self._shrink(cov0)).float()
            for f in range(1, n_f):
                chol[g, f - 1] = _cholesky(self._shrink(cov[f])).float()
        self.chol0.copy_(chol0)
        self.chol.copy_(chol)
        self.cov_centres.copy_(torch.tensor(centres, dtype=torch.float32))
        if self.config.calibrate:
            self.output_data.fit(x, e)
            self.fit_calibration(e)

    @torch.no_grad()
    def fit_calibration(self, e_inc: Tensor, generator: torch.Generator | None = None) -> None:
        """Fit the model side of the output calibration on one sample of the (uncalibrated)
        model at the energies ``e_inc``."""
        out = []
        for a in range(0, len(e_inc), 2000):
            e = e_inc[a : a + 2000]
            z_s = torch.randn(len(e), self.n_scalars, generator=generator)
            z = torch.randn(len(e), self.geometry.n_voxels, generator=generator)
            out.append(self._uncalibrated(e, z_s, z))
        self.output_model.fit(torch.cat(out), e_inc)

    def _voxel_cond(self, e: Tensor, lay: Tensor) -> Tensor:
        """What the voxel fractions are conditional on: each layer's energy, or E_inc."""
        return lay if self.config.voxels_given == "layer" else e

    def _shrink(self, cov: Tensor) -> Tensor:
        lam = self.config.shrinkage
        return cov if lam == 0 else (1 - lam) * cov + lam * torch.diag_embed(torch.diagonal(cov))

    # ------------------------------------------------------------------ sampling
    def _interp(self, table: Tensor, e_inc: Tensor) -> Tensor:
        """Table (E bins, ...) at the incident energies, linear in log E between bin centres."""
        if table.shape[0] == 1:
            return table[0]
        c = self.cov_centres
        log_e = torch.log(e_inc.reshape(-1).to(c.dtype))
        k = torch.clamp(torch.searchsorted(c, log_e) - 1, 0, len(c) - 2)
        w = ((log_e - c[k]) / (c[k + 1] - c[k])).clamp(0, 1).reshape(-1, *([1] * (table.dim() - 1)))
        return (1 - w) * table[k] + w * table[k + 1]

    def correlated_scores(self, e_inc: Tensor, z_scalar: Tensor, z_shape: Tensor) -> tuple[Tensor, Tensor]:
        """White noise -> correlated normal scores (scalars (B, 1 + layers), voxels (B, voxels))."""
        e = e_inc.reshape(-1)
        d = self.chol.shape[-1]
        eps = self._to_modes(z_shape)  # white noise stays white in an orthonormal basis
        l0 = self._interp(self.chol0, e)
        lf = self._interp(self.chol, e)
        e0 = torch.cat([eps[:, 0], z_scalar], 1)
        y0 = torch.einsum("bd,ed->be", e0, l0) if l0.dim() == 2 else torch.einsum("bd,bed->be", e0, l0)
        idx = self.freq[1:] - 1
        rest = eps[:, 1:]
        if lf.dim() == 3:
            y_rest = torch.einsum("bjd,jed->bje", rest, lf[idx])
        else:
            y_rest = torch.einsum("bjd,bjed->bje", rest, lf[:, idx])
        y = torch.cat([y0[:, None, :d], y_rest], 1)
        return y0[:, d:], self._from_modes(y)

    def _unnormalised(self, e: Tensor, z_scalar: Tensor, z_shape: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """E_tot (B, 1), the layer fractions (B, layers) as drawn, and the voxel fractions as drawn
        (every layer with at least one hit), for layer energies from the renormalised fractions."""
        z_s, z_v = self.correlated_scores(e, z_scalar, z_shape)
        one = torch.ones((), dtype=e.dtype, device=e.device)
        tot = self.total.inverse(z_s[:, :1], e, scale=one) * e[:, None]
        lay_raw = self.layers.inverse(z_s[:, 1:], e, scale=one)
        v_cond = self._voxel_cond(e, _normalise(lay_raw, None) * tot)
        frac_raw = _ensure_hit(self.voxels.inverse(z_v, v_cond, scale=one), z_v, self.geometry.n_layers)
        return tot, lay_raw, frac_raw

    def _raw_fractions(self, e: Tensor, z_scalar: Tensor, z_shape: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """E_tot (B, 1), layer fractions (B, layers) and voxel fractions of their layer, each
        renormalised to sum to one, before calibration."""
        tot, lay_raw, frac_raw = self._unnormalised(e, z_scalar, z_shape)
        return tot, _normalise(lay_raw, None), _normalise(frac_raw, self.geometry.n_layers)

    @torch.no_grad()
    def raw_fraction_sums(self, e_inc: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """How far the sampled fractions are from summing to one before their renormalisation:
        the sum of the layer fractions (B,) and of the voxel fractions of every layer (B, layers)."""
        e = e_inc.reshape(-1).float()
        z_s = torch.randn(len(e), self.n_scalars, generator=generator)
        z = torch.randn(len(e), self.geometry.n_voxels, generator=generator)
        _, lay_raw, frac_raw = self._unnormalised(e, z_s, z)
        return lay_raw.sum(1), frac_raw.reshape(len(e), self.geometry.n_layers, -1).sum(-1)

    def _uncalibrated(self, e: Tensor, z_scalar: Tensor, z_shape: Tensor) -> Tensor:
        tot, lay, frac = self._raw_fractions(e, z_scalar, z_shape)
        x = frac * (lay * tot)[:, self.layer_of_voxel]
        thr = float(self.geometry.readout_threshold)
        return torch.where(x >= thr, x, torch.zeros_like(x)) if thr > 0 else x

    def showers_from_noise(
        self, e_inc: Tensor, z_energy: Tensor, z_shape: Tensor, generator: torch.Generator | None = None,
        calibrate: bool | None = None,
    ) -> Tensor:
        """Map standard-normal noise to showers (MeV): ``z_energy`` (B, 1 + layers) drives E_tot
        and the layer energies, ``z_shape`` (B, voxels) the shapes. With the calibration, the
        zeros of the uncalibrated shower are dequantised with ``generator``'s random numbers, so
        the map is not deterministic and has no ONNX export (its data-dependent gathers over the
        hit voxels would not trace into a fixed graph either); sample with torch."""
        e = e_inc.reshape(-1).to(self.chol.dtype)
        x = self._uncalibrated(e, z_energy.to(self.chol.dtype), z_shape.to(self.chol.dtype))
        if self.config.calibrate and calibrate is not False:
            raw_total = x.sum(1, keepdim=True)
            x = self.output_data.from_uniform(self.output_model.to_uniform(x, e, generator), e)
            if self.config.keep_total:  # the copula's E_tot is exact by construction: keep it
                x = x * (raw_total / x.sum(1, keepdim=True).clamp(min=1e-30))
                thr = float(self.geometry.readout_threshold)
                x = torch.where(x >= thr, x, torch.zeros_like(x)) if thr > 0 else x
        return x

    # ------------------------------------------------------------------ likelihood
    @staticmethod
    def _gauss_term(y: Tensor, chol: Tensor) -> Tensor:
        """Sum over the last dimension of log N(y; 0, L L^T) - log N(y; 0, I), for y (..., d) and
        L (d, d) shared or (..., d, d): the Gaussian copula density of normal scores y."""
        if chol.dim() == 2:
            w = torch.linalg.solve_triangular(chol, y.reshape(-1, y.shape[-1]).T, upper=False).T.reshape(y.shape)
        else:
            w = torch.linalg.solve_triangular(chol, y[..., None], upper=False)[..., 0]
        log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return -0.5 * (w * w).sum(-1) + 0.5 * (y * y).sum(-1) - log_det

    def _modes64(self, z: Tensor) -> Tensor:
        """:meth:`_to_modes` in float64."""
        n_l, n_a, n_r = self.geometry.shape
        y = torch.einsum("blar,aj->bjlr", z.double().reshape(-1, n_l, n_a, n_r), self.basis.double())
        return y.reshape(z.shape[0], n_a, n_l * n_r)

    def _voxel_terms(self, e: Tensor, lay: Tensor, frac: Tensor) -> tuple[Tensor, Tensor]:
        """The voxels' normal scores in alpha modes (B, modes, layers * rings) and their summed
        marginal log density (B,). A layer without energy has no voxel fractions: its voxels are
        not variables (their zeros follow from the layer's)."""
        z_v, d_v = self.voxels.log_density(frac, self._voxel_cond(e, lay), scale=torch.ones((), dtype=torch.float64),
                                           spacing=self.config.likelihood_spacing)
        live = (lay > 0)[:, self.layer_of_voxel]
        z_v = torch.where(live, z_v, torch.zeros_like(z_v))
        return self._modes64(z_v), torch.where(live, d_v, torch.zeros_like(d_v)).sum(1)

    def _higher_modes(self, e: Tensor, y: Tensor) -> Tensor:
        """The copula terms of the alpha modes 1.. (B,)."""
        lf = self._interp(self.chol, e).double()
        idx = self.freq[1:] - 1
        rest = y[:, 1:]
        if lf.dim() == 3:
            return torch.stack([self._gauss_term(rest[:, j], lf[int(i)]) for j, i in enumerate(idx)], 1).sum(1)
        return self._gauss_term(rest, lf[:, idx]).sum(1)

    @torch.no_grad()
    def likelihood_of_energy(self, showers: Tensor, part: Literal["shower", "energies"] = "shower") -> Callable[[Tensor], Tensor]:
        """``log_prob(., showers)`` as a function of the incident energies (B,) MeV, with the work
        that does not depend on them done once: with ``voxels_given="layer"`` the voxels' scores
        and densities, and with one covariance for all energies the copula terms of the alpha
        modes 1.. as well. Energy calibration calls it ~100 times per shower."""
        x = showers.to(self.device)
        tot, lay, frac = self._split(x)
        one = torch.ones((), dtype=torch.float64)
        d = self.chol.shape[-1]
        fixed = None
        if part == "shower" and self.config.voxels_given == "layer":
            y, d_v = self._voxel_terms(lay.new_ones(len(x)), lay, frac)
            fixed = (y, d_v, self._higher_modes(lay.new_ones(len(x)), y) if self.chol.shape[0] == 1 else None)
        scalar_chol = None
        if part == "energies" and self.chol0.shape[0] == 1:
            lower = self.chol0[0, d:].double()
            scalar_chol = torch.linalg.cholesky(lower @ lower.T)

        def log_lik(e_inc: Tensor) -> Tensor:
            e = e_inc.reshape(-1).to(self.device, torch.float64)
            m = self.config.likelihood_spacing
            z_t, d_t = self.total.log_density(tot / e[:, None], e, scale=one, spacing=m)
            z_l, d_l = self.layers.log_density(lay / tot.clamp(min=1e-30), e, scale=one, spacing=m)
            z_s = torch.cat([z_t, z_l], 1)
            ll = d_t.sum(1) + d_l.sum(1) - torch.log(e)  # the Jacobian of E_tot / E_inc
            l0 = self._interp(self.chol0, e).double()
            if part == "energies":
                if scalar_chol is None:  # the scalars' marginal: rows d.. of L0 L0^T
                    lower = l0[..., d:, :]
                    return ll + self._gauss_term(z_s, torch.linalg.cholesky(lower @ lower.transpose(-1, -2)))
                return ll + self._gauss_term(z_s, scalar_chol)
            y, d_v, rest = fixed if fixed is not None else (*self._voxel_terms(e, lay, frac), None)
            ll = ll + d_v + self._gauss_term(torch.cat([y[:, 0], z_s], 1), l0)
            return ll + (rest if rest is not None else self._higher_modes(e, y))

        return log_lik

    @torch.no_grad()
    def log_prob(self, e_inc: Tensor, showers: Tensor, part: Literal["shower", "energies"] = "shower") -> Tensor:
        """The copula's log density (B,) float64 of showers (B, voxels) MeV given E_inc (B,) MeV.

        It is the density of the shower's three-level description (E_tot, the layer fractions
        E_layer / E_tot, the voxel fractions E_voxel / E_layer): the Gaussian copula density of
        the normal scores times the marginal densities
        (:meth:`~caloforge.transforms.quantile.ConditionalQuantileGaussianizer.log_density`), with
        the Jacobian ``1 / E_inc`` of E_tot / E_inc, so that it is a density in E_tot (MeV) for
        every incident energy. ``part="energies"`` keeps E_tot and the layer fractions only (the
        exact marginal of a Gaussian copula over a subset of its variables: the sub-block of the
        covariance).

        It is a pseudo-likelihood in three respects, stated here because they matter for its
        use: the fractions are treated as free variables (they sum to one, so the density is not
        normalised over showers in MeV); a voxel or layer that reads zero contributes its
        probability ``p0`` and the mean normal score of its interval (the exact censored
        likelihood needs a Gaussian orthant probability, intractable in 6,480 dimensions); and the
        output calibration of a calibrated copula is not in it (it describes the copula before
        that map). As a function of E_inc it is what energy calibration maximises and what
        anomaly scores rank.
        """
        e = e_inc.reshape(-1)
        out = [self.likelihood_of_energy(showers[a : a + 512], part)(e[a : a + 512]) for a in range(0, len(e), 512)]
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    @torch.no_grad()
    def sample(self, e_inc: Tensor, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """Showers (B, voxels) MeV. Option ``calibrate=False`` skips the output calibration of a
        calibrated model (faster, see the README's model table for the fidelity it costs)."""
        calibrate = options.pop("calibrate", None)
        if options:
            raise InputError(f"model {self.name!r} takes no sampling option(s) {', '.join(sorted(options))}")
        if calibrate and not self.config.calibrate:
            raise InputError("this copula was fitted without the output calibration")
        e = e_inc.reshape(-1).to(self.device)
        out = []
        for a in range(0, len(e), 2000):
            eb = e[a : a + 2000]
            z_s = torch.randn(len(eb), self.n_scalars, generator=generator, device=self.device)
            z = torch.randn(len(eb), self.geometry.n_voxels, generator=generator, device=self.device)
            out.append(self.showers_from_noise(eb, z_s, z, generator, calibrate))
        return torch.cat(out) if out else torch.zeros(0, self.geometry.n_voxels)
