"""The full evaluation of generated samples against a reference: what ``caloforge evaluate`` runs.

One streamed pass over every file computes the high-level features, the voxel maximum, the mean
shower and (when the low-level classifier runs) its input array; voxels themselves are never
held beyond one block otherwise, so a DS3 evaluation stays within a few GB of memory. Then come
the metric families (``hist``, ``fpd``, ``kpd``, ``cls-low``, ``cls-high``), optionally the
floor (the reference split in two halves: Geant4 vs Geant4 when the reference's provenance says
Geant4) and the per-energy-bin view. The result
is the ``metrics.json`` dictionary (schema in ``docs/metrics.md``); plots and ``report.html``
are written by :func:`write_outputs`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import resource
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from caloforge import __version__
from caloforge._atomic import atomic_write_text
from caloforge.data import ShowerFile
from caloforge.data.hdf5 import prefetch
from caloforge.errors import InputError
from caloforge.evaluation.binning import (
    N_EDGES_VOXEL,
    FeatureBinning,
    binning_from_reference,
    histogram_min_energy as binning_min_energy,
    log_edges,
)
from caloforge.evaluation.classifier import (
    ClassifierConfig,
    classifier_test,
    high_level_inputs,
    multiclass_test,
)
from caloforge.evaluation.distances import fpd as fpd_metric, kpd as kpd_metric
from caloforge.evaluation.prdc import PRDCConfig, prdc as prdc_metric, voxel_inputs as prdc_voxel_inputs
from caloforge.evaluation.resnet import ResNetConfig, build_resnet
from caloforge.evaluation.rowfile import RowFile
from caloforge.evaluation.separation import (
    columns_separation_power,
    even_scale,
    feature_separation_powers,
    histogram_counts,
    separation_power_counts,
)
from caloforge.features import ShowerFeatures, apply_threshold, compute_features
from caloforge.geometry import Geometry

#: Every metric family: the default ones and, on request, PRDC (Naeem et al.), the multiclass
#: classifier over all samples and the 3-D ResNet (CNN) classifier on voxels.
METRICS = ("hist", "fpd", "kpd", "cls-low", "cls-high", "prdc", "multiclass", "cnn")
#: What :class:`EvaluationOptions` (and ``caloforge evaluate``) runs unless told otherwise.
DEFAULT_METRICS = ("hist", "fpd", "kpd", "cls-low", "cls-high")
SCHEMA_VERSION = 1
#: Memory budget (bytes) for the low-level classifier inputs of all samples together; beyond it
#: they are written to scratch files and read batch by batch (:mod:`caloforge.evaluation.rowfile`).
LOW_LEVEL_BUDGET = 8 * 2**30
#: Free space (bytes) left on the scratch file system beyond the spilled inputs; with less, the
#: classifiers fall back to a random subset that fits the memory budget.
SCRATCH_MARGIN = 2 * 2**30
#: Memory budget (bytes) for keeping the reference's non-empty voxels between passes.
KEEP_VOXELS_BUDGET = 2 * 2**30

Progress = Callable[[str, float, float], None]  # (task, completed, total)


#: The fewest showers a sample may have: below it histograms, covariances and classifier splits
#: are meaningless (a classifier's test split would hold a handful of showers).
MIN_SHOWERS = 50


@dataclass
class EvaluationOptions:
    """Settings of :func:`evaluate`."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    floor: bool = False
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig.official)
    prdc: PRDCConfig = field(default_factory=PRDCConfig.official)
    resnet: ResNetConfig = field(default_factory=ResNetConfig.official)  # the network of --metrics cnn
    cls_max_showers: int | None = None  # per sample; None: every shower
    low_level_budget: int = LOW_LEVEL_BUDGET  # bytes in memory; beyond: scratch files
    scratch: str | None = None  # folder of the scratch files; None: the system's temporary folder
    energy_bins: Sequence[float] | None = None  # MeV edges; None: decades spanning the reference
    seed: int = 0
    threshold: float | None = None  # MeV; None: the geometry's readout threshold
    fpd_min_samples: int = 10_000
    fpd_max_samples: int = 50_000
    kpd_batch_size: int = 10_000

    def __post_init__(self) -> None:
        if not self.metrics:
            raise InputError(f"no metric selected; choose from {', '.join(METRICS)}")
        unknown = set(self.metrics) - set(METRICS)
        if unknown:
            raise InputError(f"unknown metric(s) {', '.join(sorted(unknown))}; choose from {', '.join(METRICS)}")


