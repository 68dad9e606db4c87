"""Histogram binnings of the CaloChallenge feature histograms, as the official evaluation uses.

The official evaluation (``evaluate.py`` and ``evaluate_plotting_helper.py`` of CaloChallenge/
homepage, ``code/``; ``-m hist-chi``) histograms every high-level feature with fixed or
reference-dependent edges (``style="official"``, the default):

- E_tot / E_inc: ``linspace(0.5, 1.5, 101)``;
- E_layer, per layer: ``logspace(log10(min_energy), log10(max of that layer in the reference), 40)``;
- EC eta, EC phi: ``linspace(-L, L, 101)``, L = 30 mm for DS2/DS3, 500 mm for DS1 layers 12 and
  13, 100 mm for the other DS1 layers;
- width eta, width phi: ``linspace(0, W, 101)``, W = 30 mm for DS2/DS3, 400 mm for DS1 layers 12
  and 13, 100 mm for the other DS1 layers;
- voxel energies (all voxels of all showers): ``logspace(log10(min_energy), log10(largest
  reference voxel), 50)``;

- DS1 only, E_tot / E_inc per incident energy (``plot_Etot_Einc_discrete``): the showers with
  ``2**(8 + i) <= E_inc < 2**(9 + i)`` MeV, i = 0..14, in ``linspace(0.4, 1.4, 21)``
  (``linspace(0.9, 1.1, 21)`` for photons from i = 4 on);

and, with the helper's functions that ``hist-chi`` does not call (``plot_sparsity``,
``plot_ECR``, ``plot_ECWidthR``) but that define their histograms:

- sparsity, per layer: ``linspace(0, 1, 21)``, filled with the sparsity itself;
- EC r: ``linspace(0, 42, 101)`` for DS2/DS3, ``linspace(0, R, 101)`` for DS1 with R = 1500 mm in
  layers 12, 13, 14 and 500 mm elsewhere; width r: the same with 20 mm for DS2/DS3.

``min_energy`` is the official ``args.min_energy``: 0.5e-3 / 0.033 MeV (15.15 keV, the 0.5 keV
silicon readout threshold over the sampling fraction) for DS2/DS3, 1 MeV for DS1 (see
:func:`histogram_min_energy`; the official script also zeroes every voxel below it first, which
caloforge does through :attr:`Geometry.readout_threshold`).

The reference maxima enter with the official dtype: the official code takes ``np.log10`` of the
float32 maximum of float32 layer sums (and of float32 voxels), a float32 logarithm, so the last
edge is ``10 ** float32(log10(max))`` and can fall just below the maximum, whose shower then drops
out of the histogram. :func:`log_edges` does the same with the dtype it is given (the maxima of
:class:`~caloforge.features.ShowerFeatures` have the showers' dtype).

``style="coarse"`` is the binning of later paper-figure scripts built on the official helper
(31 edges for E_tot / E_inc, 51 for the centres of energy and the widths); it is not what the
official evaluation computes.

Deviation: where a reference maximum does not exceed ``min_energy`` the official script fails
(the edges would not increase); caloforge makes no histogram there (None; NaN separation power,
and a note).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from caloforge.geometry import Geometry

#: Lower edge (MeV) of the logarithmic E_layer and voxel-energy binnings of DS2/DS3:
#: the 0.5 keV silicon readout threshold divided by the 0.033 sampling fraction.
MIN_ENERGY_DS23 = 0.5e-3 / 0.033
#: The same for DS1 (official ``min_energy`` of the evaluation script: 1 MeV).
MIN_ENERGY_DS1 = 1.0

STYLES = ("official", "coarse")
_STYLE_ALIASES = {"2022": "official"}  # the binning of the 2022 release is the official one
_N_EDGES = {"official": {"etot": 101, "ec": 101, "width": 101}, "coarse": {"etot": 31, "ec": 51, "width": 51}}
N_EDGES_E_LAYER = 40
N_EDGES_VOXEL = 50
N_EDGES_R = 101
SPARSITY_EDGES = np.linspace(0.0, 1.0, 21)


def is_ds1(geometry: Geometry) -> bool:
    """True for the ATLAS-like DS1 geometries (their lengths and energy floor differ)."""
    return geometry.name.lower().startswith("ds1")


def histogram_min_energy(geometry: Geometry) -> float:
    """The official lower edge (MeV) of the logarithmic energy binnings of ``geometry``."""
    return MIN_ENERGY_DS1 if is_ds1(geometry) else MIN_ENERGY_DS23


#: DS1 incident-energy edges of the per-energy E_tot / E_inc histograms: 2**8 ... 2**23 MeV.
DISCRETE_ENERGIES_DS1 = 2 ** np.linspace(8, 23, 16)


def etot_einc_discrete_edges(geometry: Geometry) -> list[np.ndarray] | None:
    """Edges of DS1's per-incident-energy E_tot / E_inc histograms (None for DS2/DS3)."""
    if not is_ds1(geometry):
        return None
    photons = "photon" in geometry.name.lower() or geometry.particle == "photon"
    return [np.linspace(0.9, 1.1, 21) if (photons and i > 3) else np.linspace(0.4, 1.4, 21)
            for i in range(len(DISCRETE_ENERGIES_DS1) - 1)]


def etot_einc_edges(style: str = "official") -> np.ndarray:
    """Edges of the E_tot / E_inc histogram."""
    return np.linspace(0.5, 1.5, _N_EDGES[_check_style(style)]["etot"])


