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
    """The model description ``model.json`` of a model folder, with its structure checked (a JSON
    object naming a registered model, a config object and a geometry): a hand-edited or damaged
    file gives an :class:`InputError` naming it."""
    directory = Path(directory)
    cfg = directory / CONFIG
    if not cfg.is_file():
        raise InputError(f"not a caloforge model folder (no {CONFIG})", directory)
    try:
        meta = json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid JSON ({exc})", cfg) from None
    except RecursionError:
        raise InputError("invalid JSON (nested too deeply)", cfg) from None
    if not isinstance(meta, dict):
        raise InputError(f"must be a JSON object, got {type(meta).__name__}", cfg)
    if meta.get("format") != "caloforge-model":
        raise InputError("not a caloforge model description", cfg)
    if not isinstance(meta.get("model"), str):
        raise InputError("'model' must name a model type (a string)", cfg)
    if meta.get("config") is not None and not isinstance(meta["config"], dict):
        raise InputError(f"'config' must be a JSON object, got {type(meta['config']).__name__}", cfg)
    if not isinstance(meta.get("geometry"), dict):
        raise InputError("'geometry' must be a JSON object", cfg)
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"'format_version' must be an integer, got {version!r}", cfg)
    return meta


def _geometry(meta: dict[str, Any], cfg: Path) -> Geometry:
    try:
        return geometry_from_json(meta["geometry"])
    except InputError as exc:
        raise InputError(f"'geometry': {exc.problem}", cfg) from None
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"'geometry' is not a valid geometry ({type(exc).__name__}: {exc})", cfg) from None


def _check_tensors(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], weights: Path) -> None:
    """The stored tensors have the names and shapes the model expects, and finite values."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise InputError(f"weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})", weights)
    for k, t in expected.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise InputError(f"tensor {k!r} has shape {tuple(state[k].shape)}, the model's config needs "
                             f"{tuple(t.shape)} (weights and model.json do not belong together)", weights)
    for k, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise InputError(f"tensor {k!r} holds NaN or inf (damaged weights)", weights)


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
    cfg = directory / CONFIG
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise InputError(f"model weights {WEIGHTS} missing", directory)
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"cannot read weights ({exc})", weights) from None
    ternary = compression_of(meta).get("ternary")
    if ternary:  # a compressed folder (caloforge compress --method ternary): 2-bit codes + scales
        try:
            state = unpack_state(state, ternary)
        except (KeyError, ValueError) as exc:
            raise InputError(f"cannot unpack ternary weights ({exc})", weights) from None
    geometry = _geometry(meta, cfg)
    config, state = migrate(meta, state, geometry)
    try:
        # Built on the meta device first: no memory is allocated, so a config with absurd sizes
        # is caught by the shape check below instead of exhausting memory.
        with torch.device("meta"):
            skeleton = build_model(meta["model"], geometry, config)
    except InputError as exc:
        raise InputError(exc.problem, cfg) from None
    except Exception:  # a family that cannot be built without data: checked after the real build
        skeleton = None
    if skeleton is not None:
        _check_tensors(state, skeleton.state_dict(), weights)
    try:
        model = build_model(meta["model"], geometry, config)
    except InputError as exc:
        raise InputError(exc.problem, cfg) from None
    except (TypeError, ValueError, OverflowError, RuntimeError) as exc:
        raise InputError(f"cannot build model {meta['model']!r} from this config ({type(exc).__name__}: {exc})",
                         cfg) from None
    if skeleton is None:  # checked against the skeleton already otherwise (same config, same shapes)
        _check_tensors(state, model.state_dict(), weights)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
