"""Check that caloforge's FPD and KPD give jetnet's numbers on the same inputs.

jetnet pins numpy<2 and pulls in many packages, so it is not a caloforge dependency: this script
creates (when absent) a separate virtual environment, by default ``/tmp/jetnet-venv`` with
``pip install jetnet``, writes the feature arrays to an ``.npz``, runs
``jetnet.evaluation.fpd`` / ``kpd`` there in a subprocess with the same seeds and settings, runs
:func:`caloforge.evaluation.fpd` / :func:`~caloforge.evaluation.kpd` here, and prints both.

Cases (the CaloChallenge call: ``fpd(reference, generated, min_samples=10000)``,
``kpd(reference, generated, batch_size=10000)``, jetnet's seeds 42):

1. Geant4 DS2 vs Geant4 DS2: the two halves of the shared Geant4 file (7,500 showers each),
   high-level vectors. Samples smaller than the batch sizes: compared with
   ``adapt_to_sample_size=False`` (jetnet resamples with replacement); caloforge's default
   (smaller batches, with a note) is shown too.
2. The same with the generated half's layer energies scaled by 1.05 (a mis-scaled "model").
3. 100,000 vs 100,000 vectors of the DS2 dimension (bootstrap of the Geant4 vectors with a small
   jitter; the second sample's layer energies scaled by 1.02): the official sample size.

    python benchmarks/compare_jetnet.py                 # all cases
    python benchmarks/compare_jetnet.py --cases 1 2     # the quick ones
    python benchmarks/compare_jetnet.py --threads 1     # BLAS/numba threads on both sides
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

G4_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "g4_ds2_electrons_1-100GeV.h5"
DEFAULT_VENV = Path("/tmp/jetnet-venv")

# Runs inside the jetnet environment. Imports jetnet normally; if that fails on a package jetnet
# needs only for other metrics, loads the installed gen_metrics module with those imports stubbed.
CHILD = r"""
import json, sys, time, types, importlib.util, pathlib
import numpy as np

def load_gen_metrics():
    try:
        import jetnet.evaluation.gen_metrics as gm
        return gm, "jetnet " + getattr(sys.modules.get("jetnet"), "__version__", "?")
    except Exception as exc:  # fall back: stub what fpd/kpd do not use
        err = repr(exc)
    spec = importlib.util.find_spec("jetnet")
    root = pathlib.Path(spec.submodule_search_locations[0])
    def stub(name, **attrs):
        m = types.ModuleType(name); m.__dict__.update(attrs); sys.modules[name] = m; return m
    pkg = stub("jetnet"); pkg.__path__ = [str(root)]
    ev = stub("jetnet.evaluation"); ev.__path__ = [str(root / "evaluation")]
    stub("jetnet.utils"); stub("jetnet.datasets", JetNet=object)
    pkg.utils = sys.modules["jetnet.utils"]
    stub("energyflow"); stub("energyflow.emd", emds=None)
    try:
        import torch  # noqa: F401
    except Exception:
        t = stub("torch", Tensor=type("Tensor", (), {}))
        stub("torch.utils"); stub("torch.utils.data", DataLoader=object)
    s = importlib.util.spec_from_file_location("jetnet.evaluation.gen_metrics", root / "evaluation" / "gen_metrics.py")
    gm = importlib.util.module_from_spec(s); sys.modules[s.name] = gm; s.loader.exec_module(gm)
    return gm, "jetnet gen_metrics.py loaded with stubs (" + err + ")"

import warnings
warnings.simplefilter("ignore")
gm, how = load_gen_metrics()
cfg = json.loads(sys.argv[2])
data = np.load(sys.argv[1])
out = {"how": how, "results": {}}
for case in cfg["cases"]:
    x, y = data[case + "_real"], data[case + "_gen"]
    t = time.perf_counter()
    f = gm.fpd(x, y, min_samples=cfg["min_samples"], max_samples=cfg["max_samples"], seed=cfg["seed"])
    tf = time.perf_counter() - t
    t = time.perf_counter()
    k = gm.kpd(x, y, batch_size=cfg["batch_size"], seed=cfg["seed"])
    tk = time.perf_counter() - t
    out["results"][case] = {"fpd": [float(f[0]), float(f[1])], "kpd": [float(k[0]), float(k[1])],
                            "fpd_seconds": tf, "kpd_seconds": tk}
