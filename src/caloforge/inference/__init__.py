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

__all__ = [
    "CalibrationConfig",
    "CalibrationResult",
    "calibrate_file",
    "likelihood_models",
    "mle_calibrate",
    "read_calibration",
    "require_likelihood",
]
