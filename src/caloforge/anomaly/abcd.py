"""The ABCD background estimate with two (nearly) independent anomaly scores.

Cuts on both scores split the showers into four regions::

                 score 2 <= c2     score 2 > c2
    score 1 > c1      CR1              SR
    score 1 <= c1     CR2              CR3

If the two scores are independent on background, the background in the signal region is
predicted from the three control regions as ``N_SR = N_CR1 x N_CR3 / N_CR2``, with the relative
statistical error ``sqrt(1/N_CR1 + 1/N_CR2 + 1/N_CR3)`` (the Poisson errors of all three control
regions, propagated to first order). The cuts are placed at quantiles of the sample analysed
(data-driven: each cut keeps ``sqrt(keep)`` of the showers, so the signal region holds a
fraction ``keep`` of independent background).

:func:`closure` applies it to background only (predicted against observed, and the pull
``(observed - predicted) / sqrt(observed + error^2)``: the observed count's own Poisson variance
is in the denominator, so the pull's variance is that of the log odds ratio of the 2x2 table,
``1/N_SR + 1/N_CR1 + 1/N_CR2 + 1/N_CR3``; with quantile cuts the margins are fixed, and to first
order this is still the variance of ``observed - predicted``). One pull is one draw of a unit
normal: :func:`closure_spread` repeats the closure over disjoint subsets of the background
(independent pulls: their mean should be 0 within ``std / sqrt(K)`` and their spread 1) and
over bootstrap replicas of all of it (their spread checks the stated error; their mean is the
full sample's pull). :func:`inject` adds signal showers at
given fractions of the background and reports the excess in the signal region over the
prediction and its significance ``(observed - predicted) / sqrt(predicted + error^2)`` (the
prediction is made from the contaminated control regions, as it would be on data).

References:
    Mikuni, Nachman, Shih, *Online-compatible unsupervised nonresonant anomaly detection*, PRD
    105 (2022) 055006 (ABCD with a DisCo-decorrelated autoencoder pair); Kasieczka, Nachman,
    Schwartz, Shih, *ABCDisCo*, PRD 103 (2021) 035021.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from caloforge.errors import InputError

__all__ = ["ABCDResult", "ClosureSpread", "InjectionResult", "abcd", "abcd_cuts", "abcd_study", "closure",
           "closure_spread", "inject"]


@dataclass
class ABCDResult:
    """Counts of the four regions, the prediction of the signal region and the comparison."""

    cut1: float
    cut2: float
    sr: int
    cr1: int
    cr2: int
    cr3: int
    predicted: float
    predicted_error: float
    observed: int
    pull: float  # (observed - predicted) / sqrt(observed + predicted_error^2)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def abcd_cuts(score1: np.ndarray, score2: np.ndarray, keep: float = 0.01) -> tuple[float, float]:
    """Cuts at the (1 - sqrt(keep)) quantile of each score (so each keeps sqrt(keep))."""
    if not 0 < keep < 1:
        raise InputError(f"the fraction kept in the signal region must lie in (0, 1), got {keep}")
    q = 1.0 - math.sqrt(keep)
    return float(np.quantile(score1, q)), float(np.quantile(score2, q))


def abcd(score1: np.ndarray, score2: np.ndarray, cut1: float, cut2: float) -> ABCDResult:
    """The ABCD prediction of the signal region from the control regions (see the module)."""
    s1, s2 = np.asarray(score1, dtype=np.float64), np.asarray(score2, dtype=np.float64)
    if s1.shape != s2.shape or s1.ndim != 1:
        raise InputError(f"the two scores must be 1-D arrays of the same length, got {s1.shape} and {s2.shape}")
    p1, p2 = s1 > cut1, s2 > cut2
    sr, cr1 = int(np.sum(p1 & p2)), int(np.sum(p1 & ~p2))
    cr2, cr3 = int(np.sum(~p1 & ~p2)), int(np.sum(~p1 & p2))
    if min(cr1, cr2, cr3) == 0:
        raise InputError(f"a control region is empty (CR1 {cr1}, CR2 {cr2}, CR3 {cr3}): loosen the cuts")
    pred = cr1 * cr3 / cr2
    err = pred * math.sqrt(1 / cr1 + 1 / cr2 + 1 / cr3)
    pull = (sr - pred) / math.sqrt(sr + err**2) if sr + err**2 > 0 else 0.0
    return ABCDResult(cut1, cut2, sr, cr1, cr2, cr3, pred, err, sr, pull)


def closure(score1: np.ndarray, score2: np.ndarray, keep: float = 0.01, condition: np.ndarray | None = None,
            n_bins: int = 1) -> ABCDResult:
    """ABCD on background only with data-driven cuts keeping ``keep`` of it in the signal region:
    the prediction should agree with the observed count within its error.

    With ``condition`` (one value per shower, e.g. log E_inc) and ``n_bins`` > 1: ABCD in each of
    ``n_bins`` quantile bins of it (cuts at each bin's own quantiles), the counts and predictions
    summed, the errors added in quadrature (the returned cuts are NaN). This needs the scores to
    be independent only *within* each bin: two scores that each drift with the condition are
    correlated over all showers, however independent at fixed condition."""
    if condition is None or n_bins <= 1:
        c1, c2 = abcd_cuts(score1, score2, keep)
        return abcd(score1, score2, c1, c2)
    s1, s2 = np.asarray(score1, dtype=np.float64), np.asarray(score2, dtype=np.float64)
    x = np.asarray(condition, dtype=np.float64).reshape(-1)
    if len(x) != len(s1):
        raise InputError(f"the condition has {len(x)} values for {len(s1)} showers")
    edges = np.quantile(x, np.linspace(0, 1, n_bins + 1)[1:-1])
    label = np.searchsorted(edges, x, side="right")
    if np.bincount(label, minlength=n_bins).min() * keep < 1:
        raise InputError(f"a bin of the condition expects fewer than one shower in its signal region: use fewer "
                         f"than {n_bins} bins")
    parts = [closure(s1[label == b], s2[label == b], keep) for b in range(n_bins)]
    sr, cr1, cr2, cr3 = (sum(getattr(r, k) for r in parts) for k in ("sr", "cr1", "cr2", "cr3"))
    pred = float(sum(r.predicted for r in parts))
    err = math.sqrt(sum(r.predicted_error**2 for r in parts))
    pull = (sr - pred) / math.sqrt(sr + err**2) if sr + err**2 > 0 else 0.0
    return ABCDResult(math.nan, math.nan, sr, cr1, cr2, cr3, pred, err, sr, pull)


@dataclass
class ClosureSpread:
    """Closure pulls over ``subsets`` disjoint subsets and ``bootstrap`` replicas of a background."""

    keep: float
    subsets: int
    subset_size: int
    subset_pulls: list[float]
    bootstrap_pulls: list[float]

    @staticmethod
    def _stats(x: Sequence[float]) -> tuple[float, float]:
        a = np.asarray(x, dtype=np.float64)
        return (float(a.mean()), float(a.std(ddof=1))) if len(a) > 1 else (float(a.mean()) if len(a) else math.nan,
                                                                           math.nan)

    @property
    def subset_mean(self) -> float:
        return self._stats(self.subset_pulls)[0]

    @property
    def subset_std(self) -> float:
        return self._stats(self.subset_pulls)[1]

    @property
    def subset_mean_error(self) -> float:
        """The standard error of the mean subset pull, ``std / sqrt(K)``."""
        return self.subset_std / math.sqrt(len(self.subset_pulls)) if len(self.subset_pulls) > 1 else math.nan

    @property
    def bootstrap_mean(self) -> float:
        return self._stats(self.bootstrap_pulls)[0]

    @property
    def bootstrap_std(self) -> float:
        return self._stats(self.bootstrap_pulls)[1]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "subset_mean": self.subset_mean, "subset_std": self.subset_std,
                "subset_mean_error": self.subset_mean_error, "bootstrap_mean": self.bootstrap_mean,
                "bootstrap_std": self.bootstrap_std}


def closure_spread(score1: np.ndarray, score2: np.ndarray, keep: float = 0.01, subsets: int = 4, bootstrap: int = 0,
                   seed: int = 0, condition: np.ndarray | None = None, n_bins: int = 1) -> ClosureSpread:
    """The closure repeated on ``subsets`` disjoint random subsets of the background (each with its
    own data-driven cuts; independent pulls) and on ``bootstrap`` replicas of all of it (drawn
    with replacement; pulls correlated with the full sample's, their spread checks the error);
    ``condition``, ``n_bins``: ABCD in bins of a condition (see :func:`closure`)."""
    s1, s2 = np.asarray(score1, dtype=np.float64), np.asarray(score2, dtype=np.float64)
    if s1.shape != s2.shape or s1.ndim != 1:
        raise InputError(f"the two scores must be 1-D arrays of the same length, got {s1.shape} and {s2.shape}")
    if subsets < 1 or bootstrap < 0:
        raise InputError(f"need at least one subset and a non-negative number of replicas, got {subsets}, {bootstrap}")
    rng = np.random.default_rng(seed)
    size = len(s1) // subsets
    if size * keep < 1:
        raise InputError(f"{subsets} subsets of {size} showers expect fewer than one in the signal region at keep "
                         f"{keep}: use fewer subsets")
    order = rng.permutation(len(s1))
    x = None if condition is None else np.asarray(condition, dtype=np.float64).reshape(-1)
    subset_pulls = [closure(s1[idx], s2[idx], keep, None if x is None else x[idx], n_bins).pull
                    for idx in (order[k * size : (k + 1) * size] for k in range(subsets))]
    boot = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(s1), len(s1))
        boot.append(closure(s1[idx], s2[idx], keep, None if x is None else x[idx], n_bins).pull)
    return ClosureSpread(keep, subsets, size, subset_pulls, boot)


@dataclass
class InjectionResult:
    """ABCD on background plus injected signal."""

    fraction: float  # signal showers / background showers
    n_signal: int
    signal_in_sr: int
    result: ABCDResult
    excess: float  # observed - predicted in the signal region
    significance: float  # excess / sqrt(predicted + error^2)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["result"] = self.result.as_dict()
        return d


def inject(background: tuple[np.ndarray, np.ndarray], signal: tuple[np.ndarray, np.ndarray],
           fractions: Sequence[float] = (0.001, 0.01, 0.1), keep: float = 0.01, seed: int = 0) -> list[InjectionResult]:
    """For each fraction f: add round(f x N_background) signal showers (drawn without
    replacement from ``signal``, with replacement when it has fewer), place the cuts on the mixed
    sample and compare the signal region with the prediction of its control regions."""
    b1, b2 = (np.asarray(x, dtype=np.float64) for x in background)
    s1, s2 = (np.asarray(x, dtype=np.float64) for x in signal)
    if len(s1) != len(s2) or len(b1) != len(b2):
        raise InputError("each pair of scores must have the same length")
    rng = np.random.default_rng(seed)
    out = []
    for f in fractions:
        if not 0 < f < 1:
            raise InputError(f"signal fraction must lie in (0, 1), got {f}")
        n = max(1, int(round(f * len(b1))))
        pick = rng.choice(len(s1), n, replace=n > len(s1))
        m1, m2 = np.concatenate([b1, s1[pick]]), np.concatenate([b2, s2[pick]])
        c1, c2 = abcd_cuts(m1, m2, keep)
        r = abcd(m1, m2, c1, c2)
        in_sr = int(np.sum((s1[pick] > c1) & (s2[pick] > c2)))
        excess = r.observed - r.predicted
        out.append(InjectionResult(f, n, in_sr, r, excess, excess / math.sqrt(r.predicted + r.predicted_error**2)))
    return out


def abcd_study(background: tuple[np.ndarray, np.ndarray], signal: tuple[np.ndarray, np.ndarray] | None = None,
               keep: float = 0.01, fractions: Sequence[float] = (0.001, 0.01, 0.1), seed: int = 0,
               subsets: int = 1, bootstrap: int = 0) -> dict[str, Any]:
    """Closure on background (at ``keep`` and at 2x, 5x it), the scores' correlation on
    background (dCorr^2, the DisCo measure, and Pearson), and signal injection when ``signal``;
    with ``subsets`` > 1 or ``bootstrap`` > 0 also the spread of the closure pulls at each of
    these fractions (:func:`closure_spread`, under ``closure_spread``)."""
    from caloforge.anomaly.scores import distance_correlation

    b1, b2 = (np.asarray(x, dtype=np.float64) for x in background)
    out: dict[str, Any] = {
        "n_background": len(b1), "keep": keep,
        "correlation": {"disco": distance_correlation(b1, b2), "pearson": float(np.corrcoef(b1, b2)[0, 1])},
        "closure": [dict(keep=k, **closure(b1, b2, k).as_dict()) for k in sorted({keep, min(2 * keep, 0.5), min(5 * keep, 0.5)})],
    }
    if subsets > 1 or bootstrap > 0:
        out["closure_spread"] = [closure_spread(b1, b2, c["keep"], subsets, bootstrap, seed).as_dict()
                                 for c in out["closure"]]
    if signal is not None:
        out["n_signal"] = len(signal[0])
        out["injection"] = [r.as_dict() for r in inject((b1, b2), signal, fractions, keep, seed)]
    return out
