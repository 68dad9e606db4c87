"""Model files: ``model.safetensors`` (weights and buffers) + ``model.json`` (what to build).

No pickle is involved anywhere: the JSON names a registered model class, its config and its
geometry; safetensors holds only tensors. Loading therefore runs no code from the file.

Format versions: 2 keeps fitted statistics only in the weights (format 1 also wrote the CFM
models' fitted ``hit_floor`` into the config). Files of format 1 are migrated on load
(:func:`migrate`); nothing is rewritten on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from caloforge import __version__
from caloforge._atomic import atomic_write
from caloforge.errors import InputError
from caloforge.geometry import BUILTIN_NAMES, Geometry, LayerBinning, get_geometry
from caloforge.models.base import ShowerModel
from caloforge.models.packed import compression_of, unpack_state
from caloforge.models.registry import build_model

WEIGHTS = "model.safetensors"
CONFIG = "model.json"
FORMAT_VERSION = 2


def geometry_to_json(g: Geometry) -> dict[str, Any]:
    if g.name in BUILTIN_NAMES and get_geometry(g.name) == g:
        return {"builtin": g.name}
    return {
        "name": g.name,
        "particle": g.particle,
        "readout_threshold": g.readout_threshold,
        "layers": [{"r_edges": list(l.r_edges), "n_alpha": l.n_alpha} for l in g.layers],
    }


def geometry_from_json(d: dict[str, Any]) -> Geometry:
    if "builtin" in d:
        return get_geometry(d["builtin"])
    layers = tuple(LayerBinning(i, tuple(l["r_edges"]), int(l["n_alpha"])) for i, l in enumerate(d["layers"]))
    return Geometry(d["name"], layers, d.get("particle", "unknown"), float(d.get("readout_threshold", 0.0)))


def save_model(model: ShowerModel, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": "caloforge-model",
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "config": model.config.to_dict(),
        "geometry": geometry_to_json(model.geometry),
        "caloforge_version": __version__,
        "n_parameters": model.n_parameters(),
        **(extra or {}),
    }
    atomic_write(directory / WEIGHTS, lambda p: save_file(state, p, metadata={"model": model.name}))
    atomic_write(directory / CONFIG, lambda p: Path(p).write_text(json.dumps(meta, indent=2, default=str)))
    return directory


def read_model_json(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    cfg = directory / CONFIG
    if not cfg.is_file():
        raise InputError(f"not a caloforge model folder (no {CONFIG})", directory)
    try:
        meta = json.loads(cfg.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc})", cfg) from None
    if meta.get("format") != "caloforge-model":
        raise InputError("not a caloforge model description", cfg)
    return meta


def migrate(meta: dict[str, Any], state: dict[str, torch.Tensor], geometry: Geometry) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config and tensors of a model file of any format version, in the current format.

    Format 1 -> 2: the CFM models' read-out floor moves from the config key ``hit_floor`` into
    the buffer ``pre.floor`` (the student drops the key; the teacher keeps its number, which as a
    config value means "this floor")."""
    config = dict(meta.get("config") or {})
    version = int(meta.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise InputError(f"model file format {version} is newer than this caloforge reads ({FORMAT_VERSION}); "
                         "update caloforge")
    if version < 2 and meta.get("model") in ("cfm", "cfm-student") and "pre.floor" not in state:
        floor = config.pop("hit_floor", None) if meta.get("model") == "cfm-student" else config.get("hit_floor")
        thr = float(geometry.readout_threshold)
        value = max(float(floor), thr) if isinstance(floor, (int, float)) and not isinstance(floor, bool) else thr
        state = {**state, "pre.floor": torch.tensor(value, dtype=torch.float64)}
    return config, state


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> ShowerModel:
    """Build the model described by ``model.json`` and load ``model.safetensors`` into it.

    ``directory``: a model folder, a training run folder (its final ``model/``) or the name of a
    shipped model (see :func:`caloforge.models.pretrained.resolve`).

    >>> load_model("ds2-electrons").name
    'copula'
    """
    from caloforge.models.pretrained import resolve

    directory = resolve(directory)
    meta = read_model_json(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise InputError(f"model weights {WEIGHTS} missing", directory)
    try:
        state = load_file(str(weights), device=str(device))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"cannot read weights ({exc})", weights) from None
    ternary = compression_of(meta).get("ternary")
    if ternary:  # a compressed folder (caloforge compress --method ternary): 2-bit codes + scales
        try:
            state = unpack_state(state, ternary)
        except (KeyError, ValueError) as exc:
            raise InputError(f"cannot unpack ternary weights ({exc})", weights) from None
    geometry = geometry_from_json(meta["geometry"])
    config, state = migrate(meta, state, geometry)
    model = build_model(meta["model"], geometry, config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})", weights)
    return model.to(device).eval()
