"""Flow-matching building blocks shared by the models: probability paths and ODE solvers.

The path and the solver are separate objects, as in torchcfm and facebookresearch/flow_matching:
a model's loss asks the path for ``(x_t, u_t)`` and regresses its velocity network on ``u_t``;
its sampler integrates the network with a solver.
"""

from caloforge.flowmatching.path import ProbabilityPath, StraightPath
from caloforge.flowmatching.solvers import EVALS_PER_STEP, SOLVERS, check_solver, odeint

__all__ = ["EVALS_PER_STEP", "SOLVERS", "ProbabilityPath", "StraightPath", "check_solver", "odeint"]
