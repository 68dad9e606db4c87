"""Longitudinal shower profiles: per-shower gamma distributions with correlated parameters.

Following GFlash (Grindhammer & Peters, hep-ex/0001020), the energy deposited per radiation
length of one shower is a gamma distribution in the depth t (X0)::

    dE/dt = E * b (b t)^(a - 1) exp(-b t) / Gamma(a),    shower maximum T = (a - 1) / b,

whose parameters fluctuate from shower to shower: ``(ln T, ln a)`` follow a correlated 2-D
normal distribution with energy-dependent means, widths and correlation (see
:class:`~caloforge.simulation.params.SimulationParams`). The fraction of the shower in a layer
is a difference of regularised incomplete gamma functions.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from caloforge.simulation.params import SimulationParams

#: Bounds that keep the gamma profile well defined for any energy the user may ask for.
_MIN_T = 0.05  # X0
_MIN_ALPHA = 1.05
_MAX_SIGMA = 1.0


def mean_log_parameters(log_y: np.ndarray, p: SimulationParams) -> tuple[np.ndarray, ...]:
    """(<ln T>, <ln a>, sigma(ln T), sigma(ln a), rho) at ``ln y = ln(E / E_c)``."""
    m_lnT = np.log(np.maximum(p.lnT_a + p.lnT_b * log_y, _MIN_T))
    m_lna = np.log(np.maximum(p.lna_a + p.lna_b * log_y, _MIN_ALPHA))
    s_lnT = 1.0 / np.maximum(p.sigT_a + p.sigT_b * log_y, 1.0 / _MAX_SIGMA)
    s_lna = 1.0 / np.maximum(p.siga_a + p.siga_b * log_y, 1.0 / _MAX_SIGMA)
    rho = np.clip(p.rho_a + p.rho_b * log_y, -0.99, 0.99)
    return m_lnT, m_lna, s_lnT, s_lna, rho


def sample_profile_parameters(
    energy: np.ndarray, critical_energy: float, p: SimulationParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the shower maximum T (X0) and the shape a of every shower (energies in MeV).

    Uses two standard normal numbers per shower (drawn as one (2, N) block).
    """
    log_y = np.log(np.asarray(energy, dtype=np.float64) / critical_energy)
    m_lnT, m_lna, s_lnT, s_lna, rho = mean_log_parameters(log_y, p)
    z = rng.standard_normal((2, log_y.size))
    ln_t = m_lnT + s_lnT * z[0]
    ln_a = m_lna + s_lna * (rho * z[0] + np.sqrt(1.0 - rho**2) * z[1])
    t_max = np.maximum(np.exp(ln_t), _MIN_T)
    # a slope b = (a - 1) / T below min_slope would mean energy penetrating further than the
    # photons do (attenuation length ~ 3.6 X0 in tungsten): raise a to keep b >= min_slope
    alpha = np.maximum(np.exp(ln_a), np.maximum(1.0 + p.min_slope * t_max, _MIN_ALPHA))
    return t_max, alpha


def layer_fractions(
    t_max: np.ndarray,
    alpha: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    start: np.ndarray | None = None,
    tail_fraction: float | np.ndarray = 0.0,
    tail_slope: float = 0.3,
    tail_start: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of each shower deposited in each layer, and the mean depth inside the layer.

    ``lo``/``hi`` (L,) bound the layers in X0 from the front face; ``start`` (N,) is the depth at
    which each shower starts (0 when None). A fraction ``tail_fraction`` (scalar or (N,)) of the
    energy follows an exponential tail ``exp(-tail_slope (t - tail_start T))`` beyond
    ``tail_start`` times the shower maximum instead of the gamma distribution (the penetrating
    photons near the minimum of the attenuation coefficient, which the gamma function's tail
    underestimates). Returns ``(fractions (N, L), centroid (N, L))`` where ``centroid`` is the
    energy-weighted mean depth (X0, from the shower start) of the gamma part within the layer,
    used to evaluate the depth-dependent radial profile.
    """
    alpha = alpha[:, None]
    beta = (alpha - 1.0) / t_max[:, None]
    edges = np.concatenate([lo, hi[-1:]]) if np.allclose(lo[1:], hi[:-1]) else None
    if edges is not None:
        t = edges[None, :] if start is None else edges[None, :] - start[:, None]
        t = np.maximum(t, 0.0)
        p_a, p_a1 = _incomplete_gammas(alpha, beta * t)
        frac = np.diff(p_a, axis=1)
        first_moment = np.diff(p_a1, axis=1)
        t_lo, t_hi = t[:, :-1], t[:, 1:]
    else:  # layers with gaps between them (dead material)
        t_lo = lo[None, :] if start is None else lo[None, :] - start[:, None]
        t_hi = hi[None, :] if start is None else hi[None, :] - start[:, None]
        t_lo, t_hi = np.maximum(t_lo, 0.0), np.maximum(t_hi, 0.0)
        pa_lo, pa1_lo = _incomplete_gammas(alpha, beta * t_lo)
        pa_hi, pa1_hi = _incomplete_gammas(alpha, beta * t_hi)
        frac = pa_hi - pa_lo
        first_moment = pa1_hi - pa1_lo
    frac = np.maximum(frac, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = (alpha / beta) * first_moment / frac
    mid = 0.5 * (t_lo + t_hi)
    ok = frac > 1e-12
    centroid = np.where(ok, np.clip(centroid, t_lo, t_hi), mid)
    if np.any(np.asarray(tail_fraction) > 0):
        w = np.reshape(np.asarray(tail_fraction, dtype=np.float64), (-1, 1))
        t0 = tail_start * t_max[:, None]
        cdf_lo = -np.expm1(-tail_slope * np.maximum(t_lo - t0, 0.0))
        cdf_hi = -np.expm1(-tail_slope * np.maximum(t_hi - t0, 0.0))
        frac = (1.0 - w) * frac + w * (cdf_hi - cdf_lo)
    return frac, centroid


def _incomplete_gammas(a: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(a, x) and P(a + 1, x) (regularised lower incomplete gamma functions).

    Uses the recurrence P(a + 1, x) = P(a, x) - x^a e^-x / Gamma(a + 1) to save one evaluation.
    """
    p_a = special.gammainc(a, x)
    with np.errstate(divide="ignore"):
        log_term = a * np.log(x) - x - special.gammaln(a + 1.0)
    p_a1 = np.maximum(p_a - np.exp(log_term), 0.0)
    return p_a, p_a1
