"""The tunable parameters of the parametric shower simulator.

The functional forms are those of GFlash (G. Grindhammer and S. Peters, "The parameterized
simulation of electromagnetic showers in homogeneous and sampling calorimeters",
hep-ex/0001020); the numbers are re-tuned to Geant4 electron showers in the CaloChallenge
dataset-2/3 detector (90 x [1.4 mm W + 0.3 mm Si], energies scaled by 1/0.033), see
``benchmarks/compare_simulator_geant4.py``. Depths are in radiation lengths (X0) of the
detector, radii in Moliere radii (R_M), energies in MeV; ``y = E / E_c`` with E_c the critical
energy of the detector and ``E_GeV`` the incident energy in GeV.

Longitudinal profile of one shower: a gamma distribution ``dE/dt = E b (b t)^(a-1) e^(-b t) /
Gamma(a)`` with maximum ``T = (a - 1) / b``. ``(ln T, ln a)`` are drawn per shower from a
correlated 2-D normal distribution::

    <ln T> = ln(lnT_a + lnT_b ln y)        sigma(ln T) = 1 / (sigT_a + sigT_b ln y)
    <ln a> = ln(lna_a + lna_b ln y)        sigma(ln a) = 1 / (siga_a + siga_b ln y)
    rho(ln T, ln a) = rho_a + rho_b ln y

with the slope ``b`` kept above ``min_slope``. Two additions to GFlash: a fraction
``tail_a + tail_b ln E_GeV`` of the energy follows an exponential tail beyond the maximum
(penetrating photons; the gamma function falls too fast deep in the calorimeter), and the
response carries a small low-energy correction (``response_inv_e``).

Radial profile at relative depth ``tau = t / T`` (two components, GFlash eq. for homogeneous
media, radii in R_M)::

    f(r) = p f_C(r) + (1 - p) f_T(r),   f_i(r) = 2 r R_i^2 / (r^2 + R_i^2)^2
    R_C = core_a + core_b ln E_GeV + core_c tau
    R_T = tail_k1 [exp(tail_k3 (tau - tail_k2)) + exp((tail_k4_a + tail_k4_b ln E_GeV)(tau - tail_k2))]
    p   = p_1 exp(x - exp(x)),  x = (p_2 - tau) / (p_3a + p_3b ln E_GeV)

Sampling fluctuations and granularity: the visible energy is carried by "hits" (energy spots
of one charged track in the silicon of one voxel) of mean ``hit_energy`` (MeV, after the
1/0.033 scaling) whose energies follow a gamma distribution of shape ``hit_shape``; the number
of hits in a voxel is Poisson. This reproduces at once the energy resolution (stochastic term
``sqrt((1 + 1/hit_shape) hit_energy / E)``), the sparsity (about 90% empty voxels) and the
voxel energy spectrum of Geant4. The hit energy grows slowly with the incident energy
(``hit_energy_slope``). An optional angular clustering of the hits (``cluster_size``, off by
default) makes the azimuthal distribution lumpier.

Primary track: in the first ``track_layers`` readout layers the incident electron's own
crossings of the silicon (``track_hits`` per layer, minimum-ionising energies) are placed on the
shower axis explicitly, taking their energy from the gamma profile; without them the first layer
of a low-energy shower would often be empty, which it never is in Geant4.

Validity: tuned on 15,000 Geant4 DS2 electrons of 1-100 GeV (the comparison:
``benchmarks/compare_simulator_geant4.py``); the forms extrapolate smoothly to 1 TeV, but
nothing above 100 GeV was compared with Geant4, nor anything below 1 GeV.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace

from caloforge.errors import InputError


@dataclass(frozen=True)
class SimulationParams:
    """Parameters of :class:`~caloforge.simulation.ParametricSimulator` (defaults: tuned to DS2).

    Every field is a plain float; :meth:`to_dict` / :meth:`from_dict` (and the JSON variants)
    round-trip them exactly. GFlash's own homogeneous-tungsten values are given in brackets
    where a field corresponds to one of its constants.
    """

    # ---------------------------------------------------------------- longitudinal
    #: <ln T> = ln(lnT_a + lnT_b ln y)  [GFlash: -0.812, 1]
    lnT_a: float = -1.414
    lnT_b: float = 1.105
    #: <ln alpha> = ln(lna_a + lna_b ln y)  [GFlash: 0.81, 0.458 + 2.26/Z = 0.4885]
    lna_a: float = 0.07514
    lna_b: float = 0.5988
    #: sigma(ln T) = 1 / (sigT_a + sigT_b ln y)  [GFlash: -1.4, 1.26]
    sigT_a: float = -2.571
    sigT_b: float = 1.306
    #: sigma(ln alpha) = 1 / (siga_a + siga_b ln y)  [GFlash: -0.58, 0.86]
    siga_a: float = -2.628
    siga_b: float = 1.067
    #: correlation of ln T and ln alpha: rho_a + rho_b ln y  [GFlash: 0.705, 0.023]
    rho_a: float = 0.864
    rho_b: float = -0.0188
    #: lower limit of the gamma profile's slope b = (a - 1) / T, per X0 (cuts the rare
    #: drawn profiles that would spread over the whole calorimeter depth and beyond)
    min_slope: float = 0.2
    #: depth (X0) by which the sampling layers are shifted with respect to the readout layer
    #: boundaries (the silicon sits behind the tungsten of each layer)
    depth_offset: float = 0.4
    #: fraction of the energy in an exponential tail exp(-tail_slope (t - tail_start T)) beyond
    #: the maximum (penetrating photons; the gamma function falls too fast at large depth):
    #: tail_a + tail_b ln E_GeV, clipped to [0, 0.5]
    tail_a: float = 0.1218
    tail_b: float = -0.004152
    tail_slope: float = 0.1767
    tail_start: float = 0.6619

    # ---------------------------------------------------------------------- radial
    #: core radius R_C = core_a + core_b ln E_GeV + core_c tau  [GFlash: 0.0251, 0.00319, 0.0880]
    core_a: float = 0.01248
    core_b: float = 0.009877
    core_c: float = 0.152
    #: tail radius R_T  [GFlash: k1 0.430, k2 0.645, k3 -2.59, k4 0.3585 + 0.0421 ln E_GeV]
    tail_k1: float = 0.3536
    tail_k2: float = 1.12
    tail_k3: float = -1.299
    tail_k4_a: float = 0.539
    tail_k4_b: float = 0.04942
    #: core fraction p  [GFlash: p1 2.562, p2 0.539, p3 1.313 - 0.0686 ln E_GeV]
    p_1: float = 2.579
    p_2: float = 0.7255
    p_3a: float = 1.64
    p_3b: float = -0.1906

    # ---------------------------------------------------------- response and hits
    #: mean visible energy / incident energy at high energy (before lateral and rear leakage)
    response: float = 0.979
    #: low-energy correction of the response: times (1 + response_inv_e / max(E_GeV, 0.5))
    response_inv_e: float = 0.02
    #: mean visible energy of one hit at 10 GeV, MeV (after the 1/0.033 sampling-fraction
    #: scaling); it scales as (E / 10 GeV)^hit_energy_slope
    hit_energy: float = 9.2
    hit_energy_slope: float = 0.03
    #: shape of the gamma distribution of hit energies (1 = exponential)
    hit_shape: float = 1.27

    #: mean number of hits per cluster: the energy of each angular wedge of a layer gets
    #: extra (gamma) fluctuations as if its hits came in clusters of this size; 0 disables
    cluster_size: float = 0.0

    # ----------------------------------------------------------- primary track
    #: readout layers at the front in which the incident electron's own crossings of the
    #: silicon are drawn explicitly (so these layers are never empty, as in Geant4)
    track_layers: float = 2.0
    #: silicon crossings of the primary per readout layer (two sensors per readout layer)
    track_hits: float = 2.0
    #: mean and minimum visible energy (MeV) of one crossing: mip_min + exponential
    mip_energy: float = 3.6
    mip_min: float = 2.0

    # ------------------------------------------------------------------ plumbing
    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise InputError(f"simulation parameter {f.name} must be a finite number, got {value!r}")
        for name in ("hit_energy", "hit_shape", "response", "tail_slope"):
            if getattr(self, name) <= 0:
                raise InputError(f"simulation parameter {name} must be positive")
        for name in ("track_layers", "track_hits", "mip_min", "cluster_size"):
            if getattr(self, name) < 0:
                raise InputError(f"simulation parameter {name} must not be negative")
        if self.mip_energy < self.mip_min:
            raise InputError("simulation parameter mip_energy must be at least mip_min")

    def to_dict(self) -> dict[str, float]:
        """All parameters as a plain ``{name: float}`` dict."""
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> SimulationParams:
        """Parameters from a dict; missing names keep their defaults, unknown names are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown simulation parameter(s): {', '.join(unknown)}")
        try:
            return cls(**{k: float(v) for k, v in data.items()})
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad simulation parameter value ({exc})") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SimulationParams:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"simulation parameters are not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InputError("simulation parameters must be a JSON object")
        return cls.from_dict(data)

    def replace(self, **changes: float) -> SimulationParams:
        """A copy with some parameters changed."""
        return replace(self, **changes)
