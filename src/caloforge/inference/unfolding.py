"""Unfolding the incident-energy spectrum of a shower sample: OmniFold and iterative Bayesian unfolding.

A measured sample ("data") has showers but an unknown spectrum of incident energies; a
simulated sample ("sim") has both, drawn from some prior spectrum. Unfolding finds the
incident-energy distribution whose showers look like the data.

**OmniFold** (unbinned; :func:`omnifold`) reweights the simulation, per event, in two steps per
iteration:

1. *detector level*: a classifier separates data from sim showers (weighted by the current
   particle-level weights nu); its likelihood ratio p / (1 - p) times nu gives the step-1
   weights omega, which make the weighted sim showers look like the data;
2. *particle level*: a classifier separates the sim incident energies weighted by omega from
   the same energies weighted by nu; nu times its ratio is the new nu, now a proper function of
   E_inc alone (the step-1 weights depend on the shower's fluctuations, which data and sim do
   not share event by event).

The unfolded spectrum is the histogram of the sim energies weighted by the final nu (any
binning, after the fact). Every weight is checked: a non-finite weight stops the unfolding
with a :class:`~caloforge.errors.CaloForgeError`, and weight ratios beyond ``weight_clip`` are
clipped and counted (:attr:`OmniFoldResult.clipped`, reported by the CLI), never silently.
Uncertainties: :func:`bootstrap` repeats the whole unfolding with Poisson(1) weights on the
data and the sim events (both: the closure against a truth sees the fluctuations of the data
and of the finite simulation that defines the response) and a fresh classifier seed per
replica; :func:`seed_ensemble` reruns it with other classifier seeds alone, to report how much of
the band is the classifiers' own noise.

The classifiers are scikit-learn's histogram gradient boosting (fast on one CPU thread, takes
sample weights, needs no feature scaling). We do not use the ``omnifold`` package: it brings
TensorFlow (a second deep-learning framework of several hundred MB next to torch) for what here
is a small tabular classifier.

**Iterative Bayesian unfolding** (:func:`ibu`; D'Agostini) is the binned baseline: a response
matrix P(reco bin | truth bin) from the sim, then ``iterations`` Bayes updates starting from
the sim's truth spectrum.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from caloforge.errors import CaloForgeError, InputError

__all__ = [
    "IBUResult",
    "OmniFoldConfig",
    "OmniFoldResult",
    "UnfoldingError",
    "bootstrap",
    "detector_features",
    "ibu",
    "omnifold",
    "seed_ensemble",
    "spectrum",
]

Progress = Callable[[str, float, float], None]
#: The detector-level feature sets of :func:`detector_features`.
FEATURE_SETS = ("full", "compact", "etot")


class UnfoldingError(CaloForgeError):
    """The unfolding produced unusable weights (NaN or inf)."""


@dataclass(frozen=True)
class OmniFoldConfig:
    """Settings of :func:`omnifold` and :func:`bootstrap`.

    ``iterations``: OmniFold iterations (step 1 + step 2 each); ``folds``: cross-fitting, each
    event's weight comes from a classifier trained on the other folds (1: train and predict on
    all events; faster, may overfit); ``weight_clip``: likelihood ratios are clipped to
    [1 / weight_clip, weight_clip] (counted); ``step2``: ``"classifier"`` (the paper's step 2: a
    classifier of omega- against nu-weighted truths) or ``"regressor"`` (a gradient-boosted
    Poisson regression of omega / nu on the truth, weighted by nu: the same conditional
    expectation, without the doubled training set); the rest are the gradient-boosting settings.

    Uncertainties (:func:`bootstrap`, :func:`seed_ensemble`): ``n_bootstrap`` replicas, each
    rerunning the whole unfolding with Poisson(1) weights on the data events and, with
    ``bootstrap_sim`` (the default), on the sim events too (the sim's finite statistics define
    the response the classifiers learn), and with its own classifier seed; ``n_seeds`` further
    reruns on the unresampled samples with other classifier seeds measure the classifiers' own
    spread (seeds matter only through early stopping's validation split and the cross-fitting
    folds).
    """

    iterations: int = 4
    folds: int = 2
    max_iter: int = 50
    learning_rate: float = 0.1
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 100
    l2_regularization: float = 1.0
    early_stopping: bool = False
    weight_clip: float = 20.0
    step2: str = "classifier"
    features: str = "etot"  # detector_features(kind=...) for the drivers that compute them
    n_bootstrap: int = 25
    bootstrap_sim: bool = True  # resample the sim too (its statistics enter the result)
    n_seeds: int = 5
    seed: int = 0

    @classmethod
    def default(cls, **changes: Any) -> OmniFoldConfig:
        """4 iterations, 2-fold cross-fitting, 50 boosting rounds (no early stopping) on log10
        E_tot; 25 bootstrap replicas (data and sim) and 5 classifier seeds.

        Chosen by the closure study (``benchmarks/unfolding_study.py``) on three splits of the
        Geant4 showers: early stopping (on a 20% validation split, 10 rounds without gain)
        smoothed the result (bands narrower than the data's Poisson spread) and made it depend
        on the seed; the 45 layer energies and the shape variables closed
        worse than log10 E_tot alone with ~1,200 data showers."""
        return replace(cls(), **changes)

    @classmethod
    def fast(cls, **changes: Any) -> OmniFoldConfig:
        """For tests and quick looks: 3 iterations, no cross-fitting, 5 replicas, no seed ensemble."""
        return replace(cls(iterations=3, folds=1, n_bootstrap=5, n_seeds=0), **changes)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise InputError(f"iterations must be at least 1, got {self.iterations}")
        if self.folds < 1:
            raise InputError("folds must be at least 1")
        if not self.weight_clip > 1:
            raise InputError("weight_clip must be above 1")
        if self.n_bootstrap < 0 or self.n_seeds < 0:
            raise InputError("n_bootstrap and n_seeds must be at least 0")
        if self.features not in FEATURE_SETS:
            raise InputError(f"features must be one of {', '.join(FEATURE_SETS)}, got {self.features!r}")
        if self.step2 not in ("classifier", "regressor"):
            raise InputError(f"step2 must be 'classifier' or 'regressor', got {self.step2!r}")


@dataclass
class OmniFoldResult:
    """Per-event weights of the sim sample.

    ``weights[i]``: the particle-level weights nu after iteration i + 1 (the unfolded result is
    ``weights[-1]``); ``step1_weights[i]``: the detector-level weights omega of iteration i + 1;
    ``clipped[i]``: events whose ratio was clipped in (step 1, step 2) of iteration i + 1.

    References:
        A. Andreassen, P. T. Komiske, E. M. Metodiev, B. Nachman, J. Thaler, *OmniFold: A Method
        to Simultaneously Unfold All Observables*, Phys. Rev. Lett. 124 (2020) 182001,
        arXiv:1911.09107.
    """

    weights: np.ndarray
    step1_weights: np.ndarray
    clipped: list[tuple[int, int]]
    n_data: float
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> np.ndarray:
        return self.weights[-1]

    def notes(self) -> list[str]:
        """Human-readable notes on clipped weights (empty when none were clipped)."""
        clip = self.config.get("weight_clip")
        out = []
        for i, (a, b) in enumerate(self.clipped):
            if a or b:
                out.append(f"iteration {i + 1}: {a:,} step-1 and {b:,} step-2 weight ratios clipped to "
                           f"[1/{clip:g}, {clip:g}] (of {self.weights.shape[1]:,} events)")
        return out


# --------------------------------------------------------------------------- the classifier
def _classifier(cfg: OmniFoldConfig, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=cfg.max_iter, learning_rate=cfg.learning_rate, max_leaf_nodes=cfg.max_leaf_nodes,
        min_samples_leaf=cfg.min_samples_leaf, l2_regularization=cfg.l2_regularization,
        early_stopping=cfg.early_stopping, validation_fraction=0.2, n_iter_no_change=10, random_state=seed,
    )


def _ratio(x1: np.ndarray, w1: np.ndarray, x0: np.ndarray, w0: np.ndarray, predict_on: np.ndarray,
           cfg: OmniFoldConfig, seed: int) -> tuple[np.ndarray, int]:
    """Likelihood ratio p1(x) / p0(x) of two weighted samples at the rows of ``x0`` (``predict_on``
    indexes them, fold by fold for cross-fitting; ``x1 is x0``: the same events in both classes,
    which then share their folds); the two classes are normalised to equal total weight. Returns (clipped ratio, number clipped)."""
    n1, n0 = len(x1), len(x0)
    w1n = w1 * (n0 + n1) / (2 * max(w1.sum(), 1e-300))
    w0n = w0 * (n0 + n1) / (2 * max(w0.sum(), 1e-300))
    rng = np.random.default_rng(seed)
    fold0 = rng.integers(0, cfg.folds, n0)
    fold1 = fold0 if x1 is x0 else rng.integers(0, cfg.folds, n1)  # the same events: the same folds
    p = np.full(n0, np.nan)
    for k in range(cfg.folds):
        tr0 = fold0 != k if cfg.folds > 1 else np.ones(n0, bool)
        tr1 = fold1 != k if cfg.folds > 1 else np.ones(n1, bool)
        x = np.concatenate([x1[tr1], x0[tr0]])
        y = np.concatenate([np.ones(tr1.sum()), np.zeros(tr0.sum())])
        w = np.concatenate([w1n[tr1], w0n[tr0]])
        keep = w > 0
        clf = _classifier(cfg, seed + k)
        clf.fit(x[keep], y[keep], sample_weight=w[keep])
        rows = fold0 == k if cfg.folds > 1 else np.ones(n0, bool)
        p[rows] = clf.predict_proba(predict_on[rows])[:, 1]
    if not np.isfinite(p).all():
        raise UnfoldingError("the classifier returned non-finite probabilities")
    p = np.clip(p, 1e-12, 1 - 1e-12)
    r = p / (1 - p)
    lo, hi = 1.0 / cfg.weight_clip, cfg.weight_clip
    n_clip = int(np.sum((r < lo) | (r > hi)))
    return np.clip(r, lo, hi), n_clip


def _regressed_ratio(t: np.ndarray, target: np.ndarray, w: np.ndarray, cfg: OmniFoldConfig,
                     seed: int) -> tuple[np.ndarray, int]:
    """E_w[target | t] by gradient-boosted Poisson regression (log link: positive), cross-fitted
    like :func:`_ratio`, clipped to [1 / weight_clip, weight_clip]. Returns (ratio, number clipped)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    n = len(t)
    fold = np.random.default_rng(seed).integers(0, cfg.folds, n)
    r = np.full(n, np.nan)
    for k in range(cfg.folds):
        tr = fold != k if cfg.folds > 1 else np.ones(n, bool)
        keep = tr & (w > 0)
        reg = HistGradientBoostingRegressor(
            loss="poisson", max_iter=cfg.max_iter, learning_rate=cfg.learning_rate,
            max_leaf_nodes=cfg.max_leaf_nodes, min_samples_leaf=cfg.min_samples_leaf,
            l2_regularization=cfg.l2_regularization, early_stopping=cfg.early_stopping, validation_fraction=0.2,
            n_iter_no_change=10, random_state=seed + k,
        )
        reg.fit(t[keep], target[keep], sample_weight=w[keep] * keep.sum() / max(w[keep].sum(), 1e-300))
        rows = fold == k if cfg.folds > 1 else np.ones(n, bool)
        r[rows] = reg.predict(t[rows])
    if not np.isfinite(r).all():
        raise UnfoldingError("the step-2 regression returned non-finite ratios")
    lo, hi = 1.0 / cfg.weight_clip, cfg.weight_clip
    return np.clip(r, lo, hi), int(np.sum((r < lo) | (r > hi)))


def _check(name: str, *arrays: np.ndarray) -> None:
    for a in arrays:
        if not np.isfinite(a).all():
            raise UnfoldingError(f"{name}: {int(np.sum(~np.isfinite(a)))} non-finite values (refused)")


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or len(a) == 0:
        raise InputError(f"{name} must be a non-empty (N,) or (N, features) array, got shape {np.shape(x)}")
    _check(name, a)
    return a


def omnifold(
    sim_truth: np.ndarray,
    sim_reco: np.ndarray,
    data_reco: np.ndarray,
    config: OmniFoldConfig | None = None,
    sim_weights: np.ndarray | None = None,
    data_weights: np.ndarray | None = None,
    progress: Progress | None = None,
    task: str = "OmniFold",
) -> OmniFoldResult:
    """OmniFold: per-event weights of the sim that unfold ``data_reco`` (see the module text).

    ``sim_truth``: (N,) or (N, k) particle-level values (here log E_inc); ``sim_reco`` and
    ``data_reco``: detector-level features (N, d) and (M, d). ``sim_weights``/``data_weights``:
    initial event weights (the bootstrap's Poisson weights). The returned weights include
    ``sim_weights`` and are normalised to the data's total weight.
    """
    cfg = config or OmniFoldConfig()
    t = _as_2d(sim_truth, "sim_truth")
    xs = _as_2d(sim_reco, "sim_reco")
    xd = _as_2d(data_reco, "data_reco")
    if len(t) != len(xs):
        raise InputError(f"sim_truth has {len(t)} events but sim_reco {len(xs)}")
    if xs.shape[1] != xd.shape[1]:
        raise InputError(f"sim_reco has {xs.shape[1]} features but data_reco {xd.shape[1]}")
    w_sim = np.ones(len(t)) if sim_weights is None else np.asarray(sim_weights, dtype=np.float64)
    w_data = np.ones(len(xd)) if data_weights is None else np.asarray(data_weights, dtype=np.float64)
    _check("sim_weights", w_sim)
    _check("data_weights", w_data)
    if len(w_sim) != len(t) or len(w_data) != len(xd) or (w_sim < 0).any() or (w_data < 0).any():
        raise InputError("event weights must be non-negative, one per event")
    n_data = float(w_data.sum())
    nu = np.ones(len(t))
    weights, step1, clipped = [], [], []
    for i in range(cfg.iterations):
        if progress:
            progress(task, i, cfg.iterations)
        seed = cfg.seed + 1000 * i
        # step 1: data vs sim (weighted by nu) at detector level
        r1, c1 = _ratio(xd, w_data, xs, w_sim * nu, xs, cfg, seed)
        omega = nu * r1
        _check(f"iteration {i + 1} step 1 weights", omega)
        # step 2: sim truth weighted by omega vs by nu -> a function of the truth alone
        if cfg.step2 == "regressor":
            r2, c2 = _regressed_ratio(t, omega / nu, w_sim * nu, cfg, seed + 1)
        else:
            r2, c2 = _ratio(t, w_sim * omega, t, w_sim * nu, t, cfg, seed + 1)
        nu = nu * r2
        _check(f"iteration {i + 1} step 2 weights", nu)
        nu = nu * len(nu) / (w_sim * nu).sum()  # keep sum(w_sim * nu) = N
        weights.append(nu.copy())
        step1.append(omega * len(omega) / (w_sim * omega).sum())
        clipped.append((c1, c2))
    if progress:
        progress(task, cfg.iterations, cfg.iterations)
    scale = n_data / len(t)
    return OmniFoldResult(
        weights=np.stack(weights) * w_sim * scale, step1_weights=np.stack(step1) * w_sim * scale,
        clipped=clipped, n_data=n_data, config=asdict(cfg),
    )


def spectrum(values: np.ndarray, weights: np.ndarray | None, edges: np.ndarray) -> np.ndarray:
    """Weighted counts of ``values`` in ``edges`` (values outside go to the outer bins)."""
    v = np.clip(np.asarray(values, dtype=np.float64), edges[0], np.nextafter(edges[-1], -np.inf))
    counts, _ = np.histogram(v, bins=edges, weights=weights)
    return counts.astype(np.float64)


# ----------------------------------------------------------------------------------- IBU
@dataclass
class IBUResult:
    """Iterative Bayesian unfolding: ``unfolded`` counts per truth bin after each iteration
    (row 0: the prior, the sim's truth spectrum scaled to the data), the response matrix
    P(reco bin j | truth bin i) as ``response[j, i]``.

    References:
        G. D'Agostini, *A multidimensional unfolding method based on Bayes' theorem*,
        Nucl. Instrum. Meth. A 362 (1995) 487.
    """

    unfolded: np.ndarray
    response: np.ndarray
    truth_edges: np.ndarray
    reco_edges: np.ndarray

    @property
    def final(self) -> np.ndarray:
        return self.unfolded[-1]


def ibu(
    sim_truth: np.ndarray,
    sim_reco: np.ndarray,
    data_reco: np.ndarray,
    truth_edges: np.ndarray,
    reco_edges: np.ndarray,
    iterations: int = 4,
    sim_weights: np.ndarray | None = None,
    data_weights: np.ndarray | None = None,
) -> IBUResult:
    """D'Agostini's iterative Bayesian unfolding of one observable on a binned response matrix.

    Values outside the edges go to the outer bins (no inefficiency: every sim event is both
    generated and measured). ``iterations`` Bayes updates start from the sim's truth spectrum."""
    if iterations < 1:
        raise InputError("iterations must be at least 1")
    ws = np.ones(len(sim_truth)) if sim_weights is None else np.asarray(sim_weights, dtype=np.float64)
    wd = np.ones(len(data_reco)) if data_weights is None else np.asarray(data_weights, dtype=np.float64)
    for name, a in (("sim_truth", sim_truth), ("sim_reco", sim_reco), ("data_reco", data_reco)):
        _check(name, np.asarray(a, dtype=np.float64))
    nt, nr = len(truth_edges) - 1, len(reco_edges) - 1
    it = np.digitize(np.clip(sim_truth, truth_edges[0], np.nextafter(truth_edges[-1], -np.inf)), truth_edges) - 1
    ir = np.digitize(np.clip(sim_reco, reco_edges[0], np.nextafter(reco_edges[-1], -np.inf)), reco_edges) - 1
    joint = np.zeros((nr, nt))
    np.add.at(joint, (ir, it), ws)
    gen = joint.sum(axis=0)
    response = joint / np.where(gen > 0, gen, 1.0)
    measured = spectrum(data_reco, wd, reco_edges)
    prior = gen / max(gen.sum(), 1e-300) * wd.sum()
    out = [prior]
    for _ in range(iterations):
        folded = response @ prior  # expected reco counts per unit of the prior
        post = response * prior[None, :] / np.where(folded > 0, folded, 1.0)[:, None]  # P(i | j)
        prior = post.T @ measured
        out.append(prior)
    return IBUResult(np.stack(out), response, np.asarray(truth_edges), np.asarray(reco_edges))


# ------------------------------------------------------------------------------ bootstrap
def bootstrap(
    sim_truth: np.ndarray,
    sim_reco: np.ndarray,
    data_reco: np.ndarray,
    truth_edges: np.ndarray,
    config: OmniFoldConfig | None = None,
    ibu_reco: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    progress: Progress | None = None,
    data_truth: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Bootstrap replicas of the unfolded spectra: ``config.n_bootstrap`` reruns of the whole
    unfolding with Poisson(1) event weights on the data and, when ``bootstrap_sim``, on the sim
    (each replica also draws its own classifier seed).

    Returns ``{"omnifold": (B, bins)}``; with ``ibu_reco = (sim_obs, data_obs, reco_edges)`` also
    ``{"ibu": (B, bins)}`` (same replicas, ``config.iterations`` IBU iterations); with
    ``data_truth`` (a closure test: the data's own particle-level values) also ``{"truth": (B,
    bins)}``, the truth histogram of each replica's resampled data, so that the spread of
    ``omnifold - truth`` over the replicas is the uncertainty of the closure difference (the
    unfolded spectrum and its truth share the data's fluctuations)."""
    cfg = config or OmniFoldConfig()
    rng = np.random.default_rng(cfg.seed + 7)
    t = np.asarray(sim_truth, dtype=np.float64).reshape(len(sim_truth), -1)[:, 0]
    reps: dict[str, list[np.ndarray]] = {"omnifold": [], "ibu": [], "truth": []}
    for b in range(cfg.n_bootstrap):
        if progress:
            progress("bootstrap", b, cfg.n_bootstrap)
        wd = rng.poisson(1.0, len(data_reco)).astype(np.float64)
        ws = rng.poisson(1.0, len(t)).astype(np.float64) if cfg.bootstrap_sim else np.ones(len(t))
        res = omnifold(sim_truth, sim_reco, data_reco, replace(cfg, seed=cfg.seed + 10_000 * (b + 1)),
                       sim_weights=ws, data_weights=wd)
        reps["omnifold"].append(spectrum(t, res.final, truth_edges))
        if ibu_reco is not None:
            s_obs, d_obs, r_edges = ibu_reco
            reps["ibu"].append(ibu(t, s_obs, d_obs, truth_edges, r_edges, cfg.iterations, ws, wd).final)
        if data_truth is not None:
            reps["truth"].append(spectrum(np.asarray(data_truth, dtype=np.float64).reshape(-1), wd, truth_edges))
    if progress:
        progress("bootstrap", cfg.n_bootstrap, cfg.n_bootstrap)
    return {k: np.stack(v) for k, v in reps.items() if v}


def seed_ensemble(
    sim_truth: np.ndarray,
    sim_reco: np.ndarray,
    data_reco: np.ndarray,
    truth_edges: np.ndarray,
    config: OmniFoldConfig | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """``config.n_seeds`` reruns of :func:`omnifold` on the unresampled samples, each with another
    classifier seed: (n_seeds, bins) unfolded spectra whose spread is the classifiers' own
    (training) noise, a part of what :func:`bootstrap` measures."""
    cfg = config or OmniFoldConfig()
    t = np.asarray(sim_truth, dtype=np.float64).reshape(len(sim_truth), -1)[:, 0]
    out = []
    for k in range(cfg.n_seeds):
        if progress:
            progress("classifier seeds", k, cfg.n_seeds)
        res = omnifold(sim_truth, sim_reco, data_reco, replace(cfg, seed=cfg.seed + 500 + 997 * k))
        out.append(spectrum(t, res.final, truth_edges))
    if progress:
        progress("classifier seeds", cfg.n_seeds, cfg.n_seeds)
    return np.stack(out) if out else np.zeros((0, len(truth_edges) - 1))


# ------------------------------------------------------------------------------ features
def detector_features(e_inc: np.ndarray, showers: np.ndarray, geometry: Any, kind: str = "full") -> np.ndarray:
    """Detector-level inputs of the classifiers of showers (MeV), after the readout threshold; the
    first column is always log10 E_tot (IBU's observable). The incident energy is *not* among
    them (it is what is unfolded).

    ``kind``: ``"full"`` (N, layers + 3): ``[log10 E_tot, log10(E_layer + 1e-3 MeV) per layer, the
    layer-energy-weighted mean of the centre and of the width in r / 100]``; ``"compact"`` (N, 5):
    ``[log10 E_tot, mean and spread of the shower depth in layers / layers, the mean centre and
    width in r / 100]`` (the longitudinal and lateral shape in a few numbers; what the closure study
    in ``benchmarks/unfolding_study.py`` found best on 1,200 data showers, where 48 features leave
    the classifier more room to fit fluctuations); ``"etot"`` (N, 1): log10 E_tot alone."""
    from caloforge.features import compute_features

    if kind not in FEATURE_SETS:
        raise InputError(f"feature set must be one of {', '.join(FEATURE_SETS)}, got {kind!r}")
    f = compute_features(e_inc, showers, geometry)
    e_layer = f.e_layer.astype(np.float64)
    w = e_layer / np.maximum(e_layer.sum(axis=1, keepdims=True), 1e-12)
    log_etot = np.log10(f.e_tot.astype(np.float64) + 1e-3)[:, None]
    if kind == "etot":
        return log_etot
    r_centre = (w * f.ec_r).sum(axis=1, keepdims=True) / 1e2
    r_width = (w * f.width_r).sum(axis=1, keepdims=True) / 1e2
    if kind == "compact":
        layers = np.arange(e_layer.shape[1], dtype=np.float64)
        depth = (w * layers).sum(axis=1)
        spread = np.sqrt(np.clip((w * (layers - depth[:, None]) ** 2).sum(axis=1), 0.0, None))
        n = float(e_layer.shape[1])
        return np.concatenate([log_etot, (depth / n)[:, None], (spread / n)[:, None], r_centre, r_width], axis=1)
    return np.concatenate([log_etot, np.log10(e_layer + 1e-3), r_centre, r_width], axis=1)


def chi2(unfolded: np.ndarray, truth: np.ndarray, sigma: np.ndarray, min_count: float = 0.0) -> tuple[float, int]:
    """(chi2, ndf) of ``unfolded`` against ``truth`` with the unfolding's uncertainty ``sigma``,
    over the bins whose truth count is at least ``min_count`` (and sigma > 0)."""
    use = (truth >= min_count) & (sigma > 0)
    return float(np.sum(((unfolded - truth)[use] / sigma[use]) ** 2)), int(use.sum())


def log_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """``bins`` log-spaced bins from ``lo`` to ``hi``."""
    if not (0 < lo < hi) or bins < 1:
        raise InputError(f"need 0 < low < high and at least one bin, got {lo:g}, {hi:g}, {bins}")
    return np.exp(np.linspace(math.log(lo), math.log(hi), bins + 1))


def write_weights(path: str | Path, result: OmniFoldResult, sim_energies: np.ndarray,
                  attrs: dict[str, Any] | None = None) -> Path:
    """Write the per-event weights (final and per iteration) next to the sim's incident energies,
    atomically."""
    import h5py

    from caloforge._atomic import atomic_write

    def _write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("weights", data=result.final)
            f.create_dataset("weights_per_iteration", data=result.weights)
            f.create_dataset("step1_weights_per_iteration", data=result.step1_weights)
            f.create_dataset("incident_energies", data=np.asarray(sim_energies, dtype=np.float64))
            f.create_dataset("clipped", data=np.asarray(result.clipped, dtype=np.int64).reshape(-1, 2))
            f.attrs["n_data"] = result.n_data
            for k, v in result.config.items():
                f.attrs[f"config_{k}"] = v
            for k, v in (attrs or {}).items():
                if v is not None:
                    f.attrs[k] = v

    return atomic_write(path, _write)
