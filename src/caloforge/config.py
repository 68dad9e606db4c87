"""Typed, frozen configurations with named presets, serialised to plain JSON.

Every model family declares its settings as a frozen dataclass derived from :class:`Config`
(:attr:`caloforge.models.ShowerModel.Config`), and so does the training loop
(:class:`caloforge.training.TrainConfig`). A config is one object with one set of defaults: the
library, the CLI and the JSON files all read them from the class, none restates them.

* :meth:`Config.from_dict` reads the JSON form and rejects unknown keys and ill-typed values with
  a message that names the key, the expected type and the value;
* :meth:`Config.to_dict` writes the same JSON form back (tuples as lists);
* :meth:`Config.replace` returns a changed copy, checked the same way;
* named presets are class methods (e.g. ``CFMConfig.tiny()``), listed by :meth:`Config.presets`.

Fitted statistics never live in a config: they are buffers of the model, saved with its weights.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo(Config):
...     width: int = 8
...     solver: Literal["euler", "rk4"] = "euler"
...     @classmethod
...     @preset
...     def wide(cls) -> "Demo":
...         return cls(width=64)
>>> Demo.from_dict({"width": 16}).to_dict()
{'width': 16, 'solver': 'euler'}
>>> Demo.presets()
['default', 'wide']
>>> Demo.from_dict({"widht": 16})
Traceback (most recent call last):
...
caloforge.config.ConfigError: Demo: unknown key 'widht' (known: width, solver)
>>> Demo().replace(solver="heun")
Traceback (most recent call last):
...
caloforge.config.ConfigError: Demo: 'solver' must be one of 'euler', 'rk4', got 'heun'
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union

__all__ = ["Config", "ConfigError", "preset"]

C = TypeVar("C", bound="Config")
F = TypeVar("F", bound=Callable[..., Any])


class ConfigError(ValueError):
    """A configuration key is unknown or its value has the wrong type."""


def preset(method: F) -> F:
    """Mark a class method of a :class:`Config` as a named preset (see :meth:`Config.presets`)."""
    method.__caloforge_preset__ = True  # type: ignore[attr-defined]
    return method


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(hint, str(hint))


_NO = object()


def _coerce(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (int -> float, list -> tuple), or ``_NO`` if it does not fit."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is type(None):
        return None if value is None else _NO
    if origin is Literal:
        return value if any(value == a and type(value) is type(a) for a in typing.get_args(hint)) else _NO
    if origin in (Union, types.UnionType):
        # bool before numbers, exact types first: True must not become 1.0
        for arg in sorted(typing.get_args(hint), key=lambda a: a is float):
            out = _coerce(value, arg)
            if out is not _NO:
                return out
        return _NO
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _NO
        (item, *_rest) = typing.get_args(hint)
        items = [_coerce(v, item) for v in value]
        return _NO if any(i is _NO for i in items) else tuple(items)
    if hint is bool:
        return value if isinstance(value, bool) else _NO
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _NO
        return float(value) if math.isfinite(value) else _NO
    if hint is str:
        return value if isinstance(value, str) else _NO
    return value


class Config:
    """Base of the frozen dataclass configurations (derive with ``@dataclass(frozen=True)``)."""

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    def __post_init__(self) -> None:
        hints = self._hints()
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out = _coerce(value, hints[f.name])
            if out is _NO:
                raise ConfigError(f"{type(self).__name__}: {f.name!r} must be {_describe(hints[f.name])}, got {value!r}")
            object.__setattr__(self, f.name, out)
        self.validate()

    def validate(self) -> None:
        """Checks between fields or of ranges; raise :class:`ConfigError`. Types are checked already."""

    def _error(self, message: str) -> ConfigError:
        return ConfigError(f"{type(self).__name__}: {message}")

    @classmethod
    @preset
    def default(cls: type[C]) -> C:
        """The class defaults."""
        return cls()

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any] | None = None) -> C:
        """The config with ``values`` (its JSON form) over the defaults; unknown keys are errors."""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{cls.__name__}: a config must be a JSON object, got {type(values).__name__}")
        known = cls.keys()
        for key in values:
            if key not in known:
                raise ConfigError(f"{cls.__name__}: unknown key {key!r} (known: {', '.join(known)})")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every key, tuples as lists."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in ((k, getattr(self, k)) for k in self.keys())}

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes`` (checked like :meth:`from_dict`)."""
        return type(self).from_dict({**self.to_dict(), **changes})

    @classmethod
    def presets(cls) -> list[str]:
        """Names of the presets: class methods marked with :func:`preset`."""
        out = []
        for name in dir(cls):
            attr = getattr(cls, name, None)
            if getattr(getattr(attr, "__func__", None), "__caloforge_preset__", False):
                out.append(name)
        return sorted(out)

    @classmethod
    def from_preset(cls: type[C], name: str, **changes: Any) -> C:
        if name not in cls.presets():
            raise ConfigError(f"{cls.__name__}: unknown preset {name!r} (presets: {', '.join(cls.presets()) or 'none'})")
        base: C = getattr(cls, name)()
        return base.replace(**changes) if changes else base
