"""Training data: accepted inputs, validation splits and the deterministic batch plan.

The batch of global step ``s`` is a pure function of ``(seed, s)``: epoch ``s // steps_per_epoch``
shuffles all rows with a generator seeded by ``(seed, epoch)``, and the step takes the next
``batch_size`` rows of that permutation. Resuming at any step therefore sees exactly the batches
an uninterrupted run would, without storing any sampler state. Under data parallelism every rank
takes its own shard (``rank::world_size``) of each global batch, so the ranks together consume
the same rows as a single process would.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloforge.errors import InputError


def as_arrays(data: Any, what: str = "training data") -> tuple[np.ndarray, np.ndarray]:
    """``(e_inc (N,) float32, showers (N, voxels) float32)`` from the inputs :func:`train` accepts.

    Accepted: a :class:`~caloforge.data.ShowerFile`, a path or list of paths to CaloChallenge
    files, or a pair ``(incident_energies, showers)`` of arrays or tensors.
    """
    from caloforge.data import ShowerFile, open_showers

    if isinstance(data, (str, Path)) or (
        isinstance(data, Sequence) and data and all(isinstance(p, (str, Path)) for p in data)
    ):
        data = open_showers(data)
    if isinstance(data, ShowerFile):
        e, s = data.read()
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        e, s = data
    else:
        raise TypeError(f"{what}: expected a ShowerFile, file path(s) or (incident_energies, showers)")
    if isinstance(e, torch.Tensor):
        e = e.detach().cpu().numpy()
    if isinstance(s, torch.Tensor):
        s = s.detach().cpu().numpy()
    e = np.ascontiguousarray(np.asarray(e, dtype=np.float32).reshape(-1))
    s = np.ascontiguousarray(np.asarray(s, dtype=np.float32))
    if s.ndim != 2 or s.shape[0] != e.shape[0]:
        raise InputError(f"{what}: expected {e.shape[0]} showers of shape (N, voxels), got {s.shape}")
    if s.shape[0] == 0:
        raise InputError(f"{what}: holds no showers")
    return e, s


def data_paths(data: Any) -> list[str] | None:
    """The file paths behind ``data`` (for the run's config.json), where it came from files."""
    from caloforge.data import ShowerFile

    if isinstance(data, ShowerFile):
        return [str(p) for p in data.paths]
    if isinstance(data, (str, Path)):
        return [str(data)]
    if isinstance(data, Sequence) and data and all(isinstance(p, (str, Path)) for p in data):
        return [str(p) for p in data]
    return None


def split_fraction(
    e: np.ndarray, s: np.ndarray, fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """Hold out a random ``fraction`` of the rows (chosen by ``seed``) as validation data."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"validation fraction must lie in [0, 1), got {fraction:g}")
    n_val = int(round(fraction * len(e)))
    if n_val == 0:
        return (e, s), None
    if n_val >= len(e):
        raise InputError(f"validation fraction {fraction:g} leaves no training showers of {len(e)}")
    perm = np.random.default_rng([int(seed), 0x5EED]).permutation(len(e))
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return (e[tr], s[tr]), (e[val], s[val])


class BatchPlan:
    """Which rows global step ``step`` trains on, on rank ``rank`` of ``world_size``."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size < world_size:
            raise InputError(f"batch size {batch_size} is smaller than the number of processes {world_size}")
        self.n = n
        self.batch_size = min(batch_size, n)
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = max(1, n // self.batch_size)
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def global_indices(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.steps_per_epoch)
        return self._permutation(epoch)[i * self.batch_size : (i + 1) * self.batch_size]

    def indices(self, step: int) -> np.ndarray:
        return self.global_indices(step)[self.rank :: self.world_size]
