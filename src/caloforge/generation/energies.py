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
    #: A warning when energies lie outside the model's training range (None: all inside).
    warning: str | None = None


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
        values = np.asarray(energies, dtype=np.float32)
        return IncidentEnergies(values, f"from {reference.paths[0]}", outside_range_warning(model, values))
    if n is None or n < 1:
        raise InputError("the number of showers must be at least 1")
    if spec is None:
        e_range = model.energy_range()
        if e_range is None:
            raise InputError(f"model {model.name!r} records no training energy range; give --energy SPEC")
        spec = EnergySpec("log-uniform", (float(e_range[0]), float(e_range[1])))
    values = np.asarray(spec.sample(n, np.random.default_rng([seed, 1])), dtype=np.float32)
    if not np.isfinite(values).all():
        raise InputError(f"energy spec {spec}: energies overflow float32 (above 3.4e38 MeV)")
    return IncidentEnergies(values, str(spec), outside_range_warning(model, values))


def _gev(mev: float) -> str:
    return f"{mev / 1e3:.4g} GeV"


def outside_range_warning(model, energies: np.ndarray, tolerance: float = 0.01) -> str | None:
    """A one-line warning when incident energies (MeV) lie outside the range the model was
    trained on (beyond ``tolerance``, relative), where the model records that range: the model
    then extrapolates, and nothing vouches for what it draws. None when all are inside.

    >>> class M:
    ...     def energy_range(self): return (1e3, 1e5)
    >>> outside_range_warning(M(), np.array([2e3, 5e4])) is None
    True
    >>> print(outside_range_warning(M(), np.array([1e-3, 5e4, 1e7])))
    2 of 3 incident energies (1e-06 GeV to 1e+04 GeV) lie outside the model's training range 1 GeV to 100 GeV: it extrapolates there
    """
    e_range = model.energy_range()
    if e_range is None or len(energies) == 0:
        return None
    lo, hi = float(e_range[0]), float(e_range[1])
    e = np.asarray(energies, dtype=np.float64)
    out = (e < lo * (1 - tolerance)) | (e > hi * (1 + tolerance))
    if not out.any():
        return None
    bad = e[out]
    return (f"{int(out.sum()):,} of {len(e):,} incident energies ({_gev(bad.min())} to {_gev(bad.max())}) lie outside "
            f"the model's training range {_gev(lo)} to {_gev(hi)}: it extrapolates there")
