"""caloforge's separation powers next to the official CaloChallenge evaluation's, feature by feature.

Runs the official ``evaluate.py -m hist-chi`` (CaloChallenge/homepage, ``code/``; give its folder
with ``--official``; it needs numpy, h5py, matplotlib, torch and scikit-learn, which the caloforge
environment has) and ``caloforge evaluate --metrics hist`` on the same two files, and prints every
separation power of both, their relative difference and the wall time of each.

The official script runs unchanged, in a subprocess, from its own folder (it reads
``binning_dataset_*.xml`` there); the only thing changed around it is that matplotlib's LaTeX text
(``plt.rc('text', usetex=True)``) is switched off, since it needs a LaTeX installation and does not
touch any number. It caches the reference features in a ``.pkl`` beside the reference file, so the
reference is linked into a fresh folder each time (a stale cache would give stale numbers).

Inputs: either ``--reference`` and ``--generated`` files, or ``--g4 FILE`` to cut two halves of
``--n`` showers each from rows ``--start ...`` of a Geant4 file, the second multiplied by
``--scale`` (float32 arithmetic), as in the exactness test:

    python benchmarks/official_exactness.py --official /path/to/homepage/code \\
        --g4 ../shared/data/g4_ds2_electrons_1-100GeV.h5 --n 2000 --scale 1.05

``--extended`` also checks sparsity, EC r and width r, whose histograms the official helper defines
(``plot_sparsity``, ``plot_ECR``, ``plot_ECWidthR``) but ``hist-chi`` does not compute: it calls
those official functions on the official ``HighLevelFeatures`` of both samples.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np

DATASETS = {"1-photons": "ds1-photons", "1-pions": "ds1-pions", "2": "ds2", "3": "ds3"}

# Runs the official evaluate.py with LaTeX text rendering off (no number depends on it).
_WRAPPER = textwrap.dedent('''
    import os, runpy, sys
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
    script = os.path.abspath(sys.argv[1])
    sys.path.insert(0, os.path.dirname(script))
    sys.argv = [script] + sys.argv[2:]
    runpy.run_path(script, run_name="__main__")
''')

# Calls the official helper's plot_sparsity / plot_ECR / plot_ECWidthR (not part of hist-chi).
_EXTENDED = textwrap.dedent('''
    import os, sys, types
    import matplotlib
    matplotlib.use("Agg")
    import h5py, numpy as np
    code, ref, gen, dataset, out = sys.argv[1:6]
    sys.path.insert(0, code)
    os.chdir(code)
    import HighLevelFeatures as HLF
    import evaluate_plotting_helper as helper
    particle = {"1-photons": "photon", "1-pions": "pion", "2": "electron", "3": "electron"}[dataset]
    min_energy = {"1-photons": 1., "1-pions": 1., "2": 0.5e-3 / 0.033, "3": 0.5e-3 / 0.033}[dataset]
    hlfs = []
    for path in (ref, gen):
        with h5py.File(path, "r") as f:
            s, e = f["showers"][:], f["incident_energies"][:]
        s = np.where(s < min_energy, np.zeros_like(s), s)
        h = HLF.HighLevelFeatures(particle, filename="binning_dataset_{}.xml".format(dataset.replace("-", "_")))
        h.CalculateFeatures(s)
        h.Einc = e
        hlfs.append(h)
    os.makedirs(out, exist_ok=True)
    args = types.SimpleNamespace(mode="hist-chi", dataset=dataset, output_dir=out, min_energy=min_energy,
                                 x_scale="log")
    open(os.path.join(out, "histogram_chi2_{}.txt".format(dataset)), "w").write("extended\\n")
    helper.plot_sparsity(hlfs[1], hlfs[0], args)
    helper.plot_ECR(hlfs[1], hlfs[0], args)
    helper.plot_ECWidthR(hlfs[1], hlfs[0], args)
''')


def parse_official(path: Path) -> dict[str, float]:
    """``histogram_chi2_<dataset>.txt``: 'name: \\nvalue' blocks (the header line skipped)."""
    text = path.read_text().split("\n", 1)[1]
    return {name.strip(): float(v) for name, v in re.findall(r"(.+?): \n(\S+)\n", text)}


def ours_by_official_name(sep: dict, geometry) -> dict[str, float | None]:
    """caloforge's separation_power block under the official output's names."""
    out: dict[str, float | None] = {"Etot / Einc": sep["etot_einc"], "Voxel distribution": sep["voxel_energy"]}
    for i, layer in enumerate(geometry.relevant_layers):
        out[f"E layer {layer}"] = sep["e_layer"][i]
        out[f"Sparsity layer {layer}"] = sep["sparsity"][i]
        out[f"EC r layer {layer}"] = sep["ec_r"][i]
        out[f"Width r layer {layer}"] = sep["width_r"][i]
    for key, label in (("ec_eta", "EC Eta"), ("ec_phi", "EC Phi"), ("width_eta", "Width Eta"),
                       ("width_phi", "Width Phi")):
        for i, layer in enumerate(geometry.layers_binned_in_alpha):
            out[f"{label} layer {layer}"] = sep[key][i]
    for i, v in enumerate(sep.get("etot_einc_discrete") or []):
        out[f"Etot / Einc at E = {float(2 ** (8 + i))}"] = v
    return out


def make_halves(g4: Path, start: int, n: int, scale: float, folder: Path) -> tuple[Path, Path]:
    with h5py.File(g4, "r") as f:
        e = f["incident_energies"][start : start + 2 * n]
        s = f["showers"][start : start + 2 * n]
    if len(s) < 2 * n:
        raise SystemExit(f"{g4} has fewer than {start + 2 * n} showers")
    paths = folder / "reference.h5", folder / "generated.h5"
    for path, rows, factor in ((paths[0], slice(0, n), None), (paths[1], slice(n, 2 * n), scale)):
        sh = s[rows] if factor is None else (s[rows] * np.float32(factor)).astype(np.float32)
        with h5py.File(path, "w") as g:
            g["incident_energies"] = e[rows]
            g["showers"] = sh
    return paths


def run_timed(cmd: list[str], cwd: Path | None = None) -> float:
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode:
        sys.stderr.write(res.stdout[-3000:] + res.stderr[-3000:])
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", type=Path, required=True, help="folder holding the official evaluate.py")
    ap.add_argument("--python", default=sys.executable, help="Python that runs the official script")
    ap.add_argument("--reference", type=Path)
    ap.add_argument("--generated", type=Path)
    ap.add_argument("--g4", type=Path, help="cut the two samples from this Geant4 file instead")
    ap.add_argument("--n", type=int, default=2000, help="showers per half (with --g4)")
    ap.add_argument("--start", type=int, default=0, help="first row (with --g4)")
    ap.add_argument("--scale", type=float, default=1.05, help="factor on every voxel of the second half")
    ap.add_argument("--dataset", "-d", default="2", choices=sorted(DATASETS), help="official dataset name")
    ap.add_argument("--extended", action="store_true", help="also sparsity, EC r, width r (official helper)")
    ap.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary folder)")
    ap.add_argument("--tolerance", type=float, default=1e-6, help="relative tolerance reported as a failure")
    args = ap.parse_args()

    from caloforge.geometry import get_geometry

    geometry = get_geometry(DATASETS[args.dataset])
    official = args.official.resolve()
    if not (official / "evaluate.py").is_file():
        raise SystemExit(f"no evaluate.py in {official}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.g4:
            ref, gen = make_halves(args.g4, args.start, args.n, args.scale, work)
        elif args.reference and args.generated:
            ref, gen = args.reference.resolve(), args.generated.resolve()
        else:
            raise SystemExit("give --g4, or --reference and --generated")
        # the official script caches the reference features in <reference>.pkl: use a fresh folder
        fresh = Path(tempfile.mkdtemp(dir=work))
        (fresh / "reference.h5").symlink_to(ref.resolve())
        wrapper = work / "run_official.py"
        wrapper.write_text(_WRAPPER)
        out_off, out_ours = work / "official", work / "caloforge"
        t_off = run_timed([args.python, str(wrapper), str(official / "evaluate.py"), "-i", str(gen.resolve()),
                           "-r", str(fresh / "reference.h5"), "-m", "hist-chi", "-d", args.dataset,
                           "--output_dir", str(out_off)], cwd=official)
        t_ours = run_timed([sys.executable, "-m", "caloforge", "evaluate", str(ref), str(gen), "-o", str(out_ours),
                            "-d", geometry.name, "--metrics", "hist", "--no-plots"])
        off = parse_official(out_off / f"histogram_chi2_{args.dataset}.txt")
        if args.extended:
            out_ext = work / "official_extended"
            script = work / "official_extended.py"
            script.write_text(_EXTENDED)
            run_timed([args.python, str(script), str(official), str(ref.resolve()), str(gen.resolve()),
                       args.dataset, str(out_ext)])
            off.update(parse_official(out_ext / f"histogram_chi2_{args.dataset}.txt"))
        metrics = json.loads((out_ours / "metrics.json").read_text())
        ours = ours_by_official_name(metrics["separation_power"], geometry)
        n_ref, n_gen = metrics["n_reference"], metrics["n_generated"]

    print(f"{'feature':32s} {'official':>22s} {'caloforge':>22s} {'rel. diff':>10s}")
    worst, failed = 0.0, []
    for name, v in off.items():
        o = ours.get(name)
        both_nan = (o is None or o != o) and v != v
        rel = 0.0 if both_nan else (abs(o - v) / abs(v) if (o is not None and v != 0) else
                                     (0.0 if o == v else float("inf")))
        worst = max(worst, rel)
        if rel > args.tolerance:
            failed.append(name)
        print(f"{name:32s} {v:22.17g} {float('nan') if o is None else o:22.17g} {rel:10.2e}")
    print(f"\n{len(off)} separation powers; max relative difference {worst:.3e}; "
          f"{len(failed)} above {args.tolerance:g}" + (f": {', '.join(failed)}" if failed else ""))
    hist_s = sum(v for k, v in metrics.get("timing_seconds", {}).items())
    print(f"wall time, {n_ref} reference vs {n_gen} generated showers (whole processes): "
          f"official evaluate.py -m hist-chi {t_off:.1f} s, caloforge evaluate --metrics hist {t_ours:.1f} s "
          f"(of which {hist_s:.1f} s in the evaluation itself)")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
