"""The :class:`Geometry` of a cylindrical CaloChallenge calorimeter readout.

Voxels are flattened in (layer, alpha, r) order: within a layer the radial index runs fastest.
Positions follow the official CaloChallenge convention (``XMLHandler``): a voxel sits at the
midpoint of its radial bin and at the centre of its angular bin, the angular bins dividing
[-pi, pi) evenly; its "eta" and "phi" coordinates are x = r cos(alpha) and y = r sin(alpha) in mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise

import numpy as np


@dataclass(frozen=True)
class LayerBinning:
    """Radial bin edges (mm) and the number of angular bins of one layer.

    A layer whose ``r_edges`` has a single entry holds no voxel (the DS1 geometries list such
    layers to keep the detector's layer numbering).
    """

    index: int
    r_edges: tuple[float, ...]
    n_alpha: int

    def __post_init__(self) -> None:
        if len(self.r_edges) < 1:
            raise ValueError(f"layer {self.index}: r_edges is empty")
        if any(b <= a for a, b in pairwise(self.r_edges)):
            raise ValueError(f"layer {self.index}: r_edges must increase strictly")
        if self.n_alpha < 1:
            raise ValueError(f"layer {self.index}: n_alpha must be at least 1")

    @property
    def n_r(self) -> int:
        return len(self.r_edges) - 1

    @property
    def n_voxels(self) -> int:
        return self.n_r * self.n_alpha

    @property
    def r_centres(self) -> np.ndarray:
        e = np.asarray(self.r_edges, dtype=np.float64)
        return e[:-1] + (e[1:] - e[:-1]) / 2.0

    @property
    def alpha_centres(self) -> np.ndarray:
        edges = np.linspace(-np.pi, np.pi, self.n_alpha + 1)
        return edges[:-1] + (edges[1:] - edges[:-1]) / 2.0


@dataclass(frozen=True)
class Geometry:
    """A full calorimeter readout: an ordered list of :class:`LayerBinning`.

    ``layers`` holds every layer of the binning file, empty ones included, so layer indices
    match the official numbering. Only :attr:`relevant_layers` (those with voxels) appear in the
    flattened voxel vector and in the per-layer features.
    """

    name: str
    layers: tuple[LayerBinning, ...]
    particle: str = "electron"
    readout_threshold: float = 0.0  # MeV, applied before computing features
    description: str = field(default="", compare=False)

    # ------------------------------------------------------------------ layout
    @cached_property
    def relevant_layers(self) -> tuple[int, ...]:
        """Indices of the layers that hold voxels, in file order."""
        return tuple(layer.index for layer in self.layers if layer.n_voxels > 0)

    @cached_property
    def layers_binned_in_alpha(self) -> tuple[int, ...]:
        """Indices of the layers with more than one angular bin (they get eta/phi features)."""
        return tuple(layer.index for layer in self.layers if layer.n_alpha > 1 and layer.n_r > 0)

    @property
    def n_layers(self) -> int:
        """Number of layers holding voxels."""
        return len(self.relevant_layers)

    @cached_property
    def layer_offsets(self) -> np.ndarray:
        """Start of each relevant layer in the flat voxel vector, plus the total at the end."""
        sizes = [self.layers[i].n_voxels for i in self.relevant_layers]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def layer_slice(self, layer: int) -> slice:
        """Slice of the flat voxel vector belonging to layer index ``layer``."""
        k = self.relevant_layers.index(layer)
        return slice(int(self.layer_offsets[k]), int(self.layer_offsets[k + 1]))

    @property
    def n_voxels(self) -> int:
        return int(self.layer_offsets[-1])

    @property
    def is_regular(self) -> bool:
        """True when every layer has the same (n_alpha, r_edges): the shower is a 3-D tensor."""
        rel = [self.layers[i] for i in self.relevant_layers]
        return all(l.r_edges == rel[0].r_edges and l.n_alpha == rel[0].n_alpha for l in rel)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(layers, alpha, r) of a regular geometry."""
        if not self.is_regular:
            raise ValueError(f"geometry {self.name} is irregular and has no 3-D shape")
        first = self.layers[self.relevant_layers[0]]
        return (self.n_layers, first.n_alpha, first.n_r)

    # --------------------------------------------------------- per-voxel arrays
    def _per_voxel(self, which: str) -> np.ndarray:
        parts = []
        for i in self.relevant_layers:
            layer = self.layers[i]
            r = np.tile(layer.r_centres, layer.n_alpha)
            a = np.repeat(layer.alpha_centres, layer.n_r)
            parts.append({"r": r, "alpha": a, "layer": np.full(layer.n_voxels, i)}[which])
        return np.concatenate(parts)

    @cached_property
    def voxel_layer(self) -> np.ndarray:
        """Layer index of every voxel."""
        return self._per_voxel("layer").astype(np.int64)

    @cached_property
    def voxel_r(self) -> np.ndarray:
        """Radial bin centre (mm) of every voxel."""
        return self._per_voxel("r")

    @cached_property
    def voxel_alpha(self) -> np.ndarray:
        """Angular bin centre (rad, in [-pi, pi)) of every voxel."""
        return self._per_voxel("alpha")

    @cached_property
    def voxel_eta(self) -> np.ndarray:
        """The official "eta" coordinate of every voxel: r cos(alpha), mm."""
        return self.voxel_r * np.cos(self.voxel_alpha)

    @cached_property
    def voxel_phi(self) -> np.ndarray:
        """The official "phi" coordinate of every voxel: r sin(alpha), mm."""
        return self.voxel_r * np.sin(self.voxel_alpha)

    @cached_property
    def voxel_area(self) -> np.ndarray:
        """Transverse area (mm^2) of every voxel."""
        parts = []
        for i in self.relevant_layers:
            layer = self.layers[i]
            e = np.asarray(layer.r_edges)
            ring = np.pi * (e[1:] ** 2 - e[:-1] ** 2) / layer.n_alpha
            parts.append(np.tile(ring, layer.n_alpha))
        return np.concatenate(parts)

    def __repr__(self) -> str:
        return (
            f"Geometry({self.name!r}, layers={self.n_layers}, voxels={self.n_voxels}, "
            f"particle={self.particle!r})"
        )
