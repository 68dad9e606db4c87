"""Maximum-likelihood energy calibration with a conditional shower model.

A model of p(shower | E_inc) with a tractable likelihood (:class:`~caloforge.models.capabilities.HasLikelihood`)
is also a likelihood for the incident energy of a measured shower. For every shower,
:func:`mle_calibrate` finds

    E_hat = argmax_E  log p(shower | E)

over the model's energy range, in ``t = log E``:

1. a coarse grid of ``grid_points`` log-spaced energies brackets the maximum (the likelihood of
   a calorimeter shower is sharply peaked but may have several local maxima far from the truth
   when the model is poor, so the grid is the global step);
2. a golden-section search, vectorised over all showers of a batch in torch, refines it inside
   the two grid cells around the best grid point to ``tolerance`` in ``log E``;
3. the uncertainty: ``sigma`` from the curvature, ``1 / sqrt(-d^2 lnL / dE^2)`` (a central second
   difference), and the 68% likelihood interval where ``lnL`` has fallen by 0.5 on each side
   (bracketed by steps of the curvature width, then bisection).

Neither the grid nor the search uses a prior on E: unlike a regression network trained on a
spectrum, the estimate does not depend on the spectrum the model was trained on, only on how
well the model describes p(shower | E). A maximum (or an interval end) within ``tolerance`` of
the range's edge is flagged (``at_boundary``): the likelihood may peak outside the range.

Cost: ``grid_points + ~log(grid cell / tolerance) / log(1.618) + ~2 x (3 + bisection_steps)``
likelihood evaluations per shower (about 70 with the defaults). A model that gives its likelihood
as a function of the energy alone (:class:`~caloforge.models.capabilities.ProfilesLikelihood`,
e.g. the Gaussian copula, whose voxel terms do not depend on E) does the rest of the work once
per shower.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from caloforge.errors import InputError
from caloforge.models.capabilities import HasLikelihood, ProfilesLikelihood

__all__ = [
    "CalibrationConfig",
    "CalibrationResult",
    "calibrate_file",
    "likelihood_models",
    "mle_calibrate",
    "read_calibration",
    "require_likelihood",
]

#: (task, completed, total): the progress callback of the library functions.
Progress = Callable[[str, float, float], None]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618...


@dataclass(frozen=True)
class CalibrationConfig:
    """Settings of :func:`mle_calibrate`.

    ``e_min`` / ``e_max`` (MeV) override the model's training range (``model.energy_range()``);
    a model that records none needs them. ``float64``: evaluate the likelihood in double
    precision on a copy of the model (the log likelihood of a DS2 shower is ~1e3-1e4 in size,
    float32 leaves ~1e-3 of noise on the differences the search and the interval read).
    """

    grid_points: int = 31
    tolerance: float = 1e-4  # in log E (a relative 1e-4 in E)
    bisection_steps: int = 14  # per side of the 68% interval
    batch_size: int = 256
    e_min: float | None = None
    e_max: float | None = None
    float64: bool = True
    delta_log_lik: float = 0.5  # lnL drop that defines the interval (0.5: 68% for a Gaussian)

    @classmethod
    def default(cls, **changes: Any) -> CalibrationConfig:
        """31 grid points, refined to 1e-4 in log E, the interval to ~1e-4 of its width."""
        return replace(cls(), **changes)

    @classmethod
    def fast(cls, **changes: Any) -> CalibrationConfig:
        """About half the likelihood calls: 17 grid points, 1e-3 in log E, 8 bisection steps."""
        return replace(cls(grid_points=17, tolerance=1e-3, bisection_steps=8), **changes)

    def __post_init__(self) -> None:
        if self.grid_points < 3:
            raise InputError(f"grid_points must be at least 3, got {self.grid_points}")
        if not self.tolerance > 0:
            raise InputError("tolerance must be positive")
        if self.bisection_steps < 1 or self.batch_size < 1:
            raise InputError("bisection_steps and batch_size must be at least 1")
        if self.e_min is not None and self.e_max is not None and not 0 < self.e_min < self.e_max:
            raise InputError(f"need 0 < e_min < e_max, got {self.e_min} and {self.e_max}")
        if not self.delta_log_lik > 0:
            raise InputError("delta_log_lik must be positive")


@dataclass
class CalibrationResult:
    """Per-shower maximum-likelihood energies (MeV) and their uncertainties.

    ``sigma``: from the curvature of lnL at the maximum (NaN where lnL is not concave there);
    ``interval_low`` / ``interval_high``: where lnL has fallen by ``delta_log_lik`` (clipped to
    the range, see ``at_boundary``); ``e_true``: the incident energies stored with the showers,
    when known (for studies; never used by the fit).

    References:
        energy calibration as maximum likelihood of a generative calorimeter surrogate,
        arXiv:2404.18992 (as cited in caloforge issue 13); likelihood intervals: F. James,
        *Statistical Methods in Experimental Physics* (2006), ch. 9.
    """

    e_hat: np.ndarray
    sigma: np.ndarray
    interval_low: np.ndarray
    interval_high: np.ndarray
    at_boundary: np.ndarray
    log_lik_max: np.ndarray
    e_range: tuple[float, float]
    model: str = ""
    e_true: np.ndarray | None = None
    likelihood_calls: int = 0
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.e_hat)

    @property
    def ms_per_shower(self) -> float:
        return 1e3 * self.seconds / max(len(self), 1)

    def write(self, path: str | Path, attrs: dict[str, Any] | None = None) -> Path:
        """Write the result to an HDF5 file atomically (datasets named as the fields)."""
        import h5py

        from caloforge._atomic import atomic_write

        def _write(tmp: str) -> None:
            with h5py.File(tmp, "w") as f:
                for name in ("e_hat", "sigma", "interval_low", "interval_high", "log_lik_max"):
                    f.create_dataset(name, data=np.asarray(getattr(self, name), dtype=np.float64))
                f.create_dataset("at_boundary", data=np.asarray(self.at_boundary, dtype=bool))
                if self.e_true is not None:
                    f.create_dataset("e_true", data=np.asarray(self.e_true, dtype=np.float64))
                f.attrs["units"] = "MeV"
                f.attrs["model"] = self.model
                f.attrs["e_range"] = np.asarray(self.e_range, dtype=np.float64)
                f.attrs["likelihood_calls"] = int(self.likelihood_calls)
                f.attrs["seconds"] = float(self.seconds)
                for k, v in self.config.items():
                    if v is not None:
                        f.attrs[f"config_{k}"] = v
                for k, v in (attrs or {}).items():
                    if v is not None:
                        f.attrs[k] = v

        return atomic_write(path, _write)


def read_calibration(path: str | Path) -> CalibrationResult:
    """Read a file written by :meth:`CalibrationResult.write`."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            arrays = {k: np.asarray(f[k][...]) for k in f}
            attrs = dict(f.attrs)
    except (OSError, KeyError) as exc:
        raise InputError(f"not a calibration file ({exc})", path) from None
    need = {"e_hat", "sigma", "interval_low", "interval_high", "at_boundary", "log_lik_max"}
    if not need <= arrays.keys():
        raise InputError(f"not a calibration file (missing {', '.join(sorted(need - arrays.keys()))})", path)
    lo, hi = (float(x) for x in attrs.get("e_range", (math.nan, math.nan)))
    return CalibrationResult(
        e_hat=arrays["e_hat"], sigma=arrays["sigma"], interval_low=arrays["interval_low"],
        interval_high=arrays["interval_high"], at_boundary=arrays["at_boundary"].astype(bool),
        log_lik_max=arrays["log_lik_max"], e_range=(lo, hi), model=str(attrs.get("model", "")),
        e_true=arrays.get("e_true"), likelihood_calls=int(attrs.get("likelihood_calls", 0)),
        seconds=float(attrs.get("seconds", 0.0)),
    )


