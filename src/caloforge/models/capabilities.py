"""What a model can do, declared as protocols; the rest of caloforge checks these, nothing else.

A model family implements :class:`~caloforge.models.ShowerModel` (it samples showers) and, in
addition, whichever of these capabilities it has. They are :func:`typing.runtime_checkable`
protocols: implementing the methods *is* the declaration (the base class defines none of them),
and ``isinstance(model, HasLikelihood)`` is how export, generation, the training loop, anomaly
scores and calibration ask. A type checker checks them statically too.

======================  ==================================================  ====================
capability              what it gives                                      used by
======================  ==================================================  ====================
:class:`TrainableByLoss`   ``loss(e_inc, showers)``: one scalar per batch   the default training step
:class:`OwnsTrainingStep`  ``configure_optimizers`` + ``training_step``:    ``caloforge train`` (GANs,
                           several optimisers, alternating updates          decorrelated pairs)
:class:`FittedInClosedForm` ``fit(e_inc, showers)``, no optimisation        ``caloforge train``
:class:`NoiseMap`          a deterministic map (E_inc, Gaussian noise) ->    ONNX export, distillation
                           showers, and the noise it expects
:class:`SolverSteps`       sampling integrates an ODE in a chosen number     ``generate --steps``,
                           of steps                                         export
:class:`HasLikelihood`     ``log_prob(e_inc, showers)``                      anomaly scores, calibration
:class:`ProfilesLikelihood` ``likelihood_of_energy(showers)``: the likelihood  ``caloforge calibrate``
                           as a function of E_inc, fixed work done once
:class:`EstimatesLikelihood` ``log_prob_estimate``: the likelihood with its       ``caloforge anomaly``
                           standard error per shower (stochastic estimators)
:class:`Distills`          learns from a teacher model                      the contract test, training
:class:`HasAnomalyScore`   ``anomaly_score(e_inc, showers)``: its own        ``caloforge anomaly``
                           score(s) per shower (e.g. reconstruction error)
======================  ==================================================  ====================

>>> from caloforge.geometry import get_geometry
>>> from caloforge.models import build_model
>>> m = build_model("voxel-lognormal", get_geometry("ds2"))
>>> isinstance(m, HasLikelihood), isinstance(m, NoiseMap), capabilities(m)
(True, False, ['HasLikelihood', 'TrainableByLoss'])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "Distills",
    "EstimatesLikelihood",
    "FittedInClosedForm",
    "HasAnomalyScore",
    "HasLikelihood",
    "NoiseMap",
    "OwnsTrainingStep",
    "ProfilesLikelihood",
    "SolverSteps",
    "TrainableByLoss",
    "capabilities",
]


@runtime_checkable
class TrainableByLoss(Protocol):
    """Trained by the default step of :func:`caloforge.training.train`: AdamW on ``loss``."""

    def loss(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """Scalar training loss of one batch (raw MeV showers)."""
        ...


@runtime_checkable
class OwnsTrainingStep(Protocol):
    """Trains through its own step (several optimisers, alternating updates, e.g. a GAN).

    The loop builds the optimisers once (``configure_optimizers``; each gets the loop's warm-up
    and cosine schedule), then calls ``training_step`` once per batch. The step does its own
    ``zero_grad`` / ``backward`` / ``optimizer.step()`` and returns the scalar to log. Checkpoints
    hold every optimiser's state, so resuming is exact as for the default step. ``loss`` is the
    validation loss (no gradient step)."""

    def configure_optimizers(self, lr: float, weight_decay: float) -> Sequence[torch.optim.Optimizer]: ...

    def training_step(self, e_inc: Tensor, showers: Tensor, optimizers: Sequence[torch.optim.Optimizer],
                      step: int) -> Tensor: ...

    def loss(self, e_inc: Tensor, showers: Tensor) -> Tensor: ...


@runtime_checkable
class FittedInClosedForm(Protocol):
    """Complete once ``fit`` has seen the training showers (quantiles, covariances...): the
    training loop fits and saves it, with no optimisation steps and nothing to resume."""

    def fit(self, e_inc: Tensor, showers: Tensor) -> None: ...


@runtime_checkable
class NoiseMap(Protocol):
    """Sampling is a deterministic function of (E_inc, Gaussian noise): exportable to ONNX with
    the noise as explicit inputs, and distillable.

    ``noise_shapes()`` names the noise inputs in order with their width per shower (e.g.
    ``{"z_energy": 45, "z_shape": 6480}``); ``draw_noise(n, generator)`` draws them;
    ``sample_from_noise(e_inc, *noise, **options)`` maps them to showers (MeV), where
    ``graph_options()`` are the options that make the map a fixed float32 graph (e.g. no
    bfloat16 autocast)."""

    def noise_shapes(self) -> dict[str, int]: ...

    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, ...]: ...

    def sample_from_noise(self, e_inc: Tensor, *noise: Tensor, **options: Any) -> Tensor: ...

    def graph_options(self) -> dict[str, Any]: ...


@runtime_checkable
class SolverSteps(Protocol):
    """Sampling integrates an ODE; the number of steps (and the solver) are sampling options.

    ``solver_options(steps, solver)`` returns the keyword options of ``sample`` (and of
    ``sample_from_noise``) with the model's defaults filled in; it raises
    :class:`~caloforge.errors.InputError` for an unknown solver or fewer than one step."""

    def solver_options(self, steps: int | None = None, solver: str | None = None) -> dict[str, Any]: ...


@runtime_checkable
class HasLikelihood(Protocol):
    """A tractable likelihood: ``log_prob(e_inc, showers)`` (B,), a density in the showers' MeV."""

    def log_prob(self, e_inc: Tensor, showers: Tensor) -> Tensor: ...


