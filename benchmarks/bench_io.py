"""Peak memory and speed of streamed reading + feature computation on a large file.

Writes a synthetic DS3-sized file (40,500 voxels per shower, ~10% non-zero, uncompressed like
the official files) of ``--n`` showers, then, in a fresh subprocess, streams it through
:func:`caloforge.features.compute_features_streamed` and reports wall time and peak RSS.

    python benchmarks/bench_io.py --n 50000          # ~8 GB file, like one official DS3 file
    python benchmarks/bench_io.py --n 5000 --keep    # quicker
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

CHILD = r"""
import json, resource, sys, time
from caloforge.data import open_showers
from caloforge.features import compute_features_streamed
t = time.perf_counter()
f = open_showers(sys.argv[1])
feats = compute_features_streamed(f.iter_chunks(), f.geometry)
dt = time.perf_counter() - t
print(json.dumps({"n": len(feats), "seconds": dt,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_file(path: Path, n: int, n_voxels: int = 40500, block: int = 1000) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        e = f.create_dataset("incident_energies", (n, 1), "f4")
        s = f.create_dataset("showers", (n, n_voxels), "f4")
        for a in range(0, n, block):
            b = min(a + block, n)
            x = rng.exponential(1.0, (b - a, n_voxels)).astype(np.float32)
            x[rng.random((b - a, n_voxels)) < 0.9] = 0.0
            s[a:b] = x
            e[a:b] = np.exp(rng.uniform(np.log(1e3), np.log(1e6), (b - a, 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="showers in the synthetic DS3 file")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the file (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the file")
    args = ap.parse_args()
    tmpdir = Path(args.dir or tempfile.mkdtemp(prefix="caloforge-bench-"))
    path = tmpdir / f"ds3_synthetic_{args.n}.h5"
    if not path.exists():
        t = time.perf_counter()
        make_file(path, args.n)
        print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.0f} s")
    out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    size_gb = path.stat().st_size / 2**30
    print("| file size | showers | time | showers/s | peak RSS |")
    print("|---|---|---|---|---|")
    print(f"| {size_gb:.2f} GiB | {res['n']} | {res['seconds']:.1f} s | {res['n'] / res['seconds']:.0f} | "
          f"{res['peak_rss_mb']:.0f} MiB |")
    if not args.keep:
        path.unlink()


if __name__ == "__main__":
    main()
