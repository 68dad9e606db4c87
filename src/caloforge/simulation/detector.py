"""The physical detector behind a readout geometry: depth of each layer, materials, response.

A :class:`~caloforge.geometry.Geometry` only says how energy is binned; the simulator also needs
where each layer sits in depth (radiation lengths, X0), the Moliere radius (to turn mm into
shower units), the critical energy and the calibration of the visible energy.

- **DS2 / DS3** (and any binning with 45 layers): the Geant4 example Par04 detector of the
  CaloChallenge, 90 layers of 1.4 mm W + 0.3 mm Si read out in pairs (3.4 mm per readout layer).
  Material constants follow the PDG tables (W: X0 = 3.504 mm, R_M = 9.327 mm, E_c = 7.97 MeV;
  Si: X0 = 93.7 mm, R_M = 49.44 mm, E_c = 40.19 MeV), mixed by mass: X0 = 4.22 mm
  (0.806 X0 per readout layer), R_M = 10.9 mm, E_c = 8.23 MeV.
- **DS1 photons**: a crude ATLAS-barrel-like stack (presampler, strips, middle, back, tile) with
  about 2 X0 of dead material in front and a liquid-argon-like sampling term. The numbers are
  rough textbook values, not tuned to the official files: treat DS1 output as a plausible
  stand-in, not as a faithful model.
- **Any other binning**: its layers are assumed to divide the Par04 stack evenly in depth; a
  binning file naming photons starts showers at the photon conversion depth.
- **DS1 pions**: hadronic showers are not modelled; asking for them is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from caloforge.errors import InputError
from caloforge.geometry import Geometry

# Par04 (CaloChallenge DS2/DS3) constants, see the module docstring.
PAR04_X0_PER_READOUT_LAYER = 2 * (1.4 / 3.504 + 0.3 / 93.7)  # 0.8055 X0
PAR04_N_READOUT_LAYERS = 45
PAR04_MOLIERE_MM = 10.9
PAR04_CRITICAL_MEV = 8.23


@dataclass(frozen=True)
class Detector:
    """Physical description of the layers of a geometry (one entry per relevant layer).

    ``depth_start`` / ``depth_end`` (X0) bound the part of the shower each layer samples;
    ``shift_by_offset`` says whether :attr:`SimulationParams.depth_offset` moves those bounds
    (true for Par04, whose silicon sits behind each tungsten plate). ``hit_energy_scale`` and
    ``response_scale`` multiply the parameters of the same name (1 for Par04, the detector the
    defaults were tuned on). ``photon_start``: the shower starts at an exponentially distributed
    depth of mean 9/7 X0 (the photon conversion length) instead of at the front face.
    ``primary_track``: the incident particle is charged and leaves minimum-ionising hits on the
    axis of the first layers (see :class:`SimulationParams`).
    """

    name: str
    depth_start: tuple[float, ...]
    depth_end: tuple[float, ...]
    moliere_mm: float
    critical_mev: float
    shift_by_offset: bool = True
    hit_energy_scale: float = 1.0
    response_scale: float = 1.0
    photon_start: bool = False
    primary_track: bool = True
    approximate: bool = False

    def edges(self, depth_offset: float) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) depths in X0 of every relevant layer, ``depth_offset`` applied."""
        lo = np.asarray(self.depth_start, dtype=np.float64)
        hi = np.asarray(self.depth_end, dtype=np.float64)
        if self.shift_by_offset and depth_offset:
            lo = lo + depth_offset
            hi = hi + depth_offset
            if self.depth_start[0] <= 0:  # the first layer still starts at the front face
                lo[0] = 0.0
        return lo, hi


def par04(n_layers: int = PAR04_N_READOUT_LAYERS, name: str = "par04") -> Detector:
    """The Par04 stack (DS2/DS3) divided into ``n_layers`` equally deep readout layers."""
    total = PAR04_X0_PER_READOUT_LAYER * PAR04_N_READOUT_LAYERS
    edges = np.linspace(0.0, total, n_layers + 1)
    return Detector(
        name=name,
        depth_start=tuple(float(x) for x in edges[:-1]),
        depth_end=tuple(float(x) for x in edges[1:]),
        moliere_mm=PAR04_MOLIERE_MM,
        critical_mev=PAR04_CRITICAL_MEV,
        approximate=n_layers != PAR04_N_READOUT_LAYERS,
    )


def atlas_like_photons() -> Detector:
    """A crude ATLAS-barrel-like stack for the DS1-photon binning (layers 0, 1, 2, 3, 12)."""
    return Detector(
        name="atlas-like",
        #            presampler strips middle back  tile
        depth_start=(2.0, 2.3, 6.6, 22.6, 24.6),
        depth_end=(2.3, 6.6, 22.6, 24.6, 45.0),
        moliere_mm=40.0,
        critical_mev=10.0,
        shift_by_offset=False,
        hit_energy_scale=0.6,  # ~10%/sqrt(E) instead of Par04's ~13%/sqrt(E)
        response_scale=1.0,
        photon_start=True,
        primary_track=False,
        approximate=True,
    )


def detector_for(geometry: Geometry) -> Detector:
    """The :class:`Detector` the simulator assumes behind ``geometry`` (see the module doc)."""
    if geometry.particle.lower().startswith("pion"):
        raise InputError(
            f"geometry {geometry.name}: the parametric simulator models electromagnetic showers "
            "only (no pions); use ds1-photons, ds2 or ds3"
        )
    n = geometry.n_layers
    if geometry.relevant_layers == (0, 1, 2, 3, 12):
        return atlas_like_photons()
    det = par04() if n == PAR04_N_READOUT_LAYERS else par04(n, name=f"par04-{n}-layers")
    if geometry.particle.lower().startswith(("photon", "gamma")):
        det = replace(det, photon_start=True, primary_track=False)
    return det