@dataclass
class Sample:
    """Everything the metrics need of one sample, gathered in one streamed pass."""

    name: str
    files: list[str]
    features: ShowerFeatures
    mean_shower: np.ndarray
    voxel_max: np.floating  # the showers' dtype (float32), as the official maximum
    low_level: np.ndarray | RowFile | None = None  # (n_cls, voxels + 1) float32, in memory or a scratch file
    low_level_rows: np.ndarray | None = None  # which rows of the sample the low-level array holds
    voxel_counts: np.ndarray | None = None
    kept_voxels: tuple[np.ndarray, np.ndarray] | None = None  # (per-row count, energies) of kept voxels
    prdc_voxels: np.ndarray | None = None  # PRDC voxel inputs of the rows prdc_rows
    prdc_rows: np.ndarray | None = None


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy -> Python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if math.isnan(x) or math.isinf(x) else x
    if isinstance(x, np.integer):
        return int(x)
    return x


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram counts of the values inside ``edges``. Evenly spaced edges (the official
    log-spaced voxel edges) drop the values outside them cache block by cache block
    (:func:`histogram_counts`); for other edges the empty voxels, which lie below the first edge
    (a DS2 shower is ~90% zeros), are dropped before the binary search."""
    if even_scale(np.asarray(edges, dtype=np.float64)) is not None:
        return histogram_counts(values, edges)
    return histogram_counts(values[values >= edges[0]], edges)


def gather(
    file: ShowerFile,
    name: str,
    threshold: float,
    low_level_rows: np.ndarray | None = None,
    voxel_edges: np.ndarray | None = None,
    progress: Progress | None = None,
    keep_voxels_above: float | None = None,
    prdc_rows: np.ndarray | None = None,
    spill: Path | None = None,
) -> Sample:
    """Stream ``file`` once: features, mean shower, voxel maximum, optional low-level inputs
    (for the sorted row indices ``low_level_rows``) and voxel-energy counts in ``voxel_edges``.

    ``keep_voxels_above``: also keep every voxel energy >= this value, in file order, with the
    number kept of every row (``Sample.kept_voxels``), so that histograms whose edges depend on
    this sample's maximum can be filled without a second pass; given up (None) past
    :data:`KEEP_VOXELS_BUDGET` bytes.
    ``prdc_rows``: sorted row indices whose PRDC voxel inputs to keep (``Sample.prdc_voxels``).
    ``spill``: write the low-level inputs to a :class:`RowFile` at this path instead of memory."""
    g = file.geometry
    parts, total = [], np.zeros(g.n_voxels)
    vmax = None  # a numpy scalar of the showers' dtype, as the official maximum
    e_dtype = file.energy_dtype  # E_tot / E_inc in the stored dtype, as the official quotient
    counts = None if voxel_edges is None else np.zeros(len(voxel_edges) - 1, dtype=np.int64)
    low: np.ndarray | RowFile | None = None
    if low_level_rows is not None:
        low = (RowFile.create(spill, g.n_voxels + 1) if spill is not None
               else np.empty((len(low_level_rows), g.n_voxels + 1), dtype=np.float32))
    pv = None if prdc_rows is None else np.empty((len(prdc_rows), g.n_voxels), dtype=np.float32)
    start, filled, pv_filled = 0, 0, 0
    kept: list | None = [] if keep_voxels_above is not None else None
    kept_bytes = 0
    threads = _compute_threads()
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    try:
        for e, s in prefetch(file.iter_chunks(threads=threads)):
            # threshold and features on row slices in parallel (rows are independent: same numbers)
            parts.append(_threshold_and_features(pool, threads, e.astype(e_dtype), s, g, threshold))
            total += s.sum(axis=0, dtype=np.float64)
            bmax = s.max(initial=s.dtype.type(0))
            vmax = bmax if vmax is None or bmax > vmax else vmax
            if counts is not None and voxel_edges is not None:  # counts exist exactly when edges do
                counts += _counts(s, voxel_edges)
            if kept is not None:
                above = s >= keep_voxels_above
                kept.append((np.count_nonzero(above, axis=1).astype(np.int32), s[above]))
                kept_bytes += kept[-1][0].nbytes + kept[-1][1].nbytes
                if kept_bytes > KEEP_VOXELS_BUDGET:
                    kept = None
            if low is not None and low_level_rows is not None:  # low exists exactly when rows do
                stop = start + len(s)
                lo, hi = np.searchsorted(low_level_rows, [start, stop])
                if hi > lo:
                    rows = low_level_rows[lo:hi] - start
                    block = (np.empty((len(rows), g.n_voxels + 1), dtype=np.float32) if isinstance(low, RowFile)
                             else low[filled : filled + len(rows)])
                    block[:, 0] = np.log10(e[rows])
                    np.divide(s[rows], e[rows, None].astype(np.float32), out=block[:, 1:])
                    if isinstance(low, RowFile):
                        low.append(block)
                    filled += len(rows)
            if pv is not None and prdc_rows is not None:  # pv exists exactly when prdc_rows do
                lo, hi = np.searchsorted(prdc_rows, [start, start + len(s)])
                if hi > lo:
                    pv[pv_filled : pv_filled + hi - lo] = prdc_voxel_inputs(s[prdc_rows[lo:hi] - start])
                    pv_filled += hi - lo
            start += len(s)
            if progress:
                progress(f"reading {name}", start, file.n)
    finally:
        if pool is not None:
            pool.shutdown()
    feats = ShowerFeatures.concatenate(parts)
    feats.threshold = threshold
    if vmax is None:
        vmax = np.float32(0.0)
    sample = Sample(name, [str(p) for p in file.paths], feats, total / file.n, vmax, low, low_level_rows, counts)
    sample.prdc_voxels, sample.prdc_rows = pv, prdc_rows
    if kept is not None:
        sample.kept_voxels = (np.concatenate([k[0] for k in kept]) if kept else np.zeros(0, np.int32),
                              np.concatenate([k[1] for k in kept]) if kept else np.zeros(0, np.float32))
    return sample


def _threshold_and_features(pool: ThreadPoolExecutor | None, threads: int, e: np.ndarray, s: np.ndarray,
                             g: Geometry, threshold: float) -> ShowerFeatures:
    """Zero the voxels of ``s`` below ``threshold`` (in place) and return the block's features,
    split in ``threads`` row slices run in ``pool`` (numpy releases the GIL; every feature is a
    function of its own row, so the numbers do not depend on the split)."""
    if pool is None or len(s) < 64 * threads:
        apply_threshold(s, threshold, copy=False)
        return compute_features(e, s, g, threshold=0.0)
    cuts = np.linspace(0, len(s), threads + 1).astype(int)

    def part(a: int, b: int) -> ShowerFeatures:
        apply_threshold(s[a:b], threshold, copy=False)
        return compute_features(e[a:b], s[a:b], g, threshold=0.0)

    return ShowerFeatures.concatenate(list(pool.map(part, cuts[:-1], cuts[1:])))


def _compute_threads() -> int:
    """Threads of the evaluation (reading; FPD and KPD side by side): torch's thread count, what
    ``--threads`` and :func:`caloforge._threads.configure_threads` set."""
    import torch

    return max(1, torch.get_num_threads())


def _voxel_counts_pass(file: ShowerFile, edges: np.ndarray, threshold: float, masks: dict[str, np.ndarray],
                       progress: Progress | None, name: str) -> dict[str, np.ndarray]:
    """Voxel-energy counts of the rows selected by each boolean mask (one streamed pass)."""
    out = {k: np.zeros(len(edges) - 1, dtype=np.int64) for k in masks}
    start = 0
    for _, s in prefetch(file.iter_chunks(threads=_compute_threads())):
        s = apply_threshold(s, threshold, copy=False)
        for k, m in masks.items():
            sel = m[start : start + len(s)]
            if sel.any():
                out[k] += _counts(s[sel], edges)
        start += len(s)
        if progress:
            progress(f"voxel energies of {name}", start, file.n)
    return out


def default_energy_edges(e_inc: np.ndarray) -> np.ndarray:
    """Decade edges (1, 10, 100 GeV, ...) spanning the incident energies; at least one bin."""
    lo, hi = float(e_inc.min()), float(e_inc.max())
    k0, k1 = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    edges = 10.0 ** np.arange(k0, max(k1, k0 + 1) + 1)
    edges[0] = min(edges[0], lo)
    edges[-1] = max(edges[-1], hi)
    return edges


def _distance(metric: Callable, a: np.ndarray, b: np.ndarray, **kw) -> dict:
    """FPD or KPD with one BLAS thread: the numbers of every ``--threads`` (see
    :func:`_distances_side_by_side`), also when the parts run on a Dask cluster."""
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")
        res = metric(a, b, **kw)
    return _distance_dict(res)


def _distances_side_by_side(a: np.ndarray, b: np.ndarray, fpd_kw: dict, kpd_kw: dict) -> tuple[dict, dict]:
    """FPD and KPD at the same time, each in its own thread with one BLAS thread.

    Both are float64 BLAS products; with one BLAS thread each they keep two CPUs busy, also
    during their single-threaded parts, where one metric on two BLAS threads leaves one idle.
    Their numbers are those of a one-thread run bit for bit (two BLAS threads split some sums
    and change the last digits), so metrics.json no longer depends on ``--threads``.
    """
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=2) as pool:
        warnings.simplefilter("ignore")  # here, once: catch_warnings inside threads would race
        f = pool.submit(fpd_metric, a, b, **fpd_kw)
        k = pool.submit(kpd_metric, a, b, **kpd_kw)
        return _distance_dict(f.result()), _distance_dict(k.result())


def _distance_dict(res: Any) -> dict:
    d: dict[str, Any] = {"value": float(res[0]) * 1e3, "error": float(res[1]) * 1e3}
    note = getattr(res, "note", "")
    if note:
        d["note"] = note
    return d


def _classifier(x_ref: np.ndarray | RowFile, x_gen: np.ndarray | RowFile, cfg: ClassifierConfig, seed: int,
                progress: Progress | None, task: str, build: Callable | None = None,
                rows: tuple[np.ndarray | None, np.ndarray | None] = (None, None)) -> dict:
    def cb(epochs: float) -> None:
        if progress:
            progress(task, epochs, cfg.max_epochs)

    if progress:
        progress(task, 0, cfg.max_epochs)
    r = classifier_test(x_ref, x_gen, cfg, seed=seed, on_batch=cb, build=build, reference_rows=rows[0],
                        generated_rows=rows[1])
    if progress:  # done, also when it stopped early: the task ends at the epochs it ran
        progress(task, r.epochs_run, r.epochs_run)
    return {
        "auc": r.auc, "jsd": r.jsd, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
        "n_train": r.n_train, "n_test": r.n_test, "n_val": r.n_val, "seconds": r.seconds,
        "auc_uncalibrated": r.auc_uncalibrated, "device": r.device, "sparse_input": r.sparse_input,
    }


def compare(
    ref: ShowerFeatures,
    gen: ShowerFeatures,
    options: EvaluationOptions,
    binning: FeatureBinning,
    ref_counts: np.ndarray | None = None,
    gen_counts: np.ndarray | None = None,
    ref_low: np.ndarray | RowFile | None = None,
    gen_low: np.ndarray | RowFile | None = None,
    progress: Progress | None = None,
    timing: dict | None = None,
    label: str = "",
    image_shape: tuple[int, int, int] | None = None,
    ref_voxels: np.ndarray | None = None,
    gen_voxels: np.ndarray | None = None,
    low_rows: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
) -> dict:
    """All requested metrics of ``gen`` against ``ref`` (features; low-level arrays optional;
    ``image_shape`` (layers, alpha, r) for the ResNet classifier; PRDC voxel inputs).
    ``low_rows``: the rows of ``ref_low`` and ``gen_low`` the classifiers use (None: all); the
    floor passes the reference's low-level array twice with the rows of each half."""
    out: dict[str, Any] = {}
    timing = {} if timing is None else timing

    def timed(key: str, fn: Callable[[], Any], step: str | None = None) -> Any:
        # ``step``: a progress task of one unit (started, then done) for steps without their own
        if step and progress:
            progress(f"{label}{step}", 0, 1)
        t = time.perf_counter()
        value = fn()
        if step and progress:
            progress(f"{label}{step}", 1, 1)
        timing[f"{label}{key}"] = round(time.perf_counter() - t, 3)
        return value

    m = options.metrics
    if "hist" in m:
        def hist() -> dict:
            seps = feature_separation_powers(ref, gen, binning)
            if ref_counts is not None and gen_counts is not None and binning.voxel_energy is not None:
                seps["voxel_energy"] = float(separation_power_counts(ref_counts, gen_counts, binning.voxel_energy))
            return seps
        out["separation_power"] = timed("hist", hist, "histograms")
    need_hl = any(k in m for k in ("fpd", "kpd", "cls-high", "prdc"))
    if need_hl:
        hl_ref, hl_gen = high_level_inputs(ref), high_level_inputs(gen)
    fpd_kw = {"min_samples": options.fpd_min_samples, "max_samples": options.fpd_max_samples, "seed": options.seed}
    kpd_kw = {"batch_size": options.kpd_batch_size, "seed": options.seed}
    if "fpd" in m and "kpd" in m and _compute_threads() > 1:
        out["fpd"], out["kpd"] = timed("fpd+kpd", lambda: _distances_side_by_side(hl_ref, hl_gen, fpd_kw, kpd_kw),
                                       "FPD and KPD")
    else:
        if "fpd" in m:
            out["fpd"] = timed("fpd", lambda: _distance(fpd_metric, hl_ref, hl_gen, **fpd_kw), "FPD")
        if "kpd" in m:
            out["kpd"] = timed("kpd", lambda: _distance(kpd_metric, hl_ref, hl_gen, **kpd_kw), "KPD")
    if "prdc" in m:
        voxels = options.prdc.inputs == "voxels"
        if not voxels or (ref_voxels is not None and gen_voxels is not None):
            a, b = (ref_voxels, gen_voxels) if voxels else (hl_ref, hl_gen)
            out["prdc"] = timed("prdc", lambda: {**prdc_metric(a, b, options.prdc, options.seed).as_dict(),
                                                 "inputs": options.prdc.inputs},
                                "precision, recall, density, coverage")
    if "cls-high" in m:
        out["cls_high"] = timed("cls_high", lambda: _classifier(
            hl_ref, hl_gen, options.classifier, options.seed, progress, f"{label}classifier (high-level)"))
    if "cls-low" in m and ref_low is not None and gen_low is not None:
        out["cls_low"] = timed("cls_low", lambda: _classifier(
            ref_low, gen_low, options.classifier, options.seed, progress, f"{label}classifier (low-level)",
            rows=low_rows))
    if "cnn" in m and ref_low is not None and gen_low is not None and image_shape is not None:
        shape = image_shape
        out["cls_cnn"] = timed("cls_cnn", lambda: _classifier(
            ref_low, gen_low, options.classifier, options.seed, progress, f"{label}classifier (ResNet, voxels)",
            build=lambda _: build_resnet(shape, options.resnet), rows=low_rows))
        out["cls_cnn"]["network"] = f"ResNet-{options.resnet.depth} x{options.resnet.width_factor:g} channels"
    return out


