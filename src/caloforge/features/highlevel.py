"""The CaloChallenge high-level shower features, vectorised and chunked.

Definitions follow the official CaloChallenge evaluation code (``HighLevelFeatures.py``):

- ``e_tot``: sum of all voxel energies; ``e_layer``: sum per layer;
- centres of energy per layer: ``ec_x = sum(x E) / (sum(E) + 1e-16)`` for x in
  {eta, phi} (layers binned in alpha only) and r (every layer), with voxel positions at the bin
  centres (see :class:`~caloforge.geometry.Geometry`);
- widths: ``sqrt(max(sum(x^2 E) / (sum(E) + 1e-16) - ec_x^2, 0))``;
- sparsity per layer: ``1 - mean(E > 0)``, the fraction of voxels without energy;

all computed after the readout threshold has zeroed every voxel below it (the official script
applies ``showers[showers < cut] = 0`` first). Arithmetic is in float64 on float32 inputs, as the
official code does, chunk by chunk so memory stays bounded.
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
        """E_tot / E_inc per shower."""
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
    """Zero every voxel below ``threshold`` (MeV), as the readout and the official script do."""
    out = np.array(showers, copy=copy)
    if threshold > 0:
        out[out < threshold] = 0.0
    return out


class _LayerOps:
    """Per-geometry weights turning a (N, voxels) block into per-layer moments with matmuls.

    Moments per layer: sums of E, r E, r^2 E, eta E, eta^2 E, phi E, phi^2 E. A regular geometry
    (DS2, DS3) is reshaped to (N * layers, voxels per layer) and multiplied by a (voxels per
    layer, 7) matrix; an irregular one (DS1) uses one block-diagonal (voxels, 7 * layers) matrix.
    """

    def __init__(self, geometry: Geometry):
        g = geometry
        self.geometry = g
        self.alpha_cols = np.array(
            [g.relevant_layers.index(l) for l in g.layers_binned_in_alpha], dtype=np.int64
        )
        weights = np.stack(
            [np.ones(g.n_voxels), g.voxel_r, g.voxel_r**2, g.voxel_eta, g.voxel_eta**2,
             g.voxel_phi, g.voxel_phi**2], axis=1,
        )  # (voxels, 7)
        self.regular = g.is_regular
        self.n_per_layer = np.diff(g.layer_offsets).astype(np.float64)
        if self.regular:
            per_layer = g.n_voxels // g.n_layers
            self.matrix = weights[:per_layer]  # identical in every layer
        else:
            layer_col = np.searchsorted(g.layer_offsets[1:], np.arange(g.n_voxels), side="right")
            mat = np.zeros((g.n_voxels, 7, g.n_layers))
            mat[np.arange(g.n_voxels), :, layer_col] = weights
            self.matrix = mat.reshape(g.n_voxels, 7 * g.n_layers)

    def moments(self, showers: np.ndarray) -> np.ndarray:
        """(N, 7, layers) moments of a float64 block."""
        n, g = len(showers), self.geometry
        if self.regular:
            m = showers.reshape(n * g.n_layers, -1) @ self.matrix
            return m.reshape(n, g.n_layers, 7).transpose(0, 2, 1)
        return (showers @ self.matrix).reshape(n, 7, g.n_layers)

    def nonzero_counts(self, showers: np.ndarray) -> np.ndarray:
        nz = (showers > 0).astype(np.float64)
        if self.regular:
            return nz.reshape(len(showers), self.geometry.n_layers, -1).sum(axis=2)
        return np.add.reduceat(nz, self.geometry.layer_offsets[:-1], axis=1)


def _features_of_block(ops: _LayerOps, e_inc: np.ndarray, showers: np.ndarray, threshold: float) -> ShowerFeatures:
    g = ops.geometry
    s = apply_threshold(np.asarray(showers, dtype=np.float64), threshold, copy=False)
    m = ops.moments(s)
    e_layer, sr, sr2, seta, seta2, sphi, sphi2 = (m[:, k] for k in range(7))
    denom = e_layer + _EPS
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
        e_inc=np.asarray(e_inc, dtype=np.float64).reshape(-1),
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
    """High-level features of in-memory showers (MeV). ``threshold`` defaults to the geometry's."""
    thr = geometry.readout_threshold if threshold is None else float(threshold)
    showers = np.asarray(showers)
    if showers.ndim != 2 or showers.shape[1] != geometry.n_voxels:
        raise ValueError(f"expected showers of shape (N, {geometry.n_voxels}), got {showers.shape}")
    e = np.asarray(incident_energies, dtype=np.float64).reshape(-1)
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
