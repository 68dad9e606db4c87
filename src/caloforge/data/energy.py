"""Incident-energy specifications such as ``log-uniform:1GeV:1TeV`` or ``fixed:50GeV``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from caloforge.errors import InputError

#: The largest incident energy a specification may name (1e12 MeV = 1 EeV; float32 holds it).
MAX_ENERGY_MEV = 1e12
_UNITS = {"kev": 1e-3, "mev": 1.0, "gev": 1e3, "tev": 1e6, "": 1.0}
_VALUE = re.compile(r"^\s*([0-9.]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_quantity(text: str) -> float:
    """Parse an energy like ``1GeV``, ``500 MeV`` or ``2e4`` (MeV when no unit is given)."""
    m = _VALUE.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise InputError(f"cannot read energy {text!r} (use e.g. 500MeV, 10GeV, 1TeV)")
    try:
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    except ValueError:
        raise InputError(f"cannot read energy {text!r} (use e.g. 500MeV, 10GeV, 1TeV)") from None
    if not math.isfinite(value) or value > MAX_ENERGY_MEV:
        raise InputError(f"energy {text!r} is out of range (at most {MAX_ENERGY_MEV:g} MeV)")
    if value <= 0:
        raise InputError(f"energy {text!r} must be positive")
    return value


@dataclass(frozen=True)
class EnergySpec:
    """A distribution of incident energies in MeV.

    kinds: ``log-uniform:LO:HI``, ``uniform:LO:HI``, ``fixed:E``, ``discrete:E1,E2,...``
    (each value drawn with equal probability; DS1 uses powers of two).
    """

    kind: str
    values: tuple[float, ...]

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, self.values[0])
        if self.kind == "uniform":
            return rng.uniform(self.values[0], self.values[1], n)
        if self.kind == "log-uniform":
            lo, hi = np.log(self.values[0]), np.log(self.values[1])
            return np.exp(rng.uniform(lo, hi, n))
        if self.kind == "discrete":
            return rng.choice(np.asarray(self.values), n)
        raise AssertionError(self.kind)

    def __str__(self) -> str:
        sep = "," if self.kind == "discrete" else ":"
        return f"{self.kind}:" + sep.join(f"{v:g}MeV" for v in self.values)


def parse_energy(spec: str) -> EnergySpec:
    """Parse an energy specification string, raising :class:`InputError` with the rule on error."""
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("log-uniform", "loguniform", "uniform"):
        parts = rest.split(":")
        if len(parts) != 2:
            raise InputError(f"energy spec {spec!r}: expected {kind}:LOW:HIGH, e.g. log-uniform:1GeV:1TeV")
        lo, hi = parse_quantity(parts[0]), parse_quantity(parts[1])
        if hi <= lo:
            raise InputError(f"energy spec {spec!r}: HIGH must exceed LOW")
        return EnergySpec("log-uniform" if kind != "uniform" else "uniform", (lo, hi))
    if kind == "fixed":
        return EnergySpec("fixed", (parse_quantity(rest),))
    if kind == "discrete":
        vals = tuple(parse_quantity(v) for v in rest.split(",") if v.strip())
        if not vals:
            raise InputError(f"energy spec {spec!r}: expected discrete:E1,E2,...")
        return EnergySpec("discrete", vals)
    if kind and not rest:  # a bare number or quantity means fixed
        return EnergySpec("fixed", (parse_quantity(kind),))
    raise InputError(
        f"unknown energy spec {spec!r}; use log-uniform:LO:HI, uniform:LO:HI, fixed:E or discrete:E1,E2"
    )
