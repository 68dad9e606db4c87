"""Cost per shower of each anomaly score, on 1 and 2 CPU threads.

    python benchmarks/anomaly_cost.py [--n 1000] [--threads 1,2] [--repeats 3]

Scores: the likelihood of the shipped per-voxel baseline ``voxel-lognormal-ds2`` (``-log p``),
the ``ae`` reconstruction error, the ``ae-pair`` two errors (one pass gives both) and each of
them energy-calibrated (the score plus :class:`~caloforge.anomaly.scores.EnergyCalibration`:
a polynomial in log E_inc per shower). ``ae`` and ``ae-pair`` are built with their default
configs (the architectures of ``benchmarks/anomaly_study.py``) and untrained weights: the cost
of a forward pass does not depend on the weights, so no trained model is needed. Timing: ``n``
showers of ``../shared/data/g4_ds2_electrons_1-100GeV.h5`` (rows 12,000 on) held in memory,
batches of 500, best of ``repeats``; ``uptime`` printed before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BKG = ROOT.parent / "shared" / "data" / "g4_ds2_electrons_1-100GeV.h5"
BATCH = 500


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "(uptime unavailable)"


def _best(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _pass(score: Callable, e_inc: object, showers: object, energies: np.ndarray, cal: object | None) -> None:
    """Score the showers in batches; with ``cal``, calibrate each score column too."""
    n = len(energies)
    for i in range(0, n, BATCH):
        out = score(e_inc[i : i + BATCH], showers[i : i + BATCH]).numpy()  # type: ignore[index]
        if cal is not None:
            for k in range(out.shape[1]):
                cal.apply(energies[i : i + BATCH], out[:, k])  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="showers timed")
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    if not BKG.is_file():
        print(f"the shared data are absent ({BKG})", file=sys.stderr)
        return 1
    import torch

    from caloforge.anomaly.scores import EnergyCalibration, make_score
    from caloforge.data import open_showers
    from caloforge.models import build_model, load_model

    e, s = open_showers(BKG).read(12000, 12000 + a.n)
    et, st = torch.from_numpy(e.reshape(-1).astype(np.float32)), torch.from_numpy(s)
    g = open_showers(BKG).geometry
    models = {"baseline -log p (voxel-lognormal-ds2)": (load_model("voxel-lognormal-ds2"), "likelihood")}
    for name in ("ae", "ae-pair"):
        m = build_model(name, g)
        m.fit_preprocessing(et[:200], st[:200])  # type: ignore[operator]
        models[f"{name} reconstruction error"] = (m.eval(), "model")
    # a calibration of the same form as the study's (degree 3), fitted on these showers' log E
    x = e.reshape(-1).astype(np.float64)
    cal = EnergyCalibration.fit(x, np.log(x) ** 2 + np.random.default_rng(0).normal(size=len(x)))
    print(f"# python benchmarks/anomaly_cost.py --n {a.n} --threads {a.threads} --repeats {a.repeats}")
    print(f"# {a.n} showers in memory, batch {BATCH}, best of {a.repeats}; ms per shower")
    print(f"# load before: {_uptime()}")
    threads = [int(t) for t in a.threads.split(",")]
    print("| score | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads) + " |")
    print("|---|" + "---|" * len(threads))
    for label, (model, kind) in models.items():
        score = make_score(model, kind)  # type: ignore[arg-type]
        raw, calibrated = [], []
        for t in threads:
            torch.set_num_threads(t)
            _pass(score, et, st, x, None)  # warm-up
            raw.append(1e3 * _best(lambda s=score: _pass(s, et, st, x, None), a.repeats) / a.n)
            calibrated.append(1e3 * _best(lambda s=score: _pass(s, et, st, x, cal), a.repeats) / a.n)
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in raw) + " |")
        print(f"| {label}, energy-calibrated | " + " | ".join(f"{v:.3f}" for v in calibrated) + " |")
    print(f"# load after: {_uptime()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
