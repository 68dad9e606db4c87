"""The :class:`Transform` interface and :class:`Compose`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from torch import Tensor, nn


class Transform(nn.Module):
    """An invertible map ``y = forward(x, cond)``, ``x = inverse(y, cond)``.

    ``cond`` is side information the map depends on but does not transform (the incident energy,
    the layer energies). Statistics learnt from data by :meth:`fit` are buffers, so they travel
    with a model's weights (safetensors) and move with ``.to(device)``. A transform is exact up
    to floating-point rounding on the domain documented by each subclass.
    """

    def fit(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """Learn statistics from ``x`` (a sample of inputs); return ``forward(x, cond)``.

        ``mask`` (broadcastable to ``x``, True = use) restricts the entries statistics are
        computed from, where a subclass supports it. Transforms without statistics just apply.
        """
        return self.forward(x, cond)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class Compose(Transform):
    """Transforms applied in order (``inverse`` runs them backwards), all given the same ``cond``."""

    def __init__(self, transforms: Iterable[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def fit(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        for t in self.transforms:
            x = cast(Transform, t).fit(x, cond, mask)
        return x

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        for t in self.transforms:
            x = t(x, cond)
        return x

    def inverse(self, y: Tensor, cond: Tensor | None = None) -> Tensor:
        for t in reversed(self.transforms):
            y = cast(Transform, t).inverse(y, cond)
        return y
