"""Batched generation: into a CaloChallenge file (:func:`generate_to_file`) or into memory
(:func:`generate`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caloforge.errors import InputError
from caloforge.generation.sampler import Sampler, make_sampler

if TYPE_CHECKING:
    import torch
    from rich.console import Console


@dataclass(frozen=True)
class GenerationResult:
    """What :func:`generate_to_file` wrote and how fast the sampling was (writing excluded)."""

    n: int
    seconds_sampling: float
    showers_per_second: float
    ms_per_shower: float
    backend: str
    output: Path
    seed: int | None = None


def _check(energies: np.ndarray, batch_size: int) -> np.ndarray:
    from caloforge.data.hdf5 import check_incident_energies

    if batch_size < 1:
        raise InputError("batch_size must be at least 1")
    e = np.ascontiguousarray(np.asarray(energies, dtype=np.float32).reshape(-1))
    if len(e) == 0:
        raise InputError("no incident energies given")
    check_incident_energies(e, None)
    return e


def _draw_function(sampler: Sampler | Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    return getattr(sampler, "draw", sampler)


def _checked(showers: np.ndarray, n: int, n_voxels: int) -> np.ndarray:
    showers = np.asarray(showers, dtype=np.float32)
    if showers.shape != (n, n_voxels):
        raise RuntimeError(f"model returned showers of shape {showers.shape}, expected {(n, n_voxels)}")
    if not np.isfinite(showers).all():
        raise InputError("the model produced NaN or inf voxel energies (damaged weights, or incident energies "
                         "far outside its training range); nothing was written")
    return showers


def generate_to_file(
    model,
    energies: np.ndarray,
    output: str | Path,
    *,
    sampler: Sampler,
    batch_size: int = 1000,
    attrs: dict[str, Any] | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> GenerationResult:
    """Draw one shower per incident energy (MeV) with ``sampler`` in batches of ``batch_size``
    and write them, with the energies, to the CaloChallenge file ``output``.

    The file is written atomically (a temporary file beside ``output``, renamed at the end): if
    anything fails or is interrupted midway, no file is left at ``output``, and an existing one
    is untouched. ``attrs``: the HDF5 attributes (provenance) to store; None: the standard ones
    (model name, seed, backend, solver steps, batch size). ``progress``: a progress bar on
    ``console`` (default: standard error). The throughput counts sampling only, not writing.
    Make a warm-up draw first (``sampler.warm_up(energies)``) for a fair throughput figure.
    """
    from caloforge._progress import make_progress
    from caloforge.data.hdf5 import ShowerWriter, provenance

    e_all = _check(energies, batch_size)
    output = Path(output)
    total = len(e_all)
    n_voxels = int(model.geometry.n_voxels)
    draw = _draw_function(sampler)
    backend = str(getattr(sampler, "backend", type(sampler).__name__))
    seed = getattr(sampler, "seed", None)
    if attrs is None:
        attrs = provenance(
            model.name, seed=seed, backend=backend, solver_steps=getattr(sampler, "steps", None), batch_size=batch_size,
        )
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)

    sample_s = 0.0
    with ShowerWriter(output, n_voxels, attrs=attrs, expected_rows=total) as writer, \
            make_progress(console, disable=not progress) as bar:
        task = bar.add_task(f"generating with {model.name}", total=total, unit="showers")
        for a in range(0, total, batch_size):
            e = e_all[a : a + batch_size]
            t = time.perf_counter()
            showers = draw(e)
            sample_s += time.perf_counter() - t
            writer.append(e, _checked(showers, len(e), n_voxels))
            bar.update(task, advance=len(e))

    rate = total / sample_s if sample_s > 0 else float("inf")
    return GenerationResult(
        n=total, seconds_sampling=sample_s, showers_per_second=rate, ms_per_shower=1e3 / rate,
        backend=backend, output=output, seed=seed,
    )


def generate(
    model,
    energies: np.ndarray,
    *,
    batch_size: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
    steps: int | None = None,
) -> np.ndarray:
    """Showers (float32, ``(len(energies), voxels)``, MeV) for incident energies (MeV), in memory.

    Sampled with torch in batches of ``batch_size``; the same model, energies, seed and batch size
    give the same showers, and the same as :func:`generate_to_file` writes with a sampler from
    :func:`make_sampler` with that seed. ``device``: None samples where the model is (see
    :func:`make_sampler`). ``steps``: solver steps, for models that integrate an ODE.
    """
    e_all = _check(energies, batch_size)
    sampler = make_sampler(model, device=device, seed=seed, steps=steps)
    out = np.empty((len(e_all), sampler.n_voxels), dtype=np.float32)
    for a in range(0, len(e_all), batch_size):
        e = e_all[a : a + batch_size]
        out[a : a + len(e)] = _checked(sampler.draw(e), len(e), sampler.n_voxels)
    return out
