"""The CaloChallenge 2022 published results, shipped as package data for side-by-side tables.

Source: the results files of the challenge's official code repository (CaloChallenge/homepage,
``final_results``), as tabulated for the CaloChallenge paper (arXiv:2410.21611). The ``GEANT4``
rows compare the official Geant4 training and evaluation files: the noise floor of each metric.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

_DATASET_KEYS = {"ds1-photons": "ds1_photons", "ds1-pions": "ds1_pions", "ds2": "ds2", "ds3": "ds3"}


def _num(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class PublishedResult:
    """One submission's published figures on one dataset (None where not measured)."""

    dataset: str
    model: str
    auc_low: float | None
    auc_low_std: float | None
    auc_high: float | None
    auc_high_std: float | None
    fpd: float | None  # x1e3
    fpd_std: float | None
    kpd: float | None  # x1e3
    kpd_std: float | None
    ms_cpu_1: float | None
    ms_cpu_100: float | None
    ms_cpu_10000: float | None
    ms_gpu_1: float | None
    ms_gpu_100: float | None
    ms_gpu_10000: float | None
    parameters: float | None
    sep_mean: dict[str, float | None]


@cache
def published_results(dataset: str) -> tuple[PublishedResult, ...]:
    """All published rows of one of the official datasets (empty for any other geometry)."""
    key = _DATASET_KEYS.get(dataset)
    if key is None:
        return ()
    text = resources.files("caloforge.evaluation").joinpath("data/calochallenge_results.csv").read_text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    rows = []
    for r in csv.DictReader(lines):
        if r["dataset"] != key:
            continue
        rows.append(
            PublishedResult(
                dataset=dataset, model=r["submission_name"],
                auc_low=_num(r["binary_cls_low"]), auc_low_std=_num(r["binary_cls_low_std"]),
                auc_high=_num(r["binary_cls_high"]), auc_high_std=_num(r["binary_cls_high_std"]),
                fpd=_num(r["FPD_x1e3"]), fpd_std=_num(r["FPD_x1e3_std"]),
                kpd=_num(r["KPD_x1e3"]), kpd_std=_num(r["KPD_x1e3_std"]),
                ms_cpu_1=_num(r["time_CPU_1"]), ms_cpu_100=_num(r["time_CPU_100"]),
                ms_cpu_10000=_num(r["time_CPU_10000"]), ms_gpu_1=_num(r["time_GPU_1"]),
                ms_gpu_100=_num(r["time_GPU_100"]), ms_gpu_10000=_num(r["time_GPU_10000"]),
                parameters=_num(r["Parameters_generation"]),
                sep_mean={k[len("sep_mean_"):]: _num(v) for k, v in r.items() if k.startswith("sep_mean_")},
            )
        )
    return tuple(rows)