# ------------------------------------------------------------------------------ capability
def likelihood_models() -> list[str]:
    """The registered model families that have a likelihood (implement ``log_prob``)."""
    from caloforge.models.capabilities import capabilities
    from caloforge.models.registry import available_models, get_model_class

    return [n for n in available_models() if "HasLikelihood" in capabilities(get_model_class(n))]


def require_likelihood(model: object) -> HasLikelihood:
    """``model`` as a :class:`HasLikelihood`, or an :class:`InputError` naming the models that have one."""
    if isinstance(model, HasLikelihood):
        return model
    name = getattr(model, "name", type(model).__name__)
    from caloforge.models.pretrained import list_pretrained

    types = likelihood_models()
    shipped = [k for k, meta in list_pretrained().items() if meta.get("model") in types]
    raise InputError(f"model {name!r} has no likelihood (log_prob), so it cannot calibrate; model types with "
                     f"one: {', '.join(types) or 'none'} (shipped: {', '.join(shipped) or 'none'})")


def _energy_range(model: object, config: CalibrationConfig) -> tuple[float, float]:
    rng = None
    energy_range = getattr(model, "energy_range", None)
    if callable(energy_range):
        rng = energy_range()
    lo = config.e_min if config.e_min is not None else (None if rng is None else float(rng[0]))
    hi = config.e_max if config.e_max is not None else (None if rng is None else float(rng[1]))
    if lo is None or hi is None:
        raise InputError("the model records no energy range; give e_min and e_max")
    if not 0 < lo < hi:
        raise InputError(f"energy range must satisfy 0 < low < high, got {lo:g} - {hi:g} MeV")
    return lo, hi