def log_edges(min_energy: float, max_energy, n_edges: int) -> np.ndarray | None:
    """``logspace(log10(min_energy), log10(max_energy), n_edges)``, or None when the reference
    maximum does not exceed ``min_energy`` (the official script fails there: the edges would not
    increase; caloforge reports such a histogram's separation power as NaN).

    ``max_energy`` keeps its dtype: a numpy float32 gets the float32 logarithm the official code
    takes of its float32 maxima (a Python float or float64 a float64 one)."""
    if not np.isfinite(max_energy) or max_energy <= min_energy:
        return None
    if not isinstance(max_energy, np.floating):
        max_energy = np.float64(max_energy)
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


def ec_r_limit(geometry: Geometry, layer: int) -> float:
    """Upper edge (mm) of the EC r histogram of ``layer`` (official ``plot_ECR``)."""
    if not is_ds1(geometry):
        return 42.0
    return 1500.0 if layer in (12, 13, 14) else 500.0


def width_r_limit(geometry: Geometry, layer: int) -> float:
    """Upper edge (mm) of the width r histogram of ``layer`` (official ``plot_ECWidthR``)."""
    if not is_ds1(geometry):
        return 20.0
    return 1500.0 if layer in (12, 13, 14) else 500.0


@dataclass
class FeatureBinning:
    """Edges of every feature histogram of one geometry and reference sample.

    Per-layer entries are lists in the column order of :class:`~caloforge.features.ShowerFeatures`
    (``relevant_layers`` for e_layer, ec_r, width_r, sparsity; ``layers_binned_in_alpha`` for the
    eta/phi features). An entry is None where no histogram can be made (see :func:`log_edges`).
    ``voxel_energy`` is None until the reference voxel maximum is known. ``sparsity`` edges are
    filled with the sparsity (fraction of empty voxels), as the official ``plot_sparsity``.
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
    #: DS1: edges of the per-incident-energy E_tot / E_inc histograms and the (16) energy edges
    #: (MeV) that select their showers; None for other geometries.
    etot_einc_discrete: list[np.ndarray] | None = None
    discrete_energies: np.ndarray | None = None


def _check_style(style: str) -> str:
    style = _STYLE_ALIASES.get(style, style)
    if style not in STYLES:
        raise ValueError(f"unknown binning style {style!r}; choose one of {', '.join(STYLES)}")
    return style


def official_binning(
    geometry: Geometry,
    reference_e_layer_max: np.ndarray,
    reference_voxel_max: float | None = None,
    style: str = "official",
    min_energy: float | None = None,
) -> FeatureBinning:
    """The histogram edges of every feature.

    ``reference_e_layer_max`` holds the maximum layer energy (MeV) of the reference sample for
    each relevant layer; ``reference_voxel_max`` the largest reference voxel energy (after the
    readout threshold). Both keep their dtype (see :func:`log_edges`). ``min_energy`` overrides
    :func:`histogram_min_energy`. See :func:`binning_from_reference` to derive both maxima from
    the reference itself.
    """
    g = geometry
    style = _check_style(style)
    n = _N_EDGES[style]
    emin = histogram_min_energy(g) if min_energy is None else float(min_energy)
    e_max = np.asarray(reference_e_layer_max).reshape(-1)
    if e_max.dtype not in (np.float32, np.float64):
        e_max = e_max.astype(np.float64)
    if len(e_max) != g.n_layers:
        raise ValueError(f"expected {g.n_layers} layer maxima, got {len(e_max)}")
    notes = []
    e_layer = []
    for layer, m in zip(g.relevant_layers, e_max, strict=True):
        edges = log_edges(emin, m, N_EDGES_E_LAYER)  # m keeps its dtype: the official float32 log10
        if edges is None:
            notes.append(f"E_layer {layer}: reference maximum {m:.3g} MeV <= {emin:.3g} MeV, no histogram")
        e_layer.append(edges)
    alpha = g.layers_binned_in_alpha
    ec = [np.linspace(-ec_limits(g, l), ec_limits(g, l), n["ec"]) for l in alpha]
    wd = [np.linspace(0.0, width_limit(g, l), n["width"]) for l in alpha]
    ec_r = [np.linspace(0.0, ec_r_limit(g, l), N_EDGES_R) for l in g.relevant_layers]
    width_r = [np.linspace(0.0, width_r_limit(g, l), N_EDGES_R) for l in g.relevant_layers]
    voxel = None
    if reference_voxel_max is not None:
        voxel = log_edges(emin, reference_voxel_max, N_EDGES_VOXEL)
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
        etot_einc_discrete=etot_einc_discrete_edges(g),
        discrete_energies=DISCRETE_ENERGIES_DS1.copy() if is_ds1(g) else None,
    )


def binning_from_reference(
    reference, reference_showers: np.ndarray | None = None, style: str = "official",
    min_energy: float | None = None,
) -> FeatureBinning:
    """:func:`official_binning` with the maxima taken from the reference sample.

    ``reference`` is the reference :class:`~caloforge.features.ShowerFeatures`;
    ``reference_showers`` (optional, (N, voxels) or an iterable of such blocks) gives the voxel
    maximum. The readout threshold only zeroes voxels below it, so the maximum is the raw one
    unless every voxel lies below the threshold. Maxima keep the dtype of the features and
    showers (float32 for files), as the official ones.
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


def voxel_maximum(showers, threshold: float = 0.0):
    """Largest voxel energy of ``showers`` (see :func:`iter_shower_blocks`) after the threshold
    (values below it count as 0), as a numpy scalar of the showers' dtype."""
    m = None
    for b in iter_shower_blocks(showers):
        if b.size:
            bm = np.nanmax(b)
            m = bm if m is None or bm > m else m
    if m is None:
        return np.float64(0.0)
    return m if m >= threshold else m.dtype.type(0)