@runtime_checkable
class ProfilesLikelihood(Protocol):
    """``likelihood_of_energy(showers)``: ``log_prob(., showers)`` as a function of the incident
    energies alone, with the work that does not depend on them done once (energy calibration
    evaluates the likelihood of the same showers at ~100 energies each)."""

    def likelihood_of_energy(self, showers: Tensor) -> Callable[[Tensor], Tensor]: ...


@runtime_checkable
class EstimatesLikelihood(Protocol):
    """``log_prob`` is itself an estimate (e.g. Hutchinson's trace estimator along an ODE):
    ``log_prob_estimate(e_inc, showers, options)`` returns it (B,) with its standard error per
    shower (B,) (zero where exact); ``options`` are the model's estimator settings (its own
    config class; None: its defaults)."""

    def log_prob_estimate(self, e_inc: Tensor, showers: Tensor, options: Any = None) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class Distills(Protocol):
    """Learns the map of a trained teacher (family ``teacher_family``) rather than the data;
    ``distill_from(teacher)`` attaches one in memory (else the config names it)."""

    teacher_family: ClassVar[str]

    def distill_from(self, teacher: Any, pairs: Any = None, **pair_options: Any) -> Any: ...


@runtime_checkable
class HasAnomalyScore(Protocol):
    """Its own anomaly score(s), larger for less normal showers (e.g. an autoencoder's
    reconstruction error): ``anomaly_score(e_inc, showers)`` is (B,) for one score or (B, K) for
    K scores, named in order by ``score_names()``."""

    def anomaly_score(self, e_inc: Tensor, showers: Tensor) -> Tensor: ...

    def score_names(self) -> tuple[str, ...]: ...


#: The methods each capability consists of (what :func:`capabilities` looks for).
_MEMBERS: dict[str, tuple[str, ...]] = {
    "Distills": ("distill_from",),
    "EstimatesLikelihood": ("log_prob_estimate",),
    "FittedInClosedForm": ("fit",),
    "HasAnomalyScore": ("anomaly_score", "score_names"),
    "HasLikelihood": ("log_prob",),
    "NoiseMap": ("noise_shapes", "draw_noise", "sample_from_noise", "graph_options"),
    "OwnsTrainingStep": ("configure_optimizers", "training_step", "loss"),
    "ProfilesLikelihood": ("likelihood_of_energy",),
    "SolverSteps": ("solver_options",),
    "TrainableByLoss": ("loss",),
}


def capabilities(model: object) -> list[str]:
    """The names of the capabilities ``model`` (an instance or a model class) implements.

    For an owned training step the model's ``loss`` is its validation loss, so a model that owns
    its step is not listed as :class:`TrainableByLoss`."""
    names = [name for name, members in _MEMBERS.items() if all(callable(getattr(model, m, None)) for m in members)]
    if "OwnsTrainingStep" in names:
        names.remove("TrainableByLoss")
    return sorted(names)
