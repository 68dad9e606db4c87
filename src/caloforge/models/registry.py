"""Model registry: names to :class:`~caloforge.models.base.ShowerModel` classes.

A family registers itself with :func:`register_model` when its module is imported. The built-in
families are imported on first use (``_BUILTIN_MODULES``); a family in another package joins by
declaring its module under the entry-point group ``caloforge.models`` in its own
``pyproject.toml`` (``[project.entry-points."caloforge.models"] my-gan = "mypkg.gan"``), with no
change to caloforge.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, TypeVar

from caloforge.errors import InputError
from caloforge.geometry import Geometry
from caloforge.models.base import ModelConfig, ShowerModel

_REGISTRY: dict[str, type[ShowerModel]] = {}
# Modules that register models when imported (kept lazy so `import caloforge` stays light).
_BUILTIN_MODULES = ("caloforge.models.baseline", "caloforge.models.cfm", "caloforge.models.student", "caloforge.models.copula", "caloforge.models.simquantile", "caloforge.models.autoencoder")
M = TypeVar("M", bound=type[ShowerModel])


def register_model(cls: M) -> M:
    """Class decorator adding a model to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a model named {cls.name!r} is registered already")
    _REGISTRY[cls.name] = cls
    return cls


ENTRY_POINT_GROUP = "caloforge.models"
_plugins_loaded = False


def _load_builtins() -> None:
    global _plugins_loaded
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    if not _plugins_loaded:
        _plugins_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                importlib.import_module(ep.value.split(":")[0])
            except Exception as exc:  # a broken plugin must not break caloforge
                import warnings

                warnings.warn(f"model plugin {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)


def available_models() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[ShowerModel]:
    _load_builtins()
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name]


def build_model(name: str, geometry: Geometry, config: ModelConfig | Mapping[str, Any] | None = None) -> ShowerModel:
    """Instantiate a registered model."""
    cls = get_model_class(name)
    try:
        return cls(geometry, config)
    except ValueError as exc:
        raise InputError(str(exc)) from None
