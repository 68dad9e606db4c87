"""Invertible preprocessing of showers, as small composable torch modules.

Every :class:`Transform` has ``forward(x, cond)`` / ``inverse(y, cond)`` and keeps what it
learns in :meth:`~Transform.fit` as buffers (saved with a model's weights); the bijections
give their ``log_abs_det_jacobian(x, cond, mask)`` per sample, with which a density of the
preprocessed space becomes one of the showers (:meth:`ShowerPreprocessing.forward_log_det`):

* :class:`SequentialFractions`, :class:`ShapeNormalize` (with :class:`LayerSum`): the
  energy/shape factorisation of CaloDREAM (Favaro et al., arXiv:2405.09629);
* :class:`Logit` (small alpha, as CaloINN, arXiv:2312.09290, and CaloDREAM), :class:`Standardize`;
* :class:`LogEnergyScale`: ``log E_inc`` scaled to [0, 1] over the training range (conditioning);
* :class:`BelowThresholdNoise`: zero voxels dequantised below the readout threshold (continuous
  density for the flows; the threshold undoes it);
* :class:`Threshold`: the readout threshold (a projection, applied to generated showers last);
* :class:`Compose`, and :class:`ShowerPreprocessing`, the composition the CFM models use.

>>> import torch
>>> from caloforge.transforms import Compose, Logit, Standardize
>>> t = Compose([Logit(1e-6), Standardize(3)])
>>> x = torch.rand(100, 3, dtype=torch.float64)
>>> y = t.fit(x)
>>> bool(torch.allclose(t.inverse(y), x, atol=1e-12))
True
"""

from caloforge.transforms.base import Compose, Transform
from caloforge.transforms.elementwise import LogEnergyScale, Logit, Standardize, Threshold
from caloforge.transforms.pipeline import ShowerPreprocessing
from caloforge.transforms.shower import BelowThresholdNoise, LayerSum, SequentialFractions, ShapeNormalize, hit_floor

__all__ = [
    "BelowThresholdNoise",
    "Compose",
    "LayerSum",
    "LogEnergyScale",
    "Logit",
    "SequentialFractions",
    "ShapeNormalize",
    "ShowerPreprocessing",
    "Standardize",
    "Threshold",
    "Transform",
    "hit_floor",
]
