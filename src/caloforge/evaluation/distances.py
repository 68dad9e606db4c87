"""Fréchet and kernel physics distances (FPD, KPD) between two feature samples.

Definitions of Kansal et al. (arXiv:2211.10295) as implemented in ``jetnet.evaluation`` (the
implementation the CaloChallenge evaluation calls, on the high-level feature vector, with
``fpd(reference, generated, min_samples=10000)`` and ``kpd(reference, generated,
batch_size=10000)``); with the same seeds these functions draw the same batches as jetnet and
give the same numbers:

- *Normalisation* (both, on by default): every feature column of both samples is divided by the
  largest absolute value of that column in the **real** sample (columns that are all 0 are left
  alone).
- **FPD**: for ``num_points`` batch sizes N spaced evenly in 1/N between ``min_samples`` and
  ``max_samples`` (``int(1 / linspace(1/min, 1/max, num_points))``), the Fréchet distance
  ``|mu1 - mu2|^2 + Tr(C1 + C2 - 2 sqrt(C1 C2))`` of Gaussians fitted (unbiased covariance) to
  ``num_batches`` pairs of batches drawn *with replacement* is averaged; a straight line in 1/N
  is fitted (``scipy.optimize.curve_fit``, intercept and slope bounded to be >= 0) and the value
  is its intercept (N -> infinity), the error the fit's standard error on the intercept.
  Batches come from one ``numpy.random.default_rng(seed)`` stream: for each batch size, for each
  batch, real indices then generated indices.
- **KPD**: unbiased quadratic-time MMD^2 estimate with the polynomial kernel
  ``k(x, y) = (x.y / d + 1)^4`` (d = number of features) on ``num_batches`` pairs of batches of
  ``batch_size`` drawn with replacement, batch i from ``default_rng(seed + 1000 i)``; the value
  is the median over batches and the error half the spread between the 16.275 and 83.725
  percentiles (linear interpolation).

Defaults as jetnet's except ``min_samples=10000`` and ``batch_size=10000``, the CaloChallenge
settings. Samples smaller than the batch sizes: jetnet resamples them (with replacement) to the
full batch sizes regardless; here, by default, the batch sizes shrink to what the samples hold
(FPD: ``max_samples`` becomes the smaller sample size and ``min_samples`` at most half of it;
KPD: ``batch_size`` becomes the smaller sample size) and the result says so in ``.note`` and a
:class:`SampleSizeWarning`. ``adapt_to_sample_size=False`` reproduces jetnet exactly.

FPD is computed in float64 without gathering batches or general matrix square roots: each
batch's mean and covariance come from how often each row was drawn (one symmetric product over
the distinct rows), and ``Tr(sqrt(C1 C2))`` from the eigenvalues of the symmetric ``L^T C2 L``
(``C1 = L L^T``); ``fpd(..., method="sqrtm")`` keeps jetnet's computation, and the two agree to
round-off (``tests/test_metrics.py``).

KPD is computed in float64 in blocks of rows, using the symmetry of the within-sample kernel
matrices, so that memory stays at ``block_rows * batch_size`` doubles (jetnet holds three full
``batch_size^2`` matrices, 2.4 GB at 10,000).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.optimize import curve_fit

#: Real-sample column maxima below this are treated as zero when normalising (see
#: :func:`normalise_features`).
TINY_COLUMN_MAX = 1e-6
#: Number of samples below which jetnet warns that FPD/KPD estimates are unreliable.
RECOMMENDED_SAMPLES = 50_000


class SampleSizeWarning(RuntimeWarning):
    """A sample was smaller than the requested batch sizes; fewer samples were used."""


class DistanceResult(tuple):
    """``(value, error)``, unpackable like a tuple, with the settings actually used.

    ``note`` is an empty string unless the batch sizes were reduced (or the samples are smaller
    than jetnet recommends); ``settings`` records the batch sizes used.
    """

    value: float
    error: float
    note: str
    settings: dict

    def __new__(cls, value: float, error: float, note: str = "", settings: dict | None = None):
        self = super().__new__(cls, (float(value), float(error)))
        self.value = float(value)
        self.error = float(error)
        self.note = note
        self.settings = dict(settings or {})
        return self

    def __getnewargs__(self):  # pickling
        return (self.value, self.error, self.note, self.settings)

    def __repr__(self) -> str:
        extra = f", note={self.note!r}" if self.note else ""
        return f"DistanceResult(value={self.value:.6g}, error={self.error:.3g}{extra})"


def normalise_features(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide every column of both samples by the real sample's largest absolute value."""
    maxes = np.max(np.abs(real), axis=0)
    # jetnet leaves only all-zero columns alone. A column whose real maximum is round-off (a width
    # of 1e-9 mm in a layer where every reference shower has a single hit) would be blown up by
    # 1e8 and dominate FPD/KPD; such columns are left alone too (no effect on any other input).
    maxes[maxes < TINY_COLUMN_MAX] = 1.0
    return real / maxes, gen / maxes


