"""``voxel-lognormal``: a per-voxel baseline with a tractable likelihood.

Every voxel is modelled independently given the incident energy:

* whether it is hit (at or above the readout threshold) is a Bernoulli variable whose logit is a
  polynomial in the standardised ``log E_inc``;
* the energy of a hit voxel is log-normal in ``E / E_inc`` with mean and log-width also
  polynomials in ``log E_inc``, truncated to [readout threshold, ``2 x`` the largest fraction
  of ``E_inc`` any voxel took in the training data] (a hit voxel never reads out below the
  threshold, and the cap keeps the heavy log-normal tails physical).

The model captures per-voxel occupancy and energy scale and how they move with energy, but no
correlation between voxels (so e.g. the total-energy resolution comes out too wide). It is the
"trivial" line of the benchmark table and the fast model the training tests train. Its log
likelihood is exact, so :meth:`log_prob` is available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from caloforge.errors import InputError
from caloforge.geometry import Geometry
from caloforge.models.base import ModelConfig, ShowerModel
from caloforge.models.registry import register_model

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
#: Hit energies are capped at this multiple of the largest E / E_inc seen in training.
_UPPER_MARGIN = 2.0
#: Standardised truncation bounds are clipped to +-this (no effect on the density in float32).
_Z_LIMIT = 30.0


def _reflect(alpha: Tensor, beta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Map the interval [alpha, beta] of a standard normal to [lo, hi] with lo <= 0 (by z -> -z
    where alpha > 0), where tail probabilities are accurate."""
    flip = alpha > 0
    return flip, torch.where(flip, -beta, alpha), torch.where(flip, -alpha, beta)


def _log_mass(alpha: Tensor, beta: Tensor) -> Tensor:
    """log(Phi(beta) - Phi(alpha)), stable in both tails."""
    _, lo, hi = _reflect(alpha, beta)
    a, b = torch.special.log_ndtr(lo), torch.special.log_ndtr(hi)
    return b + torch.log(-torch.expm1(torch.clamp(a - b, max=-1e-7)))


@dataclass(frozen=True)
class VoxelLogNormalConfig(ModelConfig):
    """Config of :class:`VoxelLogNormal`."""

    degree: int = 2  # degree of the polynomials in standardised log E_inc
    min_sigma: float = 0.02  # lower bound of the log-normal width (in log E units)

    def validate(self) -> None:
        if not 0 <= self.degree <= 6:
            raise self._error(f"degree must be an integer 0..6, got {self.degree!r}")
        if not self.min_sigma > 0:
            raise self._error("min_sigma must be positive")


