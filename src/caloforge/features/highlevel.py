"""The CaloChallenge high-level shower features, vectorised and chunked.

Definitions follow the official CaloChallenge evaluation code (``HighLevelFeatures.py``):

- ``e_tot``: sum of all voxel energies; ``e_layer``: sum per layer;
- centres of energy per layer: ``ec_x = sum(x E) / (sum(E) + 1e-16)`` for x in
  {eta, phi} (layers binned in alpha only) and r (every layer), with voxel positions at the bin
  centres (see :class:`~caloforge.geometry.Geometry`);
- widths: ``sqrt(max(sum(x^2 E) / (sum(E) + 1e-16) - ec_x^2, 0))``;
- sparsity per layer: ``1 - mean(E > 0)``, the fraction of voxels without energy;

all computed after the readout threshold has zeroed every voxel below it (the official script
applies ``np.where(showers < min_energy, 0, showers)`` to the showers as read, before anything
else).

The arithmetic reproduces the official dtypes, so that every feature, and so every histogram bin
a shower falls in, is the official one bit for bit:

- the threshold comparison is made in the showers' own dtype (float32 for files: the official
  ``showers < min_energy`` compares in float32 too);
- ``e_tot`` and ``e_layer`` are numpy sums in the showers' own dtype (float32 for files), as
  ``data.sum(axis=-1)`` in the official code, and are stored in that dtype; ``e_inc`` keeps the
  floating dtype it is given in (see :attr:`caloforge.data.ShowerFile.energy_dtype`), so that
  ``etot_einc`` is the official quotient;
- the denominators of the centres and widths are these same layer sums plus 1e-16 in that dtype,
  the numerators float64 sums of float64 products; the results are float64.

Verified feature for feature (bitwise) and separation power for separation power against the
official code on real Geant4 showers: ``benchmarks/official_exactness.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from caloforge.geometry import Geometry

_EPS = 1e-16


@dataclass
class ShowerFeatures:
    """High-level features of N showers. Per-layer arrays are (N, layers) in geometry order.

    ``ec_eta``, ``ec_phi``, ``width_eta``, ``width_phi`` have one column per layer binned in
    alpha (:attr:`Geometry.layers_binned_in_alpha`); the other per-layer arrays have one column
    per layer holding voxels (:attr:`Geometry.relevant_layers`).

    ``e_tot`` and ``e_layer`` have the showers' dtype (float32 for showers read from files) and
    ``e_inc`` the incident energies' floating dtype, as in the official code; everything else is
    float64 (see the module docstring).
    """

    geometry: Geometry
    e_inc: np.ndarray
    e_tot: np.ndarray
    e_layer: np.ndarray
    ec_eta: np.ndarray
    ec_phi: np.ndarray
    width_eta: np.ndarray
    width_phi: np.ndarray
    ec_r: np.ndarray
    width_r: np.ndarray
    sparsity: np.ndarray
    threshold: float = 0.0

    _ARRAYS = (
        "e_inc", "e_tot", "e_layer", "ec_eta", "ec_phi", "width_eta", "width_phi",
        "ec_r", "width_r", "sparsity",
    )

    def __len__(self) -> int:
        return len(self.e_inc)

    @property
    def etot_einc(self) -> np.ndarray:
        """E_tot / E_inc per shower, in the dtype numpy gives the official ``E_tot / E_inc``
        (float64 unless both are float32)."""
        return self.e_tot / self.e_inc

    def select(self, mask: np.ndarray | slice) -> ShowerFeatures:
        """The features of a subset of the showers (boolean mask, indices or slice)."""
        kw = {name: getattr(self, name)[mask] for name in self._ARRAYS}
        return ShowerFeatures(self.geometry, threshold=self.threshold, **kw)

    @classmethod
    def concatenate(cls, parts: Sequence[ShowerFeatures]) -> ShowerFeatures:
        if not parts:
            raise ValueError("nothing to concatenate")
        kw = {name: np.concatenate([getattr(p, name) for p in parts]) for name in cls._ARRAYS}
        return cls(parts[0].geometry, threshold=parts[0].threshold, **kw)

    def high_level_vector(self) -> np.ndarray:
        """The official high-level input vector of the classifier and of FPD/KPD.

        ``[log10 E_inc, log10(E_layer + 1e-8), EC_eta/100, EC_phi/100, width_eta/100,
        width_phi/100, log10(E_tot + 1e-8), sparsity, EC_r/100, width_r/100]`` as in the final
        CaloChallenge evaluation (``prepare_high_data_for_classifier``).
        """
        return np.concatenate(
            [
                np.log10(self.e_inc)[:, None],
                np.log10(self.e_layer + 1e-8),
                self.ec_eta / 1e2,
                self.ec_phi / 1e2,
                self.width_eta / 1e2,
                self.width_phi / 1e2,
                np.log10(self.e_tot + 1e-8)[:, None],
                self.sparsity,
                self.ec_r / 1e2,
                self.width_r / 1e2,
            ],
            axis=1,
        )

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in self._ARRAYS}


def apply_threshold(showers: np.ndarray, threshold: float, copy: bool = True) -> np.ndarray:
    """Zero every voxel below ``threshold`` (MeV), as the readout and the official script do.

    The comparison is made in the showers' own dtype (``threshold`` is a Python float, so numpy
    casts it to float32 for float32 showers), as the official ``showers < min_energy``."""
    out = np.array(showers, copy=copy)
    threshold = float(threshold)
    if threshold > 0:
        np.putmask(out, out < threshold, 0.0)  # as out[out < threshold] = 0.0, without the index
    return out


class _LayerOps:
    """Per-geometry weights turning a (N, voxels) block into per-layer moments.

    Moments per layer: sums of r E, r^2 E, eta E, eta^2 E, phi E, phi^2 E, each computed as the
    official code does: the float64 product of the weight and the voxel energies, summed over
    the layer's voxels by numpy's (pairwise) sum, so that the results are the official ones bit
    for bit. The weights are the official ones: eta = r cos(alpha), phi = r sin(alpha) and
    eta * eta, phi * phi with r the bin midpoint ``a + (b - a) / 2`` (``XMLHandler``); r and
    r * r with the midpoint ``(a + b) * 0.5`` (``HighLevelFeatures.radial_center_mult``; the
    two midpoints can differ in the last bit). The products are formed a few rows at a time so
    that the buffer stays in the CPU cache (about twice the time of a matrix product).
    """

    _BUFFER_ELEMENTS = 1 << 15  # float64 elements of the product buffer (256 kB)

    def __init__(self, geometry: Geometry):
        g = geometry
        self.geometry = g
        self.alpha_cols = np.array(
            [g.relevant_layers.index(l) for l in g.layers_binned_in_alpha], dtype=np.int64
        )
        r_mid = np.concatenate([
            np.tile((np.asarray(g.layers[i].r_edges[:-1]) + np.asarray(g.layers[i].r_edges[1:])) * 0.5,
                    g.layers[i].n_alpha)
            for i in g.relevant_layers
        ])
        eta, phi = g.voxel_eta, g.voxel_phi
        self.weights = np.stack([r_mid, r_mid * r_mid, eta, eta * eta, phi, phi * phi])  # (6, voxels)
        self.regular = g.is_regular
        self.n_per_layer = np.diff(g.layer_offsets).astype(np.float64)
        self.rows = max(1, self._BUFFER_ELEMENTS // max(g.n_voxels, 1))

    def moments(self, showers: np.ndarray) -> np.ndarray:
        """(N, 6, layers) float64 moments of a block (any float dtype; products in float64)."""
        n, g = len(showers), self.geometry
        out = np.empty((n, 6, g.n_layers))
        buf = np.empty((min(self.rows, n), g.n_voxels))
        o = g.layer_offsets
        for a in range(0, n, self.rows):
            blk = showers[a : a + self.rows]
            b = buf[: len(blk)]
            for k, w in enumerate(self.weights):
                np.multiply(blk, w, out=b)
                if self.regular:
                    b.reshape(len(blk), g.n_layers, -1).sum(axis=2, out=out[a : a + len(blk), k])
                else:
                    for j in range(g.n_layers):
                        b[:, o[j] : o[j + 1]].sum(axis=-1, out=out[a : a + len(blk), k, j])
        return out

    def layer_sums(self, showers: np.ndarray) -> np.ndarray:
        """(N, layers) energy per layer, summed in the showers' dtype over each layer's
        contiguous voxels exactly as the official ``data[:, a:b].sum(axis=-1)``."""
        if self.regular:
            return showers.reshape(len(showers), self.geometry.n_layers, -1).sum(axis=2)
        o = self.geometry.layer_offsets
        return np.stack([showers[:, o[k] : o[k + 1]].sum(axis=-1) for k in range(len(o) - 1)], axis=1)

    def nonzero_counts(self, showers: np.ndarray) -> np.ndarray:
        """(N, layers) float64 number of voxels above 0 per layer (counted, not summed as floats:
        the same integers, without a float64 copy of the block)."""
        nz = showers > 0
        if self.regular:
            return np.count_nonzero(nz.reshape(len(showers), self.geometry.n_layers, -1), axis=2).astype(np.float64)
        return np.add.reduceat(nz.astype(np.float64), self.geometry.layer_offsets[:-1], axis=1)


def _float_array(x) -> np.ndarray:
    """``x`` as an array of its own floating dtype (other dtypes become float64)."""
    a = np.asarray(x)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def _features_of_block(ops: _LayerOps, e_inc: np.ndarray, showers: np.ndarray, threshold: float) -> ShowerFeatures:
    g = ops.geometry
    # the official order: threshold in the showers' dtype, then every sum in that dtype
    s = np.ascontiguousarray(_float_array(showers))
    if threshold > 0:
        s = apply_threshold(s, threshold, copy=True)
    e_layer = ops.layer_sums(s)  # showers' dtype, as data[:, a:b].sum(axis=-1)
    denom = e_layer + _EPS  # the official energy.sum(axis=-1) + 1e-16, same dtype
    m = ops.moments(s)
    sr, sr2, seta, seta2, sphi, sphi2 = (m[:, k] for k in range(6))
    ec_r = sr / denom
    width_r = np.sqrt(np.clip(sr2 / denom - ec_r**2, 0.0, None))
    ec_eta = seta / denom
    ec_phi = sphi / denom
    width_eta = np.sqrt(np.clip(seta2 / denom - ec_eta**2, 0.0, None))
    width_phi = np.sqrt(np.clip(sphi2 / denom - ec_phi**2, 0.0, None))
    a = ops.alpha_cols
    sparsity = 1.0 - ops.nonzero_counts(s) / ops.n_per_layer
    return ShowerFeatures(
        geometry=g,
        e_inc=_float_array(e_inc).reshape(-1),
        e_tot=s.sum(axis=1),
        e_layer=e_layer,
        ec_eta=ec_eta[:, a],
        ec_phi=ec_phi[:, a],
        width_eta=width_eta[:, a],
        width_phi=width_phi[:, a],
        ec_r=ec_r,
        width_r=width_r,
        sparsity=sparsity,
        threshold=threshold,
    )


_OPS_CACHE: dict[Geometry, _LayerOps] = {}


def _ops(geometry: Geometry) -> _LayerOps:
    if geometry not in _OPS_CACHE:
        _OPS_CACHE[geometry] = _LayerOps(geometry)
    return _OPS_CACHE[geometry]


def compute_features(
    incident_energies: np.ndarray,
    showers: np.ndarray,
    geometry: Geometry,
    threshold: float | None = None,
    chunk_size: int = 4096,
) -> ShowerFeatures:
    """High-level features of in-memory showers (MeV). ``threshold`` defaults to the geometry's.

    Sums are made in the dtype of ``showers`` and ``e_inc`` keeps the floating dtype of
    ``incident_energies`` (float64 for lists), as the official code does with what it reads."""
    thr = geometry.readout_threshold if threshold is None else float(threshold)
    showers = np.asarray(showers)
    if showers.ndim != 2 or showers.shape[1] != geometry.n_voxels:
        raise ValueError(f"expected showers of shape (N, {geometry.n_voxels}), got {showers.shape}")
    e = _float_array(incident_energies).reshape(-1)
    ops = _ops(geometry)
    parts = [
        _features_of_block(ops, e[a : a + chunk_size], showers[a : a + chunk_size], thr)
        for a in range(0, len(showers), chunk_size)
    ]
    return ShowerFeatures.concatenate(parts)


def compute_features_streamed(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]], geometry: Geometry, threshold: float | None = None
) -> ShowerFeatures:
    """High-level features of showers arriving in ``(energies, showers)`` blocks.

    Use with :meth:`caloforge.data.ShowerFile.iter_chunks` to process files larger than memory.
    """
    parts = [compute_features(e, s, geometry, threshold) for e, s in blocks]
    return ShowerFeatures.concatenate(parts)
