"""Which OmniFold settings close best on Geant4: feature sets, early stopping, boosting rounds,
iterations, cross-fitting and step 2, each on the same three splits (no bootstrap).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/unfolding_variants.py --threads 1 \\
        --out benchmarks/unfolding_variants.txt

Splits (as in ``unfolding_study.py``): data = 3,000 held-back rows of
``g4_ds2_electrons_1-100GeV.h5`` (A: rows 12,000-14,999, B: 9,000-11,999, C: 0-2,999),
subsampled to dN/dE ~ E^-1.5 with seeds 1, 2, 3; sim = the other rows + ``..._part2.h5``. For
each variant and split: chi2 of the unfolded spectrum against the data's truth histogram with
Poisson sigma sqrt(truth) over the bins with >= 50 truth showers (a fixed yardstick, the same
for every variant: no bootstrap), and against the expected spectrum (analytic E^-1.5 density
times the number of data showers, sigma sqrt(expected)). The truth histogram is made of the
same showers as the data, so a method that tracks the data's own fluctuations scores low
against it; a method that smooths them scores like the truth itself does against the
expectation (about 6 per 8 bins here).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from unfolding_study import FILE1, FILE2, SHARED, features_of

SPLITS = {"A": (12000, 15000, 1), "B": (9000, 12000, 2), "C": (0, 3000, 3)}
ES = {"early_stopping": True, "max_iter": 100}
VARIANTS: list[tuple[str, str, dict[str, object]]] = [
    ("48 features, early stopping (previous)", "full", ES),
    ("48 features, 50 rounds", "full", {}),
    ("compact (5), early stopping", "compact", ES),
    ("compact (5), 50 rounds", "compact", {}),
    ("E_tot, early stopping, seed 0", "etot", ES),
    ("E_tot, early stopping, seed 1", "etot", {**ES, "seed": 1}),
    ("E_tot, early stopping, seed 2", "etot", {**ES, "seed": 2}),
    ("E_tot, 30 rounds", "etot", {"max_iter": 30}),
    ("E_tot, 50 rounds", "etot", {}),
    ("E_tot, 100 rounds", "etot", {"max_iter": 100}),
    ("E_tot, 50 rounds, 2 iterations", "etot", {"iterations": 2}),
    ("E_tot, 50 rounds, 8 iterations", "etot", {"iterations": 8}),
    ("E_tot, 50 rounds, 2 folds (default)", "etot", {"folds": 2}),
    ("E_tot, 50 rounds, step-2 regressor", "etot", {"step2": "regressor"}),
    ("E_tot, 50 rounds, min_samples_leaf 300", "etot", {"min_samples_leaf": 300}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if not FILE1.exists() or not FILE2.exists():
        raise SystemExit(f"needs the shared Geant4 files in {SHARED}")
    from caloforge._threads import configure_threads

    configure_threads(a.threads)
    from caloforge.inference.unfolding import OmniFoldConfig, ibu, log_edges, omnifold, spectrum

    out: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    t0 = time.perf_counter()
    feats = {}
    for kind in ("full", "compact"):
        e1, x1 = features_of(FILE1, kind)
        e2, x2 = features_of(FILE2, kind)
        feats[kind] = (x1, x2)
    feats["etot"] = (feats["full"][0][:, :1], feats["full"][1][:, :1])
    say(f"features of {len(e1) + len(e2):,} showers: {time.perf_counter() - t0:.0f} s")
    splits = {}
    for name, (lo, hi, seed) in SPLITS.items():
        d = np.arange(lo, hi)
        d = d[np.random.default_rng(seed).random(len(d)) < (e1[d] / 1e3) ** -0.5]
        splits[name] = (np.setdiff1d(np.arange(len(e1)), np.arange(lo, hi)), d)

    def scores(u: np.ndarray, truth: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
        use = truth >= 50
        return (float(np.sum(((u - truth) ** 2 / truth)[use])), float(np.sum(((u - expected) ** 2 / expected)[use])))

    rows: list[tuple[str, list[tuple[float, float]], float]] = []
    ref: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    ibu_scores = []
    for sp, (s, d) in splits.items():
        es, ed = np.concatenate([e1[s], e2]), e1[d]
        edges = log_edges(float(es.min()), float(es.max()) * (1 + 1e-9), 12)
        lo_e, hi_e = edges[:-1] / 1e3, edges[1:] / 1e3
        expected = len(ed) * (lo_e**-0.5 - hi_e**-0.5) / (1 - 100**-0.5)
        truth = spectrum(ed, None, edges)
        ref[sp] = (es, edges, truth, expected)
        xs_obs = np.concatenate([feats["full"][0][s, 0], feats["full"][1][:, 0]])
        q = np.quantile(xs_obs, [0.001, 0.999])
        u = ibu(np.log(es), xs_obs, feats["full"][0][d, 0], np.log(edges), np.linspace(q[0], q[1], 25), 4).final
        ibu_scores.append(scores(u, truth, expected))
    rows.append(("IBU on E_tot (4 iterations, 24 reco bins)", ibu_scores, 0.0))
    for name, kind, changes in VARIANTS:
        cfg = OmniFoldConfig.fast(**{"iterations": 4, **changes})  # type: ignore[arg-type]
        sc, dt = [], 0.0
        for sp, (s, d) in splits.items():
            es, edges, truth, expected = ref[sp]
            x1, x2 = feats[kind]
            t = time.perf_counter()
            res = omnifold(np.log(es), np.concatenate([x1[s], x2]), x1[d], cfg)
            dt += time.perf_counter() - t
            sc.append(scores(spectrum(es, res.final, edges), truth, expected))
        rows.append((name, sc, dt / len(splits)))
        print(f"  {name}: {sc} {dt / len(splits):.0f} s", flush=True)
    n = {sp: int(np.sum(ref[sp][2] >= 50)) for sp in splits}
    say(f"data showers per split: {', '.join(f'{sp} {len(d):,}' for sp, (_, d) in splits.items())}; bins with >= 50 "
        f"truth showers: {', '.join(f'{sp} {n[sp]}' for sp in splits)}")
    say("OmniFold: 4 iterations, no cross-fitting, 50 boosting rounds without early stopping unless stated "
        "('early stopping': up to 100 rounds, 20% validation, 10 rounds without gain)")
    say()
    say(f"{'variant':42s} {'chi2 vs truth (A B C) sum':>27s} {'chi2 vs expected (A B C) sum':>30s} {'s/run':>6s}")
    for name, sc, dt in rows:
        ct = [c[0] for c in sc]
        ce = [c[1] for c in sc]
        say(f"{name:42s} {ct[0]:5.1f} {ct[1]:5.1f} {ct[2]:5.1f} {sum(ct):6.1f}    {ce[0]:5.1f} {ce[1]:5.1f} {ce[2]:5.1f} "
            f"{sum(ce):6.1f} {dt:6.0f}")
    truth_vs_exp = [float(np.sum(((ref[sp][2] - ref[sp][3]) ** 2 / ref[sp][3])[ref[sp][2] >= 50])) for sp in splits]
    say(f"{'(the truth histogram itself)':42s} {'':27s}    {truth_vs_exp[0]:5.1f} {truth_vs_exp[1]:5.1f} "
        f"{truth_vs_exp[2]:5.1f} {sum(truth_vs_exp):6.1f}")
    say(f"total {time.perf_counter() - t0:.0f} s on {a.threads} thread(s)")
    if a.out:
        a.out.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
