"""The four CaloChallenge 2022 geometries, built in.

The numbers (radial edges in mm and angular bin counts per layer) are those of the official
binning files of the challenge (Giannelli, Kasieczka, Krause, Nachman, Salamani, Shih, Zaborowska,
arXiv:2410.21611); users keep their own copies of the XML files and may read any other binning
with :func:`caloforge.geometry.read_binning_xml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np

from caloforge.errors import InputError
from caloforge.geometry.binning import Geometry, LayerBinning

#: Readout thresholds (MeV) applied before computing features. DS2/DS3: 0.5 keV deposited in
#: silicon divided by the sampling fraction 0.033 (= 15.15 keV). DS1: 1 MeV.
THRESHOLD_DS1 = 1.0
THRESHOLD_DS23 = 0.5e-3 / 0.033

#: The sampling fraction the DS2/DS3 files were scaled by (silicon deposit / 0.033).
SAMPLING_FRACTION_DS23 = 0.033

_EMPTY = ((0.0,), 1)

# DS1 (ATLAS-like): 24 layer slots, only some hold voxels.
_DS1_PHOTONS = {
    0: ((0, 5, 10, 30, 50, 100, 200, 400, 600), 1),
    1: ((0, 2, 4, 6, 8, 10, 12, 15, 20, 30, 40, 50, 70, 90, 120, 150, 200), 10),
    2: ((0, 2, 5, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 130, 160, 200, 250, 300, 350, 400), 10),
    3: ((0, 50, 100, 200, 400, 600), 1),
    12: ((0, 100, 200, 400, 1000, 2000), 1),
}
_DS1_PIONS = {
    0: ((0, 5, 10, 30, 50, 100, 200, 400, 600), 1),
    1: ((0, 1, 4, 7, 10, 15, 30, 50, 90, 150, 200), 10),
    2: ((0, 5, 10, 20, 30, 50, 80, 130, 200, 300, 400), 10),
    3: ((0, 50, 100, 200, 400, 600), 1),
    12: ((0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 1000, 2000), 10),
    13: ((0, 10, 20, 30, 50, 80, 100, 130, 160, 200, 250, 300, 350, 400, 600, 1000, 2000), 10),
    14: ((0, 50, 100, 150, 200, 250, 300, 400, 600, 1000, 2000), 1),
}


def _ds1(spec: Mapping[int, tuple[tuple[float, ...], int]]) -> tuple[LayerBinning, ...]:
    return tuple(
        LayerBinning(i, tuple(float(e) for e in spec.get(i, _EMPTY)[0]), spec.get(i, _EMPTY)[1])
        for i in range(24)
    )


def _regular(n_layers: int, n_alpha: int, n_r: int, r_max: float) -> tuple[LayerBinning, ...]:
    # Official edges are k * r_max / n_r written with a few decimals; round to match them exactly.
    edges = tuple(float(np.round(k * r_max / n_r, 6)) for k in range(n_r + 1))
    return tuple(LayerBinning(i, edges, n_alpha) for i in range(n_layers))


_BUILDERS = {
    "ds1-photons": lambda: Geometry(
        "ds1-photons", _ds1(_DS1_PHOTONS), "photon", THRESHOLD_DS1,
        "CaloChallenge dataset 1, photons (ATLAS binning, 368 voxels in 5 layers)",
    ),
    "ds1-pions": lambda: Geometry(
        "ds1-pions", _ds1(_DS1_PIONS), "pion", THRESHOLD_DS1,
        "CaloChallenge dataset 1, pions (ATLAS binning, 533 voxels in 7 layers)",
    ),
    "ds2": lambda: Geometry(
        "ds2", _regular(45, 16, 9, 41.85), "electron", THRESHOLD_DS23,
        "CaloChallenge dataset 2 (45 layers x 16 alpha x 9 r = 6,480 voxels)",
    ),
    "ds3": lambda: Geometry(
        "ds3", _regular(45, 50, 18, 41.85), "electron", THRESHOLD_DS23,
        "CaloChallenge dataset 3 (45 layers x 50 alpha x 18 r = 40,500 voxels)",
    ),
}

BUILTIN_NAMES: tuple[str, ...] = tuple(_BUILDERS)
_ALIASES = {
    "1-photons": "ds1-photons", "1-pions": "ds1-pions", "2": "ds2", "3": "ds3",
    "ds1_photons": "ds1-photons", "ds1_pions": "ds1-pions", "photons": "ds1-photons",
    "pions": "ds1-pions",
}


@cache
def _build(key: str) -> Geometry:
    return _BUILDERS[key]()


def get_geometry(name: str) -> Geometry:
    """One of the built-in geometries: ``ds1-photons``, ``ds1-pions``, ``ds2`` or ``ds3``.

    The same object is returned for every alias (``2``, ``ds2``, ...).
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _BUILDERS:
        raise InputError(f"unknown dataset {name!r}; choose one of {', '.join(BUILTIN_NAMES)}")
    return _build(key)


def geometry_for_voxels(n_voxels: int, path: str | Path | None = None) -> Geometry:
    """Recognise a built-in geometry from the number of voxels of a shower."""
    for name in BUILTIN_NAMES:
        g = get_geometry(name)
        if g.n_voxels == n_voxels:
            return g
    counts = ", ".join(f"{get_geometry(n).n_voxels} ({n})" for n in BUILTIN_NAMES)
    raise InputError(f"{n_voxels} voxels per shower fits no known geometry (expected {counts})", path)
