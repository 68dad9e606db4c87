"""Precision, recall, density and coverage (PRDC) of a generated sample against a reference.

Definitions of Naeem et al. (arXiv:2002.09797), k-nearest-neighbour balls in feature space. With
the reference (real) points X_1..X_N, the generated (fake) points Y_1..Y_M, ``B(p, r)`` the open
ball ``{q : |q - p| < r}`` and ``NND_k(p)`` the distance from ``p`` to its k-th nearest neighbour
in its own sample (itself excluded):

- precision = (1/M) sum_j 1[Y_j in some B(X_i, NND_k(X_i))]  (fidelity: generated showers that
  fall on the reference manifold);
- recall = (1/N) sum_i 1[X_i in some B(Y_j, NND_k(Y_j))]  (diversity: reference showers that
  fall on the generated manifold);
- density = (1/(kM)) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]  (how many reference balls hold a
  generated point; ~1 for identical distributions, above 1 for mode collapse onto dense regions);
- coverage = (1/N) sum_i 1[some Y_j in B(X_i, NND_k(X_i))]  (reference points with a generated
  point nearby).

As in the authors' ``prdc`` package: strict ``<``, every distance (the k-th neighbour radii
too) Euclidean from ``sklearn.metrics.pairwise_distances`` in float64, here in chunks of rows
so that memory stays at ``chunk_rows x M`` doubles, and float32 inputs are upcast ``chunk_rows``
rows at a time rather than whole (DS3's voxel inputs: 1.6 GB per 10,000 showers in float32). For two samples from one distribution density and
coverage are near 1; precision and recall are near 1 only when the samples fill the feature space
densely: on two halves of 8,000 Geant4 DS2 showers (k = 5) they are ~0.62 on the 362 high-level
features and ~0.44 on the 6,480 log10 voxels (``benchmarks/new_metrics_geant4.py``), so read them
against the floor (``caloforge evaluate --floor``).

Inputs (``PRDCConfig.inputs``): ``"high-level"`` (default): the official high-level feature
vector (362 numbers for DS2), each column standardised with the reference's mean and standard
deviation; ``"voxels"`` (:meth:`PRDCConfig.voxels`): what the official ``evaluate.py -m prdc``
uses, ``log10`` of the voxel energies after the readout threshold, empty voxels set to 0.1 MeV
first (:func:`voxel_inputs`), not standardised. Either on at most ``max_samples`` random showers
of each sample (the paper's 10,000 by default: the cost grows as N x M x features; the official
script takes every shower).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class PRDCConfig:
    """Settings of :func:`prdc`.

    References:
        Naeem, Oh, Uh, Choi, Yoo, "Reliable Fidelity and Diversity Metrics for Generative
        Models", ICML 2020, arXiv:2002.09797.
    """

    nearest_k: int = 5
    max_samples: int | None = 10_000  # per sample; None: all
    standardise: bool = True  # columns scaled by the reference's mean and standard deviation
    inputs: str = "high-level"  # or "voxels" (log10 voxel energies, as the official evaluate.py)
    chunk_rows: int = 2048  # reference rows whose distances to every generated point are held at once

    @classmethod
    def official(cls, **changes) -> PRDCConfig:
        """The paper's settings: k = 5 on 10,000 points of each sample."""
        return replace(cls(), **changes)

    @classmethod
    def voxels(cls, **changes) -> PRDCConfig:
        """The official script's inputs: log10 voxel energies (empty voxels 0.1 MeV), not
        standardised, k = 5 (on 10,000 showers of each sample; the script takes all)."""
        return replace(cls(inputs="voxels", standardise=False), **changes)

    @classmethod
    def fast(cls, **changes) -> PRDCConfig:
        """Development preset: k = 5 on 2,000 points of each sample (about 25x cheaper)."""
        return replace(cls(max_samples=2_000), **changes)

    def __post_init__(self) -> None:
        if self.nearest_k < 1:
            raise ValueError("nearest_k must be at least 1")
        if self.max_samples is not None and self.max_samples <= self.nearest_k:
            raise ValueError("max_samples must exceed nearest_k")
        if self.chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        if self.inputs not in ("high-level", "voxels"):
            raise ValueError(f"inputs must be 'high-level' or 'voxels', got {self.inputs!r}")


@dataclass(frozen=True)
class PRDCResult:
    """Outcome of :func:`prdc`; ``n_real`` and ``n_fake`` are the points actually used."""

    precision: float
    recall: float
    density: float
    coverage: float
    nearest_k: int
    n_real: int
    n_fake: int

    def as_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "density": self.density,
                "coverage": self.coverage, "nearest_k": self.nearest_k, "n_real": self.n_real,
                "n_fake": self.n_fake}