# -------------------------------------------------------------------------------- the fit
def _log_prob_at(model: HasLikelihood, showers: Tensor, e_inc: Tensor) -> Tensor:
    return model.log_prob(e_inc, showers)


class _LogLik:
    """lnL(t) for a batch of showers at one log-energy per shower; counts the calls."""

    def __init__(self, model: HasLikelihood, showers: Tensor):
        self.showers = showers
        self.calls = 0
        self.of_energy: Callable[[Tensor], Tensor]
        if isinstance(model, ProfilesLikelihood):  # the energy-independent work done once
            with torch.no_grad():
                self.of_energy = model.likelihood_of_energy(showers)
        else:
            self.of_energy = partial(_log_prob_at, model, showers)

    def __call__(self, t: Tensor) -> Tensor:
        self.calls += 1
        with torch.no_grad():
            out = self.of_energy(torch.exp(t)).to(torch.float64)
        return torch.where(torch.isfinite(out), out, torch.full_like(out, -torch.inf))


def _golden(f: _LogLik, a: Tensor, b: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """Maximise ``f`` on [a, b] per element (golden section, vectorised); (t, f(t))."""
    c = b - _GOLDEN * (b - a)
    d = a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    n_iter = max(0, math.ceil(math.log(tol / max(float((b - a).max()), tol)) / math.log(_GOLDEN)))
    for _ in range(n_iter):
        left = fc >= fd  # the maximum lies in [a, d]
        b = torch.where(left, d, b)
        a = torch.where(left, a, c)
        # one new point per element: left -> new c, right -> new d
        new = torch.where(left, b - _GOLDEN * (b - a), a + _GOLDEN * (b - a))
        fn = f(new)
        d_next = torch.where(left, c, new)
        fd_next = torch.where(left, fc, fn)
        c = torch.where(left, new, d)
        fc = torch.where(left, fn, fd)
        d, fd = d_next, fd_next
    better = fc >= fd
    return torch.where(better, c, d), torch.where(better, fc, fd)


def _interval_end(f: _LogLik, t_hat: Tensor, target: Tensor, width: Tensor, bound: float,
                  direction: float, steps: int) -> tuple[Tensor, Tensor]:
    """Where lnL falls to ``target`` on one side of ``t_hat``: step out by ``width`` x 2^k (at most
    to ``bound``) until below, then bisect. Returns (t, reached the bound without falling)."""
    inside = t_hat.clone()
    outside = t_hat.clone()
    found = torch.zeros_like(t_hat, dtype=torch.bool)
    step = width.clone()
    for _ in range(6):
        trial = t_hat + direction * step
        trial = torch.clamp(trial, max=bound) if direction > 0 else torch.clamp(trial, min=bound)
        todo = ~found
        val = f(torch.where(todo, trial, outside))
        below = todo & (val < target)
        outside = torch.where(todo, trial, outside)
        inside = torch.where(todo & ~below, trial, inside)
        found = found | below
        if bool(found.all()):
            break
        step = step * 4.0
    hit_bound = ~found
    for _ in range(steps):
        mid = 0.5 * (inside + outside)
        val = f(mid)
        below = val < target
        outside = torch.where(below & found, mid, outside)
        inside = torch.where(~below & found, mid, inside)
    return torch.where(found, 0.5 * (inside + outside), torch.full_like(t_hat, bound)), hit_bound


def _calibrate_batch(f: _LogLik, lo: float, hi: float, cfg: CalibrationConfig) -> dict[str, Tensor]:
    n = f.showers.shape[0]
    t_lo, t_hi = math.log(lo), math.log(hi)
    grid = torch.linspace(t_lo, t_hi, cfg.grid_points, dtype=torch.float64)
    values = torch.stack([f(torch.full((n,), float(g), dtype=torch.float64)) for g in grid], dim=1)
    k = values.argmax(dim=1)
    a = grid[torch.clamp(k - 1, min=0)]
    b = grid[torch.clamp(k + 1, max=cfg.grid_points - 1)]
    t_hat, l_max = _golden(f, a, b, cfg.tolerance)
    # the grid maximum may beat the refined one where lnL is flat or noisy
    grid_best = values.gather(1, k[:, None])[:, 0]
    use_grid = grid_best > l_max
    t_hat = torch.where(use_grid, grid[k], t_hat)
    l_max = torch.where(use_grid, grid_best, l_max)
    # curvature in E (central second difference in t, converted): step ~ a fraction of a grid cell
    h = min(0.02, 0.25 * float(grid[1] - grid[0]))
    tc = torch.clamp(t_hat, t_lo + h, t_hi - h)
    fp, fm, f0 = f(tc + h), f(tc - h), f(tc)
    d1 = (fp - fm) / (2 * h)
    d2 = (fp - 2 * f0 + fm) / h**2
    # d2 lnL/dE2 = (d2_t - d1_t) / E^2 at the maximum (d1_t ~ 0 there)
    curv_e = (d2 - d1) / torch.exp(2 * tc)
    sigma = torch.where(curv_e < 0, 1.0 / torch.sqrt(torch.clamp(-curv_e, min=1e-300)),
                        torch.full_like(curv_e, math.nan))
    sigma_t = torch.where(d2 < 0, 1.0 / torch.sqrt(torch.clamp(-d2, min=1e-300)), torch.full_like(d2, h))
    width = torch.clamp(sigma_t, min=cfg.tolerance, max=0.5)
    target = l_max - cfg.delta_log_lik
    low, low_b = _interval_end(f, t_hat, target, width, t_lo, -1.0, cfg.bisection_steps)
    high, high_b = _interval_end(f, t_hat, target, width, t_hi, 1.0, cfg.bisection_steps)
    edge = cfg.tolerance * 2
    boundary = (t_hat - t_lo < edge) | (t_hi - t_hat < edge) | low_b | high_b
    return {"e_hat": torch.exp(t_hat), "sigma": sigma, "interval_low": torch.exp(low),
            "interval_high": torch.exp(high), "at_boundary": boundary, "log_lik_max": l_max}


def mle_calibrate(
    model: object,
    showers: np.ndarray | Tensor,
    config: CalibrationConfig | None = None,
    e_true: np.ndarray | None = None,
    progress: Progress | None = None,
) -> CalibrationResult:
    """Maximum-likelihood incident energy of every shower (MeV), with its uncertainty.

    ``model``: any model with a likelihood (:class:`HasLikelihood`; others raise an
    :class:`InputError` naming the model types that have one); ``showers``: (N, voxels) in MeV
    as read from a file (the model applies its own readout threshold). ``progress(task, done,
    total)`` is called after each batch. See the module text for the method.
    """
    import time

    cfg = config or CalibrationConfig()
    lik_model = require_likelihood(model)
    lo, hi = _energy_range(model, cfg)
    x = torch.as_tensor(np.asarray(showers) if not isinstance(showers, Tensor) else showers)
    n_vox = getattr(getattr(model, "geometry", None), "n_voxels", None)
    if x.ndim != 2 or (n_vox is not None and x.shape[1] != n_vox):
        raise InputError(f"showers must be (N, {n_vox or 'voxels'}), got {tuple(x.shape)}")
    if e_true is not None and len(e_true) != x.shape[0]:
        raise InputError(f"{len(e_true)} true energies for {x.shape[0]} showers")
    if cfg.float64 and isinstance(model, torch.nn.Module):
        lik_model = require_likelihood(copy.deepcopy(model).to(torch.float64))
    was_training = isinstance(model, torch.nn.Module) and model.training
    if isinstance(lik_model, torch.nn.Module):
        lik_model.eval()
    dtype = torch.float64 if cfg.float64 else torch.float32
    device = getattr(lik_model, "device", torch.device("cpu"))
    parts: dict[str, list[Tensor]] = {}
    calls = 0
    t0 = time.perf_counter()
    n = x.shape[0]
    task = f"calibrating with {getattr(model, 'name', type(model).__name__)}"
    if progress:
        progress(task, 0, n)
    try:
        for a in range(0, n, cfg.batch_size):
            f = _LogLik(lik_model, x[a : a + cfg.batch_size].to(device=device, dtype=dtype))
            out = _calibrate_batch(f, lo, hi, cfg)
            calls += f.calls
            for k, v in out.items():
                parts.setdefault(k, []).append(v.detach().cpu())
            if progress:
                progress(task, min(a + cfg.batch_size, n), n)
    finally:
        if was_training and isinstance(model, torch.nn.Module):
            model.train()
    cat = {k: torch.cat(v).numpy() for k, v in parts.items()} if parts else {
        k: np.zeros(0) for k in ("e_hat", "sigma", "interval_low", "interval_high", "at_boundary", "log_lik_max")}
    return CalibrationResult(
        e_hat=cat["e_hat"], sigma=cat["sigma"], interval_low=cat["interval_low"],
        interval_high=cat["interval_high"], at_boundary=cat["at_boundary"].astype(bool),
        log_lik_max=cat["log_lik_max"], e_range=(lo, hi), model=getattr(model, "name", type(model).__name__),
        e_true=None if e_true is None else np.asarray(e_true, dtype=np.float64),
        likelihood_calls=calls, seconds=time.perf_counter() - t0,
        config={k: (int(v) if isinstance(v, bool) else v) for k, v in asdict(cfg).items() if v is not None},
    )


def calibrate_file(
    model: object,
    path: str | Path,
    config: CalibrationConfig | None = None,
    start: int = 0,
    stop: int | None = None,
    progress: Progress | None = None,
) -> CalibrationResult:
    """:func:`mle_calibrate` on the showers of a CaloChallenge file (rows ``start:stop``),
    streamed in blocks; the stored incident energies are kept as ``e_true``."""
    from caloforge.data import open_showers

    cfg = config or CalibrationConfig()
    file = open_showers(path)
    n_vox = getattr(getattr(model, "geometry", None), "n_voxels", None)
    if n_vox is not None and file.n_voxels != n_vox:
        raise InputError(f"has {file.n_voxels} voxels per shower but the model has {n_vox}", path)
    require_likelihood(model)
    stop = file.n if stop is None else min(stop, file.n)
    if not 0 <= start < stop:
        raise InputError(f"no showers in rows {start}:{stop} (the file has {file.n})", path)
    results: list[CalibrationResult] = []
    total = stop - start
    done = 0
    block = max(cfg.batch_size, 2048)

    def sub(task: str, d: float, t: float) -> None:
        if progress:
            progress(task, done + d, total)

    for e, s in file.iter_chunks(chunk_size=block, start=start, stop=stop):
        results.append(mle_calibrate(model, s, cfg, e_true=e, progress=sub))
        done += len(e)
    return _concat(results)


def _concat(parts: list[CalibrationResult]) -> CalibrationResult:
    first = parts[0]

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    e_true = None if first.e_true is None else cat("e_true")
    return CalibrationResult(
        e_hat=cat("e_hat"), sigma=cat("sigma"), interval_low=cat("interval_low"),
        interval_high=cat("interval_high"), at_boundary=cat("at_boundary"), log_lik_max=cat("log_lik_max"),
        e_range=first.e_range, model=first.model, e_true=e_true,
        likelihood_calls=sum(p.likelihood_calls for p in parts), seconds=sum(p.seconds for p in parts),
        config=first.config,
    )