def _as_2d_float64(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _prepare(real, gen, normalise: bool) -> tuple[np.ndarray, np.ndarray]:
    x = _as_2d_float64(real, "real")
    y = _as_2d_float64(gen, "gen")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature counts differ: real has {x.shape[1]}, gen has {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("FPD/KPD need at least 2 samples in each set")
    return normalise_features(x, y) if normalise else (x, y)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2):
    ``|mu1 - mu2|^2 + Tr(cov1) + Tr(cov2) - 2 Tr(sqrt(cov1 cov2))``.

    As jetnet (after pytorch-fid): if the matrix square root is not finite, ``eps`` is added to
    both diagonals; a small imaginary part from round-off is dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    c1, c2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    if mu1.shape != mu2.shape or c1.shape != c2.shape:
        raise ValueError("means and covariances must have matching shapes")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        covmean = linalg.sqrtm(c1 @ c2)
        if not np.isfinite(covmean).all():
            offset = np.eye(c1.shape[0]) * eps
            covmean = linalg.sqrtm((c1 + offset) @ (c2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * np.trace(covmean))


def _mean_cov(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (as ``np.cov(rowvar=False)``), with one symmetric product."""
    mu = sample.mean(axis=0)
    c = sample - mu
    cov = c.T @ c
    cov /= len(sample) - 1
    return mu, cov


class _ResampledMoments:
    """Mean and unbiased covariance of rows drawn with replacement, from the draw counts.

    A batch ``x[idx]`` of ``len(idx)`` rows drawn with replacement holds each distinct row ``u``
    ``w_u`` times; its mean is ``sum_u w_u x_u / len(idx)`` and its covariance
    ``sum_u w_u (x_u - mu)(x_u - mu)^T / (len(idx) - 1)``: the numbers of :func:`_mean_cov` of
    the gathered batch up to round-off (summation order). Work shared between batches: the
    sample is centred once on its own mean (so the per-batch correction ``len(idx) m m^T`` of the
    batch's small mean offset ``m`` costs no precision); per batch only the distinct rows are
    gathered (a batch of 50,000 of 100,000 holds ~39,000) into one reused buffer, the rows drawn
    more than once scaled by ``sqrt(w_u)``, and multiplied with one symmetric product.
    """

    def __init__(self, x: np.ndarray, max_rows: int):
        self.offset = x.mean(axis=0)
        self.x = x - self.offset
        self.buf = np.empty((min(max_rows, len(x)), x.shape[1]), dtype=np.float64)

    def __call__(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(idx)
        counts = np.bincount(idx, minlength=len(self.x))
        once, more = np.flatnonzero(counts == 1), np.flatnonzero(counts > 1)
        rows = np.concatenate([once, more])
        c = self.buf[: len(rows)]
        np.take(self.x, rows, axis=0, out=c, mode="clip")  # rows are valid; "raise" buffers `out` (3x slower)
        w = counts[more].astype(np.float64)
        m = (c[: len(once)].sum(axis=0) + w @ c[len(once):]) / n  # batch mean of the centred rows
        c[len(once):] *= np.sqrt(w)[:, None]
        cov = c.T @ c
        cov -= n * np.outer(m, m)
        cov /= n - 1
        return self.offset + m, cov


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float | None:
    """``Tr(sqrt(cov1 cov2))`` of two positive-definite covariance matrices, from eigenvalues.

    With the Cholesky factor ``cov1 = L L^T``, ``cov1 cov2`` is similar to the symmetric
    positive-definite ``L^T cov2 L``, so the eigenvalues of the product are those of a
    symmetric matrix (``eigvalsh``, float64) and the trace of its square root is the sum of
    their square roots: no general matrix square root (Schur form, complex arithmetic) is
    needed. Returns None when either matrix is not numerically positive definite (Cholesky
    fails): there the matrix square root may not exist and :func:`frechet_distance` takes
    jetnet's regularised path.
    """
    try:
        low1 = np.linalg.cholesky(cov1)
        np.linalg.cholesky(cov2)
    except np.linalg.LinAlgError:
        return None
    m = low1.T @ cov2 @ low1
    m += m.T
    m *= 0.5
    eig = np.linalg.eigvalsh(m)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance_fast(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """:func:`frechet_distance` with the trace of the matrix square root from
    :func:`trace_sqrt_product` (about 4x faster at 362 features); falls back to
    :func:`frechet_distance` (``scipy.linalg.sqrtm``, jetnet's regularisation) when a covariance
    is not positive definite. Equal to :func:`frechet_distance` to round-off (tested to 1e-9
    relative)."""
    tr = trace_sqrt_product(cov1, cov2)
    if tr is None:
        return frechet_distance(mu1, cov1, mu2, cov2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * tr)


def fpd_batch_sizes(min_samples: int, max_samples: int, num_points: int) -> np.ndarray:
    """The batch sizes of FPD: evenly spaced in 1/N, truncated to int32 as jetnet."""
    return (1.0 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype("int32")


def _linear(x, intercept, slope):
    return intercept + slope * x


@dataclass
class _Sizes:
    min_samples: int
    max_samples: int
    note: str


def _fpd_sizes(n_real: int, n_gen: int, min_samples: int, max_samples: int, adapt: bool) -> _Sizes:
    n = min(n_real, n_gen)
    notes = []
    if n < RECOMMENDED_SAMPLES:
        notes.append(f"fewer than the recommended {RECOMMENDED_SAMPLES} samples ({n_real} real, {n_gen} generated)")
    lo, hi = min_samples, max_samples
    if adapt and n < max_samples:
        hi = n
        lo = min(min_samples, n // 2)
        notes.append(
            f"FPD batch sizes reduced to {lo}..{hi} (requested {min_samples}..{max_samples}) "
            f"because the smaller sample holds {n}"
        )
    if lo < 2:
        raise ValueError(f"samples too small for FPD ({n_real} real, {n_gen} generated)")
    return _Sizes(lo, hi, "; ".join(notes))


def fpd(
    real,
    gen,
    min_samples: int = 10_000,
    max_samples: int = 50_000,
    num_batches: int = 20,
    num_points: int = 10,
    normalise: bool = True,
    seed: int = 42,
    adapt_to_sample_size: bool = True,
    method: str = "eigh",
) -> DistanceResult:
    """Fréchet physics distance between two (samples, features) arrays: ``(value, error)``.

    See the module documentation for the definition and the handling of small samples.
    ``method``: ``"eigh"`` (default; batch moments from draw counts and the trace of the matrix
    square root from a symmetric eigenproblem, :func:`frechet_distance_fast`) or ``"sqrtm"``
    (gathered batches and ``scipy.linalg.sqrtm``, jetnet's computation); both draw the same
    batches and agree to round-off.
    """
    if not 0 < min_samples <= max_samples:
        raise ValueError("need 0 < min_samples <= max_samples")
    x, y = _prepare(real, gen, normalise)
    sizes = _fpd_sizes(len(x), len(y), min_samples, max_samples, adapt_to_sample_size)
    if sizes.min_samples <= 2 * x.shape[1]:
        # Covariances of fewer samples than ~2 x features are (near) singular and the matrix
        # square root is meaningless: say so instead of returning a number.
        note = (f"FPD not computed: batches of {sizes.min_samples} samples are too small for "
                f"{x.shape[1]} features (need more than {2 * x.shape[1]})")
        warnings.warn(note, SampleSizeWarning, stacklevel=2)
        return DistanceResult(float("nan"), float("nan"), note, {"min_samples": sizes.min_samples})
    batches = fpd_batch_sizes(sizes.min_samples, sizes.max_samples, num_points)
    rng = np.random.default_rng(seed)
    vals = []
    if method == "eigh":
        moments_x, moments_y = _ResampledMoments(x, int(batches.max())), _ResampledMoments(y, int(batches.max()))
    elif method != "sqrtm":
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
    for bs in batches:
        points = []
        for _ in range(num_batches):
            i1 = rng.choice(len(x), size=bs)  # the draws of jetnet: real indices, then generated
            i2 = rng.choice(len(y), size=bs)
            if method == "eigh":
                points.append(frechet_distance_fast(*moments_x(i1), *moments_y(i2)))
            else:  # the reference computation: gathered batches, scipy.linalg.sqrtm (as jetnet)
                points.append(frechet_distance(*_mean_cov(x[i1]), *_mean_cov(y[i2])))
        vals.append(np.mean(points))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OptimizeWarning when the covariance cannot be estimated
        params, covs = curve_fit(_linear, 1.0 / batches, vals, bounds=([0, 0], [np.inf, np.inf]))
    settings = {
        "min_samples": sizes.min_samples, "max_samples": sizes.max_samples, "num_batches": num_batches,
        "num_points": num_points, "batch_sizes": batches.tolist(), "means": [float(v) for v in vals],
        "seed": seed, "normalise": normalise,
    }
    if sizes.note:
        warnings.warn(sizes.note, SampleSizeWarning, stacklevel=2)
    return DistanceResult(params[0], np.sqrt(np.diag(covs)[0]), sizes.note, settings)


def _kernel_sum(a: np.ndarray, b: np.ndarray | None, degree: int, block_rows: int, buf: np.ndarray) -> float:
    """Sum of ``(a_i . b_j)^degree`` over all pairs of rows of the augmented samples (each row
    ``[x sqrt(gamma), 1]``, so that ``a_i . b_j = gamma x_i . y_j + 1``); b=None means b=a, using
    symmetry (each off-diagonal block once, doubled). For degree 4 a block costs one product,
    one in-place square and one dot product of the block with itself (no other passes)."""
    total = 0.0
    n = len(a)
    for s in range(0, n, block_rows):
        rows = a[s : s + block_rows]
        cols = a[s:] if b is None else b
        k = buf[: len(rows) * len(cols)].reshape(len(rows), len(cols))  # contiguous
        np.matmul(rows, cols.T, out=k)
        if degree == 4:
            np.square(k, out=k)
            block = float(np.vdot(k, k))
            diag = float(np.einsum("ij,ij->", k[:, : len(rows)], k[:, : len(rows)])) if b is None else 0.0
        else:
            np.power(k, degree, out=k)
            block = float(k.sum())
            diag = float(k[:, : len(rows)].sum()) if b is None else 0.0
        total += 2.0 * block - diag if b is None else block  # symmetric: diagonal block once
    return total


def _augment(x: np.ndarray, gamma: float) -> np.ndarray:
    out = np.empty((len(x), x.shape[1] + 1), dtype=np.float64)
    np.multiply(x, np.sqrt(gamma), out=out[:, :-1])
    out[:, -1] = 1.0
    return out


def mmd_poly_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 4, block_rows: int = 1024) -> float:
    """Unbiased MMD^2 estimate with the kernel ``(x.y / d + 1)^degree`` (d = features):
    mean over distinct pairs within x + within y - 2 mean over cross pairs."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("MMD needs at least 2 samples in each set")
    gamma = 1.0 / x.shape[-1]
    buf = np.empty(min(block_rows, max(m, n)) * max(m, n), dtype=np.float64)
    diag_x = ((np.einsum("ij,ij->i", x, x) * gamma + 1.0) ** degree).sum()
    diag_y = ((np.einsum("ij,ij->i", y, y) * gamma + 1.0) ** degree).sum()
    xa, ya = _augment(x, gamma), _augment(y, gamma)
    sxx = _kernel_sum(xa, None, degree, block_rows, buf) - diag_x
    syy = _kernel_sum(ya, None, degree, block_rows, buf) - diag_y
    sxy = _kernel_sum(xa, ya, degree, block_rows, buf)
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * sxy / (m * n)


def kpd(
    real,
    gen,
    num_batches: int = 10,
    batch_size: int = 10_000,
    normalise: bool = True,
    seed: int = 42,
    adapt_to_sample_size: bool = True,
    degree: int = 4,
    block_rows: int = 1024,
) -> DistanceResult:
    """Kernel physics distance between two (samples, features) arrays: ``(median, error)``.

    See the module documentation for the definition and the handling of small samples.
    """
    x, y = _prepare(real, gen, normalise)
    n = min(len(x), len(y))
    notes = []
    if n < RECOMMENDED_SAMPLES:
        notes.append(f"fewer than the recommended {RECOMMENDED_SAMPLES} samples ({len(x)} real, {len(y)} generated)")
    bs = batch_size
    if adapt_to_sample_size and n < batch_size:
        bs = n
        notes.append(f"KPD batch size reduced to {bs} (requested {batch_size}) because the smaller sample holds {n}")
    vals = []
    for i in range(num_batches):
        rng = np.random.default_rng(seed + i * 1000)
        i1 = rng.choice(len(x), size=bs)
        i2 = rng.choice(len(y), size=bs)
        vals.append(mmd_poly_unbiased(x[i1], y[i2], degree=degree, block_rows=block_rows))
    lo, hi = np.percentile(vals, [16.275, 83.725])
    note = "; ".join(notes)
    if note:
        warnings.warn(note, SampleSizeWarning, stacklevel=2)
    settings = {"num_batches": num_batches, "batch_size": bs, "values": [float(v) for v in vals],
                "seed": seed, "normalise": normalise, "degree": degree}
    return DistanceResult(np.median(vals), (hi - lo) / 2.0, note, settings)
