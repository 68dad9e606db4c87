"""Histogram binnings of the CaloChallenge feature histograms, as the official evaluation uses.

The official evaluation (``evaluate.py`` and ``evaluate_plotting_helper.py`` of the CaloChallenge
code) histograms every high-level feature with fixed or reference-dependent edges
(``style="final"``, the latest helper; ``style="2022"`` differs where noted):

- E_tot / E_inc: ``linspace(0.5, 1.5, 31)`` (2022: 101 edges);
- E_layer, per layer: ``logspace(log10(E_min), log10(max of that layer in the reference), 40)``;
- EC eta, EC phi: ``linspace(-L, L, 51)`` (2022: 101 edges), L = 30 mm for DS2/DS3, 500 mm for
  DS1 layers 12 and 13, 100 mm for the other DS1 layers;
- width eta, width phi: ``linspace(0, W, 51)`` (2022: 101 edges), W = 30 mm for DS2/DS3, 400 mm
  for DS1 layers 12 and 13, 100 mm for the other DS1 layers;
- sparsity, per layer: ``linspace(0, 1, 20)``, filled with ``1 - sparsity`` (the occupancy);
- voxel energies (all voxels of all showers): ``logspace(log10(E_min), log10(largest reference
  voxel), 50)``.

``E_min`` is the official ``min_energy``: the DS2/DS3 readout threshold 0.5 keV / 0.033 and
10 MeV for DS1 (see :func:`histogram_min_energy`). The E_layer and voxel edges depend on the
*reference* sample's maximum, exactly as the official helper takes them from the reference.

``style="final"`` is the binning of the latest official helper (the one that also histograms the
sparsity); ``style="2022"`` the original release (100 bins for E_tot/E_inc, the centres of
energy and the widths). The official helper histograms no centre of energy or width in r; for
those caloforge uses 50 equal bins from 0 to the layer's outer radius (EC r) and to half of it
(width r, which cannot exceed half the radial extent); these two are caloforge's choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from caloforge.geometry import Geometry

#: Lower edge (MeV) of the logarithmic E_layer and voxel-energy binnings of DS2/DS3:
#: the 0.5 keV silicon readout threshold divided by the 0.033 sampling fraction.
MIN_ENERGY_DS23 = 0.5e-3 / 0.033
#: The same for DS1 (official ``min_energy`` of the evaluation script).
MIN_ENERGY_DS1 = 10.0

STYLES = ("final", "2022")
_N_EDGES = {"final": {"etot": 31, "ec": 51, "width": 51}, "2022": {"etot": 101, "ec": 101, "width": 101}}
N_EDGES_E_LAYER = 40
N_EDGES_VOXEL = 50
SPARSITY_EDGES = np.linspace(0.0, 1.0, 20)


def is_ds1(geometry: Geometry) -> bool:
    """True for the ATLAS-like DS1 geometries (their lengths and energy floor differ)."""
    return geometry.name.lower().startswith("ds1")


def histogram_min_energy(geometry: Geometry) -> float:
    """The official lower edge (MeV) of the logarithmic energy binnings of ``geometry``."""
    return MIN_ENERGY_DS1 if is_ds1(geometry) else MIN_ENERGY_DS23


def etot_einc_edges(style: str = "final") -> np.ndarray:
    """Edges of the E_tot / E_inc histogram."""
    return np.linspace(0.5, 1.5, _N_EDGES[_check_style(style)]["etot"])


def log_edges(min_energy: float, max_energy: float, n_edges: int) -> np.ndarray | None:
    """``logspace(log10(min_energy), log10(max_energy), n_edges)``, or None when the reference
    maximum does not exceed ``min_energy`` (the official script fails there: the edges would not
    increase; caloforge reports such a histogram's separation power as NaN)."""
    if not np.isfinite(max_energy) or max_energy <= min_energy:
        return None
    return np.logspace(np.log10(min_energy), np.log10(max_energy), n_edges)


def ec_limits(geometry: Geometry, layer: int) -> float:
    """Half-range L (mm) of the EC eta / EC phi histogram of ``layer``: edges span [-L, L]."""
    if not is_ds1(geometry):
        return 30.0
    return 500.0 if layer in (12, 13) else 100.0


def width_limit(geometry: Geometry, layer: int) -> float:
    """Upper edge W (mm) of the width eta / width phi histogram of ``layer``: edges span [0, W]."""
    if not is_ds1(geometry):
        return 30.0
    return 400.0 if layer in (12, 13) else 100.0


def layer_outer_radius(geometry: Geometry, layer: int) -> float:
    return float(geometry.layers[layer].r_edges[-1])


@dataclass
class FeatureBinning:
    """Edges of every feature histogram of one geometry and reference sample.

    Per-layer entries are lists in the column order of :class:`~caloforge.features.ShowerFeatures`
    (``relevant_layers`` for e_layer, ec_r, width_r, sparsity; ``layers_binned_in_alpha`` for the
    eta/phi features). An entry is None where no histogram can be made (see :func:`log_edges`).
    ``voxel_energy`` is None until the reference voxel maximum is known.
    """

    geometry: Geometry
    style: str
    min_energy: float
    etot_einc: np.ndarray
    e_layer: list[np.ndarray | None]
    ec_eta: list[np.ndarray]
    ec_phi: list[np.ndarray]
    width_eta: list[np.ndarray]
    width_phi: list[np.ndarray]
    ec_r: list[np.ndarray]
    width_r: list[np.ndarray]
    sparsity: list[np.ndarray]
    voxel_energy: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def _check_style(style: str) -> str:
    if style not in STYLES:
        raise ValueError(f"unknown binning style {style!r}; choose one of {', '.join(STYLES)}")
    return style


def official_binning(
    geometry: Geometry,
    reference_e_layer_max: np.ndarray,
    reference_voxel_max: float | None = None,
    style: str = "final",
    min_energy: float | None = None,
) -> FeatureBinning:
    """The histogram edges of every feature.

    ``reference_e_layer_max`` holds the maximum layer energy (MeV) of the reference sample for
    each relevant layer; ``reference_voxel_max`` the largest reference voxel energy (after the
    readout threshold). ``min_energy`` overrides :func:`histogram_min_energy`. See
    :func:`binning_from_reference` to derive both maxima from the reference itself.
    """
    g = geometry
    n = _N_EDGES[_check_style(style)]
    emin = histogram_min_energy(g) if min_energy is None else float(min_energy)
    e_max = np.asarray(reference_e_layer_max, dtype=np.float64).reshape(-1)
    if len(e_max) != g.n_layers:
        raise ValueError(f"expected {g.n_layers} layer maxima, got {len(e_max)}")
    notes = []
    e_layer = []
    for layer, m in zip(g.relevant_layers, e_max, strict=True):
        edges = log_edges(emin, float(m), N_EDGES_E_LAYER)
        if edges is None:
            notes.append(f"E_layer {layer}: reference maximum {m:.3g} MeV <= {emin:.3g} MeV, no histogram")
        e_layer.append(edges)
    alpha = g.layers_binned_in_alpha
    ec = [np.linspace(-ec_limits(g, l), ec_limits(g, l), n["ec"]) for l in alpha]
    wd = [np.linspace(0.0, width_limit(g, l), n["width"]) for l in alpha]
    ec_r = [np.linspace(0.0, layer_outer_radius(g, l), n["ec"]) for l in g.relevant_layers]
    width_r = [np.linspace(0.0, layer_outer_radius(g, l) / 2.0, n["width"]) for l in g.relevant_layers]
    voxel = None
    if reference_voxel_max is not None:
        voxel = log_edges(emin, float(reference_voxel_max), N_EDGES_VOXEL)
        if voxel is None:
            notes.append(f"voxel energies: reference maximum {reference_voxel_max:.3g} MeV <= {emin:.3g} MeV")
    return FeatureBinning(
        geometry=g,
        style=style,
        min_energy=emin,
        etot_einc=etot_einc_edges(style),
        e_layer=e_layer,
        ec_eta=ec,
        ec_phi=[e.copy() for e in ec],
        width_eta=wd,
        width_phi=[w.copy() for w in wd],
        ec_r=ec_r,
        width_r=width_r,
        sparsity=[SPARSITY_EDGES.copy() for _ in g.relevant_layers],
        voxel_energy=voxel,
        notes=notes,
    )


def binning_from_reference(
    reference, reference_showers: np.ndarray | None = None, style: str = "final",
    min_energy: float | None = None,
) -> FeatureBinning:
    """:func:`official_binning` with the maxima taken from the reference sample.

    ``reference`` is the reference :class:`~caloforge.features.ShowerFeatures`;
    ``reference_showers`` (optional, (N, voxels) or an iterable of such blocks) gives the voxel
    maximum. The readout threshold only zeroes voxels below it, so the maximum is the raw one
    unless every voxel lies below the threshold.
    """
    voxel_max = None
    if reference_showers is not None:
        voxel_max = voxel_maximum(reference_showers, reference.threshold)
    e_layer_max = reference.e_layer.max(axis=0) if len(reference) else np.zeros(reference.geometry.n_layers)
    return official_binning(reference.geometry, e_layer_max, voxel_max, style=style, min_energy=min_energy)


def iter_shower_blocks(showers):
    """Yield (n, voxels) arrays from an array, a :class:`~caloforge.data.ShowerFile`, or an
    iterable of arrays or of ``(energies, showers)`` pairs (what ``iter_chunks`` yields)."""
    if isinstance(showers, np.ndarray):
        yield showers
        return
    if hasattr(showers, "iter_chunks"):
        showers = showers.iter_chunks()
    for block in showers:
        yield np.asarray(block[1] if isinstance(block, tuple) else block)


def voxel_maximum(showers, threshold: float = 0.0) -> float:
    """Largest voxel energy of ``showers`` (see :func:`iter_shower_blocks`) after the threshold
    (values below it count as 0)."""
    m = 0.0
    for b in iter_shower_blocks(showers):
        if b.size:
            m = max(m, float(np.nanmax(b)))
    return m if m >= threshold else 0.0