print("JSONRESULT " + json.dumps(out))
"""


def ensure_venv(venv: Path) -> Path:
    """The python of a virtual environment holding jetnet, created if needed."""
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import jetnet.evaluation"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return py
    if not py.exists():
        print(f"creating {venv} and installing jetnet (several minutes) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=False)
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "jetnet"])
        if r.returncode != 0:  # the full dependency set did not resolve: the minimum for fpd/kpd
            subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "jetnet"], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", "numpy<2", "scipy", "numba"], check=True)
    r = subprocess.run(check, capture_output=True, text=True)
    if r.returncode != 0 and "pyarrow" in r.stderr:
        # a pyarrow built for numpy 2 breaks `import awkward` (jetnet.utils) under numpy<2;
        # awkward works without pyarrow
        subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "-q", "pyarrow"], check=False)
    return py  # the child falls back to loading gen_metrics.py with stubs if import still fails


def high_level_vectors(n_half: int | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """High-level vectors of the two halves of the Geant4 file, and the E_layer columns."""
    from caloforge.data import open_showers
    from caloforge.features import compute_features_streamed

    f = open_showers(G4_FILE)
    feats = compute_features_streamed(f.iter_chunks(), f.geometry)
    v = feats.high_level_vector()
    n = len(v) // 2 if n_half is None else n_half
    e_layer_cols = list(range(1, 1 + f.geometry.n_layers))
    return v[:n], v[n : 2 * n], e_layer_cols


def make_cases(selected: list[str]) -> dict[str, np.ndarray]:
    real, gen, e_cols = high_level_vectors()
    arrays: dict[str, np.ndarray] = {}
    if "1" in selected:
        arrays["1_real"], arrays["1_gen"] = real, gen
    if "2" in selected:
        g2 = gen.copy()
        g2[:, e_cols] += np.log10(1.05)  # E_layer enters as log10(E_layer + 1e-8): scale by 1.05
        arrays["2_real"], arrays["2_gen"] = real, g2
    if "3" in selected:
        rng = np.random.default_rng(7)
        pool = np.concatenate([real, gen])
        scale = pool.std(axis=0) * 0.05
        a = pool[rng.integers(0, len(pool), 100_000)] + rng.normal(size=(100_000, pool.shape[1])) * scale
        b = pool[rng.integers(0, len(pool), 100_000)] + rng.normal(size=(100_000, pool.shape[1])) * scale
        b[:, e_cols] += np.log10(1.02)
        arrays["3_real"], arrays["3_gen"] = a, b
    return arrays


def run_caloforge(arrays: dict, cases: list[str], cfg: dict) -> dict:
    from caloforge.evaluation import fpd, kpd

    out = {}
    for case in cases:
        x, y = arrays[case + "_real"], arrays[case + "_gen"]
        res = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for adapt in (False, True):
                t = time.perf_counter()
                f = fpd(x, y, min_samples=cfg["min_samples"], max_samples=cfg["max_samples"], seed=cfg["seed"],
                        adapt_to_sample_size=adapt)
                tf = time.perf_counter() - t
                t = time.perf_counter()
                k = kpd(x, y, batch_size=cfg["batch_size"], seed=cfg["seed"], adapt_to_sample_size=adapt)
                tk = time.perf_counter() - t
                print(f"  caloforge case {case} ({'adapted' if adapt else 'exact'}): FPD {f.value:.6g} ± {f.error:.3g}, "
                      f"KPD {k.value:.6g} ± {k.error:.3g} ({tf:.0f} s + {tk:.0f} s)", flush=True)
                res["adapt" if adapt else "exact"] = {
                    "fpd": list(f), "kpd": list(k), "fpd_seconds": tf, "kpd_seconds": tk,
                    "note": "; ".join(n for n in (f.note, k.note) if n),
                }
        out[case] = res
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["1", "2", "3"], choices=["1", "2", "3"])
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--threads", type=int, default=None, help="BLAS/numba threads on both sides")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    if not G4_FILE.is_file():
        sys.exit(f"{G4_FILE} not found (the shared Geant4 file is needed)")
    cfg = {"cases": args.cases, "min_samples": 10_000, "max_samples": 50_000, "batch_size": 10_000,
           "seed": args.seed}
    env = dict(os.environ)
    if args.threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(args.threads)
    py = ensure_venv(args.venv)
    print("computing features ...", flush=True)
    arrays = make_cases(args.cases)
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "features.npz"
        np.savez(npz, **arrays)
        # jetnet runs in its own process while caloforge computes here (one core each with --threads 1)
        print("running jetnet (subprocess) and caloforge ...", flush=True)
        child = subprocess.Popen([str(py), "-c", CHILD, str(npz), json.dumps(cfg)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        if args.threads:  # our BLAS is already loaded: limit it when threadpoolctl is around
            try:
                from threadpoolctl import threadpool_limits
                threadpool_limits(args.threads)
            except ImportError:
                pass
        ours = run_caloforge(arrays, args.cases, cfg)
        out, err = child.communicate()
        line = next((l for l in out.splitlines() if l.startswith("JSONRESULT ")), None)
        if line is None:
            sys.exit(f"jetnet run failed:\n{out}\n{err}")
        jet = json.loads(line[len("JSONRESULT "):])

    print(f"\njetnet side: {jet['how']}")
    print(f"settings: fpd(min_samples={cfg['min_samples']}, max_samples={cfg['max_samples']}), "
          f"kpd(batch_size={cfg['batch_size']}), seed {cfg['seed']}; values x 1e3\n")
    hdr = f"{'case':<5}{'metric':<5}{'jetnet':>24}{'caloforge (exact)':>24}{'rel. diff':>11}{'caloforge (adapted)':>24}"
    print(hdr)
    print("-" * len(hdr))
    for case in args.cases:
        j = jet["results"][case]
        n = len(arrays[case + "_real"])
        for m in ("fpd", "kpd"):
            jv, je = j[m]
            ov, oe = ours[case]["exact"][m]
            av, ae = ours[case]["adapt"][m]
            rel = abs(ov - jv) / max(abs(jv), 1e-300)
            print(f"{case:<5}{m.upper():<5}{jv*1e3:>14.6f} ± {je*1e3:<7.4f}{ov*1e3:>14.6f} ± {oe*1e3:<7.4f}"
                  f"{rel:>11.1e}{av*1e3:>14.6f} ± {ae*1e3:<7.4f}")
        print(f"{'':<5}time: jetnet fpd {j['fpd_seconds']:.1f} s, kpd {j['kpd_seconds']:.1f} s; caloforge fpd "
              f"{ours[case]['exact']['fpd_seconds']:.1f} s, kpd {ours[case]['exact']['kpd_seconds']:.1f} s (N={n})")
        if ours[case]["adapt"]["note"]:
            print(f"{'':<5}adapted: {ours[case]['adapt']['note']}")


if __name__ == "__main__":
    main()
