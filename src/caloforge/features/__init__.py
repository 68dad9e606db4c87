"""CaloChallenge high-level features of showers (official definitions, vectorised, chunked)."""

from caloforge.features.highlevel import (
    ShowerFeatures,
    apply_threshold,
    compute_features,
    compute_features_streamed,
)

__all__ = ["ShowerFeatures", "apply_threshold", "compute_features", "compute_features_streamed"]
