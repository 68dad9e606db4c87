"""Radial shower profiles: a core and a tail component whose widths grow with depth.

GFlash (Grindhammer & Peters, hep-ex/0001020) describes the energy density at radius r (in
Moliere radii) and relative depth tau = t / T as

    f(r) = p f_C(r) + (1 - p) f_T(r),    f_i(r) = 2 r R_i^2 / (r^2 + R_i^2)^2,

each component normalised to 1 over r in [0, inf), with cumulative distribution
F_i(r) = r^2 / (r^2 + R_i^2). The fraction of a layer's energy in a radial bin is therefore a
difference of closed-form CDFs; energy beyond the last bin leaks out of the detector. The
azimuth of the energy spots is uniform, so every angular bin of a ring has the same expectation.
"""

from __future__ import annotations

import numpy as np

from caloforge.simulation.params import SimulationParams

_MIN_RADIUS = 1e-3  # R_M


def radial_parameters(
    tau: np.ndarray, log_e_gev: np.ndarray, p: SimulationParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Core radius, tail radius (R_M) and core fraction at relative depth ``tau``.

    ``tau`` is (N, L); ``log_e_gev`` is (N,) or (N, 1), the log of the incident energy in GeV.
    """
    le = np.reshape(log_e_gev, (-1, 1))
    r_core = np.maximum(p.core_a + p.core_b * le + p.core_c * tau, _MIN_RADIUS)
    k4 = p.tail_k4_a + p.tail_k4_b * le
    r_tail = p.tail_k1 * (np.exp(p.tail_k3 * (tau - p.tail_k2)) + np.exp(k4 * (tau - p.tail_k2)))
    r_tail = np.maximum(r_tail, _MIN_RADIUS)
    p3 = np.maximum(p.p_3a + p.p_3b * le, 0.05)
    x = (p.p_2 - tau) / p3
    p_core = np.clip(p.p_1 * np.exp(x - np.exp(np.minimum(x, 50.0))), 0.0, 1.0)
    return r_core, r_tail, p_core


def ring_fractions(
    r_edges: np.ndarray, r_core: np.ndarray, r_tail: np.ndarray, p_core: np.ndarray
) -> np.ndarray:
    """Fraction of a layer's energy in each radial bin: (N, L, R) for edges (R + 1,) in R_M."""
    r2 = np.asarray(r_edges, dtype=np.float64) ** 2
    rc2 = (r_core**2)[..., None]
    rt2 = (r_tail**2)[..., None]
    pc = p_core[..., None]
    cdf = pc * (r2 / (r2 + rc2)) + (1.0 - pc) * (r2 / (r2 + rt2))
    return np.diff(cdf, axis=-1)
