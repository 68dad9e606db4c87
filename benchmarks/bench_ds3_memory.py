"""Peak memory of ``caloforge evaluate`` on DS3-sized samples (issue 10, item 3: "DS3 in 8 GB").

Simulates a synthetic DS3 pair in the official two-file layout (each sample = two files of
n/2 showers, 40,500 voxels, gzip) with ``caloforge simulate --dataset ds3``, then runs
``caloforge evaluate REF_1,REF_2 GEN_1,GEN_2`` under ``/usr/bin/time -v`` (maximum resident set
size of the process) for:

- ``non-classifier``: ``--metrics hist,fpd,kpd,prdc`` (PRDC on the high-level features);
- ``cls-low + floor`` (with ``--cls``): ``--metrics cls-low --floor`` with a tiny MLP (1 x 32, one
  epoch): its memory is the low-level inputs, (n, 40,501) float32 per sample, not the network.
  ``--baseline CALOFORGE`` runs the same command with another installation's ``caloforge`` too
  (e.g. the main branch's), for a before/after. ``--cls-memory GIB`` runs it a second time with
  that memory budget, so that the inputs go to scratch files (``--scratch``, default $TMPDIR);
- ``prdc on voxels`` (with ``--prdc-voxels``): ``--metrics prdc --prdc-inputs voxels`` (10,000
  showers per sample at most, 40,500 log10 voxel energies each), and with ``--baseline`` too.

    python benchmarks/bench_ds3_memory.py --n 5000 --cls --baseline /work/main/.venv/bin/caloforge
    python benchmarks/bench_ds3_memory.py --n 2000 --n 5000          # two sizes: the per-shower slope

Every run uses one thread (``--threads 1``). The files are written to ``--workdir`` (a temporary
folder unless given) and deleted unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CALOFORGE = str(Path(sys.executable).with_name("caloforge"))
N_VOXELS = 40_500


def run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def timed_peak(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, maximum resident set size in MiB) of ``cmd`` under /usr/bin/time -v."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    if m is None:
        raise SystemExit("no 'Maximum resident set size' in /usr/bin/time's output")
    return dt, int(m.group(1)) / 1024


def simulate(work: Path, n: int) -> tuple[str, str, float]:
    """Reference and generated sample, two files each (the official DS3 layout); seconds taken."""
    t = time.perf_counter()
    files = {}
    for tag, seeds in (("ref", (1, 2)), ("gen", (3, 4))):
        parts = []
        for i, (seed, size) in enumerate(zip(seeds, (n // 2, n - n // 2), strict=True), 1):
            path = work / f"{tag}_{n}_{i}.h5"
            if not path.exists():
                run([CALOFORGE, "simulate", "--dataset", "ds3", "-n", str(size), "--seed", str(seed), "-o",
                     str(path), "--threads", "1"])
            parts.append(str(path))
        files[tag] = ",".join(parts)
    return files["ref"], files["gen"], time.perf_counter() - t


def evaluate(caloforge: str, ref: str, gen: str, out: Path, extra: list[str]) -> dict:
    cmd = [caloforge, "evaluate", ref, gen, "-o", str(out), "--dataset", "ds3", "--no-plots", "--threads", "1",
           *extra]
    seconds, peak = timed_peak(cmd)
    m = json.loads((out / "metrics.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": seconds, "peak_mib": peak, "timing": m.get("timing_seconds", {}),
            "notes": m.get("notes", [])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="showers per sample (repeat for several sizes)")
    ap.add_argument("--cls", action="store_true", help="also the low-level classifier with --floor")
    ap.add_argument("--baseline", help="another installation's caloforge executable, run on the same files")
    ap.add_argument("--cls-memory", type=float, help="with --cls: also a run with this --cls-memory (GiB)")
    ap.add_argument("--prdc-voxels", action="store_true", help="also PRDC on log10 voxels")
    ap.add_argument("--no-default", action="store_true", help="skip the non-classifier run")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    sizes = args.n or [5000]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_ds3_"))
    work.mkdir(parents=True, exist_ok=True)
    lines = ["caloforge evaluate on synthetic DS3 (caloforge simulate --dataset ds3, two files per sample), "
             "1 thread; peak = maximum RSS (/usr/bin/time -v)"]
    try:
        for n in sizes:
            ref, gen, sim_s = simulate(work, n)
            mb = sum(Path(p).stat().st_size for p in (*ref.split(","), *gen.split(","))) / 2**20
            lines.append(f"\n{n} vs {n} showers: simulated in {sim_s:.0f} s, 4 files {mb:.0f} MiB on disk "
                         f"(one sample uncompressed float32: {n * N_VOXELS * 4 / 2**20:.0f} MiB)")
            runs = [] if args.no_default else [("non-classifier (hist,fpd,kpd,prdc)", CALOFORGE,
                                                 ["--metrics", "hist,fpd,kpd,prdc"])]
            if args.prdc_voxels:
                vox = ["--metrics", "prdc", "--prdc-inputs", "voxels"]
                runs.append(("prdc on log10 voxels", CALOFORGE, vox))
                if args.baseline:
                    runs.append(("prdc on log10 voxels, baseline", args.baseline, vox))
            if args.cls:
                cls = ["--metrics", "cls-low", "--floor", "--cls-width", "32", "--cls-depth", "1",
                       "--cls-epochs", "1"]
                runs.append(("cls-low + floor (MLP 1x32, 1 epoch)", CALOFORGE, cls))
                if args.baseline:
                    runs.append(("cls-low + floor, baseline", args.baseline, cls))
                if args.cls_memory:
                    runs.append((f"cls-low + floor, --cls-memory {args.cls_memory:g}", CALOFORGE,
                                 [*cls, "--cls-memory", str(args.cls_memory)]))
            for label, exe, extra in runs:
                r = evaluate(exe, ref, gen, work / "out", extra)
                top = sorted(r["timing"].items(), key=lambda kv: -kv[1])[:4]
                lines.append(f"  {label:40s} peak {r['peak_mib']:7.0f} MiB   {r['seconds']:6.1f} s   "
                             f"(slowest steps: {', '.join(f'{k} {v:.1f} s' for k, v in top)})")
                if args.cls and label.startswith("cls-low"):
                    low = n * (N_VOXELS + 1) * 4 / 2**20
                    lines[-1] += f"\n  {'':40s} (low-level inputs: {low:.0f} MiB per sample)"
                    lines[-1] += "".join(f"\n  {'':40s} note: {t}" for t in r["notes"] if "low-level" in t)
                print(lines[-1], flush=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
