"""Inference with a shower model: maximum-likelihood energy calibration and unfolding."""

from caloforge.inference.calibration import (
    CalibrationConfig,
    CalibrationResult,
    calibrate_file,
    likelihood_models,
    mle_calibrate,
    read_calibration,
    require_likelihood,
)
from caloforge.inference.unfolding import OmniFoldConfig, OmniFoldResult, UnfoldingError, ibu, omnifold

__all__ = [
    "CalibrationConfig",
    "OmniFoldConfig",
    "OmniFoldResult",
    "UnfoldingError",
    "ibu",
    "omnifold",
    "CalibrationResult",
    "calibrate_file",
    "likelihood_models",
    "mle_calibrate",
    "read_calibration",
    "require_likelihood",
]
