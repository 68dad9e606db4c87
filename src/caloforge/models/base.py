"""The interface every caloforge shower model implements, and the base of model configs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from caloforge.config import Config, ConfigError, preset
from caloforge.geometry import Geometry


@dataclass(frozen=True)
class ModelConfig(Config):
    """Base of every model family's config (a frozen dataclass; see :mod:`caloforge.config`).

    Every family has the presets ``default`` and ``tiny`` (a configuration small enough for a
    test to build, train for a few steps and sample in seconds)."""

    @classmethod
    @preset
    def tiny(cls) -> ModelConfig:
        """A small configuration for tests (the defaults where they are small already)."""
        return cls()


class ShowerModel(nn.Module, ABC):
    """A conditional generative model of p(shower | incident energy).

    A family sets :attr:`name` (the registry key) and :attr:`Config` (its frozen config class),
    and implements :meth:`sample`. What else it can do, it declares by implementing the
    capability protocols of :mod:`caloforge.models.capabilities` (trained by its loss, owning its
    training step, fitted in closed form, a noise-to-shower map, solver steps, a likelihood);
    the rest of caloforge checks those, never names or signatures. Everything a model needs at
    sampling time (weights and fitted statistics alike) lives in parameters or buffers, so that
    a safetensors file holds the whole state and the config holds only choices.

    Tensors: ``e_inc`` is (B,) incident energy in MeV; ``showers`` is (B, voxels) in MeV.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, geometry: Geometry, config: ModelConfig | Mapping[str, Any] | None = None):
        super().__init__()
        self.geometry = geometry
        self.config = self.make_config(config)

    @classmethod
    def make_config(cls, config: ModelConfig | Mapping[str, Any] | None) -> Any:
        """``config`` as this family's :attr:`Config` (a mapping is read as its JSON form)."""
        if isinstance(config, cls.Config):
            return config
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(f"model {cls.name!r}: config must be a {cls.Config.__name__} or a JSON object, "
                              f"got {type(config).__name__}")
        try:
            return cls.Config.from_dict(config)
        except ConfigError as exc:
            raise ConfigError(f"model {cls.name!r}: {exc}") from None

    # ---------------------------------------------------------------- training
    def fit_preprocessing(self, e_inc: Tensor, showers: Tensor) -> None:  # noqa: B027 - optional hook
        """Learn data statistics (e.g. standardisation) from the training sample before the
        optimisation; they go into buffers. Default: nothing to learn."""

    # ---------------------------------------------------------------- sampling
    @abstractmethod
    def sample(self, e_inc: Tensor, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """Draw one shower (B, voxels), MeV, per incident energy, readout threshold applied."""

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
