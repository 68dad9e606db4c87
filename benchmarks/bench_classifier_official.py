"""The official-preset low-level classifier against the official CaloChallenge script, side by side.

Runs the official ``evaluate.py -m cls-low -d 2`` (CaloChallenge/homepage, ``code/``; give its folder
with ``--official``; it needs numpy, h5py, matplotlib, torch and scikit-learn, which the caloforge
environment has) and ``caloforge evaluate --metrics cls-low`` (``ClassifierConfig.official()``) on the
same two files, alternately, ``--repeats`` times each, every process with ``--threads`` threads, and
prints the wall time of each whole process, the AUC and JSD, and the ratio of the mean times.

Inputs as ``official_exactness.py``: two halves of ``--n`` Geant4 showers each, the second with every
voxel x ``--scale``. The official script runs from its own folder, with three changes made in memory
around it, none touching a number it computes: matplotlib's LaTeX text is switched off (no LaTeX
here), torch's thread count is set (the script leaves it at every core), and its train/test/validation
split is the 60/20/20 fraction split of its ``ttv_split(..., dataset=None)`` instead of the fixed
60,000 / 20,000 / 20,000 showers of ``dataset='2'`` (which needs 100,000 showers per file; caloforge
splits 60/20/20 too). ``--epochs`` sets both scripts' epoch count (official 50; a reduced count keeps
the benchmark short and the ratio is per epoch: both train and test every epoch). The official
script draws its split and batches from unseeded generators, so its AUC varies between runs;
caloforge's runs use seeds 0, 1, ...

    python benchmarks/bench_classifier_official.py --official /path/to/homepage/code \\
        --g4 ../shared/data/g4_ds2_electrons_1-100GeV.h5 --n 5000 --epochs 4 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_exactness import make_halves  # noqa: E402 - the same halves as the exactness benchmark

# The official evaluate.py, run unchanged but for: LaTeX text off, torch threads, fraction split.
_WRAPPER = textwrap.dedent('''
    import os, sys
    threads = int(sys.argv[1])
    import torch
    torch.set_num_threads(threads)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    _rc = plt.rc
    def _rc_no_tex(group, **kw):
        if group == "text":
            kw.pop("usetex", None)
        if group == "text.latex" or not kw:
            return
        _rc(group, **kw)
    plt.rc = _rc_no_tex
    script = os.path.abspath(sys.argv[2])
    sys.path.insert(0, os.path.dirname(script))
    sys.argv = [script] + sys.argv[3:]
    src = open(script).read()
    src, n = __import__("re").subn(r"dataset=args\\.dataset\\)", "dataset=None)", src)
    assert n == 1, "ttv_split call not found"
    exec(compile(src, script, "exec"), {"__name__": "__main__", "__file__": script})
''')


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds (user + system) of the process and its children, stdout); on a
    shared machine the CPU time is the steadier figure (one thread: about the idle wall time)."""
    t = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter() - t
    if res.returncode:
        sys.stderr.write(res.stdout[-3000:] + res.stderr[-3000:])
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), res.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, required=True, help="folder holding the official evaluate.py")
    ap.add_argument("--python", default=sys.executable, help="Python that runs the official script")
    ap.add_argument("--g4", type=Path, required=True, help="Geant4 DS2 file to cut the two samples from")
    ap.add_argument("--n", type=int, default=5000, help="showers per half")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.05, help="factor on every voxel of the second half")
    ap.add_argument("--epochs", type=int, default=50, help="epochs of both classifiers (official: 50)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    import os

    official = args.official.resolve()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ref, gen = make_halves(args.g4, args.start, args.n, args.scale, work)
        wrapper = work / "run_official_cls.py"
        wrapper.write_text(_WRAPPER)
        for r in range(args.repeats):
            fresh = Path(tempfile.mkdtemp(dir=work))  # the official reference .pkl cache: fresh each run
            (fresh / "reference.h5").symlink_to(ref.resolve())
            out_off = fresh / "official"
            out_off.mkdir()
            t_off, cpu_off, stdout = run([args.python, str(wrapper), str(args.threads), str(official / "evaluate.py"),
                                 "-i", str(gen.resolve()), "-r", str(fresh / "reference.h5"), "-m", "cls-low",
                                 "-d", "2", "--output_dir", str(out_off), "--cls_n_epochs", str(args.epochs),
                                 "--no_cuda"], cwd=official, env=env)
            m = re.findall(r"Final result of classifier test \(AUC / JSD\):\n(\S+) / (\S+)", stdout)
            best = re.findall(r"Accuracy on test set is (\S+)", stdout)
            auc_off, jsd_off = (float(m[-1][0]), float(m[-1][1])) if m else (float("nan"), float("nan"))
            rows.append({"run": "official", "repeat": r, "seconds": t_off, "cpu_seconds": cpu_off, "auc": auc_off,
                         "jsd": jsd_off, "epochs": len(best) - 1})
            print(f"official  repeat {r}: {t_off:7.1f} s wall, {cpu_off:7.1f} s CPU  AUC {auc_off:.4f}  "
                  f"JSD {jsd_off:.4f}", flush=True)
            out_ours = fresh / "caloforge"
            t_ours, cpu_ours, _ = run([sys.executable, "-m", "caloforge", "evaluate", str(ref), str(gen), "-o", str(out_ours),
                             "-d", "ds2", "--metrics", "cls-low", "--cls-epochs", str(args.epochs),
                             "--threads", str(args.threads), "--seed", str(r), "--no-plots"], env=env)
            res = json.loads((out_ours / "metrics.json").read_text())["cls_low"]
            rows.append({"run": "caloforge", "repeat": r, "seconds": t_ours, "cpu_seconds": cpu_ours, "auc": res["auc"],
                         "jsd": res["jsd"], "epochs": res["epochs_run"], "training_seconds": res["seconds"]})
            print(f"caloforge repeat {r}: {t_ours:7.1f} s wall, {cpu_ours:7.1f} s CPU  AUC {res['auc']:.4f}  "
                  f"JSD {res['jsd']:.4f}  (classifier {res['seconds']:.1f} s wall)", flush=True)

    def mean(run: str, key: str) -> float:
        v = [row[key] for row in rows if row["run"] == run]
        return sum(v) / len(v)

    def spread(run: str) -> str:
        v = [row["auc"] for row in rows if row["run"] == run]
        return f"{min(v):.4f}-{max(v):.4f}"

    ratio = mean("caloforge", "seconds") / mean("official", "seconds")
    cpu_ratio = mean("caloforge", "cpu_seconds") / mean("official", "cpu_seconds")
    print(f"\nDS2 Geant4 {args.n} vs {args.n} (second half x{args.scale}), cls-low, {args.epochs} epochs, "
          f"{args.threads} thread(s), {args.repeats} runs each (whole processes):")
    print("| script | mean wall s | mean CPU s | AUC (min-max) | mean JSD |\n|---|---|---|---|---|")
    for run_name in ("official", "caloforge"):
        print(f"| {run_name} | {mean(run_name, 'seconds'):.1f} | {mean(run_name, 'cpu_seconds'):.1f} | "
              f"{spread(run_name)} | {mean(run_name, 'jsd'):.4f} |")
    print(f"time ratio caloforge / official: wall {ratio:.2f}, CPU {cpu_ratio:.2f} (target <= 0.5)")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "scale": args.scale, "epochs": args.epochs,
                                         "threads": args.threads, "rows": rows, "ratio": ratio,
                                         "cpu_ratio": cpu_ratio}, indent=1))


if __name__ == "__main__":
    main()
