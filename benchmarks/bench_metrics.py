"""Wall time of FPD + KPD on CaloChallenge-sized feature arrays, and of one classifier epoch.

    python benchmarks/bench_metrics.py distances --n 100000 --dim 362 --threads 1
    python benchmarks/bench_metrics.py classifier --n 20000 --threads 1 --epochs 1

``distances``: two (n, dim) Gaussian-ish float64 samples, the CaloChallenge settings
(``fpd(min_samples=10000)``, ``kpd(batch_size=10000)``). ``classifier``: the official protocol
(MLP 3 x 2048) on DS2 low-level inputs, n vs n showers drawn (with repetition) from the shared
Geant4 file, the second sample scaled by 1.02; reports seconds per epoch.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

G4_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "g4_ds2_electrons_1-100GeV.h5"


def limit_threads(n: int | None) -> None:
    if not n:
        return
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        print("threadpoolctl absent: set OPENBLAS_NUM_THREADS to limit numpy's threads")


def bench_distances(n: int, dim: int) -> None:
    from caloforge.evaluation import fpd, kpd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim))
    y = rng.normal(size=(n, dim)) * 1.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        f = fpd(x, y, min_samples=10_000)
        tf = time.perf_counter() - t
        t = time.perf_counter()
        k = kpd(x, y, batch_size=10_000)
        tk = time.perf_counter() - t
    print(f"FPD {f.value:.4g} ± {f.error:.2g}: {tf:.1f} s;  KPD {k.value:.3g} ± {k.error:.2g}: {tk:.1f} s "
          f"(n={n}, dim={dim})")


def bench_classifier(n: int, epochs: int) -> None:
    from caloforge.data import open_showers
    from caloforge.evaluation import ClassifierConfig, classifier_test, low_level_inputs

    f = open_showers(G4_FILE)
    e, s = f.read()
    rng = np.random.default_rng(0)
    i1, i2 = rng.integers(0, len(e), n), rng.integers(0, len(e), n)
    thr = f.geometry.readout_threshold
    t = time.perf_counter()
    a = low_level_inputs(e[i1], s[i1], thr)
    b = low_level_inputs(e[i2], s[i2] * np.float32(1.02), thr)
    print(f"low-level inputs: 2 x {a.shape} float32 ({2 * a.nbytes / 2**30:.2f} GiB) in {time.perf_counter() - t:.1f} s")
    del s
    cfg = ClassifierConfig.official(max_epochs=epochs)
    res = classifier_test(a, b, cfg, seed=0, progress=lambda d: print(
        f"  epoch {d['epoch']}: loss {d['train_loss']:.4f}, test acc {d['test_accuracy']:.4f}, {d['seconds']:.1f} s"))
    per_epoch = np.diff([0.0] + [h["seconds"] for h in res.history])
    print(f"AUC {res.auc:.4f}, JSD {res.jsd:.4f}; {res.n_train} training showers; "
          f"{per_epoch.mean():.1f} s per epoch (incl. test-split evaluation), total {res.seconds:.1f} s on {res.device}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["distances", "classifier"])
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--dim", type=int, default=362)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    limit_threads(args.threads)
    if args.what == "distances":
        bench_distances(args.n or 100_000, args.dim)
    else:
        bench_classifier(args.n or 20_000, args.epochs)


if __name__ == "__main__":
    main()
