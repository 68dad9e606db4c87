"""Model registry: names to :class:`~caloforge.models.base.ShowerModel` classes."""

from __future__ import annotations

import importlib
from typing import Any, TypeVar

from caloforge.errors import InputError
from caloforge.geometry import Geometry
from caloforge.models.base import ShowerModel

_REGISTRY: dict[str, type[ShowerModel]] = {}
# Modules that register models when imported (kept lazy so `import caloforge` stays light).
_BUILTIN_MODULES = ("caloforge.models.baseline", "caloforge.models.cfm", "caloforge.models.student", "caloforge.models.copula", "caloforge.models.simquantile")
M = TypeVar("M", bound=type[ShowerModel])


def register_model(cls: M) -> M:
    """Class decorator adding a model to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a model named {cls.name!r} is registered already")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def available_models() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[ShowerModel]:
    _load_builtins()
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name]


def build_model(name: str, geometry: Geometry, config: dict[str, Any] | None = None) -> ShowerModel:
    """Instantiate a registered model."""
    cls = get_model_class(name)
    try:
        return cls(geometry, config)
    except ValueError as exc:
        raise InputError(str(exc)) from None
