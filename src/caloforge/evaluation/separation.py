"""Separation power of feature histograms, as in the official CaloChallenge evaluation.

The separation power (triangular discrimination, eq. 15 of arXiv:2009.03796) of two normalised
histograms h1, h2 is ``S = 1/2 sum_k (h1_k - h2_k)^2 / (h1_k + h2_k)``; 0 for identical shapes,
1 for disjoint ones. The official code builds each histogram with ``density=True`` (counts
divided by the bin width and by the number of entries *inside* the edges; entries outside are
dropped), multiplies the densities back by the bin widths so that each sums to 1, and adds
1e-16 to the denominator, so that bins empty in both histograms contribute 0. A histogram with no
entry inside its edges has NaN densities (0/0), and so a NaN separation power; caloforge keeps
that behaviour and reports it as NaN.

With the features of :mod:`caloforge.features` (official dtypes) and the binning of
:mod:`caloforge.evaluation.binning` (official edges), every separation power that the official
``evaluate.py -m hist-chi`` writes (E_tot / E_inc, E_layer, EC eta/phi and width eta/phi per
layer, voxel energies, and for DS1 E_tot / E_inc per incident energy, ``etot_einc_discrete``)
equals the official one: identical to the last bit on real Geant4 DS2 showers and simulated DS1
photons, pinned to 1e-6 by ``tests/test_official_exactness.py``; ``benchmarks/official_exactness.py``
runs both side by side.

Deviations from the official code, all deliberate:

- EC r, width r and sparsity: the official helper defines their histograms (``plot_ECR``,
  ``plot_ECWidthR``, ``plot_sparsity``) but ``hist-chi`` does not compute them; caloforge
  reports them with those definitions (they too equal the official functions' output);
- a histogram whose edges cannot be made (reference maximum at or below ``min_energy``): the
  official script stops with an error; caloforge reports NaN;
- showers stored as float64 are read as float32 by :class:`~caloforge.data.ShowerFile`, so their
  sums are float32 where the official code sums in float64 (``caloforge evaluate`` says so in
  the notes of metrics.json); official and caloforge-written files are float32;
- ``caloforge evaluate --threshold`` moves the voxel cut only; the lowest edge of the E_layer and
  voxel histograms stays at the official ``min_energy`` (the official script has one value for
  both);
- additions the official code does not have: the floor (two halves of the reference), the per-incident-energy
  view and the non-official ``style="coarse"`` binning.

Everything here is vectorised over leading axes: per-layer histograms are counted column by
column and their separation powers computed in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np

from caloforge.evaluation.binning import (
    FeatureBinning,
    binning_from_reference,
    iter_shower_blocks,
)

_EPS = 1e-16
_BLOCK_ELEMENTS = 1 << 22  # voxels histogrammed at once (bounded memory)
_HIST_BLOCK = 1 << 16  # values binned at once by the arithmetic path of histogram_counts

#: Keys of :func:`feature_separation_powers`; every one but etot_einc and voxel_energy is a list
#: with one value per layer. DS1 adds ``etot_einc_discrete`` (one value per incident energy).
SEPARATION_KEYS = (
    "etot_einc", "e_layer", "ec_eta", "ec_phi", "ec_r", "width_eta", "width_phi", "width_r",
    "sparsity", "voxel_energy",
)


def separation_power(hist1: np.ndarray, hist2: np.ndarray, edges: np.ndarray) -> np.ndarray | float:
    """Separation power of two density histograms (``density=True``) sharing ``edges``.

    ``hist1``/``hist2`` have shape (..., bins) and ``edges`` (..., bins + 1) (broadcast); the
    result has the leading shape (a float for 1-D input).
    """
    w = np.diff(np.asarray(edges, dtype=np.float64), axis=-1)
    h1 = np.asarray(hist1, dtype=np.float64) * w
    h2 = np.asarray(hist2, dtype=np.float64) * w
    ret = (h1 - h2) ** 2
    ret /= h1 + h2 + _EPS
    out = 0.5 * ret.sum(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def density(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``numpy.histogram(..., density=True)`` from counts: counts / bin width / total counts
    (along the last axis; NaN where a histogram is empty)."""
    c = np.asarray(counts, dtype=np.float64)
    db = np.diff(np.asarray(edges, dtype=np.float64), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return c / db / c.sum(axis=-1, keepdims=True)


def separation_power_counts(counts1: np.ndarray, counts2: np.ndarray, edges: np.ndarray) -> np.ndarray | float:
    """Separation power from raw bin counts (normalised as the official code does)."""
    return separation_power(density(counts1, edges), density(counts2, edges), edges)


def even_scale(e: np.ndarray) -> str | None:
    """``"linear"`` or ``"log"`` when the edges are evenly spaced on that scale (to 1e-9 of a
    bin), so that a value's bin can be guessed arithmetically; None otherwise."""
    if len(e) < 3 or not np.all(np.isfinite(e)):
        return None
    d = np.diff(e)
    if np.all(d > 0) and np.allclose(d, d.mean(), rtol=1e-9, atol=0.0):
        return "linear"
    if e[0] > 0:
        dl = np.diff(np.log(e))
        if np.all(dl > 0) and np.allclose(dl, dl.mean(), rtol=1e-9, atol=0.0):
            return "log"
    return None


def _bin_indices(x: np.ndarray, e: np.ndarray, scale: str) -> np.ndarray:
    """Bin of every value of ``x`` (all inside ``[e[0], e[-1]]``) in the evenly spaced edges
    ``e``: guessed from the value's position on the edges' scale (in the values' own dtype), then
    corrected by exact comparisons with the edges, so that it is the bin of
    ``searchsorted(e, x, side="right") - 1`` (the last bin also holding ``e[-1]``)."""
    nb = len(e) - 1
    if scale == "log":
        lo, hi = float(np.log(e[0])), float(np.log(e[-1]))
        t = np.log(x)
        t -= lo
    else:
        lo, hi = float(e[0]), float(e[-1])
        t = x - lo
    t *= nb / (hi - lo)
    np.clip(t, 0, nb - 1, out=t)
    idx = t.astype(np.intp)
    while True:  # a guess is off by at most one bin (round-off); exact comparisons settle it
        down = x < e[idx]
        up = (x >= e[idx + 1]) & (idx < nb - 1)
        if not (down.any() or up.any()):
            return idx
        idx -= down.view(np.int8)
        idx += up.view(np.int8)


def histogram_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin counts with :func:`numpy.histogram` semantics for explicit edges: bin i holds
    ``edges[i] <= x < edges[i+1]``, the last bin also ``x == edges[-1]``; values outside the
    edges and NaN are dropped. Works on any shape of ``values`` (flattened).

    Edges evenly spaced on a linear or logarithmic scale (the official ones) find each value's bin
    arithmetically and check it against the edges (:func:`_bin_indices`, several times faster than
    a binary search on voxel energies); other edges use :func:`numpy.searchsorted`. Both give
    the same counts."""
    e = np.asarray(edges, dtype=np.float64)
    x = np.asarray(values).reshape(-1)
    nb = len(e) - 1
    scale = even_scale(e) if x.dtype in (np.float32, np.float64) and len(x) > 256 else None
    if scale is not None:
        counts = np.zeros(nb, dtype=np.int64)
        for a in range(0, len(x), _HIST_BLOCK):  # blocks that stay in the CPU cache
            xb = x[a : a + _HIST_BLOCK]
            xb = xb[(xb >= e[0]) & (xb <= e[-1])]  # also drops NaN
            counts += np.bincount(_bin_indices(xb, e, scale), minlength=nb)[:nb]
        return counts
    idx = np.searchsorted(e, x, side="right") - 1
    idx[x == e[-1]] = nb - 1
    valid = (idx >= 0) & (idx < nb)
    return np.bincount(idx[valid], minlength=nb)[:nb].astype(np.int64)


def column_counts(values: np.ndarray, edges: Sequence[np.ndarray | None]) -> list[np.ndarray | None]:
    """Counts of every column of ``values`` (N, columns) in its own edges (None: skipped)."""
    v = np.asarray(values)
    if v.ndim != 2 or v.shape[1] != len(edges):
        raise ValueError(f"expected {len(edges)} columns, got an array of shape {v.shape}")
    return [None if e is None else histogram_counts(v[:, k], e) for k, e in enumerate(edges)]


def columns_separation_power(
    reference: np.ndarray, generated: np.ndarray, edges: Sequence[np.ndarray | None]
) -> list[float]:
    """Separation power of each column of two (N, columns) samples, one edge array per column
    (None gives NaN). Columns sharing a bin count are evaluated in one vectorised call."""
    c_ref = column_counts(reference, edges)
    c_gen = column_counts(generated, edges)
    out = [float("nan")] * len(edges)
    by_len: dict[int, list[int]] = {}
    for k, e in enumerate(edges):
        if e is not None:
            by_len.setdefault(len(e), []).append(k)
    for ks in by_len.values():
        # the columns in ks all have edges, hence counts (None only where the edges are None)
        e = np.stack([cast(np.ndarray, edges[k]) for k in ks])
        cr = np.stack([cast(np.ndarray, c_ref[k]) for k in ks])
        cg = np.stack([cast(np.ndarray, c_gen[k]) for k in ks])
        s = separation_power_counts(cr, cg, e)
        for k, v in zip(ks, np.atleast_1d(s), strict=True):
            out[k] = float(v)
    return out


def voxel_energy_counts(showers, edges: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Counts of all voxel energies of ``showers`` (array, ShowerFile or iterable of blocks; see
    :func:`~caloforge.evaluation.binning.iter_shower_blocks`), block by block.

    Voxels below ``threshold`` count as 0, as after the official ``showers[showers < cut] = 0``;
    with the official edges (starting at or above the threshold) they fall outside anyway.
    """
    e = np.asarray(edges, dtype=np.float64)
    total = np.zeros(len(e) - 1, dtype=np.int64)
    zero_bin = histogram_counts(np.zeros(1), e)  # where a zeroed voxel lands (usually nowhere)
    for block in iter_shower_blocks(showers):
        rows = max(1, _BLOCK_ELEMENTS // max(block.shape[-1], 1))
        for a in range(0, len(block), rows):
            x = block[a : a + rows].reshape(-1)
            if threshold > 0:
                below = x < threshold
                n_below = int(below.sum())
                if n_below:
                    x = x[~below]
                    total += n_below * zero_bin
            total += histogram_counts(x, e)
    return total


def feature_separation_powers(
    reference,
    generated,
    binning: FeatureBinning | None = None,
    reference_showers=None,
    generated_showers=None,
    style: str = "official",
) -> dict[str, float | list[float] | None]:
    """Separation power of every feature histogram between two :class:`ShowerFeatures`.

    Returns a dict with keys :data:`SEPARATION_KEYS`: ``etot_einc`` and ``voxel_energy`` are
    floats (``voxel_energy`` is None unless both shower samples are given), the others lists
    with one value per layer in the column order of the features. For DS1 a last key
    ``etot_einc_discrete`` lists the E_tot / E_inc separation power per incident energy
    (2**8 ... 2**22 MeV; NaN where either sample has no shower of that energy, as the official
    0/0 densities). ``binning`` defaults to the official binning derived from the reference
    (:func:`binning_from_reference`).
    """
    if reference.geometry != generated.geometry:
        raise ValueError("reference and generated features come from different geometries")
    if binning is None:
        binning = binning_from_reference(reference, reference_showers, style=style)
    b = binning
    r, g = reference, generated
    out: dict[str, float | list[float] | None] = {}
    out["etot_einc"] = columns_separation_power(
        r.etot_einc[:, None], g.etot_einc[:, None], [b.etot_einc]
    )[0]
    out["e_layer"] = columns_separation_power(r.e_layer, g.e_layer, b.e_layer)
    for key in ("ec_eta", "ec_phi", "ec_r", "width_eta", "width_phi", "width_r"):
        out[key] = columns_separation_power(getattr(r, key), getattr(g, key), getattr(b, key))
    out["sparsity"] = columns_separation_power(r.sparsity, g.sparsity, b.sparsity)
    out["voxel_energy"] = None
    if reference_showers is not None and generated_showers is not None:
        if b.voxel_energy is None:
            out["voxel_energy"] = float("nan")
        else:
            c1 = voxel_energy_counts(reference_showers, b.voxel_energy, r.threshold)
            c2 = voxel_energy_counts(generated_showers, b.voxel_energy, g.threshold)
            out["voxel_energy"] = float(separation_power_counts(c1, c2, b.voxel_energy))  # 1-D: a float
    result = {k: out[k] for k in SEPARATION_KEYS}  # the documented key order
    if b.etot_einc_discrete is not None:
        result["etot_einc_discrete"] = etot_einc_discrete_separation(r, g, b)
    return result


def etot_einc_discrete_separation(reference, generated, binning: FeatureBinning) -> list[float]:
    """DS1: separation power of E_tot / E_inc for the showers of each incident energy
    ``discrete_energies[i] <= E_inc < discrete_energies[i + 1]`` (official
    ``plot_Etot_Einc_discrete``)."""
    t, per_energy = binning.discrete_energies, binning.etot_einc_discrete
    if t is None or per_energy is None:
        raise ValueError("the binning has no per-energy E_tot / E_inc histograms (DS1 only)")
    out = []
    for i, edges in enumerate(per_energy):
        mr = (reference.e_inc >= t[i]) & (reference.e_inc < t[i + 1])
        mg = (generated.e_inc >= t[i]) & (generated.e_inc < t[i + 1])
        out.append(float(separation_power_counts(histogram_counts(reference.etot_einc[mr], edges),
                                                 histogram_counts(generated.etot_einc[mg], edges), edges)))
    return out


def mean_separation_powers(seps: dict) -> dict[str, float]:
    """Per-feature means over layers (NaN layers ignored), as the published ``sep_mean_*``."""
    out = {}
    for k, v in seps.items():
        if v is None:
            out[k] = float("nan")
        elif isinstance(v, list):
            a = np.asarray(v, dtype=np.float64)
            out[k] = float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")
        else:
            out[k] = float(v)
    return out
