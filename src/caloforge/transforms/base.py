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

    def log_abs_det_jacobian(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """``log |det d forward(x, cond) / dx|`` per sample (B,), ``cond`` held fixed.

        ``mask`` (broadcastable to the output, True = count) selects the outputs that are random
        variables: the sum runs over their diagonal (or triangular) terms only, as when entries
        fixed by the rest of the sample (the fractions of an empty layer) are left out of a
        density. The change of variables ``log p_x(x) = log p_y(forward(x)) + log_abs_det_jacobian(x)``
        turns a density of the outputs into one of the inputs. Transforms that are not bijections
        (projections such as :class:`~caloforge.transforms.Threshold`) raise ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} is not a bijection: it has no Jacobian determinant")


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

    def log_abs_det_jacobian(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """The sum of the members' log-determinants, each at its own input (chain rule); the
        same ``mask`` for all (the members here keep the shape)."""
        total = x.new_zeros(x.shape[0])
        for t in self.transforms:
            total = total + cast(Transform, t).log_abs_det_jacobian(x, cond, mask)
            x = t(x, cond)
        return total
