"""Fidelity per compute: learning curves (low-level classifier AUC vs training minutes) of three
designs on the shared Geant4 DS2 electrons, all on 2 CPU threads or fewer.

Designs (one subcommand each; every point is appended to ``OUT/curves.jsonl``):

* ``copula``: the Gaussian copula (``caloforge.models.copula``), fitted in closed form; its
  curve is the fit on the first 2.5k, 5k, 10k and all 20.2k training showers (x: fit minutes),
  each with and without the output calibration.
* ``simq``: the parametric simulator followed by per-class quantile maps onto the Geant4
  marginals (``caloforge.models.simquantile``): the simulator's shower corrected by a learned
  monotone map; same training-set sizes.
* ``cfm``: the conditional flow-matching teacher (``caloforge.models.cfm``), trained for
  ``--segments`` segments of ``--segment-min`` minutes (resumed from its checkpoint, one cosine
  schedule over the whole budget), evaluated after each segment with ``--steps`` solver steps.

``table`` prints the curves as markdown and draws ``OUT/learning_curves.png``.

Training rows: rows 0-11,999 of ``g4_ds2_electrons_1-100GeV.h5`` and all 8,201 of its
``_part2``; rows 12,000-14,999 of the first file are the held-out test showers, as in
``benchmarks/model_table.py``. Each point: 3,000 showers generated at the test energies against
the 3,000 test showers, classifier preset ``fast`` (``--official`` for the official one).

    python benchmarks/fidelity_study.py copula --out bench-output/study --threads 2
    python benchmarks/fidelity_study.py simq --out bench-output/study --threads 2
    python benchmarks/fidelity_study.py cfm --out bench-output/study --threads 1 --segments 4 --segment-min 7.5
    python benchmarks/fidelity_study.py table --out bench-output/study
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZES = (2500, 5000, 10000, None)


def load_split(shared: Path = SHARED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(e_train, x_train, e_test, x_test): 20,201 training and 3,000 held-out Geant4 showers."""
    from caloforge.data import open_showers

    f1 = open_showers(shared / "g4_ds2_electrons_1-100GeV.h5")
    f2 = open_showers(shared / "g4_ds2_electrons_1-100GeV_part2.h5")
    e1, x1 = f1.read(0, 12000)
    e2, x2 = f2.read(0, f2.n)
    et, xt = f1.read(12000, 15000)
    e = np.concatenate([e1, e2]).reshape(-1).astype(np.float32)
    x = np.concatenate([x1, x2]).astype(np.float32)
    return e, x, et.reshape(-1).astype(np.float32), xt.astype(np.float32)


def shower_stats(e: np.ndarray, x: np.ndarray, threshold: float) -> dict[str, float]:
    """The issue's checks: hits per shower by voxel energy (MeV bins), the hottest voxel's share
    of E_inc, the even/odd alpha energy ratio and E_tot/E_inc."""
    xx = np.where(x >= threshold, x, 0.0)
    out = {f"hits_{a:g}-{b:g}MeV": float(((xx >= a) & (xx < b)).sum(1).mean())
           for a, b in ((0.1, 0.3), (0.3, 1), (1, 3), (3, 10), (10, 30))}
    out["top_voxel_frac"] = float((xx.max(1) / e).mean())
    per_alpha = xx.reshape(len(xx), 45, 16, 9).sum((1, 3)).mean(0)
    out["even_odd_alpha"] = float(per_alpha[0::2].sum() / per_alpha[1::2].sum())
    r = xx.sum(1) / e
    out["etot_einc_mean"], out["etot_einc_std"] = float(r.mean()), float(r.std())
    return out


def score(e_test, x_test, x_gen, official: bool, high: bool = True) -> dict[str, float]:
    from caloforge.evaluation.classifier import ClassifierConfig, classifier_test, high_level_inputs, low_level_inputs
    from caloforge.features.highlevel import compute_features
    from caloforge.geometry import get_geometry

    g = get_geometry("ds2")
    cfg = ClassifierConfig.official() if official else ClassifierConfig.fast()
    thr = g.readout_threshold
    out = {"auc_low": classifier_test(low_level_inputs(e_test, x_test, thr), low_level_inputs(e_test, x_gen, thr), cfg, seed=0).auc}
    if high:
        hl = lambda x: high_level_inputs(compute_features(e_test, x, g))  # noqa: E731
        out["auc_high"] = classifier_test(hl(x_test), hl(x_gen), cfg, seed=0).auc
    return out


