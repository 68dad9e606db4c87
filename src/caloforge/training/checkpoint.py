"""Training checkpoints without pickles: one safetensors file of tensors + one JSON file.

Layout of ``RUN_DIR/checkpoint/``::

    checkpoint.json               scalars: step, hyperparameters, optimizer/scheduler settings,
                                  Python/NumPy RNG states, and the name of the tensor file
    state-000001234.safetensors   model, EMA and optimizer tensors, torch RNG states (uint8)

A checkpoint is written atomically: the tensor file goes to a new name (written to a temporary
file, fsynced and renamed), then ``checkpoint.json`` is replaced in one ``os.replace``, and only
then are older tensor files removed. A process killed at any instant leaves either the previous
or the new checkpoint complete, never a mixture. Loading runs no code from the files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from caloforge._atomic import atomic_write
from caloforge.errors import InputError

STATE_JSON = "checkpoint.json"
FORMAT = "caloforge-checkpoint"
FORMAT_VERSION = 1


def _fsync_path(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic(path: Path, write) -> None:
    def write_synced(tmp: str) -> None:
        write(tmp)
        _fsync_path(tmp)

    atomic_write(path, write_synced)


def has_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / STATE_JSON).is_file()


def save_checkpoint(directory: str | Path, tensors: dict[str, Tensor], state: dict[str, Any]) -> Path:
    """Write ``tensors`` (safetensors) and ``state`` (JSON) as the directory's latest checkpoint."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step = int(state["step"])
    name = f"state-{step:09d}.safetensors"
    flat = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    _atomic(directory / name, lambda p: save_file(flat, p, metadata={"format": FORMAT, "step": str(step)}))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "tensors": name, **state}
    text = json.dumps(meta, indent=1, allow_nan=True)
    _atomic(directory / STATE_JSON, lambda p: Path(p).write_text(text))
    try:
        _fsync_path(directory)
    except OSError:  # some filesystems cannot fsync a directory
        pass
    for old in directory.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    for stale in directory.glob(".*.part"):
        stale.unlink(missing_ok=True)
    return directory / STATE_JSON


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, state)`` of the latest checkpoint in ``directory``."""
    directory = Path(directory)
    path = directory / STATE_JSON
    if not path.is_file():
        raise InputError("holds no checkpoint to resume from", directory)
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid checkpoint JSON ({exc}); the checkpoint is damaged", path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError("not a caloforge checkpoint", path)
    version = state.get("format_version", 0)
    if not isinstance(version, int) or not isinstance(state.get("step"), int) or not isinstance(state.get("tensors"), str):
        raise InputError("damaged checkpoint: 'format_version', 'step' or 'tensors' is missing or not of its type", path)
    if version > FORMAT_VERSION:
        raise InputError("checkpoint written by a newer caloforge", path)
    tfile = directory / str(state.get("tensors", ""))
    if not tfile.is_file():
        raise InputError(f"checkpoint tensor file {tfile.name} is missing", directory)
    try:
        tensors = load_file(str(tfile), device=str(device))
    except Exception as exc:  # safetensors raises its own error types
        raise InputError(f"cannot read checkpoint tensors ({exc})", tfile) from None
    return tensors, state


# ------------------------------------------------------------------ optimizer state
def flatten_optimizer(state_dict: dict[str, Any], prefix: str = "optimizer.") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer ``state_dict`` into tensors and JSON-able settings."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    return tensors, {"state": scalars, "param_groups": groups}


def unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any], prefix: str = "optimizer.") -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix):
            idx, key = name[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    for idx, values in meta["state"].items():
        if int(idx) not in state:
            raise InputError(f"checkpoint is incomplete: the optimiser state of parameter {idx} has no tensors")
        state[int(idx)].update(values)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def jsonable(obj: Any) -> Any:
    """Recursively keep only JSON-representable values (tuples become lists)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items() if _is_plain(v)}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def _is_plain(v: Any) -> bool:
    if isinstance(v, (dict, list, tuple)):
        return True
    return v is None or isinstance(v, (bool, int, float, str))