def _energy_binned(ref: ShowerFeatures, gen: ShowerFeatures, edges: np.ndarray, options: EvaluationOptions,
                   binning: FeatureBinning) -> list[dict]:
    rows = []
    # Per bin: the two histogram metrics the rows report (E_tot / E_inc and the mean over layers
    # of E_layer), computed as feature_separation_powers does. FPD/KPD per bin would cost as much
    # as the whole evaluation again for every bin; run `evaluate --energy-range` on a slice for those.
    for a, b in pairwise(edges):
        mr = (ref.e_inc >= a) & (ref.e_inc <= b if b == edges[-1] else ref.e_inc < b)
        mg = (gen.e_inc >= a) & (gen.e_inc <= b if b == edges[-1] else gen.e_inc < b)
        row: dict[str, Any] = {"e_min_gev": a / 1e3, "e_max_gev": b / 1e3, "n_reference": int(mr.sum()),
                               "n_generated": int(mg.sum())}
        if mr.sum() >= 10 and mg.sum() >= 10:
            r_etot, g_etot = ref.etot_einc[mr], gen.etot_einc[mg]
            row["etot_einc_mean_ratio"] = float(g_etot.mean() / r_etot.mean())
            row["sep_etot_einc"] = columns_separation_power(r_etot[:, None], g_etot[:, None], [binning.etot_einc])[0]
            e_layer = columns_separation_power(ref.e_layer[mr], gen.e_layer[mg], binning.e_layer)
            row["sep_e_layer"] = float(np.nanmean(np.asarray(e_layer, dtype=float)))
        rows.append(row)
    return rows


