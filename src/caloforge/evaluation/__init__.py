"""CaloChallenge metrics as functions: arrays in, numbers out.

- :mod:`~caloforge.evaluation.binning`: the official histogram binnings of every feature;
- :mod:`~caloforge.evaluation.separation`: separation powers of the feature histograms;
- :mod:`~caloforge.evaluation.distances`: Fréchet and kernel physics distances (FPD, KPD);
- :mod:`~caloforge.evaluation.classifier`: the classifier test (calibrated AUC, JSD).
"""

from caloforge.evaluation.binning import FeatureBinning, binning_from_reference, official_binning
from caloforge.evaluation.classifier import (
    ClassifierConfig,
    ClassifierResult,
    classifier_test,
    high_level_inputs,
    low_level_inputs,
)
from caloforge.evaluation.distances import (
    DistanceResult,
    SampleSizeWarning,
    fpd,
    frechet_distance,
    kpd,
)
from caloforge.evaluation.separation import (
    feature_separation_powers,
    mean_separation_powers,
    separation_power,
    separation_power_counts,
)

__all__ = [
    "ClassifierConfig",
    "ClassifierResult",
    "DistanceResult",
    "FeatureBinning",
    "SampleSizeWarning",
    "binning_from_reference",
    "classifier_test",
    "feature_separation_powers",
    "fpd",
    "frechet_distance",
    "high_level_inputs",
    "kpd",
    "low_level_inputs",
    "mean_separation_powers",
    "official_binning",
    "separation_power",
    "separation_power_counts",
]
