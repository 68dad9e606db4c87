"""Compare the parametric simulator with Geant4 DS2 electron showers, per incident-energy bin.

    python benchmarks/compare_simulator_geant4.py [--g4 FILE] [--n 15000] [--seed 0] [--markdown]

The simulator is run on exactly the incident energies of the Geant4 file, and both samples go
through the same CaloChallenge feature code (readout threshold 15.15 keV applied). Printed per
energy bin, as "sim / Geant4": mean and relative spread of E_tot/E_inc, the layer of the maximum
of the mean longitudinal profile, the mean and spread of the per-shower energy-weighted depth,
the half-L1 distance between the mean longitudinal profiles (fraction of the energy put in the
wrong layer), the energy fractions in radial bins, the mean radial width, the fraction of empty
voxels, quantiles of the non-empty voxel energies and the share of non-empty voxels below the
threshold (before it is applied); then CaloChallenge-style separation powers (0 = identical
histograms, 1 = disjoint) of E_tot/E_inc, of per-layer features (log10 E_layer, centre of energy
in eta, radial width, sparsity; averaged over the 45 layers) and of the non-empty voxel energies.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

from caloforge.data import open_showers
from caloforge.features import compute_features
from caloforge.geometry import get_geometry
from caloforge.simulation import ParametricSimulator, SimulationParams

DEFAULT_G4 = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "g4_ds2_electrons_1-100GeV.h5"
)
BINS_GEV = (1, 3, 10, 30, 100)


def separation_power(a: np.ndarray, b: np.ndarray, bins: np.ndarray) -> float:
    """0.5 * sum (p - q)^2 / (p + q) of two normalised histograms (CaloChallenge definition)."""
    p, _ = np.histogram(a, bins)
    q, _ = np.histogram(b, bins)
    p = p / max(p.sum(), 1)
    q = q / max(q.sum(), 1)
    s = p + q
    ok = s > 0
    return float(0.5 * np.sum((p[ok] - q[ok]) ** 2 / s[ok]))


def bin_metrics(e: np.ndarray, showers: np.ndarray, feats, geometry) -> dict[str, float]:
    n_l = geometry.n_layers
    shape = geometry.shape
    r = feats.etot_einc
    layers = np.arange(n_l)
    prof = feats.e_layer / feats.e_tot[:, None].clip(1e-12)
    depth = prof @ layers
    thr = geometry.readout_threshold
    x = showers.reshape(len(showers), *shape)
    ring = np.where(x >= thr, x, 0).sum(axis=(1, 2))  # (N, r bins)
    ring_frac = ring.sum(axis=0) / ring.sum()
    nonzero = showers[showers > 0]
    q10, q50, q90, q99 = np.quantile(nonzero, [0.1, 0.5, 0.9, 0.99]) if nonzero.size else (0, 0, 0, 0)
    r_centres = geometry.layers[0].r_centres
    tot = ring.sum(1).clip(1e-12)
    width_r = np.sqrt(np.clip(ring @ r_centres**2 / tot - (ring @ r_centres / tot) ** 2, 0, None))
    return {
        "mean_profile": prof.mean(axis=0),
        "E_tot/E_inc mean": r.mean(),
        "E_tot/E_inc rms/mean": r.std() / r.mean(),
        "layer of profile max": float(np.argmax(prof.mean(axis=0))),
        "depth mean [layers]": depth.mean(),
        "depth rms [layers]": depth.std(),
        "E frac r<4.65mm": ring_frac[0],
        "E frac 4.65-9.3mm": ring_frac[1],
        "E frac 9.3-18.6mm": ring_frac[2:4].sum(),
        "E frac >18.6mm": ring_frac[4:].sum(),
        "radial width [mm]": width_r.mean(),
        "empty voxels": float(np.mean(x < thr)),
        "voxel E q10 [MeV]": q10,
        "voxel E median [MeV]": q50,
        "voxel E q90 [MeV]": q90,
        "voxel E q99 [MeV]": q99,
        "non-empty < thr": float(np.mean(nonzero < thr)) if nonzero.size else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--g4", type=Path, default=DEFAULT_G4, help="Geant4 DS2 file (default: shared data)")
    ap.add_argument("--n", type=int, default=15000, help="showers to compare (default: all 15,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", type=Path, default=None, help="JSON file of simulator parameters")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = ap.parse_args(argv)
    if not args.g4.is_file():
        print(f"Geant4 file not found: {args.g4}", file=sys.stderr)
        return 2

    geometry = get_geometry("ds2")
    params = SimulationParams.from_json(args.params.read_text()) if args.params else SimulationParams()
    e, g4 = open_showers(args.g4).read(stop=args.n)
    t0 = time.perf_counter()
    sim = ParametricSimulator(geometry, params).sample(e, np.random.default_rng(args.seed))
    t_sim = time.perf_counter() - t0
    f_g4 = compute_features(e, g4, geometry)
    f_sim = compute_features(e, sim, geometry)

    edges = np.asarray(BINS_GEV, dtype=float) * 1e3
    cols, rows = [], {}
    seps: dict[str, list[float]] = {
        "E_tot/E_inc": [], "E_layer (mean over layers)": [], "EC_eta (mean over layers)": [],
        "width_r (mean over layers)": [], "sparsity (mean over layers)": [], "voxel log10 E": [],
    }
    for lo, hi in itertools.pairwise(edges):
        m = (e >= lo) & (e < hi)
        cols.append(f"{lo / 1e3:g}-{hi / 1e3:g} GeV (n={m.sum()})")
        ms = bin_metrics(e[m], sim[m], f_sim.select(m), geometry)
        mg = bin_metrics(e[m], g4[m], f_g4.select(m), geometry)
        l1 = 0.5 * np.abs(ms.pop("mean_profile") - mg.pop("mean_profile")).sum()
        for k in ms:
            rows.setdefault(k, []).append((ms[k], mg[k]))
        rows.setdefault("long. profile half-L1", []).append((l1, None))
        rg, rs = f_g4.etot_einc[m], f_sim.etot_einc[m]
        b = np.linspace(min(rg.min(), rs.min()), max(rg.max(), rs.max()), 51)
        seps["E_tot/E_inc"].append(separation_power(rs, rg, b))
        lb = np.linspace(-3, 5, 61)
        per_layer = [
            separation_power(np.log10(f_sim.e_layer[m, k] + 1e-3), np.log10(f_g4.e_layer[m, k] + 1e-3), lb)
            for k in range(geometry.n_layers)
        ]
        seps["E_layer (mean over layers)"].append(float(np.mean(per_layer)))
        wb = np.linspace(0, 30, 61)
        per_layer = [
            separation_power(f_sim.width_r[m, k], f_g4.width_r[m, k], wb) for k in range(geometry.n_layers)
        ]
        seps["width_r (mean over layers)"].append(float(np.mean(per_layer)))
        eb = np.linspace(-20, 20, 81)
        per_layer = [
            separation_power(f_sim.ec_eta[m, k], f_g4.ec_eta[m, k], eb) for k in range(geometry.n_layers)
        ]
        seps["EC_eta (mean over layers)"].append(float(np.mean(per_layer)))
        sb = np.linspace(0, 1, 51)
        per_layer = [
            separation_power(f_sim.sparsity[m, k], f_g4.sparsity[m, k], sb) for k in range(geometry.n_layers)
        ]
        seps["sparsity (mean over layers)"].append(float(np.mean(per_layer)))
        vs, vg = sim[m], g4[m]
        vb = np.linspace(-4, 3.5, 76)
        seps["voxel log10 E"].append(separation_power(np.log10(vs[vs > 0]), np.log10(vg[vg > 0]), vb))

    def fmt(v: float) -> str:
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 1:
            return f"{v:.2f}"
        if a >= 0.01:
            return f"{v:.3f}"
        return f"{v:.1e}"

    name_w = max(len(k) for k in list(rows) + [f"sep. power {k}" for k in seps]) + 2
    col_w = max(20, max(len(c) for c in cols) + 2)
    sep = " | " if args.markdown else "  "
    head = "quantity (sim / Geant4)".ljust(name_w) + sep + sep.join(c.ljust(col_w) for c in cols)
    print(f"parametric simulator vs Geant4: {len(e)} DS2 electron showers from {args.g4.name}; "
          f"simulated in {t_sim:.1f} s ({len(e) / t_sim:,.0f} showers/s, 1 thread)")
    print()
    if args.markdown:
        print("| " + head + " |")
        print("|" + "---|" * (len(cols) + 1))
    else:
        print(head)
        print("-" * len(head))
    for k, vals in rows.items():
        cells = [fmt(s) if g is None else f"{fmt(s)} / {fmt(g)}" for s, g in vals]
        line = k.ljust(name_w) + sep + sep.join(c.ljust(col_w) for c in cells)
        print("| " + line + " |" if args.markdown else line)
    for k, vals in seps.items():
        line = f"sep. power {k}".ljust(name_w) + sep + sep.join(fmt(v).ljust(col_w) for v in vals)
        print("| " + line + " |" if args.markdown else line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
