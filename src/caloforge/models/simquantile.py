"""The parametric simulator with a learned correction of its marginals onto the data's.

``sim-quantile`` draws a shower from :class:`~caloforge.simulation.ParametricSimulator` and maps
every voxel through a monotone, incident-energy-dependent map that takes the simulator's
distribution of that voxel class (layer, ring; alpha pooled) onto the training data's: the
composition ``F_data^-1(F_sim(.))`` of two :class:`~caloforge.transforms.quantile.
ConditionalQuantileGaussianizer` maps (quantile mapping, as in the bias correction of climate
model output). The simulator supplies the dependence between voxels (its ranks are kept), the map
supplies the per-voxel distributions. Fitted in closed form: ``fit_preprocessing`` simulates one
shower per training energy and fits both maps.

>>> import torch
>>> from caloforge.geometry import get_geometry
>>> g = get_geometry("ds2")
>>> m = SimQuantile(g, {"n_energy_bins": 2, "n_knots": 17})
>>> e = torch.full((300,), 2e4)
>>> x = m.simulate(e, torch.Generator().manual_seed(3)) * 1.5   # "data": the simulator, 50% hotter
>>> m.fit(e, x)
>>> s = m.sample(e, generator=torch.Generator().manual_seed(4))
>>> round(float(s.sum() / x.sum()), 1)
1.0

References:
    Panofsky and Brier, *Some applications of statistics to meteorology* (1958): quantile
    mapping of one distribution onto another.
    Grindhammer, Rudowicz and Peters, *The fast simulation of electromagnetic and hadronic
    showers*, NIM A 290 (1990) 469 (GFlash, the simulator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from caloforge.config import preset
from caloforge.errors import InputError
from caloforge.geometry import Geometry
from caloforge.models.base import ModelConfig, ShowerModel
from caloforge.models.registry import register_model
from caloforge.transforms.quantile import ConditionalQuantileGaussianizer


@dataclass(frozen=True)
class SimQuantileConfig(ModelConfig):
    """Config of :class:`SimQuantile`: the quantile maps' energy bins, knots and tail density."""

    n_energy_bins: int = 12
    n_knots: int = 129
    tail_z: float | None = 3.0

    def validate(self) -> None:
        if self.n_energy_bins < 1 or self.n_knots < 3:
            raise self._error("n_energy_bins must be at least 1 and n_knots at least 3")

    @classmethod
    @preset
    def tiny(cls) -> SimQuantileConfig:
        """Few energy bins and knots: for tests."""
        return cls(n_energy_bins=3, n_knots=17)


@register_model
class SimQuantile(ShowerModel):
    """Parametric simulator + per-class conditional quantile map onto the data.

    Capabilities: fitted in closed form.

    References:
        Grindhammer, Rudowicz and Peters, NIM A 290 (1990) 469 (the parametrised shower).
    """

    name = "sim-quantile"
    Config = SimQuantileConfig
    config: SimQuantileConfig
    # buffers (registered in __init__), declared for the type checker
    e_range: Tensor

    def __init__(self, geometry: Geometry, config: SimQuantileConfig | dict[str, Any] | None = None):
        super().__init__(geometry, config)
        from caloforge.simulation import ParametricSimulator

        self.simulator = ParametricSimulator(geometry)
        c = self.config
        q: dict[str, Any] = {"n_energy_bins": c.n_energy_bins, "n_knots": c.n_knots, "tail_z": c.tail_z}
        self.sim_marginals = ConditionalQuantileGaussianizer(geometry, **q)
        self.data_marginals = ConditionalQuantileGaussianizer(geometry, **q)
        self.register_buffer("e_range", torch.tensor([1e3, 1e6]))

    def energy_range(self) -> tuple[float, float]:
        return float(self.e_range[0]), float(self.e_range[1])

    def simulate(self, e_inc: Tensor, generator: torch.Generator | None = None) -> Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        x = self.simulator.sample(e_inc.reshape(-1).cpu().numpy().astype(np.float64), np.random.default_rng(seed))
        return torch.from_numpy(np.asarray(x, np.float32)).to(e_inc.device)

    @torch.no_grad()
    def fit(self, e_inc: Tensor, showers: Tensor) -> None:
        """Fit both marginal maps (data, and the simulator at the training energies)."""
        e = e_inc.reshape(-1).float().cpu()
        self.e_range.copy_(torch.stack([e.min(), e.max()]))
        self.data_marginals.fit(showers.float().cpu(), e)
        self.sim_marginals.fit(self.simulate(e), e)

    @torch.no_grad()
    def sample(self, e_inc: Tensor, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        if options:
            raise InputError(f"model {self.name!r} takes no sampling option(s) {', '.join(sorted(options))}")
        e = e_inc.reshape(-1).float()
        z = self.sim_marginals(self.simulate(e, generator), e, generator)
        return self.data_marginals.inverse(z, e)
