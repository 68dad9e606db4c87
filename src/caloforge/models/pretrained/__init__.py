"""Models shipped with caloforge, and resolution of "which model did the user mean".

A shipped model is a folder ``caloforge/models/pretrained/<name>/`` holding ``model.json`` and
``model.safetensors`` (installed as package data). :func:`resolve` turns what a user typed into
the folder of a model: a model folder, a training run folder (its ``model/``), or the name of a
shipped model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caloforge.errors import InputError

PRETRAINED_DIR = Path(__file__).resolve().parent
_MODEL_JSON = "model.json"
_WEIGHTS = "model.safetensors"


def _is_model_dir(path: Path) -> bool:
    return (path / _MODEL_JSON).is_file()


def list_pretrained() -> dict[str, dict[str, Any]]:
    """Shipped models: name -> the ``model.json`` description (plus ``path``)."""
    out: dict[str, dict[str, Any]] = {}
    for sub in sorted(PRETRAINED_DIR.iterdir()):
        if sub.is_dir() and _is_model_dir(sub) and (sub / _WEIGHTS).is_file():
            try:
                meta = json.loads((sub / _MODEL_JSON).read_text())
            except json.JSONDecodeError:
                continue
            out[sub.name] = {**meta, "path": str(sub)}
    return out


def resolve(name_or_path: str | Path) -> Path:
    """The model folder meant by ``name_or_path``.

    Tried in order: a folder holding ``model.json`` (a model folder); a folder holding
    ``model/model.json`` (a training run folder, which gives its final model); the name of a
    shipped model. Anything else is an :class:`InputError` that lists the shipped models.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if _is_model_dir(path):
            return path
        if _is_model_dir(path / "model"):
            return path / "model"
        if (path / "checkpoint" / "checkpoint.json").is_file() or (path / "config.json").is_file():
            raise InputError(
                "is a training run without a final model yet; finish it with "
                f"'caloforge train --resume -o {path}'", path,
            )
        raise InputError("is neither a model folder (model.json) nor a training run folder", path)
    name = str(name_or_path)
    shipped = list_pretrained()
    if name in shipped:
        return Path(shipped[name]["path"])
    if path.exists():
        raise InputError("is a file; give a model folder, a run folder or a shipped model name", path)
    available = ", ".join(shipped) or "none"
    raise InputError(
        f"no model {name!r}: not a model or run folder, nor a shipped model (shipped: {available})"
    )


__all__ = ["PRETRAINED_DIR", "list_pretrained", "resolve"]
