"""Anomaly scores: one number (or a few) per shower, larger for less normal showers.

A :class:`Score` turns a batch ``(e_inc (B,), showers (B, voxels) MeV)`` into a ``(B, K)`` array
of K named scores, conditional on each shower's incident energy. Two kinds exist:

* :class:`LikelihoodScore`: ``-log p(shower | E_inc)`` of a model with a tractable likelihood
  (:class:`~caloforge.models.capabilities.HasLikelihood`), a density in the showers' MeV
  (preprocessing Jacobians included by the model's ``log_prob``; for ``cfm`` an ODE estimate
  of the dequantisation lower bound, with its standard error per shower: ``ScoreSet.errors``);
* :class:`ModelScore`: a model's own score (:class:`~caloforge.models.capabilities.
  HasAnomalyScore`), e.g. the reconstruction error of the ``ae`` family or the two errors of
  the DisCo-decorrelated ``ae-pair``.

:func:`score_file` streams a shower file (or a row range of it) through a score;
:func:`write_scores` / :func:`read_scores` store the result (``caloforge anomaly score``).

Raw scores depend strongly on the incident energy (a 100 GeV shower has ten times more hit
voxels than a 1 GeV one, and so a much larger ``-log p``): a cut on them selects energies more
than anomalies. :class:`EnergyCalibration` standardises a score at fixed energy,
``z = (score - m(log E)) / w(log E)``, with ``m`` and ``w`` smooth functions fitted on a
*background* calibration sample (never the showers evaluated); :func:`calibrate` adds these
``<name>_z`` scores to a :class:`ScoreSet`.

>>> from caloforge.geometry import get_geometry
>>> from caloforge.models import build_model
>>> s = make_score(build_model("voxel-lognormal", get_geometry("ds2")))
>>> s.names, s.kind
(('nll',), 'likelihood')
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from torch import Tensor

from caloforge._atomic import atomic_write
from caloforge.data import ShowerFile
from caloforge.errors import InputError
from caloforge.models.base import ShowerModel
from caloforge.models.capabilities import EstimatesLikelihood, HasAnomalyScore, HasLikelihood

__all__ = [
    "EnergyCalibration",
    "LikelihoodScore",
    "ModelScore",
    "Score",
    "ScoreSet",
    "distance_correlation",
    "calibrate",
    "make_score",
    "read_scores",
    "score_file",
    "write_scores",
]

ScoreKind = Literal["auto", "likelihood", "model"]
#: Format version of the score files.
SCORES_FORMAT = 1


class Score(ABC):
    """Maps a batch of showers to K named anomaly scores (larger: more anomalous)."""

    #: Names of the K scores (the columns of :meth:`__call__`'s result).
    names: tuple[str, ...]
    #: What kind of score this is (``likelihood``, ``model``), recorded in score files.
    kind: str

    @abstractmethod
    def __call__(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """(B, K) float64 scores of showers (B, voxels) MeV given e_inc (B,) MeV."""

    def with_errors(self, e_inc: Tensor, showers: Tensor) -> tuple[Tensor, Tensor | None]:
        """The scores (B, K) and, for estimated scores, their standard errors (B, K) (else None)."""
        return self(e_inc, showers), None

    def describe(self) -> str:
        return f"{self.kind} score ({', '.join(self.names)})"


class LikelihoodScore(Score):
    """``-log p(shower | E_inc)``: the negative log likelihood of a model that has one.

    References:
        Krause, Nachman, Pang, Shih, Zhu, *Anomaly detection with flow-based fast calorimeter
        simulators*, arXiv:2312.11618 (the surrogate's likelihood as an anomaly score).
    """

    kind = "likelihood"

    def __init__(self, model: ShowerModel, name: str = "nll", options: Any = None):
        if not isinstance(model, HasLikelihood):
            raise InputError(f"model {model.name!r} has no likelihood (it does not implement log_prob; a one-step "
                             "map such as cfm-student has no tractable one); models with one: copula, voxel-lognormal, cfm; "
                             "or use a model with its own anomaly score (ae, ae-pair)")
        if options is not None and not isinstance(model, EstimatesLikelihood):
            raise InputError(f"model {model.name!r} computes its likelihood exactly: it takes no estimator options")
        self.model = model
        self.names = (name,)
        self.options = options  # the estimator settings of an EstimatesLikelihood model (None: its defaults)

    @torch.no_grad()
    def __call__(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        return self.with_errors(e_inc, showers)[0]

    @torch.no_grad()
    def with_errors(self, e_inc: Tensor, showers: Tensor) -> tuple[Tensor, Tensor | None]:
        if isinstance(self.model, EstimatesLikelihood):
            lp, err = self.model.log_prob_estimate(e_inc, showers, self.options)
            return -lp.to(torch.float64).reshape(-1, 1), err.to(torch.float64).reshape(-1, 1)
        assert isinstance(self.model, HasLikelihood)
        return -self.model.log_prob(e_inc, showers).to(torch.float64).reshape(-1, 1), None


class ModelScore(Score):
    """The model's own anomaly score(s) (:class:`~caloforge.models.capabilities.HasAnomalyScore`).

    References:
        Farina, Nakai, Shih, *Searching for New Physics with Deep Autoencoders*, PRD 101 (2020)
        075021 (reconstruction error); Mikuni, Nachman, Shih, PRD 105 (2022) 055006 (a
        decorrelated pair of scores).
    """

    kind = "model"

    def __init__(self, model: ShowerModel):
        if not isinstance(model, HasAnomalyScore):
            raise InputError(f"model {model.name!r} has no anomaly score of its own (no anomaly_score method); "
                             "use --kind likelihood for a model with a likelihood")
        self.model = model
        self.names = tuple(model.score_names())

    @torch.no_grad()
    def __call__(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        assert isinstance(self.model, HasAnomalyScore)
        out = self.model.anomaly_score(e_inc, showers).to(torch.float64)
        return out.reshape(len(e_inc), -1)


def make_score(model: ShowerModel, kind: ScoreKind = "auto", likelihood_options: Any = None) -> Score:
    """The score of ``model``: ``likelihood`` (-log p), ``model`` (its own anomaly score), or
    ``auto`` (its own score when it has one, else its likelihood). ``likelihood_options``: the
    estimator settings of a model whose likelihood is an estimate (e.g.
    :class:`~caloforge.flowmatching.likelihood.ODELikelihoodConfig` for ``cfm``)."""
    if likelihood_options is not None and kind != "likelihood":
        raise InputError("likelihood estimator options need --kind likelihood")
    if kind == "likelihood":
        return LikelihoodScore(model, options=likelihood_options)
    if kind == "model":
        return ModelScore(model)
    if kind != "auto":
        raise InputError(f"unknown score kind {kind!r}; use auto, likelihood or model")
    if isinstance(model, HasAnomalyScore):
        return ModelScore(model)
    if isinstance(model, HasLikelihood):
        return LikelihoodScore(model)
    raise InputError(f"model {model.name!r} has neither a likelihood nor an anomaly score of its own; "
                     "use e.g. voxel-lognormal-ds2 (likelihood) or a trained ae / ae-pair model")


@dataclass
class ScoreSet:
    """Scores of the showers of one file (or a row range of it).

    ``scores`` maps each score name to an (N,) float64 array; ``rows`` is the (start, stop) row
    range of ``source`` they belong to; ``seconds_per_shower`` is the measured cost of scoring
    (wall time over the showers, reading included) on ``threads`` threads; ``errors`` maps the
    names of estimated scores to their standard errors per shower (a likelihood by Hutchinson's
    estimator), stored in the score file next to them."""

    scores: dict[str, np.ndarray]
    incident_energies: np.ndarray
    source: str
    rows: tuple[int, int]
    model: str = ""
    kind: str = ""
    seconds_per_shower: float | None = None
    threads: int | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.incident_energies)


def score_file(score: Score, sample: ShowerFile, start: int = 0, stop: int | None = None, batch_size: int = 500,
               model_name: str = "", progress: Callable[[int], None] | None = None) -> ScoreSet:
    """Score rows ``start:stop`` of ``sample`` (streamed in batches of ``batch_size``)."""
    stop = sample.n if stop is None else stop
    if not 0 <= start < stop <= sample.n:
        raise InputError(f"row range {start}:{stop} is not within the file's {sample.n} showers", sample.paths[0])
    if batch_size < 1:
        raise InputError(f"batch size must be positive, got {batch_size}")
    model = getattr(score, "model", None)
    if isinstance(model, ShowerModel) and model.geometry.n_voxels != sample.geometry.n_voxels:
        raise InputError(f"has {sample.geometry.n_voxels} voxels per shower ({sample.geometry.name}) but the model "
                         f"{model.name!r} is for {model.geometry.name} ({model.geometry.n_voxels} voxels)", sample.paths[0])
    device = model.device if isinstance(model, ShowerModel) else torch.device("cpu")
    if isinstance(model, ShowerModel):
        model.eval()
    outs: list[np.ndarray] = []
    errs: list[np.ndarray] = []
    energies: list[np.ndarray] = []
    t0 = time.perf_counter()
    for e, s in sample.iter_chunks(chunk_size=batch_size, start=start, stop=stop):
        et = torch.from_numpy(np.asarray(e, dtype=np.float32)).to(device)
        out_t, err_t = score.with_errors(et, torch.from_numpy(s).to(device))
        out = out_t.cpu().numpy()
        if err_t is not None:
            errs.append(err_t.cpu().numpy())
        if not np.isfinite(out).all():
            bad = int(np.argmax(~np.isfinite(out).all(axis=1)))
            raise InputError(f"score of the shower at row {start + sum(len(x) for x in energies) + bad} is not finite",
                             sample.paths[0])
        outs.append(out)
        energies.append(np.asarray(e, dtype=np.float64))
        if progress is not None:
            progress(len(e))
    seconds = time.perf_counter() - t0
    values = np.concatenate(outs)
    errors = np.concatenate(errs) if len(errs) == len(outs) else None
    return ScoreSet(
        scores={name: values[:, k].copy() for k, name in enumerate(score.names)},
        incident_energies=np.concatenate(energies), source=str(sample.paths[0].resolve()), rows=(start, stop),
        model=model_name or (model.name if isinstance(model, ShowerModel) else ""), kind=score.kind,
        seconds_per_shower=seconds / (stop - start), threads=torch.get_num_threads(),
        errors={} if errors is None else {name: errors[:, k].copy() for k, name in enumerate(score.names)},
    )


def write_scores(path: str | Path, result: ScoreSet) -> Path:
    """Write ``result`` to an HDF5 file atomically: ``scores/<name>`` (N,) and
    ``incident_energies`` (N,), ``errors/<name>`` (N,) for estimated scores, with the source,
    row range, model and cost as attributes."""

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            g = f.create_group("scores")
            for name, values in result.scores.items():
                g.create_dataset(name, data=np.asarray(values, dtype=np.float64))
            if result.errors:
                ge = f.create_group("errors")
                for name, values in result.errors.items():
                    ge.create_dataset(name, data=np.asarray(values, dtype=np.float64))
            f.create_dataset("incident_energies", data=np.asarray(result.incident_energies, dtype=np.float64))
            f.attrs.update({"caloforge_scores_format": SCORES_FORMAT, "source": result.source,
                            "rows_start": result.rows[0], "rows_stop": result.rows[1], "model": result.model,
                            "kind": result.kind, "score_names": list(result.scores)})
            if result.seconds_per_shower is not None:
                f.attrs["seconds_per_shower"] = result.seconds_per_shower
            if result.threads is not None:
                f.attrs["threads"] = result.threads
            for key, value in result.attrs.items():
                if key.startswith("calibration"):
                    f.attrs[key] = value

    return atomic_write(path, write)


def read_scores(path: str | Path) -> ScoreSet:
    """Read a score file of :func:`write_scores`; a file of another kind is an :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "is not a file", path)
    try:
        with h5py.File(path, "r") as f:
            if "caloforge_scores_format" not in f.attrs or "scores" not in f:
                raise InputError("is not a score file of 'caloforge anomaly score' (no 'scores' group)", path)
            attrs = {k: (v.item() if hasattr(v, "item") and np.ndim(v) == 0 else v) for k, v in f.attrs.items()}
            names = [str(n) for n in attrs.get("score_names", list(f["scores"]))]
            scores = {n: np.asarray(f["scores"][n][...], dtype=np.float64) for n in names}
            e = np.asarray(f["incident_energies"][...], dtype=np.float64)
            errors = {n: np.asarray(f["errors"][n][...], dtype=np.float64) for n in (f["errors"] if "errors" in f else [])}
    except OSError as exc:
        raise InputError(f"cannot read as HDF5 ({exc})", path) from None
    if any(len(v) != len(e) for v in scores.values()):
        raise InputError("score datasets and incident_energies differ in length", path)
    return ScoreSet(scores=scores, incident_energies=e, source=str(attrs.get("source", "")),
                    rows=(int(attrs.get("rows_start", 0)), int(attrs.get("rows_stop", len(e)))),
                    model=str(attrs.get("model", "")), kind=str(attrs.get("kind", "")),
                    seconds_per_shower=attrs.get("seconds_per_shower"), threads=attrs.get("threads"), attrs=attrs,
                    errors=errors)


