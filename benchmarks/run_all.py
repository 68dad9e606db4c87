"""``make bench``: the quick benchmarks in one go, each a subprocess, output in bench-output/.

    python benchmarks/run_all.py            # quick sizes (about 10 minutes on 2 CPU cores)
    python benchmarks/run_all.py --full     # the sizes quoted in the README (much longer)

The model table (``model_table.py``) and the trainings (``train_ds2.py``) are not run here:
they need the shared Geant4 file and take from half an hour to hours; run them on their own.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

QUICK = [
    ["bench_simulator.py", "--n", "5000", "--repeat", "1"],
    ["bench_io.py", "--n", "2000"],
    ["bench_metrics.py", "distances", "--n", "20000"],
    ["bench_evaluation.py", "--n", "10000"],
]
FULL = [
    ["bench_simulator.py", "--write"],
    ["bench_io.py", "--n", "50000"],
    ["bench_metrics.py", "distances"],
    ["bench_metrics.py", "classifier"],
    ["bench_evaluation.py", "--n", "100000"],
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the README's sizes")
    ap.add_argument("--out", type=Path, default=Path("bench-output"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for cmd in FULL if args.full else QUICK:
        name = Path(cmd[0]).stem + ("-" + cmd[1] if not cmd[1].startswith("-") else "")
        log = args.out / f"{name}.txt"
        print(f"== {' '.join(cmd)}  (log: {log})", flush=True)
        t = time.perf_counter()
        with open(log, "w") as fh:
            rc = subprocess.call([sys.executable, str(HERE / cmd[0]), *cmd[1:]], stdout=fh, stderr=subprocess.STDOUT)
        print(f"   {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - t:.0f} s", flush=True)
        print("   " + "\n   ".join(log.read_text().strip().splitlines()[-6:]), flush=True)
        if rc:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