def _cls_rows(n: int, n_voxels: int, n_samples: int, cap: int | None, rng: np.random.Generator,
              budget: int | None = None) -> tuple[np.ndarray, str]:
    """The rows of a sample that the low-level classifiers use: all, or a random subset of
    ``cap`` (``--cls-max-showers``) or of what fits ``budget`` bytes (None: no memory limit,
    the inputs are spilled to scratch files)."""
    limit = n if cap is None else min(n, cap)
    why = "--cls-max-showers"
    if budget is not None:
        budget_rows = max(1000, int(budget / (4 * (n_voxels + 1) * n_samples)))
        if budget_rows < limit:
            limit, why = budget_rows, "memory budget, and too little scratch space to spill the inputs"
    note = ""
    if limit < n:
        note = f"low-level classifier on a random subset of {limit} of {n} showers ({why})"
    rows = np.sort(rng.choice(n, size=limit, replace=False)) if limit < n else np.arange(n)
    return rows, note


def _low_level_plan(reference: ShowerFile, generated: dict[str, ShowerFile], opts: EvaluationOptions) -> tuple[str, str]:
    """Where the low-level classifier inputs go: ``("memory", "")``, ``("spill", folder)`` when
    all samples' inputs exceed ``opts.low_level_budget`` and the scratch folder has room for them
    (plus :data:`SCRATCH_MARGIN`), else ``("subset", folder)``."""
    if "cls-low" not in opts.metrics and "cnn" not in opts.metrics:
        return "memory", ""
    row_bytes = 4 * (reference.geometry.n_voxels + 1)
    cap = opts.cls_max_showers
    need = sum(row_bytes * (f.n if cap is None else min(f.n, cap)) for f in (reference, *generated.values()))
    if need <= opts.low_level_budget:
        return "memory", ""
    folder = opts.scratch or tempfile.gettempdir()
    try:
        free = shutil.disk_usage(folder).free
    except OSError as err:
        raise InputError(f"scratch folder for the classifier inputs: {err.strerror or err}", folder) from None
    return ("spill" if free >= need + SCRATCH_MARGIN else "subset"), folder


#: Two-sample KS p-value below which the incident-energy spectra count as different.
ENERGY_SPECTRUM_P = 1e-3
#: The ``generator`` attribute of files written by the parametric simulator.
PARAMETRIC_GENERATOR = "caloforge.simulation.parametric"


def reference_source(attrs: dict) -> dict:
    """What made the reference file, from its provenance attributes: ``{"kind", "generator",
    "floor_label"}``. ``kind`` is ``"geant4"`` when the ``generator`` attribute names Geant4 or
    is absent (the official CaloChallenge files carry none), ``"parametric"`` for files of
    caloforge's parametric simulator, ``"other"`` otherwise (e.g. a model's showers)."""
    gen = attrs.get("generator")
    gen = gen.decode() if isinstance(gen, bytes) else gen
    if gen is None or str(gen).strip() == "" or "geant4" in str(gen).lower():
        kind, label = "geant4", "Geant4 vs Geant4"
    elif str(gen).startswith(PARAMETRIC_GENERATOR):
        kind, label = "parametric", "reference vs reference (parametric simulator)"
    else:
        kind, label = "other", f"reference vs reference ({gen})"
    return {"kind": kind, "generator": None if gen is None else str(gen), "floor_label": label}


