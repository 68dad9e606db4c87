"""Training of shower models: one loop for every registered model.

>>> from caloforge.training import TrainConfig, train  # doctest: +SKIP
>>> result = train(model, "train.h5", config=TrainConfig.quick(), run_dir="runs/cfm", max_time=1800)  # doctest: +SKIP
>>> result = resume("runs/cfm", steps=4000)  # doctest: +SKIP

Modules: :mod:`~caloforge.training.loop` (the loop, :func:`train`), :mod:`.config`
(:class:`TrainConfig` and its presets), :mod:`.runs` (runs from files: :func:`train_files`,
:func:`resume`), :mod:`.checkpoint` (pickle-free atomic checkpoints), :mod:`.ema` (weight
averaging), :mod:`.distributed` (``torchrun`` data parallelism), :mod:`.data` (inputs,
validation split, deterministic batch order). ``training`` imports ``models``, never the reverse.
"""

import importlib
from typing import Any

from caloforge.training.config import TrainConfig

# The loop pulls in torch and the models: loaded on first use, so that reading TrainConfig
# (e.g. for the CLI's --help) stays light.
_LAZY = {
    **dict.fromkeys(("CHECKPOINT_DIR", "MODEL_DIR", "RUN_CONFIG", "TRAIN_LOG", "TrainingError", "TrainResult",
                     "as_train_config", "lr_factor", "train"), "caloforge.training.loop"),
    **dict.fromkeys(("read_run_config", "resume", "train_files"), "caloforge.training.runs"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'caloforge.training' has no attribute {name!r}")


__all__ = [
    "CHECKPOINT_DIR",
    "MODEL_DIR",
    "RUN_CONFIG",
    "TRAIN_LOG",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "as_train_config",
    "lr_factor",
    "read_run_config",
    "resume",
    "train",
    "train_files",
]
