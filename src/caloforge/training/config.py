"""``TrainConfig``: the optimisation settings of :func:`caloforge.training.train`, with presets.

One frozen dataclass holds every default; ``caloforge train`` leaves an option unset to take
it from here, and the run folder's ``config.json`` stores the resolved values under
``training`` (read back by :func:`caloforge.training.resume`).

>>> TrainConfig.quick().steps, TrainConfig().replace(lr=3e-4).lr
(2000, 0.0003)
>>> TrainConfig(batch_size=0)
Traceback (most recent call last):
...
caloforge.config.ConfigError: TrainConfig: batch_size must be at least 1, got 0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from caloforge.config import Config, preset

AmpMode = bool | Literal["bf16", "fp16"]


@dataclass(frozen=True)
class TrainConfig(Config):
    """Optimisation settings.

    ``steps`` AdamW steps on batches of ``batch_size`` showers (the global batch: under
    ``torchrun`` each of K processes takes ``batch_size / K``), learning rate ``lr`` with linear
    warm-up over ``warmup`` steps (None: 5% of ``steps``, at most 1000) and cosine decay to
    ``lr * min_lr_ratio``; ``weight_decay`` of AdamW; gradient norm clipped at ``grad_clip``
    (None: no clipping); ``ema_decay``: decay of the exponential moving average of the weights
    that is saved (None: no averaging). ``checkpoint_every`` seconds between checkpoints,
    validation every ``val_every`` steps (None: steps/10, at most 1000), a log line every
    ``log_every`` steps (None: steps/50, at most 100). ``seed`` fixes the initial weights (with
    ``caloforge train``), the batch order and the random numbers of the loss. ``amp``: autocast
    on CUDA (``bf16``/``fp16``/True = bf16; ignored on the CPU).
    """

    steps: int = 10000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int | None = None
    min_lr_ratio: float = 0.01
    ema_decay: float | None = 0.999
    grad_clip: float | None = 1.0
    checkpoint_every: float = 300.0
    val_every: int | None = None
    log_every: int | None = None
    seed: int = 0
    amp: AmpMode = False

    def validate(self) -> None:
        if self.steps < 1:
            raise self._error(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise self._error(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise self._error(f"learning rate must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise self._error("weight decay must not be negative")
        if self.warmup is not None and self.warmup < 0:
            raise self._error("warmup must not be negative")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise self._error(f"EMA decay must lie in [0, 1), got {self.ema_decay}")
        if not self.checkpoint_every > 0:
            raise self._error("checkpoint interval must be positive")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise self._error("gradient clipping norm must be positive")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise self._error("min_lr_ratio must lie in [0, 1]")
        for key in ("val_every", "log_every"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise self._error(f"{key} must be at least 1")
        if self.seed < 0:
            raise self._error("seed must not be negative")

    @classmethod
    @preset
    def quick(cls) -> TrainConfig:
        """A short run (2,000 steps, faster warm-up): a first look, or the demo."""
        return cls(steps=2000, warmup=100)

    @classmethod
    @preset
    def tiny(cls) -> TrainConfig:
        """A handful of steps on small batches: for tests."""
        return cls(steps=4, batch_size=16, warmup=0, ema_decay=None)
