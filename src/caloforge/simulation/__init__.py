"""Parametric (GFlash-style) electromagnetic shower simulation: the built-in data source.

A fast, physics-motivated generator of CaloChallenge showers after Grindhammer & Peters
(hep-ex/0001020), tuned to Geant4 electron showers in the dataset-2/3 detector::

    >>> from caloforge.simulation import simulate
    >>> energies, showers = simulate("ds2", n=1000, energy="log-uniform:1GeV:1TeV", seed=1)  # doctest: +SKIP

Modules: :mod:`.params` (tunable parameters), :mod:`.detector` (depth and materials behind a
geometry), :mod:`.longitudinal`, :mod:`.lateral`, :mod:`.hits` (sampling fluctuations) and
:mod:`.simulator` (the simulator and its seeded drivers).
"""

from caloforge.simulation.detector import Detector, detector_for
from caloforge.simulation.params import SimulationParams
from caloforge.simulation.simulator import (
    DEFAULT_ENERGY,
    GENERATOR_NAME,
    ParametricSimulator,
    iter_simulate,
    simulate,
    simulate_to_file,
)

__all__ = [
    "DEFAULT_ENERGY",
    "GENERATOR_NAME",
    "Detector",
    "ParametricSimulator",
    "SimulationParams",
    "detector_for",
    "iter_simulate",
    "simulate",
    "simulate_to_file",
]