#: E[log |Z|] of a standard normal Z: turns the mean log absolute residual into a standard deviation.
_MEAN_LOG_ABS_NORMAL = -0.6351814227307391


@dataclass(frozen=True)
class EnergyCalibration:
    """A score standardised at fixed incident energy: ``(score - m(x)) / w(x)``, x = log E_inc.

    ``m`` is a least-squares polynomial in x (degree ``degree``); ``w`` is the exponential of a
    polynomial fitted to the log absolute residuals (robust against the tails, rescaled to a
    standard deviation for Gaussian residuals); x is held inside the calibration sample's range
    (polynomials extrapolate badly). Fitted on background showers that are not evaluated."""

    mean_coef: tuple[float, ...]
    log_width_coef: tuple[float, ...]
    x_range: tuple[float, float]

    @classmethod
    def fit(cls, e_inc: np.ndarray, scores: np.ndarray, degree: int = 3) -> EnergyCalibration:
        x = np.log(np.asarray(e_inc, dtype=np.float64).reshape(-1))
        y = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(x) != len(y) or len(x) < 4 * (degree + 1):
            raise InputError(f"an energy calibration of degree {degree} needs at least {4 * (degree + 1)} "
                             f"calibration showers, got {len(x)}")
        mean = np.polyfit(x, y, degree)
        resid = y - np.polyval(mean, x)
        width = np.polyfit(x, np.log(np.abs(resid) + 1e-12 * (np.abs(y).max() + 1)), degree)
        width[-1] -= _MEAN_LOG_ABS_NORMAL
        return cls(tuple(map(float, mean)), tuple(map(float, width)), (float(x.min()), float(x.max())))

    def apply(self, e_inc: np.ndarray, scores: np.ndarray) -> np.ndarray:
        x = np.clip(np.log(np.asarray(e_inc, dtype=np.float64).reshape(-1)), *self.x_range)
        return (np.asarray(scores, dtype=np.float64) - np.polyval(self.mean_coef, x)) / np.exp(
            np.polyval(self.log_width_coef, x))

    def to_json(self) -> str:
        import json

        return json.dumps({"mean_coef": self.mean_coef, "log_width_coef": self.log_width_coef, "x_range": self.x_range})