def _energy_description(attrs: dict) -> str:
    """The incident-energy spectrum a file records (simulate: ``energy``, generate: ``energies``)."""
    for key in ("energy", "energies"):
        v = attrs.get(key)
        if v is not None and str(v).strip():
            return str(v.decode() if isinstance(v, bytes) else v)
    return ""


def energy_spectrum_test(ref_e: np.ndarray, gen_e: np.ndarray) -> dict:
    """Two-sample Kolmogorov-Smirnov test of two incident-energy samples: statistic, p-value."""
    from scipy.stats import ks_2samp

    r = ks_2samp(np.asarray(ref_e, dtype=np.float64), np.asarray(gen_e, dtype=np.float64))
    return {"test": "two-sample Kolmogorov-Smirnov", "statistic": float(r.statistic), "p_value": float(r.pvalue)}


def _energy_warning(name: str, ref_desc: str, gen_desc: str, ref_e: np.ndarray, gen_e: np.ndarray,
                    test: dict) -> str:
    def sample(label: str, desc: str, e: np.ndarray) -> str:
        rng = f"{float(e.min()) / 1e3:.3g}-{float(e.max()) / 1e3:.3g} GeV"
        return f"{label} ({desc}, {rng})" if desc else f"{label} ({rng})"

    return (f"incident-energy spectra differ: {sample('reference', ref_desc, ref_e)} vs "
            f"{sample(name, gen_desc, gen_e)}, two-sample KS p = {test['p_value']:.2g}; every metric then "
            "measures the energy spectrum as well as the showers (generate with --energies-from the reference)")


def epoch_cap_reached(cls: dict, max_epochs: int) -> bool:
    """Whether a classifier ran to its epoch cap and its best epoch was the last one."""
    best, run = cls.get("best_epoch"), cls.get("epochs_run")
    return best is not None and run is not None and run >= max_epochs and best == run


def _caveats(prefix: str, res: dict, max_epochs: int) -> list[str]:
    """The caveats of one comparison's metrics, for the top-level ``notes``."""
    out = []
    for key, label in (("fpd", "FPD"), ("kpd", "KPD")):
        note = (res.get(key) or {}).get("note")
        if note:
            out.append(f"{prefix}: {note}" if note.startswith(label) else f"{prefix}: {label}: {note}")
    for key, label in (("cls_low", "low-level"), ("cls_high", "high-level"), ("cls_cnn", "ResNet"),
                       ("multiclass", "multiclass")):
        cls = res.get(key)
        if cls is not None:
            cls["hit_epoch_cap"] = epoch_cap_reached(cls, max_epochs)
            if cls["hit_epoch_cap"]:
                epochs = f"{max_epochs} epoch{'s' if max_epochs != 1 else ''}"
                out.append(f"{prefix}: the {label} classifier stopped at its epoch cap ({epochs}, best epoch = "
                           "last epoch); the AUC may not have converged (raise --cls-epochs)")
    return out


#: The class of the reference's second half in the multiclass test with ``--floor``.
FLOOR_CLASS = "floor: reference half B"


def multiclass_key(name: str) -> str:
    """A sample's class name in the multiclass results (``NAME (sample)`` if it is taken)."""
    return f"{name} (sample)" if name in ("reference", FLOOR_CLASS) else name


def _multiclass(ref: ShowerFeatures, samples: dict[str, ShowerFeatures], half: np.ndarray | None,
                options: EvaluationOptions, progress: Progress | None) -> dict:
    """The multiclass test over the reference and every sample (high-level inputs). With the
    floor (``half`` given), the reference's half A is the reference class and its half B one
    more class, whose log-posterior is the floor: a sample drawn exactly like the reference.
    Samples named like those classes are listed as ``NAME (sample)``."""
    if half is None:
        classes = {"reference": ref}
    else:
        classes = {"reference": ref.select(half), FLOOR_CLASS: ref.select(~half)}
    for name, f in samples.items():
        classes[multiclass_key(name)] = f
    cfg = options.classifier
    task = "multiclass classifier (high-level)"

    def cb(epochs: float) -> None:
        if progress:
            progress(task, epochs, cfg.max_epochs)

    r = multiclass_test([high_level_inputs(f) for f in classes.values()], cfg, seed=options.seed, on_batch=cb)
    if progress:
        progress(task, r.epochs_run, r.epochs_run)
    return {
        "classes": list(classes), "inputs": "high-level",
        "reference_rows": "all" if half is None else "half A (half B is the floor class)",
        "log_posterior": dict(zip(classes, r.log_posterior, strict=True)), "chance": r.chance,
        "accuracy": r.accuracy, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run, "n_train": r.n_train,
        "n_test": r.n_test, "n_val": r.n_val, "seconds": r.seconds, "device": r.device,
    }


