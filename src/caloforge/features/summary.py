"""A one-pass, bounded-memory summary of a shower sample (behind ``caloforge info``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from caloforge.data import ShowerFile

#: Attributes reported as the provenance of a file (``version`` falls back to ``caloforge_version``).
PROVENANCE_KEYS = ("generator", "version", "seed", "created")


def json_safe(value: Any) -> Any:
    """``value`` turned into plain JSON types (numpy scalars and arrays, bytes, nested containers)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist()) if value.size <= 64 else f"<array {value.shape} {value.dtype}>"
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _moments(x: np.ndarray) -> dict[str, float | None]:
    if x.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}


def summarize(
    shower_file: ShowerFile,
    *,
    threshold: float | None = None,
    max_showers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Counts, geometry, energies, sparsity, E_tot/E_inc and provenance of a sample, as a
    JSON-ready dict. Streams the showers once; memory stays at one chunk plus O(N) scalars.

    ``threshold`` (MeV, default the geometry's readout threshold) zeroes the voxels below it
    before the sparsity and E_tot are computed, as the features do. ``max_showers`` summarises
    only the first showers. ``progress`` is called with the number of showers read per chunk.

    Keys: ``files`` [{path, n_showers, size_bytes}], ``n_showers``, ``size_bytes``, ``geometry``
    {name, description, particle, n_voxels, n_layers, layers, regular, readout_threshold_mev},
    ``threshold_mev``, ``incident_energy_gev`` {min, max, mean, median}, ``sparsity`` (fraction
    of zero voxels), ``nonzero_voxels_per_shower`` (mean), ``empty_showers``, ``etot_einc``
    {mean, std, min, max}, ``provenance`` {generator, version, seed, created}, ``attrs`` (all
    attributes of the first file).
    """
    g = shower_file.geometry
    thr = g.readout_threshold if threshold is None else float(threshold)
    n = shower_file.n if max_showers is None else max(0, min(int(max_showers), shower_file.n))
    e_inc = shower_file.incident_energies()[:n]
    ratios = np.empty(n)
    nonzero = 0
    empty = 0
    done = 0
    if n > 0:
        for e, s in shower_file.iter_chunks(stop=n):
            if thr > 0:
                s = np.where(s < thr, np.float32(0), s)
            mask = s > 0
            per_shower = mask.sum(axis=1)
            nonzero += int(per_shower.sum())
            empty += int((per_shower == 0).sum())
            ratios[done : done + len(s)] = s.sum(axis=1, dtype=np.float64) / e
            done += len(s)
            if progress is not None:
                progress(len(s))

    attrs = json_safe(shower_file.attrs)
    provenance = {key: attrs.get(key) for key in PROVENANCE_KEYS}
    if provenance["version"] is None:
        provenance["version"] = attrs.get("caloforge_version")
    files = []
    for part in shower_file.parts:
        files.append({"path": str(part.path), "n_showers": part.n, "size_bytes": part.path.stat().st_size})
    return {
        "files": files,
        "n_showers": n,
        "n_showers_total": shower_file.n,
        "size_bytes": sum(f["size_bytes"] for f in files),
        "geometry": {
            "name": g.name,
            "description": g.description,
            "particle": g.particle,
            "n_voxels": g.n_voxels,
            "n_layers": g.n_layers,
            "layers": list(g.relevant_layers),
            "regular": g.is_regular,
            "readout_threshold_mev": g.readout_threshold,
        },
        "threshold_mev": thr,
        "incident_energy_gev": {
            "min": float(e_inc.min() / 1e3) if n else None,
            "max": float(e_inc.max() / 1e3) if n else None,
            "mean": float(e_inc.mean() / 1e3) if n else None,
            "median": float(np.median(e_inc) / 1e3) if n else None,
            "distinct_values": int(len(np.unique(e_inc))),
        },
        "sparsity": (1.0 - nonzero / (n * g.n_voxels)) if n else None,
        "nonzero_voxels_per_shower": (nonzero / n) if n else None,
        "empty_showers": empty,
        "etot_einc": _moments(ratios[:done]),
        "provenance": provenance,
        "attrs": attrs,
    }
