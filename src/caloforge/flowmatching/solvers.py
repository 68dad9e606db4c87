"""Fixed-step ODE solvers for sampling flow-matching models (and for ONNX export).

``odeint(f, x, steps, solver)`` integrates ``dx/dt = f(x, t)`` from t = 0 to 1 in ``steps`` equal
steps of Euler, midpoint, Heun or classical Runge-Kutta (RK4). The loop is plain Python over
tensors, so tracing unrolls it into a fixed graph. ``EVALS_PER_STEP`` gives the cost of a step in
evaluations of ``f``.

>>> import torch
>>> x1 = odeint(lambda x, t: -x, torch.ones(1, 1), steps=20, solver="rk4")
>>> abs(float(x1) - float(torch.exp(torch.tensor(-1.0)))) < 1e-6
True

References:
    Butcher, *Numerical Methods for Ordinary Differential Equations*, 3rd ed., Wiley (2016).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from caloforge.errors import InputError

SOLVERS = ("euler", "midpoint", "heun", "rk4")
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def check_solver(solver: str, steps: int) -> None:
    """Raise :class:`~caloforge.errors.InputError` for an unknown solver or fewer than one step."""
    if solver not in SOLVERS:
        raise InputError(f"unknown ODE solver {solver!r}; choose from {', '.join(SOLVERS)}")
    if steps < 1:
        raise InputError(f"solver steps must be >= 1, got {steps}")


def odeint(f: Callable[[Tensor, Tensor], Tensor], x: Tensor, steps: int, solver: str) -> Tensor:
    """Integrate dx/dt = f(x, t) from t = 0 to 1 with ``steps`` equal steps of ``solver``.

    ``t`` is passed as a (B,) tensor; the loop unrolls into a fixed graph (ONNX export)."""
    check_solver(solver, steps)
    h = 1.0 / steps
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(steps):
        t = ones * (i * h)
        if solver == "euler":
            x = x + h * f(x, t)
        elif solver == "midpoint":
            k1 = f(x, t)
            x = x + h * f(x + 0.5 * h * k1, t + 0.5 * h)
        elif solver == "heun":
            k1 = f(x, t)
            k2 = f(x + h * k1, t + h)
            x = x + 0.5 * h * (k1 + k2)
        else:  # rk4
            k1 = f(x, t)
            k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = f(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = f(x + h * k3, t + h)
            x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x
