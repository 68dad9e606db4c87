"""Log likelihoods of flow-matching models: the instantaneous change of variables along the ODE.

A flow ``dx/dt = v(x, t)`` carrying Gaussian noise ``x_0 ~ N(0, I)`` at t = 0 to data at t = 1
changes the log density along a trajectory by ``d log p(x_t) / dt = -div v(x_t, t)``, so

    log p_1(x_1) = log N(x_0; 0, I) - integral_0^1 div v(x_t, t) dt,

with ``x_0`` found by integrating the ODE backwards from ``x_1``. :func:`ode_log_prob` integrates
the state and the divergence together (fixed-step RK4 or Euler, backwards in time) with the
divergence either exact (one backward pass per dimension: for small dimensions) or estimated
with Hutchinson's trace estimator ``E[eps^T (dv/dx) eps]`` (Rademacher probes, fixed along the
trajectory as in FFJORD; one backward pass per probe), which returns the estimator's spread per
sample (the standard deviation over probes).

:class:`ODELikelihoodConfig` holds the settings a model's ``log_prob`` uses (``cfm`` adds its
preprocessing's log-Jacobians and the dequantisation bound, see
:meth:`caloforge.models.cfm.ConditionalFlowMatching.log_prob`).

References:
    Chen, Rubanova, Bettencourt, Duvenaud, *Neural Ordinary Differential Equations*, NeurIPS
    2018 (instantaneous change of variables); Grathwohl, Chen, Bettencourt, Sutskever,
    Duvenaud, *FFJORD*, ICLR 2019 (Hutchinson's estimator along the ODE); Hutchinson, Commun.
    Stat. Simul. Comput. 19 (1990) 433.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from caloforge.config import Config, preset
from caloforge.errors import InputError

__all__ = ["ODELikelihoodConfig", "ODELogProb", "divergence", "ode_log_prob"]

Velocity = Callable[[Tensor, Tensor], Tensor]  # (x (B, D), t (B,)) -> v (B, D)


def divergence(v_fn: Velocity, x: Tensor, t: Tensor, probes: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(v, div)`` at (x, t): exact ``div`` (B,) when ``probes`` is None, else Hutchinson
    estimates (K, B), one per probe of ``probes`` (K, B, D)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = v_fn(x, t)
        if probes is None:
            div = torch.zeros(x.shape[0], dtype=v.dtype, device=v.device)
            for i in range(x.shape[1]):
                (g,) = torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)
                div = div + g[:, i]
        else:
            rows = []
            for k in range(probes.shape[0]):
                (g,) = torch.autograd.grad(v, x, grad_outputs=probes[k], retain_graph=k < probes.shape[0] - 1)
                rows.append((g * probes[k]).sum(dim=1))
            div = torch.stack(rows)
    return v.detach(), div.detach()


@dataclass(frozen=True)
class ODELikelihoodConfig(Config):
    """How a flow-matching model integrates its log likelihood.

    ``estimator``: ``exact`` (one backward pass per dimension), ``hutchinson`` (``probes``
    Rademacher probes, one backward pass each) or ``auto`` (exact up to ``exact_max_dim``
    dimensions, Hutchinson above: the 45 layer energies of DS2 exactly, its 6,480 voxels by
    Hutchinson). ``steps`` of ``solver`` (rk4: 4 velocity evaluations a step) backwards in time."""

    steps: int = 8
    solver: Literal["euler", "rk4"] = "rk4"
    estimator: Literal["auto", "exact", "hutchinson"] = "auto"
    probes: int = 4
    exact_max_dim: int = 64

    def validate(self) -> None:
        if self.steps < 1 or self.probes < 1 or self.exact_max_dim < 0:
            raise self._error("steps and probes must be at least 1, exact_max_dim not negative")

    @classmethod
    @preset
    def exact(cls) -> ODELikelihoodConfig:
        """Exact divergence everywhere (tiny models and tests: D backward passes per step)."""
        return cls(estimator="exact")

    @classmethod
    @preset
    def fast(cls) -> ODELikelihoodConfig:
        """Fewer steps and probes: about a quarter of the default's cost, noisier."""
        return cls(steps=4, probes=2)

    def estimator_for(self, dim: int) -> Literal["exact", "hutchinson"]:
        """The estimator used for a flow of ``dim`` dimensions."""
        if self.estimator == "auto":
            return "exact" if dim <= self.exact_max_dim else "hutchinson"
        return self.estimator


@dataclass
class ODELogProb:
    """log p(x_1) per sample, and the Hutchinson estimator's spread (None when exact)."""

    log_prob: Tensor  # (B,)
    spread: Tensor | None  # (B,) standard deviation over probes of the single-probe estimates
    x0: Tensor  # (B, D) the noise the samples map back to


def ode_log_prob(v_fn: Velocity, x1: Tensor, steps: int = 32, solver: Literal["euler", "rk4"] = "rk4",
                 estimator: Literal["exact", "hutchinson"] = "exact", probes: int = 4,
                 generator: torch.Generator | None = None) -> ODELogProb:
    """log p_1(x_1) of the flow ``v_fn`` with a standard normal at t = 0 (see the module)."""
    if steps < 1 or solver not in ("euler", "rk4"):
        raise InputError(f"need steps >= 1 and solver euler or rk4, got {steps}, {solver!r}")
    if estimator not in ("exact", "hutchinson") or probes < 1:
        raise InputError(f"estimator must be exact or hutchinson (probes >= 1), got {estimator!r}")
    b, d = x1.shape
    eps = None
    if estimator == "hutchinson":  # Rademacher probes, the same along the whole trajectory
        eps = torch.randint(0, 2, (probes, b, d), generator=generator, device=x1.device).to(x1.dtype) * 2 - 1
    k = 1 if eps is None else probes

    def f(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        v, div = divergence(v_fn, x, torch.full((b,), t, dtype=x.dtype, device=x.device), eps)
        return v, div.reshape(k, b)

    x, integral, h = x1.detach(), torch.zeros(k, b, dtype=x1.dtype, device=x1.device), 1.0 / steps
    for i in range(steps):  # backwards from t = 1 to 0: x(t - h) = x(t) - h v
        t = 1.0 - i * h
        if solver == "euler":
            v, div = f(x, t)
            x, integral = x - h * v, integral + h * div
        else:
            v1, d1 = f(x, t)
            v2, d2 = f(x - 0.5 * h * v1, t - 0.5 * h)
            v3, d3 = f(x - 0.5 * h * v2, t - 0.5 * h)
            v4, d4 = f(x - h * v3, t - h)
            x = x - h / 6 * (v1 + 2 * v2 + 2 * v3 + v4)
            integral = integral + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    log_p0 = -0.5 * (x * x).sum(dim=1) - 0.5 * d * math.log(2 * math.pi)
    estimates = log_p0[None] - integral  # (K, B)
    spread = estimates.std(dim=0) if k > 1 else None
    return ODELogProb(estimates.mean(dim=0), spread, x)