@register_model
class VoxelLogNormal(ShowerModel):
    """Independent voxels: Bernoulli occupancy x truncated log-normal energy.

    Capabilities: trained by its loss (the negative log likelihood), an exact likelihood.

    References:
        Krause, Pang, Shih et al., *CaloChallenge 2022: A Community Challenge for Fast
        Calorimeter Simulation*, arXiv:2410.21611 (per-voxel baselines as the trivial reference).
    """

    name = "voxel-lognormal"
    Config = VoxelLogNormalConfig
    config: VoxelLogNormalConfig
    # buffers (registered in __init__), declared for the type checker
    log_e_mean: Tensor
    log_e_std: Tensor
    x_limit: Tensor
    log_upper: Tensor
    hit_base: Tensor
    mu_base: Tensor
    log_sigma_base: Tensor

    def __init__(self, geometry: Geometry, config: VoxelLogNormalConfig | dict[str, Any] | None = None):
        super().__init__(geometry, config)
        degree = self.config.degree
        v = geometry.n_voxels
        # Preprocessing statistics (set by fit_preprocessing, saved with the weights).
        self.register_buffer("log_e_mean", torch.tensor(0.0))
        self.register_buffer("log_e_std", torch.tensor(1.0))
        self.register_buffer("x_limit", torch.tensor(3.0))  # |standardised log E_inc| seen in training
        self.register_buffer("log_upper", torch.tensor(math.log(_UPPER_MARGIN)))  # cap of log(E / E_inc)
        self.register_buffer("hit_base", torch.zeros(v))  # logit of the hit fraction
        self.register_buffer("mu_base", torch.zeros(v))  # mean of log(E / E_inc) of hits
        self.register_buffer("log_sigma_base", torch.zeros(v))  # log std of the same
        # Learned corrections: polynomial coefficients (degree + 1, voxels), zero at start.
        self.hit_coef = nn.Parameter(torch.zeros(degree + 1, v))
        self.mu_coef = nn.Parameter(torch.zeros(degree + 1, v))
        self.log_sigma_coef = nn.Parameter(torch.zeros(degree + 1, v))

    # ------------------------------------------------------------ internals
    def energy_range(self) -> tuple[float, float]:
        half = float(self.x_limit * self.log_e_std)
        return math.exp(float(self.log_e_mean) - half), math.exp(float(self.log_e_mean) + half)

    @property
    def threshold(self) -> float:
        return float(self.geometry.readout_threshold)

    def _features(self, e_inc: Tensor) -> Tensor:
        """(B, degree + 1) powers of the standardised log E_inc, held inside the training range
        (polynomials extrapolate badly)."""
        x = (torch.log(e_inc.reshape(-1).to(self.hit_coef.dtype)) - self.log_e_mean) / self.log_e_std
        x = torch.maximum(torch.minimum(x, self.x_limit), -self.x_limit)
        return torch.stack([x**k for k in range(self.config.degree + 1)], dim=1)

    def _bounds(self, log_e: Tensor, mu: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Standardised truncation bounds (alpha, beta) of y = log(E / E_inc)."""
        log_t = math.log(self.threshold) if self.threshold > 0 else -1e4
        alpha = torch.clamp((log_t - log_e - mu) / sigma, -_Z_LIMIT, _Z_LIMIT)
        beta = torch.clamp((self.log_upper - mu) / sigma, -_Z_LIMIT, _Z_LIMIT)
        return alpha, torch.maximum(beta, alpha + 1e-3)

    def _hits(self, showers: Tensor) -> Tensor:
        return showers >= self.threshold if self.threshold > 0 else showers > 0

    def _log_likelihood(self, e_inc: Tensor, showers: Tensor, jacobian: bool) -> Tensor:
        """Per-shower log likelihood. Showers are sparse (DS2: ~90% zeros), so the log-normal
        part is evaluated at the hit voxels only: log p = sum_all log(1 - p_hit)
        + sum_hits [logit p_hit + log f(y)], using log p = log(1 - p) + logit p."""
        showers = showers.to(self.hit_coef.dtype)
        f = self._features(e_inc)  # (B, D+1)
        hit_logit = self.hit_base + f @ self.hit_coef
        ll = nn.functional.logsigmoid(-hit_logit).sum(dim=1)
        b, v = self._hits(showers).nonzero(as_tuple=True)
        if b.numel() == 0:
            return ll
        fb = f[b]
        scale = torch.exp(self.log_sigma_base[v])
        mu = self.mu_base[v] + scale * (fb * self.mu_coef[:, v].T).sum(dim=1)
        sigma = self.config.min_sigma + scale * torch.exp((fb * self.log_sigma_coef[:, v].T).sum(dim=1))
        log_e = torch.log(e_inc.reshape(-1).to(showers.dtype))[b]
        log_x = torch.log(showers[b, v])
        # A voxel above the cap (never in the training data) is scored at the cap.
        y = torch.clamp(log_x - log_e, max=self.log_upper)
        z = (y - mu) / sigma
        alpha, beta = self._bounds(log_e, mu, sigma)
        # log N(y; mu, sigma) - log P(alpha < z < beta): the truncated log-normal in y.
        cont = -0.5 * z**2 - torch.log(sigma) - _HALF_LOG_2PI - _log_mass(alpha, beta)
        if jacobian:  # density in E rather than in y = log(E / E_inc)
            cont = cont - log_x
        return ll.index_add(0, b, hit_logit[b, v] + cont)

    # ---------------------------------------------------------------- training
    @torch.no_grad()
    def fit_preprocessing(self, e_inc: Tensor, showers: Tensor) -> None:
        log_e = torch.log(e_inc.reshape(-1).to(torch.float64))
        mean, std = log_e.mean(), torch.clamp(log_e.std(unbiased=False), min=1e-3)
        self.log_e_mean.fill_(mean)
        self.log_e_std.fill_(std)
        self.x_limit.fill_(torch.clamp(((log_e - mean) / std).abs().max(), min=1e-3))
        # Per-voxel hit counts and first/second moments of y = log(E / E_inc) over the hits,
        # accumulated in float64 over row blocks (bounded memory for DS2/DS3-sized samples).
        v = showers.shape[1]
        n_hit = torch.zeros(v, dtype=torch.float64, device=showers.device)
        sum_y = torch.zeros_like(n_hit)
        sum_y2 = torch.zeros_like(n_hit)
        y_max = torch.tensor(-torch.inf, dtype=torch.float64, device=showers.device)
        block = max(1, 2**22 // max(v, 1))
        for a in range(0, showers.shape[0], block):
            s = showers[a : a + block].to(torch.float64)
            hit = self._hits(s)
            y = torch.log(torch.clamp(s, min=1e-30)) - log_e[a : a + block, None]
            y = torch.where(hit, y, torch.zeros_like(y))
            n_hit += hit.sum(0)
            sum_y += y.sum(0)
            sum_y2 += (y * y).sum(0)
            if hit.any():
                y_max = torch.maximum(y_max, y[hit].max())
        frac = torch.clamp(n_hit / showers.shape[0], 1e-4, 1 - 1e-4)
        self.hit_base.copy_(torch.log(frac) - torch.log1p(-frac))
        count = torch.clamp(n_hit, min=1)
        mu = sum_y / count
        var = sum_y2 / count - mu**2
        seen = n_hit > 1
        global_mean = (sum_y.sum() / torch.clamp(n_hit.sum(), min=1)).item()
        mu = torch.where(seen, mu, torch.full_like(mu, global_mean))
        sd = torch.where(seen, torch.sqrt(torch.clamp(var, min=1e-4)), torch.ones_like(var))
        self.mu_base.copy_(mu)
        self.log_sigma_base.copy_(torch.log(sd))
        if torch.isfinite(y_max):
            self.log_upper.fill_(y_max + math.log(_UPPER_MARGIN))

    def loss(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """Negative log likelihood per voxel (in log-energy space), averaged over the batch."""
        return -self._log_likelihood(e_inc, showers, jacobian=False).mean() / self.geometry.n_voxels

    def log_prob(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """Exact log p(shower | e_inc): a density in the hit voxels' energies (MeV)."""
        return self._log_likelihood(e_inc, showers, jacobian=True)

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, e_inc: Tensor, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        if options:
            raise InputError(f"model {self.name!r} takes no sampling option(s) {', '.join(sorted(options))}")
        e = e_inc.reshape(-1).to(self.device, self.hit_coef.dtype)
        f = self._features(e)
        hit_logit = self.hit_base + f @ self.hit_coef
        scale = torch.exp(self.log_sigma_base)
        mu = self.mu_base + scale * (f @ self.mu_coef)
        sigma = self.config.min_sigma + scale * torch.exp(f @ self.log_sigma_coef)
        log_e = torch.log(e)[:, None]
        u_hit = torch.rand(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        hit = u_hit < torch.sigmoid(hit_logit)
        # Truncated normal by inversion, in float64 and on the accurate side of the interval.
        alpha, beta = self._bounds(log_e, mu, sigma)
        flip, lo, hi = _reflect(alpha.double(), beta.double())
        p_lo, p_hi = torch.special.ndtr(lo), torch.special.ndtr(hi)
        u = torch.rand(mu.shape, generator=generator, device=mu.device, dtype=torch.float64)
        z = torch.special.ndtri(p_lo + u * (p_hi - p_lo))
        z = torch.maximum(torch.minimum(z, hi), lo)
        z = torch.where(flip, -z, z).to(mu.dtype)
        energy = torch.exp(log_e + mu + sigma * z)
        if self.threshold > 0:  # guard against rounding just below the threshold
            energy = torch.clamp(energy, min=self.threshold)
        return torch.where(hit, energy, torch.zeros_like(energy)).to(torch.float32)
