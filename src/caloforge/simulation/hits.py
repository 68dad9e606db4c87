"""Sampling fluctuations: the visible energy of a voxel as a compound Poisson sum of hits.

GFlash (Grindhammer & Peters, hep-ex/0001020) deposits a shower as energy spots drawn from the
longitudinal and radial profiles with random azimuth, their number set by the sampling
fluctuations. A Poisson number of spots scattered independently over the voxels gives an
independent Poisson number of spots in each voxel, with mean ``expected energy / hit energy``;
drawing those counts directly costs one uniform number per voxel, whatever the shower energy,
instead of one position per spot. Given ``k`` hits of gamma-distributed energy (shape kappa,
mean h) the voxel energy is Gamma(k kappa, h / kappa).

Counts are drawn by inverting the Poisson distribution with the voxel's uniform number, which
makes empty voxels (the large majority) cost a single comparison; voxels whose expectation
exceeds :data:`MU_DIRECT` hits use numpy's Poisson sampler instead, and beyond
:data:`MU_GAMMA` hits (shower cores, where a voxel holds many hits) the compound sum is drawn
from the gamma distribution with its mean and variance.
"""

from __future__ import annotations

import threading

import numpy as np

#: Expected hit count above which a voxel's count is drawn with ``Generator.poisson``.
MU_DIRECT = 1.5
#: Expected hit count above which the compound Poisson sum is approximated by a gamma law.
MU_GAMMA = 16.0
_MAX_ITERATIONS = 64
_scratch = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A per-thread scratch array, reused between calls (saves page faults on big blocks)."""
    size = int(np.prod(shape))
    buf = getattr(_scratch, name, None)
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        setattr(_scratch, name, buf)
    return buf[:size].reshape(shape)


def sample_voxel_energies(
    mu: np.ndarray,
    n_alpha: int,
    hit_energy: float,
    hit_shape: float,
    rng: np.random.Generator,
    out: np.ndarray | None = None,
    alpha_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Voxel energies (MeV), float32 (N, L, n_alpha, R), for expected hit counts ``mu`` (N, L, R).

    ``mu`` is the expectation of one voxel of each ring; ``alpha_weights`` (N, L, n_alpha), when
    given, multiplies it per angular bin (clustering, see :func:`cluster_weights`). ``out``,
    when given, must be a zero-filled C-contiguous float32 array of the result's shape; it is
    filled and returned.

    Three regimes, by a voxel's expected count: up to :data:`MU_DIRECT` the count comes from
    the voxel's uniform number (exact inversion); up to :data:`MU_GAMMA` from numpy's Poisson
    sampler; above it the compound sum is replaced by the gamma distribution of the same mean
    and variance (shape mu kappa / (1 + kappa)), whose skewness differs by less than 0.2 there.
    Random numbers used, in order: one float32 uniform per voxel, Poisson numbers for the voxels
    of the middle regime, gamma numbers for the non-empty voxels of the first regime and then
    for every voxel of the other two.
    """
    n, n_layers, n_r = mu.shape
    shape = (n, n_layers, n_alpha, n_r)
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    flat_out = out.reshape(-1)
    per_layer = n_alpha * n_r
    index_type = np.int32 if out.size < 2**31 else np.int64
    if alpha_weights is None:
        # every angular bin of a ring shares its expectation: work on rings, broadcast on alpha
        mu_x = np.ascontiguousarray(mu, dtype=np.float32)[:, :, None, :]  # (N, L, 1, R)
    else:
        mu_x = _buffer("mu", shape, np.float32)
        np.multiply(mu[:, :, None, :], alpha_weights[:, :, :, None], out=mu_x, casting="same_kind")
    flat_mu = mu_x.reshape(-1)
    direct = mu_x > MU_DIRECT
    # a voxel is empty when its uniform number falls below P(0) = exp(-mu); voxels of the other
    # regimes are handled separately and never selected here (threshold 2 > any uniform)
    cut = np.exp(-mu_x)
    np.copyto(cut, np.float32(2.0), where=direct)
    u = _buffer("u", shape, np.float32)
    rng.random(dtype=np.float32, out=u)
    hit = _buffer("hit", shape, np.bool_)
    np.greater_equal(u, cut, out=hit)
    cand = np.flatnonzero(hit)

    # voxels of the Poisson and gamma regimes, and their expectations
    if alpha_weights is None:
        rings_d = np.flatnonzero(direct).astype(index_type, copy=False)
        layer_ring, r_bin = np.divmod(rings_d, n_r)
        base = layer_ring * per_layer + r_bin
        vox_d = (base[:, None] + (np.arange(n_alpha, dtype=index_type) * n_r)[None, :]).reshape(-1)
        mu_d = np.repeat(flat_mu[rings_d].astype(np.float64), n_alpha)
    else:
        vox_d = np.flatnonzero(direct)
        mu_d = flat_mu[vox_d].astype(np.float64)
    theta = np.float32(hit_energy / hit_shape)
    middle = np.flatnonzero(mu_d <= MU_GAMMA)
    if middle.size:
        k_mid = rng.poisson(mu_d[middle]).astype(np.float32)

    # sparse voxels: hit counts >= 1 by inversion, then gamma-distributed energies
    if cand.size:
        if alpha_weights is None:
            c = cand.astype(index_type, copy=False)
            mu_c = flat_mu[(c // per_layer) * n_r + c % n_r].astype(np.float64)
        else:
            mu_c = flat_mu[cand].astype(np.float64)
        k = _poisson_inverse_nonzero(u.reshape(-1)[cand], mu_c, np.exp(-mu_c))
        k *= np.float32(hit_shape)
        energy = rng.standard_gamma(k, dtype=np.float32)
        energy *= theta
        flat_out[cand] = energy

    if vox_d.size:
        shape_d = (mu_d * (hit_shape / (1.0 + hit_shape))).astype(np.float32)
        if middle.size:
            shape_d[middle] = k_mid * np.float32(hit_shape)
        energy_d = rng.standard_gamma(shape_d, dtype=np.float32)
        # moment-matched gamma: scale (1 + kappa) / kappa * h instead of h / kappa
        scale = np.full(energy_d.size, np.float32(hit_energy * (1.0 + hit_shape) / hit_shape), np.float32)
        scale[middle] = theta
        energy_d *= scale
        flat_out[vox_d] = energy_d
    return out


def cluster_weights(
    layer_hits: np.ndarray, n_alpha: int, cluster_size: float, rng: np.random.Generator
) -> np.ndarray:
    """Angular clustering weights (N, L, n_alpha), mean 1 over the angular bins of each layer.

    Hits are not independent: they come in clusters (sub-showers, low-energy photons converting
    together), so the energy of one angular wedge of a layer fluctuates more than Poisson
    statistics say. Each wedge's share is drawn from a gamma distribution of shape
    ``wedge hits / cluster_size`` (the number of clusters it holds), then the shares are
    normalised so that the layer's energy is unchanged: the angular distribution becomes lumpy
    where a layer holds few hits and stays smooth in the shower core.
    """
    shape = np.maximum(layer_hits / (n_alpha * cluster_size), 0.01)
    g = rng.standard_gamma(np.repeat(shape[:, :, None], n_alpha, axis=2))
    total = g.sum(axis=2, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    return np.where(total > 0, g * (n_alpha / safe), 1.0)


def _poisson_inverse_nonzero(u: np.ndarray, mu: np.ndarray, p_zero: np.ndarray) -> np.ndarray:
    """Smallest k >= 1 with Poisson CDF(k; mu) >= u, for u >= P(0) = ``p_zero``.

    Sequential search over k on the shrinking set of still-undecided entries; with mu below
    :data:`MU_DIRECT` nearly all entries stop at k = 1 or 2.
    """
    k = np.ones(u.size, dtype=np.float32)
    term = p_zero * mu  # P(k = 1)
    cdf = p_zero + term
    idx = np.flatnonzero(u > cdf)
    if idx.size == 0:
        return k
    u_a, mu_a, term_a, cdf_a = u[idx], mu[idx], term[idx], cdf[idx]
    j = 1
    while idx.size and j < _MAX_ITERATIONS:
        j += 1
        k[idx] += 1.0
        term_a = term_a * mu_a / j
        cdf_a = cdf_a + term_a
        keep = np.flatnonzero(u_a > cdf_a)
        if keep.size < idx.size:
            idx, u_a, mu_a, term_a, cdf_a = idx[keep], u_a[keep], mu_a[keep], term_a[keep], cdf_a[keep]
    return k
