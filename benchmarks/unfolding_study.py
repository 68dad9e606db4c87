"""OmniFold closure on Geant4 showers, next to iterative Bayesian unfolding (IBU).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/unfolding_study.py --threads 1 \
        --out benchmarks/unfolding_study.txt --plot benchmarks/unfolding_closure.png

sim = ``g4_ds2_electrons_1-100GeV.h5`` rows 0-11,999 + ``..._part2.h5`` (20,201 showers, log-uniform
1-100 GeV); data = rows 12,000-14,999 of the first file, subsampled with acceptance
(E / 1 GeV)^-0.5 (a falling spectrum dN/dE ~ E^-1.5 instead of the sim's E^-1), whose stored
incident energies are the truth. Both unfold from the detector-level features of
:func:`caloforge.inference.unfolding.detector_features`; IBU unfolds E_tot alone on twice as
many reco bins as truth bins. Uncertainties: bootstrap (Poisson(1) weights on data and sim
events, the whole unfolding repeated). The truth histogram is made of the same data showers as
the unfolded one, so the data's own Poisson fluctuation is in both and chi2/ndf against the
bootstrap sigma is expected below 1 for a method without bias.

OmniFold runs the ``fast`` preset (no cross-fitting, 100 boosting rounds) to keep the study under
15 minutes on one thread; ``--preset default`` adds 2-fold cross-fitting (about twice the time).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILE1 = SHARED / "g4_ds2_electrons_1-100GeV.h5"
FILE2 = SHARED / "g4_ds2_electrons_1-100GeV_part2.h5"


def features_of(path: Path, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from caloforge.data import open_showers
    from caloforge.inference.unfolding import detector_features

    f = open_showers(path)
    es, xs = [], []
    for e, s in f.iter_chunks(start=start, stop=stop):
        es.append(e)
        xs.append(detector_features(e, s, f.geometry))
    return np.concatenate(es), np.concatenate(xs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--bootstrap", type=int, default=10)
    p.add_argument("--bins", type=int, default=12)
    p.add_argument("--preset", default="fast", choices=["default", "fast"])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None, help="PNG of the closure (and an index.html beside it)")
    a = p.parse_args()
    if not FILE1.exists() or not FILE2.exists():
        raise SystemExit(f"needs the shared Geant4 files in {SHARED}")
    from caloforge._threads import configure_threads

    configure_threads(a.threads)
    from caloforge.inference.unfolding import OmniFoldConfig
    from caloforge.inference.unfolding_report import plot_unfolding, unfold_arrays

    out: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    t0 = time.perf_counter()
    e1, x1 = features_of(FILE1, 0, 12000)
    e2, x2 = features_of(FILE2)
    es, xs = np.concatenate([e1, e2]), np.concatenate([x1, x2])
    ed, xd = features_of(FILE1, 12000, 15000)
    keep = np.random.default_rng(1).random(len(ed)) < (ed / 1e3) ** -0.5
    ed, xd = ed[keep], xd[keep]
    say(f"sim {len(es):,} showers (log-uniform), data {len(ed):,} held-back showers subsampled to dN/dE ~ E^-1.5; "
        f"features {time.perf_counter() - t0:.0f} s")
    make = OmniFoldConfig.fast if a.preset == "fast" else OmniFoldConfig.default
    cfg = make(iterations=a.iterations, n_bootstrap=a.bootstrap)
    last = [time.perf_counter()]

    def progress(task: str, done: float, total: float) -> None:
        if time.perf_counter() - last[0] > 60:
            print(f"  {task}: {done:.0f}/{total:.0f}", flush=True)
            last[0] = time.perf_counter()

    t = time.perf_counter()
    u = unfold_arrays(es, xs, xd, cfg, a.bins, ed, progress=progress)
    say(f"OmniFold ({a.preset} preset, {a.iterations} iterations) + IBU ({a.iterations} iterations, E_tot, "
        f"{2 * a.bins} reco bins), {a.bootstrap} bootstrap replicas: {time.perf_counter() - t:.0f} s on {a.threads} thread(s)")
    for note in u.result.notes() or ["no weight ratio clipped"]:
        say(f"weights: {note}")
    say()
    say(f"{'E_inc [GeV]':>13} {'truth':>6} {'prior':>7} {'OmniFold':>14} {'pull':>6} {'IBU':>14} {'pull':>6}")
    for i in range(len(u.edges) - 1):
        tr = u.truth[i] if u.truth is not None else np.nan
        say(f"{u.edges[i] / 1e3:6.2f}-{u.edges[i + 1] / 1e3:6.2f} {tr:6.0f} {u.sim_prior[i]:7.1f} "
            f"{u.omnifold[i]:7.1f} +-{u.omnifold_sigma[i]:5.1f} {(u.omnifold[i] - tr) / u.omnifold_sigma[i]:+6.2f} "
            f"{u.ibu[i]:7.1f} +-{u.ibu_sigma[i]:5.1f} {(u.ibu[i] - tr) / u.ibu_sigma[i]:+6.2f}")
    c = u.closure()
    assert c is not None
    say()
    say(f"closure over the {c['bins_used']} bins with >= {c['min_count']:.0f} truth showers: "
        f"OmniFold chi2/ndf = {c['omnifold_chi2']:.1f}/{c['omnifold_ndf']} = {c['omnifold_chi2_ndf']:.2f}, "
        f"IBU chi2/ndf = {c['ibu_chi2']:.1f}/{c['ibu_ndf']} = {c['ibu_chi2_ndf']:.2f}")
    say(f"OmniFold within its 1-sigma bootstrap band in {c['omnifold_bins_within_1sigma']}/{c['bins_used']} bins, "
        f"within 2 sigma in {c['omnifold_bins_within_2sigma']}/{c['bins_used']}")
    prior_chi2 = float(np.sum(((u.sim_prior - u.truth) ** 2 / np.maximum(u.truth, 1))[u.truth >= 50])) if u.truth is not None else 0
    say(f"(for scale: the sim prior scaled to the data has chi2 = {prior_chi2:.0f} against the truth with Poisson errors)")
    say(f"total {time.perf_counter() - t0:.0f} s")
    if a.out:
        a.out.write_text("\n".join(out) + "\n")
    if a.plot:
        plot_unfolding(u, a.plot, "OmniFold closure on Geant4 (DS2 e-)")


if __name__ == "__main__":
    main()
