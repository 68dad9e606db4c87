"""Generative shower models behind one API (:class:`ShowerModel`), found by name in a registry.

>>> from caloforge.models import available_models, build_model
>>> sorted(available_models())  # doctest: +SKIP
['cfm', 'cfm-student']

Every model: is built from a geometry and a JSON-serialisable config; learns from showers with
``loss(batch)`` (driven by :mod:`caloforge.training`); draws showers with ``sample(e_inc)``;
saves to safetensors weights + a JSON config (:func:`save_model` / :func:`load_model`), never
pickles, so loading a model file runs no code.
"""

from caloforge.models.base import ShowerModel
from caloforge.models.registry import available_models, build_model, get_model_class, register_model
from caloforge.models.serialization import load_model, save_model

__all__ = [
    "ShowerModel",
    "available_models",
    "build_model",
    "get_model_class",
    "load_model",
    "register_model",
    "save_model",
]