def pairwise_distances64(x: np.ndarray, y: np.ndarray, chunk_rows: int = 2048) -> np.ndarray:
    """Euclidean distances (float64) from every row of ``x`` to every row of ``y``, computed by
    ``sklearn.metrics.pairwise_distances`` on float64 copies of ``chunk_rows`` rows of ``y`` at a
    time, so that float32 inputs (DS3's 40,500 log10 voxels) are never copied whole to float64.
    The float64 values of float32 inputs are exact; the distances equal one call on whole
    float64 copies to the last bits (BLAS may order a chunk's sums differently: 1e-14 on DS2-sized
    rows), and the PRDC metrics of the tests are identical."""
    from sklearn.metrics import pairwise_distances

    xa = np.asarray(x, dtype=np.float64)
    if len(y) <= chunk_rows:
        return pairwise_distances(xa, np.asarray(y, dtype=np.float64), metric="euclidean")
    out = np.empty((len(xa), len(y)))
    for c in range(0, len(y), chunk_rows):
        out[:, c : c + chunk_rows] = pairwise_distances(xa, np.asarray(y[c : c + chunk_rows], dtype=np.float64),
                                                        metric="euclidean")
    return out


def kth_neighbour_distances(x: np.ndarray, k: int, chunk_rows: int = 2048) -> np.ndarray:
    """Distance from every row of ``x`` to its k-th nearest other row (itself excluded;
    duplicates count, at distance 0).

    Computed with the same ``sklearn.metrics.pairwise_distances`` as the cross distances of
    :func:`prdc` (and as the authors' package), so that a point at exactly the k-th neighbour's
    distance compares equal to the radius and lies outside the open ball; a k-d tree's distances
    differ from these in the last bits. ``x`` may be float32; the distances are float64.
    """
    if len(x) <= k:
        raise ValueError(f"need more than k = {k} points, got {len(x)}")
    out = np.empty(len(x))
    for a in range(0, len(x), chunk_rows):
        d = pairwise_distances64(x[a : a + chunk_rows], x, chunk_rows)
        out[a : a + chunk_rows] = np.partition(d, k, axis=1)[:, k]  # index 0: the point itself
    return out


#: Energy (MeV) that the official PRDC gives empty voxels before the logarithm.
EMPTY_VOXEL_MEV = 0.1


def voxel_inputs(showers: np.ndarray) -> np.ndarray:
    """PRDC inputs of the official script: ``log10`` of the voxel energies (MeV, after the
    readout threshold), exactly-zero voxels set to 0.1 MeV first; float32 as the showers."""
    s = np.asarray(showers)
    return np.log10(np.where(s == 0.0, s.dtype.type(EMPTY_VOXEL_MEV), s))


def _subset(x: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or len(x) <= limit:
        return x
    return x[np.sort(rng.choice(len(x), size=limit, replace=False))]


def prdc(real, fake, config: PRDCConfig | None = None, seed: int = 0) -> PRDCResult:
    """Precision, recall, density and coverage of ``fake`` against ``real`` ((N, features)
    arrays); see the module documentation. Subsets (``config.max_samples``) are drawn with
    ``numpy.random.default_rng(seed)``."""
    cfg = config or PRDCConfig.official()
    # Inputs stay in their dtype (float32 DS3 voxels would double to 3.2 GB per 10,000 showers
    # in float64); distances are float64 (pairwise_distances64), standardisation float64.
    x, y = np.asarray(real), np.asarray(fake)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"real and fake must be 2-D with the same feature count, got {x.shape} and {y.shape}")
    if not (np.issubdtype(x.dtype, np.floating) and np.issubdtype(y.dtype, np.floating)):
        x, y = x.astype(np.float64), y.astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("PRDC inputs contain NaN or infinite values")
    rng = np.random.default_rng(seed)
    x, y = _subset(x, cfg.max_samples, rng), _subset(y, cfg.max_samples, rng)
    if cfg.standardise:
        x, y = x.astype(np.float64), y.astype(np.float64)
        mu, sd = x.mean(axis=0), x.std(axis=0)
        sd[sd == 0] = 1.0
        x, y = (x - mu) / sd, (y - mu) / sd
    k = cfg.nearest_k
    r_real = kth_neighbour_distances(x, k, cfg.chunk_rows)
    r_fake = kth_neighbour_distances(y, k, cfg.chunk_rows)
    in_real_ball = np.zeros(len(y), dtype=bool)  # precision
    real_balls_per_fake = np.zeros(len(y), dtype=np.int64)  # density
    covered = np.zeros(len(x), dtype=bool)  # coverage
    recalled = np.zeros(len(x), dtype=bool)  # recall
    for a in range(0, len(x), cfg.chunk_rows):
        b = min(a + cfg.chunk_rows, len(x))
        d = pairwise_distances64(x[a:b], y, cfg.chunk_rows)
        inside = d < r_real[a:b, None]
        in_real_ball |= inside.any(axis=0)
        real_balls_per_fake += inside.sum(axis=0)
        covered[a:b] = inside.any(axis=1)
        recalled[a:b] = (d < r_fake[None, :]).any(axis=1)
    return PRDCResult(
        precision=float(in_real_ball.mean()),
        recall=float(recalled.mean()),
        density=float(real_balls_per_fake.sum() / (k * len(y))),
        coverage=float(covered.mean()),
        nearest_k=k,
        n_real=len(x),
        n_fake=len(y),
    )
