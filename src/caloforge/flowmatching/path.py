"""Probability paths: ``path.sample(x0, x1, t) -> (x_t, u_t)``.

A path interpolates between a noise sample ``x0`` and a data sample ``x1``; ``u_t`` is the
conditional velocity d x_t / dt that a flow-matching network regresses at ``x_t``.

>>> import torch
>>> x0, x1, t = torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0.25, 1.0])
>>> xt, ut = StraightPath().sample(x0, x1, t)
>>> xt[:, 0].tolist(), ut[0].tolist()
([0.25, 1.0], [1.0, 1.0, 1.0])
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor


class ProbabilityPath(ABC):
    """A conditional probability path from noise (t = 0) to data (t = 1)."""

    @abstractmethod
    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_t, u_t)`` for noise ``x0`` and data ``x1`` (B, ...) at times ``t`` (B,)."""


class StraightPath(ProbabilityPath):
    """The straight (optimal-transport, "rectified flow") path ``x_t = (1 - t) x0 + t x1``,
    velocity ``u_t = x1 - x0``, with ``sigma_min = 0``.

    References:
        Lipman, Chen, Ben-Hamu, Nickel, Le, *Flow Matching for Generative Modeling*,
        arXiv:2210.02747.
        Liu, Gong, Liu, *Flow Straight and Fast: Learning to Generate and Transfer Data with
        Rectified Flow*, arXiv:2209.03003.
    """

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        tt = t.reshape(-1, *([1] * (x0.dim() - 1)))
        return (1 - tt) * x0 + tt * x1, x1 - x0
