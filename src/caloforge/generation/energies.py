"""Which incident energies to generate showers for (what ``caloforge generate`` chooses)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caloforge.data.energy import EnergySpec
from caloforge.errors import InputError


@dataclass(frozen=True)
class IncidentEnergies:
    """The energies (float32, MeV) and a one-line description for the file's provenance."""

    values: np.ndarray
    description: str


def choose_energies(
    model,
    *,
    reference=None,
    n: int | None = None,
    spec: EnergySpec | None = None,
    seed: int = 0,
) -> IncidentEnergies:
    """The incident energies of a generation run.

    ``reference`` (a :class:`~caloforge.data.ShowerFile`): its energies, the first ``n`` if given;
    else ``n`` energies drawn from ``spec`` with ``numpy.random.default_rng([seed, 1])``;
    ``spec`` None: log-uniform over the model's training range (:meth:`energy_range`)."""
    if reference is not None:
        if spec is not None:
            raise InputError("give either reference energies or an energy spectrum, not both")
        energies = reference.incident_energies()
        if n is not None:
            if n > len(energies):
                raise InputError(f"holds {len(energies)} incident energies, fewer than --n {n}", reference.paths[0])
            energies = energies[:n]
        return IncidentEnergies(np.asarray(energies, dtype=np.float32), f"from {reference.paths[0]}")
    if n is None or n < 1:
        raise InputError("the number of showers must be at least 1")
    if spec is None:
        e_range = model.energy_range()
        if e_range is None:
            raise InputError(f"model {model.name!r} records no training energy range; give --energy SPEC")
        spec = EnergySpec("log-uniform", (float(e_range[0]), float(e_range[1])))
    energies = spec.sample(n, np.random.default_rng([seed, 1]))
    return IncidentEnergies(np.asarray(energies, dtype=np.float32), str(spec))