def calibrate(result: ScoreSet, calibration: ScoreSet, degree: int = 3) -> ScoreSet:
    """``result`` with, for each score ``name``, a score ``name_z`` standardised at fixed energy
    by an :class:`EnergyCalibration` fitted on ``calibration`` (background scores of the same
    model, on showers other than ``result``'s)."""
    if calibration.source == result.source and max(calibration.rows[0], result.rows[0]) < min(calibration.rows[1],
                                                                                             result.rows[1]):
        raise InputError(f"the calibration rows {calibration.rows[0]}:{calibration.rows[1]} overlap the scored rows "
                         f"{result.rows[0]}:{result.rows[1]} of {result.source}: calibrate on other showers")
    scores = dict(result.scores)
    fits = {}
    for name, values in result.scores.items():
        cal = EnergyCalibration.fit(calibration.incident_energies, calibration.scores[name], degree)
        scores[f"{name}_z"] = cal.apply(result.incident_energies, values)
        fits[f"calibration_{name}"] = cal.to_json()
    attrs = {**result.attrs, **fits, "calibration_source": calibration.source,
             "calibration_rows": f"{calibration.rows[0]}:{calibration.rows[1]}"}
    return dataclasses.replace(result, scores=scores, attrs=attrs)


def distance_correlation(x: np.ndarray, y: np.ndarray, max_n: int = 5000, seed: int = 0) -> float:
    """Squared distance correlation dCorr^2 of two samples (0: independent, 1: linear), the DisCo
    measure, on at most ``max_n`` random pairs (it needs O(n^2) memory).

    References:
        Szekely, Rizzo, Bakirov, Ann. Statist. 35 (2007) 2769; Kasieczka, Shih, PRL 125 (2020) 122001.
    """
    from caloforge.models.autoencoder import distance_correlation_sq

    x, y = np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
    if len(x) != len(y) or len(x) < 3:
        raise InputError("distance correlation needs two samples of the same length >= 3")
    if len(x) > max_n:
        keep = np.random.default_rng(seed).choice(len(x), max_n, replace=False)
        x, y = x[keep], y[keep]
    return float(distance_correlation_sq(torch.from_numpy(x), torch.from_numpy(y)))
