"""FPD side by side: the fast path (batch moments from draw counts, eigenvalues of L^T C2 L)
against jetnet's computation (gathered batches, scipy.linalg.sqrtm), same process, same inputs.

Both compute the same 200 batch pairs (10 sizes from 10,000 to 50,000, 20 pairs each, jetnet's
draws and settings, as the CaloChallenge) from the high-level features of two DS2 samples of the
parametric simulator (the files of ``bench_evaluation.py``, simulated when absent), pair by pair
and alternately, so that the ratio stays meaningful on a shared machine whose load changes;
then ``fpd()`` itself runs once.

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
    # the draws of fpd(): one default_rng(seed) stream, per batch size and batch real then generated
    # indices; both computations on every pair, alternately, so that a shared machine's load
    # falls on both alike
    from caloforge.evaluation import distances as D

    xn, yn = D._prepare(x, y, True)
    sizes = D.fpd_batch_sizes(10_000, 50_000, 10)
    rng = np.random.default_rng(42)
    moments_x, moments_y = D._ResampledMoments(xn, int(sizes.max())), D._ResampledMoments(yn, int(sizes.max()))
    t_fast = {"moments": 0.0, "trace": 0.0}
    t_slow = {"moments": 0.0, "trace": 0.0}
    means: dict[str, list[float]] = {"eigh": [], "sqrtm": []}
    for bs in sizes:
        pts: dict[str, list[float]] = {"eigh": [], "sqrtm": []}
        for _ in range(20):
            i1, i2 = rng.choice(len(xn), size=bs), rng.choice(len(yn), size=bs)
            t = time.perf_counter()
            a, b = moments_x(i1), moments_y(i2)
            t_fast["moments"] += time.perf_counter() - t
            t = time.perf_counter()
            pts["eigh"].append(D.frechet_distance_fast(*a, *b))
            t_fast["trace"] += time.perf_counter() - t
            t = time.perf_counter()
            c, d = D._mean_cov(xn[i1]), D._mean_cov(yn[i2])
            t_slow["moments"] += time.perf_counter() - t
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pts["sqrtm"].append(D.frechet_distance(*c, *d))
            t_slow["trace"] += time.perf_counter() - t
        for k in means:
            means[k].append(float(np.mean(pts[k])))
    values = {}
    for k in means:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = D.curve_fit(D._linear, 1.0 / sizes, means[k], bounds=([0, 0], [np.inf, np.inf]))
        values[k] = params[0]
    print("\n| 200 batch pairs of 10k-50k (jetnet's draws, seed 42) | means + covariances (s) | "
          "Fréchet distances (s) | total (s) | FPD x1e3 |\n|---|---|---|---|---|")
    for k, label, tt in (("sqrtm", "jetnet's: gathered batches, scipy.linalg.sqrtm", t_slow),
                         ("eigh", "caloforge: draw counts, eigenvalues of L^T C2 L", t_fast)):
        print(f"| {label} | {tt['moments']:.1f} | {tt['trace']:.1f} | {sum(tt.values()):.1f} | {values[k] * 1e3:.9f} |")
    rel = np.max(np.abs(np.subtract(means["eigh"], means["sqrtm"])) / np.abs(means["sqrtm"]))
    print(f"\nspeed-up {sum(t_slow.values()) / sum(t_fast.values()):.2f}x; the 10 batch-size means agree to "
          f"{rel:.1e} relative, the fitted values to {abs(values['eigh'] - values['sqrtm']) / values['sqrtm']:.1e}")
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = fpd(x, y)  # the library function, default (fast) path: the same number
    print(f"fpd(x, y) = {lib.value * 1e3:.9f} ± {lib.error * 1e3:.3f} x1e3 in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