def record(out: Path, row: dict) -> None:
    with open(out / "curves.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def generate(model, e_test: np.ndarray, seed: int = 1, **opts) -> tuple[np.ndarray, float]:
    gen = torch.Generator().manual_seed(seed)
    t = time.perf_counter()
    parts = [model.sample(torch.from_numpy(e_test[a : a + 500]), generator=gen, **opts).numpy() for a in range(0, len(e_test), 500)]
    return np.concatenate(parts), time.perf_counter() - t


def run_closed_form(name: str, args, configs: dict[str, dict]) -> None:
    from caloforge.geometry import get_geometry
    from caloforge.models import build_model, save_model

    g = get_geometry("ds2")
    e, x, et, xt = load_split(args.shared)
    for n in SIZES:
        for label, cfg in configs.items():
            torch.manual_seed(0)
            model = build_model(name, g, cfg)
            rows = slice(0, n)
            t = time.perf_counter()
            model.fit(torch.from_numpy(e[rows]), torch.from_numpy(x[rows]))
            fit_s = time.perf_counter() - t
            xg, gen_s = generate(model, et)
            row = {"design": label, "n_train": len(e[rows]), "train_min": fit_s / 60, "gen_ms_per_shower": 1e3 * gen_s / len(et),
                   **score(et, xt, xg, args.official, high=n is None), **shower_stats(et, xg, g.readout_threshold)}
            if name == "copula" and n is None:
                lay_sum, vox_sum = model.raw_fraction_sums(torch.from_numpy(et), torch.Generator().manual_seed(3))
                layer_e = torch.from_numpy(xt.reshape(len(xt), 45, -1).sum(-1) / et[:, None])
                v = vox_sum[layer_e > 0.01]  # layers with at least 1% of E_inc
                row["raw_layer_fraction_sum_q10_50_90"] = torch.quantile(lay_sum, torch.tensor([0.1, 0.5, 0.9])).tolist()
                row["raw_voxel_fraction_sum_q10_50_90"] = torch.quantile(v, torch.tensor([0.1, 0.5, 0.9])).tolist()
            record(args.out, row)
            if n is None:
                save_model(model, args.out / f"{label}_model", extra={"n_train": len(e), "training": {"seconds": fit_s}})


def run_cfm(args) -> None:
    from caloforge.geometry import get_geometry
    from caloforge.models import build_model, load_model
    from caloforge.training import train

    g = get_geometry("ds2")
    e, x, et, xt = load_split(args.shared)
    run_dir = args.out / "cfm_run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    seg_s = args.segment_min * 60
    steps = int(args.steps_per_s * seg_s * args.segments)  # one cosine schedule over the whole budget
    total = 0.0
    config = {"cpu_bf16": True}
    for k in range(args.segments):
        torch.manual_seed(0)
        model = build_model("cfm", g, config)
        res = train(model, (e, x), None, steps=steps, batch_size=128, lr=1e-3, ema_decay=0.999, max_time=seg_s,
                    run_dir=run_dir, resume=k > 0, seed=0, device="cpu", progress=False, checkpoint_every=1e9)
        total += res.elapsed_s
        model = load_model(run_dir / "model")
        xg, gen_s = generate(model, et, steps=args.steps)
        row = {"design": "cfm", "n_train": len(e), "train_min": total / 60, "step": res.step, "steps": steps,
               "gen_ms_per_shower": 1e3 * gen_s / len(et),
               **score(et, xt, xg, args.official, high=k == args.segments - 1), **shower_stats(et, xg, g.readout_threshold)}
        record(args.out, row)
        shutil.rmtree(run_dir / "model")
        if res.completed:
            break


def table(args) -> None:
    rows = [json.loads(l) for l in (args.out / "curves.jsonl").read_text().splitlines() if l.strip()]
    print("| design | training showers | fit / training min (2 CPU threads; cfm 1) | AUC low | AUC high | hits 0.1-0.3 | 0.3-1 | 3-10 | 10-30 MeV | top voxel / E_inc | even/odd alpha |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    order = list(dict.fromkeys(r["design"] for r in rows))
    rows = sorted(rows, key=lambda r: (order.index(r["design"]), r["train_min"]))
    for r in rows:
        hi = f"{r['auc_high']:.3f}" if "auc_high" in r else "–"
        print(f"| {r['design']} | {r['n_train']} | {r['train_min']:.2f} | {r['auc_low']:.3f} | {hi} | {r['hits_0.1-0.3MeV']:.1f} | "
              f"{r['hits_0.3-1MeV']:.1f} | {r['hits_3-10MeV']:.1f} | {r['hits_10-30MeV']:.1f} | {r['top_voxel_frac']:.4f} | {r['even_odd_alpha']:.4f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for d in dict.fromkeys(r["design"] for r in rows):
        pts = sorted((r["train_min"], r["auc_low"]) for r in rows if r["design"] == d)
        ax.plot(*zip(*pts), "o-", label=d)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="indistinguishable")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("fit / training minutes (CPU; cfm on 1 thread)")
    ax.set_title("DS2 electrons, 3,000 held-out Geant4 showers", fontsize=10)
    ax.set_ylabel("low-level classifier AUC")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "learning_curves.png", dpi=120)
    print(f"wrote {args.out / 'learning_curves.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("copula", "simq", "cfm", "table"))
    ap.add_argument("--out", type=Path, default=Path("bench-output/study"))
    ap.add_argument("--shared", type=Path, default=SHARED)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--official", action="store_true", help="official classifier protocol instead of the fast preset")
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--segment-min", type=float, default=7.5)
    ap.add_argument("--steps-per-s", type=float, default=3.5, help="cfm: expected training speed, sets the schedule length")
    ap.add_argument("--steps", type=int, default=12, help="cfm: solver steps when sampling")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "copula":
        run_closed_form("copula", args, {"copula": {}, "copula-uncalibrated": {"calibrate": False}})
    elif args.what == "simq":
        run_closed_form("sim-quantile", args, {"sim-quantile": {}})
    elif args.what == "cfm":
        run_cfm(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
