"""Time and peak memory of `caloforge evaluate` metric by metric on large DS2 samples.

Simulates two samples of ``--n`` DS2 showers with the parametric simulator (different seeds),
then runs the evaluation pipeline in a fresh process and prints the time of every step and the
peak resident memory.

    python benchmarks/bench_evaluation.py --n 100000                       # hist + FPD + KPD, 2 threads
    python benchmarks/bench_evaluation.py --n 100000 --metrics hist,fpd,kpd,cls-high --fast
    python benchmarks/bench_evaluation.py --n 20000 --threads 1 --json after.json   # metrics to diff

``--threads`` sets torch's and BLAS's threads in the evaluating process as ``caloforge evaluate
--threads`` does (BLAS sums split over threads differ in the last bits, so compare metrics at one
thread count); ``--json`` writes the metrics without the timing, date and memory keys.
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
from caloforge._threads import configure_threads
configure_threads(int(sys.argv[5]))
from caloforge.data import open_showers
from caloforge.evaluation.classifier import ClassifierConfig
from caloforge.evaluation.pipeline import EvaluationOptions, evaluate
ref, gen, metrics, fast = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
opts = EvaluationOptions(metrics=tuple(metrics.split(",")),
                         classifier=ClassifierConfig.fast() if fast else ClassifierConfig.official())
t = time.perf_counter()
res, _ = evaluate(open_showers(ref), {"sample": open_showers(gen)}, opts)
res["total_seconds"] = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
res["peak_rss_mb"] = ru.ru_maxrss / 1024
res["cpu_seconds"] = ru.ru_utime + ru.ru_stime  # all threads, reading included
print("JSON " + json.dumps(res))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--metrics", default="hist,fpd,kpd")
    ap.add_argument("--fast", action="store_true", help="fast classifier preset")
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2, help="threads of the evaluation (as caloforge evaluate --threads)")
    ap.add_argument("--json", type=Path, default=None, help="write the metrics (no timing/date/memory) here")
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
                          "1" if args.fast else "0", str(args.threads)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    res = json.loads(next(l for l in out.stdout.splitlines() if l.startswith("JSON "))[5:])
    print(f"\nDS2, {args.n:,} vs {args.n:,} showers, metrics {args.metrics}, {args.threads} thread(s)\n")
    print("| step | seconds |\n|---|---|")
    for k, v in res["timing_seconds"].items():
        print(f"| {k} | {v:.1f} |")
    print(f"| **total** | **{res['total_seconds']:.1f}** |")
    print(f"\nCPU time of the evaluating process (all threads, imports included): {res['cpu_seconds']:.1f} s")
    print(f"\npeak memory: {res['peak_rss_mb']:.0f} MiB")
    for k in ("fpd", "kpd", "cls_high", "cls_low"):
        if k in res:
            print(k, {kk: vv for kk, vv in res[k].items() if kk in ("value", "error", "auc", "jsd", "epochs_run")})
    if args.json:
        keep = {k: v for k, v in res.items()
                if k not in ("timing_seconds", "peak_memory_mb", "created", "total_seconds", "peak_rss_mb",
                             "cpu_seconds")}
        args.json.write_text(json.dumps(keep, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
