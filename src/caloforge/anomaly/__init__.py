"""Anomaly detection on calorimeter showers: scores, their evaluation, and an ABCD background estimate.

* :mod:`caloforge.anomaly.scores`: per-shower scores conditional on E_inc: ``-log p`` of a model
  with a likelihood, or a model's own score (the ``ae`` autoencoder's reconstruction error, the
  two decorrelated errors of ``ae-pair``); streamed over files and stored (``caloforge anomaly score``);
* :mod:`caloforge.anomaly.evaluation`: ROC, AUC, SIC and signal efficiencies at fixed background
  efficiency, per bin of a signal property, with plots and an HTML page (``caloforge anomaly evaluate``);
* :mod:`caloforge.anomaly.abcd`: the ABCD estimate of the background passing cuts on two
  independent scores, its closure and signal injection (``caloforge anomaly abcd``).
"""

from caloforge.anomaly.abcd import (
    ABCDResult,
    ClosureSpread,
    InjectionResult,
    abcd,
    abcd_cuts,
    closure,
    closure_spread,
    inject,
)
from caloforge.anomaly.evaluation import AnomalyEvaluation, ScoreMetrics, evaluate_scores, write_anomaly_report
from caloforge.anomaly.scores import (
    LikelihoodScore,
    ModelScore,
    Score,
    ScoreSet,
    distance_correlation,
    make_score,
    read_scores,
    score_file,
    write_scores,
)

__all__ = [
    "ABCDResult",
    "AnomalyEvaluation",
    "ClosureSpread",
    "InjectionResult",
    "LikelihoodScore",
    "ModelScore",
    "Score",
    "ScoreMetrics",
    "ScoreSet",
    "abcd",
    "abcd_cuts",
    "closure",
    "closure_spread",
    "distance_correlation",
    "evaluate_scores",
    "inject",
    "make_score",
    "read_scores",
    "score_file",
    "write_anomaly_report",
    "write_scores",
]
