"""FPD side by side: the fast path (batch moments from draw counts, eigenvalues of L^T C2 L)
against jetnet's computation (gathered batches, scipy.linalg.sqrtm), same process, same inputs.

Both draw the same 200 batch pairs (10 sizes from 10,000 to 50,000, 20 pairs each, as jetnet
and the CaloChallenge) from the high-level features of two DS2 samples of the parametric
simulator (the files of ``bench_evaluation.py``, simulated when absent). Running both in one
process, alternately, keeps the ratio meaningful on a shared machine.

    python benchmarks/bench_fpd.py --n 100000 --dir /tmp/bench   # one thread: OMP_NUM_THREADS=1
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def features(path: Path) -> np.ndarray:
    from caloforge.data import open_showers
    from caloforge.evaluation.classifier import high_level_inputs
    from caloforge.evaluation.pipeline import gather

    f = open_showers(path)
    return high_level_inputs(gather(f, path.stem, f.geometry.readout_threshold).features)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    d = args.dir or Path(tempfile.mkdtemp(prefix="caloforge-bench-fpd-"))
    d.mkdir(parents=True, exist_ok=True)
    from caloforge.evaluation.distances import fpd
    from caloforge.simulation import simulate_to_file

    cache = d / f"hl_{args.n}.npz"
    if cache.exists():
        z = np.load(cache)
        x, y = z["x"], z["y"]
    else:
        files = []
        for seed in (1, 2):
            p = d / f"ds2_{args.n}_seed{seed}.h5"
            if not p.exists():
                simulate_to_file(p, "ds2", args.n, "log-uniform:1GeV:1TeV", seed=seed)
            files.append(p)
        x, y = features(files[0]), features(files[1])
        np.savez(cache, x=x, y=y)
    print(f"DS2 high-level features: {x.shape} vs {y.shape}")
    results = {}
    for method in ("eigh", "sqrtm"):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results[method] = (fpd(x, y, method=method), time.perf_counter() - t)
    fast, slow = results["eigh"][0], results["sqrtm"][0]
    means_rel = np.max(np.abs(np.subtract(fast.settings["means"], slow.settings["means"])) / np.abs(slow.settings["means"]))
    print("\n| FPD computation | seconds | FPD x1e3 |\n|---|---|---|")
    for method, label in (("sqrtm", "jetnet's (gathered batches, scipy sqrtm)"), ("eigh", "caloforge (draw counts, eigh)")):
        r, s = results[method]
        print(f"| {label} | {s:.1f} | {r.value * 1e3:.9f} ± {r.error * 1e3:.3f} |")
    print(f"\nspeed-up {results['sqrtm'][1] / results['eigh'][1]:.2f}x; relative difference of the value "
          f"{abs(fast.value - slow.value) / abs(slow.value):.1e}, of the 10 batch-size means at most {means_rel:.1e}")


if __name__ == "__main__":
    main()
