"""Training runs from files: start one (:func:`train_files`) or continue one (:func:`resume`).

What ``caloforge train`` does, as library calls: open the CaloChallenge files, build the model
(seeded), hold out validation showers, record where everything came from, and call
:func:`~caloforge.training.train` on a run folder. :func:`resume` rebuilds all of it from the
run folder's ``config.json`` (model, model config, training settings, data), so that
``resume(run_dir)`` continues an interrupted run exactly; keyword overrides change training
settings (e.g. ``steps`` to train longer) or the call's own controls (``max_time``, ``device``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caloforge.errors import InputError
from caloforge.models import ShowerModel, build_model, get_model_class
from caloforge.models.base import ModelConfig
from caloforge.training.config import TrainConfig
from caloforge.training.data import split_fraction
from caloforge.training.loop import RUN_CONFIG, TrainResult, as_train_config, train

if TYPE_CHECKING:
    import numpy as np

#: Validation fraction of the training files when no validation file is given.
DEFAULT_VAL_FRACTION = 0.1

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder; :class:`~caloforge.errors.InputError` if absent or bad."""
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise InputError(f"holds no training run to resume (no {RUN_CONFIG})", run_dir)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid JSON ({exc})", path) from None
    if not isinstance(value, dict) or value.get("format") != "caloforge-run" or not isinstance(value.get("model"), str):
        raise InputError("not a caloforge run configuration", path)
    return value


def train_files(
    model: str | ShowerModel,
    data: Sequence[str | Path],
    run_dir: str | Path,
    *,
    model_config: ModelConfig | Mapping[str, Any] | None = None,
    val: Sequence[str | Path] | None = None,
    val_fraction: float | None = None,
    config: TrainConfig | Mapping[str, Any] | None = None,
    device: str = "auto",
    max_time: float | None = None,
    progress: bool = True,
    say: Say = _quiet,
    **overrides: Any,
) -> TrainResult:
    """Train ``model`` (a registered name, built with ``model_config``, or a model) on the
    CaloChallenge files ``data`` into ``run_dir``.

    Validation: the files ``val``, or a random ``val_fraction`` of ``data`` (default 0.1; chosen
    by the seed). ``config``/``overrides``: the training settings (:class:`TrainConfig`). The
    model's initial weights are drawn from ``torch.manual_seed(seed)``. ``say`` receives the
    progress lines (a console's ``print``)."""
    cfg = as_train_config(dict(config) if isinstance(config, Mapping) else config, **overrides)
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError("exists and is not a folder", run_dir)
    if val and val_fraction is not None:
        raise InputError("give either validation files or a validation fraction, not both")
    if not data:
        raise InputError("no training files given")
    if isinstance(model, str):
        get_model_class(model)  # an unknown name fails here, before any data is read
    from caloforge.data import open_showers

    data_paths = [Path(p) for p in data]
    val_paths = [Path(p) for p in (val or [])]
    train_file = open_showers(data_paths)
    val_file = open_showers(val_paths, geometry=train_file.geometry) if val_paths else None
    if isinstance(model, str):
        import torch

        torch.manual_seed(cfg.seed)
        model = build_model(model, train_file.geometry, model_config)
    elif model_config is not None:
        raise InputError("model_config applies to a model given by name")
    say(f"model {model.name} ({model.n_parameters():,} parameters) on {train_file.geometry.name}: "
        f"{train_file.n:,} showers from {', '.join(str(p) for p in data_paths)}")
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else float(val_fraction)
    e, s = train_file.read()
    val_part: tuple[np.ndarray, np.ndarray] | None
    if val_file is not None:
        train_part, val_part = (e, s), val_file.read()
    else:
        train_part, val_part = split_fraction(e, s, fraction, cfg.seed)
        del e, s
    say(f"{len(train_part[0]):,} training showers, {0 if val_part is None else len(val_part[0]):,} validation showers")
    metadata = {"data": {
        "train": [str(p.resolve()) for p in data_paths],
        "val": [str(p.resolve()) for p in val_paths] or None,
        "val_fraction": None if val_paths else fraction,
    }}
    return train(model, train_part, val_part, cfg, run_dir=run_dir, device=device, max_time=max_time,
                 progress=progress, metadata=metadata)


def resume(
    run_dir: str | Path,
    *,
    device: str = "auto",
    max_time: float | None = None,
    progress: bool = True,
    say: Say = _quiet,
    **overrides: Any,
) -> TrainResult:
    """Continue the run in ``run_dir`` from its last checkpoint, with the model, data and
    training settings it recorded; ``overrides`` change training settings (e.g. ``steps=20000``
    to train longer; a changed ``seed`` or ``batch_size`` makes the run differ from an
    uninterrupted one, and says so)."""
    saved = read_run_config(run_dir)
    run_dir = Path(run_dir)
    known = set(TrainConfig.keys())
    training = {k: v for k, v in (saved.get("training") or {}).items() if k in known}
    cfg = as_train_config(training, **overrides)
    data = saved.get("data") or {}
    train_paths = data.get("train") or []
    if not train_paths:
        raise InputError("records no training files", run_dir / RUN_CONFIG)
    from caloforge.data import open_showers

    train_file = open_showers([Path(p) for p in train_paths])
    val_paths = data.get("val") or []
    model = build_model(saved["model"], train_file.geometry, saved.get("model_config") or {})
    say(f"resuming {model.name} in {run_dir} on {train_file.n:,} showers")
    e, s = train_file.read()
    val_part: tuple[np.ndarray, np.ndarray] | None
    if val_paths:
        train_part, val_part = (e, s), open_showers([Path(p) for p in val_paths], geometry=train_file.geometry).read()
    else:
        # No recorded fraction: the run was given its showers directly, with no split.
        fraction = float(data.get("val_fraction") or 0.0)
        train_part, val_part = split_fraction(e, s, fraction, int(training.get("seed", cfg.seed)))
        del e, s
    return train(model, train_part, val_part, cfg, run_dir=run_dir, resume=True, device=device, max_time=max_time,
                 progress=progress, metadata={"data": data})
