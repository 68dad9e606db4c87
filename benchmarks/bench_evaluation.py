"""Time and peak memory of `caloforge evaluate` metric by metric on large DS2 samples.

Simulates two samples of ``--n`` DS2 showers with the parametric simulator (different seeds),
then runs the evaluation pipeline in a fresh process and prints the time of every step and the
peak resident memory.

    python benchmarks/bench_evaluation.py --n 100000                       # hist + FPD + KPD
    python benchmarks/bench_evaluation.py --n 100000 --metrics hist,fpd,kpd,cls-high --fast
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from caloforge.data import open_showers
from caloforge.evaluation.classifier import ClassifierConfig
from caloforge.evaluation.pipeline import EvaluationOptions, evaluate
ref, gen, metrics, fast = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
opts = EvaluationOptions(metrics=tuple(metrics.split(",")),
                         classifier=ClassifierConfig.fast() if fast else ClassifierConfig.official())
t = time.perf_counter()
res, _ = evaluate(open_showers(ref), {"sample": open_showers(gen)}, opts)
res["total_seconds"] = time.perf_counter() - t
res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("JSON " + json.dumps(res))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--metrics", default="hist,fpd,kpd")
    ap.add_argument("--fast", action="store_true", help="fast classifier preset")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    d = args.dir or Path(tempfile.mkdtemp(prefix="caloforge-bench-eval-"))
    d.mkdir(parents=True, exist_ok=True)
    from caloforge.simulation import simulate_to_file

    files = []
    for seed in (1, 2):
        p = d / f"ds2_{args.n}_seed{seed}.h5"
        if not p.exists():
            t = time.perf_counter()
            simulate_to_file(p, "ds2", args.n, "log-uniform:1GeV:1TeV", seed=seed)
            print(f"simulated {p.name} in {time.perf_counter() - t:.0f} s", flush=True)
        files.append(p)
    out = subprocess.run([sys.executable, "-c", CHILD, str(files[0]), str(files[1]), args.metrics,
                          "1" if args.fast else "0"], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    res = json.loads(next(l for l in out.stdout.splitlines() if l.startswith("JSON "))[5:])
    print(f"\nDS2, {args.n:,} vs {args.n:,} showers, metrics {args.metrics}\n")
    print("| step | seconds |\n|---|---|")
    for k, v in res["timing_seconds"].items():
        print(f"| {k} | {v:.1f} |")
    print(f"| **total** | **{res['total_seconds']:.1f}** |")
    print(f"\npeak memory: {res['peak_rss_mb']:.0f} MiB")
    for k in ("fpd", "kpd", "cls_high", "cls_low"):
        if k in res:
            print(k, {kk: vv for kk, vv in res[k].items() if kk in ("value", "error", "auc", "jsd", "epochs_run")})


if __name__ == "__main__":
    main()
