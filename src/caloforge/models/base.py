"""The interface every caloforge shower model implements."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from caloforge.geometry import Geometry


class ShowerModel(nn.Module):
    """A conditional generative model of p(shower | incident energy).

    Subclasses set :attr:`name` (the registry key), accept ``(geometry, config)`` in ``__init__``
    with ``config`` a plain JSON-serialisable dict (missing keys take the class defaults in
    :attr:`default_config`), and implement :meth:`loss` and :meth:`sample`. Everything a model
    needs at sampling time (weights and preprocessing statistics alike) lives in parameters or
    buffers, so that a safetensors file holds the whole state.

    Tensors: ``e_inc`` is (B,) incident energy in MeV; ``showers`` is (B, voxels) in MeV.
    """

    name: ClassVar[str] = ""
    default_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, geometry: Geometry, config: dict[str, Any] | None = None):
        super().__init__()
        unknown = set(config or {}) - set(self.default_config)
        if unknown:
            raise ValueError(f"model {self.name!r}: unknown config keys {sorted(unknown)}")
        self.geometry = geometry
        self.config: dict[str, Any] = {**self.default_config, **(config or {})}

    # ---------------------------------------------------------------- training
    def fit_preprocessing(self, e_inc: Tensor, showers: Tensor) -> None:
        """Learn data statistics (e.g. standardisation) from a sample before training."""

    def loss(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """Scalar training loss of one batch."""
        raise NotImplementedError

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, e_inc: Tensor, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """Draw one shower (B, voxels), MeV, per incident energy, readout threshold applied."""
        raise NotImplementedError

    def log_prob(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """log p(shower | e_inc) per shower, where the model has a tractable likelihood."""
        raise NotImplementedError(f"model {self.name!r} has no tractable likelihood")

    def energy_range(self) -> tuple[float, float] | None:
        """The incident energies (MeV, lowest and highest) the model was trained on, where it
        records them (the default energies of ``caloforge generate --n N``); None otherwise."""
        return None

    # ------------------------------------------------------------------ misc
    @property
    def device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def fit(self, train, val=None, **training_options: Any):
        """Train on showers (a :class:`caloforge.data.ShowerFile` or arrays); see
        :func:`caloforge.training.train`."""
        from caloforge.training import train as _train

        return _train(self, train, val, **training_options)