class Runner(Protocol):
    """Where the evaluation's independent parts run (:func:`evaluate`'s ``runner``): the Dask
    runner of :mod:`caloforge.evaluation.distributed`, or None for this process, part by part."""

    def share(self, value: Any) -> Any:
        """``value`` (used by several parts) placed once where the parts run; a handle to it."""
        ...

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Start ``fn(*args)``; a handle for :meth:`result`."""
        ...

    def result(self, handle: Any) -> Any:
        """The value of a submitted part (waits for it; its exception is raised here)."""
        ...


#: The metric families of :func:`compare`, in the order it runs them: each is one part (one
#: task) when a runner spreads the evaluation.
COMPARE_FAMILIES = ("hist", "fpd", "kpd", "prdc", "cls-high", "cls-low", "cnn")


def _compare_part(ref: ShowerFeatures, gen: ShowerFeatures, options: EvaluationOptions, binning: FeatureBinning,
                  ref_counts: np.ndarray | None, gen_counts: np.ndarray | None, ref_low: np.ndarray | RowFile | None,
                  gen_low: np.ndarray | RowFile | None, label: str, image_shape: tuple[int, int, int] | None,
                  ref_voxels: np.ndarray | None, gen_voxels: np.ndarray | None,
                  low_rows: tuple[np.ndarray | None, np.ndarray | None]) -> tuple[dict, dict]:
    """One metric family of :func:`compare` (``options.metrics`` holds just it): (metrics, timing)."""
    timing: dict[str, float] = {}
    out = compare(ref, gen, options, binning, ref_counts, gen_counts, ref_low, gen_low, None, timing, label,
                  image_shape, ref_voxels, gen_voxels, low_rows)
    return out, timing


def _submit_compare(runner: Runner, ref: Any, gen: ShowerFeatures, options: EvaluationOptions,
                    binning: FeatureBinning, ref_counts: np.ndarray | None, gen_counts: np.ndarray | None,
                    ref_low: Any, gen_low: np.ndarray | RowFile | None, label: str,
                    image_shape: tuple[int, int, int] | None, ref_voxels: Any, gen_voxels: np.ndarray | None,
                    low_rows: tuple[np.ndarray | None, np.ndarray | None] = (None, None)) -> list:
    """:func:`compare` as one part per metric family (each with the same seed as in one process);
    ``ref``, ``ref_low``, ``ref_voxels`` may be handles of :meth:`Runner.share`. The handles, in
    :data:`COMPARE_FAMILIES` order."""
    gen = runner.share(gen)
    if gen_low is not None and "cls-low" in options.metrics and "cnn" in options.metrics:
        gen_low = runner.share(gen_low)  # used by two parts: placed once
    handles = []
    for fam in COMPARE_FAMILIES:
        if fam not in options.metrics:
            continue
        low, vox, hist = fam in ("cls-low", "cnn"), fam == "prdc", fam == "hist"
        handles.append(runner.submit(
            _compare_part, ref, gen, replace(options, metrics=(fam,)), binning,
            ref_counts if hist else None, gen_counts if hist else None, ref_low if low else None,
            gen_low if low else None, label, image_shape if fam == "cnn" else None, ref_voxels if vox else None,
            gen_voxels if vox else None, low_rows if low else (None, None)))
    return handles


def _collect(runner: Runner, handles: list, timing: dict, done: Callable[[], None]) -> dict:
    """The metrics of :func:`_submit_compare`'s parts, merged in :func:`compare`'s key order."""
    out: dict[str, Any] = {}
    for h in handles:
        part, t = runner.result(h)
        out.update(part)
        timing.update(t)
        done()
    return out


def _finish_sample(item: tuple, ref: Sample, opts: EvaluationOptions, energy_edges: np.ndarray,
                   binning: FeatureBinning, ref_energy: str, runner: Runner | None, timing: dict, notes: list[str],
                   warnings_: list[str], blocks: list[dict], done: Callable[[], None] = lambda: None) -> None:
    """A generated sample's block: its metrics (collected from ``runner`` if it ran there), the
    per-energy-bin view, the incident-energy test, its notes and caveats."""
    name, f, s, sample_notes, res = item
    if runner is not None:
        res = _collect(runner, res, timing, done)
    notes.extend(sample_notes)
    t = time.perf_counter()
    res["energy_bins"] = _energy_binned(ref.features, s.features, energy_edges, opts, binning)
    timing[f"{name}: energy_bins"] = round(time.perf_counter() - t, 3)
    attrs = f.attrs
    test = energy_spectrum_test(ref.features.e_inc, s.features.e_inc)
    res["incident_energy_test"] = test
    if test["p_value"] < ENERGY_SPECTRUM_P:
        warnings_.append(_energy_warning(name, ref_energy, _energy_description(attrs), ref.features.e_inc,
                                         s.features.e_inc, test))
    notes.extend(_caveats(name, res, opts.classifier.max_epochs))
    block = {"name": name, "files": s.files, "n_generated": f.n,
             "provenance": {k: attrs[k] for k in ("generator", "caloforge_version", "seed", "model") if k in attrs},
             **res}
    blocks.append(block)


def _finish_floor(floor: dict, fa: ShowerFeatures, fb: ShowerFeatures, opts: EvaluationOptions,
                  energy_edges: np.ndarray, binning: FeatureBinning, source: dict, notes: list[str]) -> dict:
    """The floor block from its metrics: sizes, label, caveats, per-energy-bin view, note."""
    floor["n_reference_a"], floor["n_reference_b"] = len(fa), len(fb)
    floor["label"] = source["floor_label"]
    notes.extend(_caveats("floor", floor, opts.classifier.max_epochs))
    floor["energy_bins"] = _energy_binned(fa, fb, energy_edges, opts, binning)
    notes.append("floor: the reference split in two random halves and compared with the same metrics; "
                 "its sample size is half the reference's, so it slightly overstates the true floor")
    return floor


def evaluate(
    reference: ShowerFile,
    generated: dict[str, ShowerFile],
    options: EvaluationOptions | None = None,
    progress: Progress | None = None,
    runner: Runner | None = None,
) -> tuple[dict, dict[str, Any]]:
    """Evaluate every generated sample against ``reference``.

    ``runner``: run the independent parts (each sample's metric families, the floor's, the
    multiclass test) there, e.g. on a Dask cluster (:func:`caloforge.evaluation.distributed.
    dask_runner`); the files are still read here, once. Same seeds, same metrics as without.

    Low-level classifier inputs (``cls-low``, ``cnn``) beyond ``options.low_level_budget`` bytes
    are written to scratch files in ``options.scratch`` (deleted at the end, also on errors) and
    read batch by batch: same numbers as in memory. Workers of a ``runner`` on other machines
    then need that folder on a shared file system.

    Returns ``(results, context)``: the ``metrics.json`` dict and what the plots need (features,
    mean showers, binning).
    """
    opts = options or EvaluationOptions()
    plan, folder = _low_level_plan(reference, generated, opts)
    if plan != "spill":
        return _evaluate(reference, generated, opts, progress, runner, None, folder if plan == "subset" else None)
    with tempfile.TemporaryDirectory(prefix="caloforge-cls-", dir=folder) as scratch:
        return _evaluate(reference, generated, opts, progress, runner, Path(scratch), None)


def _evaluate(reference: ShowerFile, generated: dict[str, ShowerFile], opts: EvaluationOptions,
              progress: Progress | None, runner: Runner | None, scratch: Path | None,
              no_room: str | None) -> tuple[dict, dict[str, Any]]:
    """:func:`evaluate` once the place of the low-level inputs is decided: ``scratch`` (a folder
    to spill them to) or memory; ``no_room``: the scratch folder that had too little space."""
    g = reference.geometry
    for f in generated.values():
        if f.geometry != g:
            raise InputError(f"geometry {f.geometry.name} differs from the reference's ({g.name})", f.paths[0])
    need = {name: MIN_SHOWERS * (2 if opts.floor and name == "reference" else 1)
            for name in ("reference", *generated)}
    for name, f in {"reference": reference, **generated}.items():
        if f.n < need[name]:
            why = " (--floor splits it in two halves)" if need[name] > MIN_SHOWERS else ""
            raise InputError(f"holds {f.n} showers; the evaluation needs at least {need[name]}{why}", f.paths[0])
    thr = g.readout_threshold if opts.threshold is None else float(opts.threshold)
    rng = np.random.default_rng(opts.seed)
    timing: dict[str, float] = {}
    notes: list[str] = []
    want_low = "cls-low" in opts.metrics or "cnn" in opts.metrics
    image_shape = None
    if "cnn" in opts.metrics:
        if not g.is_regular or math.prod(g.shape) != g.n_voxels:
            raise InputError(f"the ResNet classifier (--metrics cnn) needs a regular geometry (ds2, ds3); "
                             f"{g.name} is irregular")
        image_shape = g.shape
    n_samples = 1 + len(generated)
    for name, f in {"reference": reference, **generated}.items():
        if f.shower_dtype != np.float32:
            notes.append(f"{name}: showers stored as {f.shower_dtype} are read as float32, so features are "
                         "summed in float32; the official code sums them in the stored dtype")

    t = time.perf_counter()
    ref_rows = None
    if want_low:
        budget = opts.low_level_budget if no_room is not None else None
        ref_rows, note = _cls_rows(reference.n, g.n_voxels, n_samples, opts.cls_max_showers, rng, budget)
        if note:
            notes.append(f"reference: {note}")
        if no_room is not None:
            notes.append(f"low-level classifier inputs above the {opts.low_level_budget / 2**30:.1f} GiB memory budget "
                         f"and too little free space in {no_room} to spill them (--scratch): subsets used")
        if scratch is not None:
            notes.append(f"low-level classifier inputs above the {opts.low_level_budget / 2**30:.1f} GiB memory budget: "
                         f"written to float32 scratch files in {scratch.parent} and read batch by batch "
                         "(same numbers as in memory)")
    want_hist = "hist" in opts.metrics
    prdc_rng = np.random.default_rng(opts.seed + 2)  # its own stream: the other subsets stay as they were

    def prdc_rows(n: int) -> np.ndarray | None:
        if "prdc" not in opts.metrics or opts.prdc.inputs != "voxels":
            return None
        limit = n if opts.prdc.max_samples is None else min(n, opts.prdc.max_samples)
        return np.sort(prdc_rng.choice(n, size=limit, replace=False)) if limit < n else np.arange(n)

    ref = gather(reference, "reference", thr, ref_rows, progress=progress,
                 keep_voxels_above=(binning_min_energy(g) if want_hist else None), prdc_rows=prdc_rows(reference.n),
                 spill=None if scratch is None else scratch / "reference.f32")
    binning = binning_from_reference(ref.features, None)
    binning.voxel_energy = log_edges(binning.min_energy, ref.voxel_max, N_EDGES_VOXEL)
    timing["read_reference"] = round(time.perf_counter() - t, 3)

    # floor halves (row masks over the reference)
    half = None
    if opts.floor:
        perm = np.random.default_rng(opts.seed + 1).permutation(reference.n)
        half = np.zeros(reference.n, dtype=bool)
        half[perm[: reference.n // 2]] = True

    ref_counts = None
    floor_counts = {}
    if "hist" in opts.metrics and binning.voxel_energy is not None:
        t = time.perf_counter()
        masks = {"all": np.ones(reference.n, dtype=bool)}
        if half is not None:
            masks.update({"a": half, "b": ~half})
        if ref.kept_voxels is not None:  # no second pass needed
            per_row, values = ref.kept_voxels
            counts = {k: _counts(values if m.all() else values[np.repeat(m, per_row)], binning.voxel_energy)
                      for k, m in masks.items()}
            ref.kept_voxels = None
        else:
            counts = _voxel_counts_pass(reference, binning.voxel_energy, thr, masks, progress, "reference")
        ref_counts = counts["all"]
        floor_counts = counts
        timing["reference_voxel_histogram"] = round(time.perf_counter() - t, 3)

    energy_edges = np.asarray(opts.energy_bins, dtype=float) if opts.energy_bins else default_energy_edges(ref.features.e_inc)

    blocks: list[dict] = []
    samples: dict[str, Sample] = {}
    ref_attrs = reference.attrs
    source = reference_source(ref_attrs)
    ref_energy = _energy_description(ref_attrs)
    warnings_: list[str] = []
    # With a runner (Dask) every comparison is submitted as soon as its inputs are read and the
    # results are collected afterwards, in the same order as the single-process run.
    shared: dict[str, Any] = {}
    if runner is not None:
        shared = {"features": runner.share(ref.features), "counts": ref_counts,
                  "low": None if ref.low_level is None else runner.share(ref.low_level),
                  "voxels": None if ref.prdc_voxels is None else runner.share(ref.prdc_voxels)}
    pending: list[tuple[str, ShowerFile, Sample, list[str], Any]] = []
    for name, f in generated.items():
        t = time.perf_counter()
        rows = None
        sample_notes: list[str] = []
        if want_low:
            budget = opts.low_level_budget if no_room is not None else None
            rows, note = _cls_rows(f.n, g.n_voxels, n_samples, opts.cls_max_showers, rng, budget)
            if note:
                sample_notes.append(f"{name}: {note}")
        s = gather(f, name, thr, rows, binning.voxel_energy, progress, prdc_rows=prdc_rows(f.n),
                   spill=None if scratch is None else scratch / f"sample-{len(samples)}.f32")
        samples[name] = s
        timing[f"{name}: read"] = round(time.perf_counter() - t, 3)
        if runner is None:
            res: Any = compare(ref.features, s.features, opts, binning, ref_counts, s.voxel_counts, ref.low_level,
                               s.low_level, progress, timing, f"{name}: ", image_shape, ref.prdc_voxels,
                               s.prdc_voxels)
        else:
            res = _submit_compare(runner, shared["features"], s.features, opts, binning, ref_counts,
                                  s.voxel_counts, shared["low"], s.low_level, f"{name}: ", image_shape,
                                  shared["voxels"], s.prdc_voxels)
        pending.append((name, f, s, sample_notes, res))
        if ref.low_level is not None:
            if isinstance(s.low_level, RowFile) and runner is None:
                s.low_level.unlink()  # its scratch space, before the next sample's
            s.low_level = None  # free memory before the next sample (a runner holds its own copy)
        s.prdc_voxels = None
        if runner is None:
            _finish_sample(pending.pop(), ref, opts, energy_edges, binning, ref_energy, None, timing,
                           notes, warnings_, blocks)

    floor: Any = None
    floor_halves: tuple[ShowerFeatures, ShowerFeatures] | None = None
    if half is not None:
        t = time.perf_counter()
        fa, fb = floor_halves = ref.features.select(half), ref.features.select(~half)
        low_rows: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        if ref.low_level is not None and ref.low_level_rows is not None:
            # both halves index the reference's low-level array: no copy of either half
            in_a = half[ref.low_level_rows]
            low_rows = (np.flatnonzero(in_a), np.flatnonzero(~in_a))
        vox_a = vox_b = None
        if ref.prdc_voxels is not None and ref.prdc_rows is not None:
            in_a = half[ref.prdc_rows]
            vox_a, vox_b = ref.prdc_voxels[in_a], ref.prdc_voxels[~in_a]
        if runner is None:
            floor = compare(fa, fb, opts, binning, floor_counts.get("a"), floor_counts.get("b"), ref.low_level,
                            ref.low_level, progress, timing, "floor: ", image_shape, vox_a, vox_b, low_rows)
            floor = _finish_floor(floor, fa, fb, opts, energy_edges, binning, source, notes)
            timing["floor"] = round(time.perf_counter() - t, 3)
        else:
            floor = _submit_compare(runner, fa, fb, opts, binning, floor_counts.get("a"), floor_counts.get("b"),
                                    shared["low"], shared["low"], "floor: ", image_shape, vox_a, vox_b, low_rows)

    multiclass: Any = None
    if "multiclass" in opts.metrics:
        t = time.perf_counter()
        sample_features = {n: s.features for n, s in samples.items()}
        if runner is None:
            multiclass = _multiclass(ref.features, sample_features, half, opts, progress)
            timing["multiclass"] = round(time.perf_counter() - t, 3)
        else:
            multiclass = runner.submit(_multiclass, shared["features"], sample_features, half, opts, None)

    if runner is not None:  # collect, in the order of the single-process run
        total = sum(len(p[4]) for p in pending) + (len(floor) if floor is not None else 0) + (multiclass is not None)
        done = [0]

        def collected() -> None:
            done[0] += 1
            if progress:
                progress("evaluation parts (dask)", done[0], total)

        if progress:
            progress("evaluation parts (dask)", 0, total)
        for item in pending:
            _finish_sample(item, ref, opts, energy_edges, binning, ref_energy, runner, timing, notes, warnings_,
                           blocks, collected)
        if floor is not None and floor_halves is not None:
            floor = _finish_floor(_collect(runner, floor, timing, collected), *floor_halves, opts, energy_edges,
                                  binning, source, notes)
        if multiclass is not None:
            t = time.perf_counter()
            multiclass = runner.result(multiclass)
            collected()

    if multiclass is not None:
        for block in blocks:
            block["multiclass_log_posterior"] = multiclass["log_posterior"][multiclass_key(block["name"])]
        if floor is not None:
            floor["multiclass_log_posterior"] = multiclass["log_posterior"][FLOOR_CLASS]
        notes.extend(_caveats("multiclass", {"multiclass": multiclass}, opts.classifier.max_epochs))
        if runner is not None:
            timing["multiclass"] = round(time.perf_counter() - t, 3)

    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "caloforge_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "dataset": g.name,
        "threshold_mev": thr,
        "metrics": list(opts.metrics),
        "classifier": {"hidden_layers": opts.classifier.hidden_layers, "hidden_units": opts.classifier.hidden_units,
                       "max_epochs": opts.classifier.max_epochs, "patience": opts.classifier.patience,
                       "learning_rate": opts.classifier.learning_rate, "batch_size": opts.classifier.batch_size},
        "resnet": {"depth": opts.resnet.depth, "width_factor": opts.resnet.width_factor},
        "prdc_settings": {"nearest_k": opts.prdc.nearest_k, "max_samples": opts.prdc.max_samples,
                          "standardise": opts.prdc.standardise, "inputs": opts.prdc.inputs},
        "reference": {"files": ref.files, "n": reference.n, "source": source["kind"],
                      "generator": source["generator"]},
        "n_reference": reference.n,
        "energy_bin_edges_gev": (energy_edges / 1e3).tolist(),
        "generated": blocks,
    }
    if len(blocks) == 1:  # the single-sample layout: the block's keys at the top level too
        results.update({k: v for k, v in blocks[0].items() if k not in ("name", "files")})
    if floor is not None:
        results["floor"] = floor
    if multiclass is not None:
        results["multiclass"] = multiclass
    results["warnings"] = warnings_
    results["notes"] = notes + binning.notes
    results["timing_seconds"] = timing
    results["peak_memory_mb"] = round(_peak_rss_mb(), 1)
    if isinstance(ref.low_level, RowFile):
        ref.low_level.close()
        ref.low_level = None  # its file goes with the scratch folder
    context = {"reference": ref, "samples": samples, "binning": binning, "geometry": g,
               "reference_voxel_counts": ref_counts}
    return _clean(results), context


def write_json(obj: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(obj, indent=2))
