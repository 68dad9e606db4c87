"""Training of shower models: one loop for every registered model.

>>> from caloforge.training import train  # doctest: +SKIP
>>> result = train(model, "train.h5", steps=5000, run_dir="runs/cfm", max_time=1800)  # doctest: +SKIP

Modules: :mod:`~caloforge.training.loop` (the loop, :func:`train`), :mod:`.checkpoint` (pickle-free
atomic checkpoints), :mod:`.ema` (weight averaging), :mod:`.distributed` (``torchrun`` data
parallelism), :mod:`.data` (inputs, validation split, deterministic batch order).
"""

from caloforge.training.loop import (
    CHECKPOINT_DIR,
    MODEL_DIR,
    RUN_CONFIG,
    TRAIN_LOG,
    TrainingError,
    TrainResult,
    lr_factor,
    train,
)

__all__ = ["CHECKPOINT_DIR", "MODEL_DIR", "RUN_CONFIG", "TRAIN_LOG", "TrainResult", "TrainingError", "lr_factor", "train"]
