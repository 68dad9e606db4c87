"""Anomaly detection on Geant4 showers: single electrons (background) vs two electrons (signal).

    python benchmarks/anomaly_study.py prepare        # the training file (rows 0-11,999 of the first file)
    python benchmarks/anomaly_study.py train ae|pair [--max-time 12m]   # 1 thread; run under nohup
    python benchmarks/anomaly_study.py study [--threads 1]              # scores, table, ABCD, costs
    python benchmarks/anomaly_study.py train pair-heldout --decorrelate 2 --steps 1300 --max-time 3000
    python benchmarks/anomaly_study.py closure [--subsets 4,8 --bootstrap 200]   # ABCD closure, held-out split

Background: single electrons of ``../shared/data``. The autoencoders train on rows 0-11,999 of
``g4_ds2_electrons_1-100GeV.h5`` plus all of ``..._part2.h5`` (5% of them validation); the
baseline ``voxel-lognormal-ds2`` was trained on rows 0-9,999. Scored background: rows
12,000-14,999 (never trained on). Signal: ``g4_ds2_two_electrons_dev.h5`` (1,000 events, two
electrons of equal energy, 0/5/10/20 mm apart; incident energy = the sum, 2-100 GeV).

Every score is also calibrated in incident energy (``<score>_z``: mean and spread as functions of
log E_inc fitted on background rows 10,000-11,999; the baseline never trained on them, the
autoencoders did: their calibration is on training showers, which scores them slightly low, so
the held-out background looks slightly *more* anomalous: conservative).

The pair trains with ``decorrelate`` 1.0 and the DisCo penalty within 4 groups of similar E_inc
per batch (``decorrelate_groups``, the default); ``train pair --decorrelate L`` changes the weight.

The ABCD closure (``closure``) uses its own split, to close on as many never-seen showers as the
files allow: ``train pair-heldout`` trains the pair on rows 0-9,999 of the first file only (5% of
them validation), it is calibrated on rows 10,000-11,999 and closes on rows 12,000-14,999 plus
all of ``_part2`` (11,201 showers): once on all of them, on 4 and 8 disjoint random subsets
(independent pulls: mean and spread) and on bootstrap replicas (the spread checks the stated
error), at keep 1%, 2%, 5%, and on each file alone. Output in ``benchmarks/anomaly_closure.txt``.

Outputs under ``bench-output/anomaly/`` (or ``$ANOMALY_STUDY_OUT``, e.g. a scratch folder outside
the repository: the trained models are not shipped) (score files, ``eval/report.html``, ``abcd.json``) and
the tables on stdout (copied to ``benchmarks/anomaly_study.txt``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BKG = DATA / "g4_ds2_electrons_1-100GeV.h5"
PART2 = DATA / "g4_ds2_electrons_1-100GeV_part2.h5"
SIG = DATA / "g4_ds2_two_electrons_dev.h5"
OUT = Path(os.environ.get("ANOMALY_STUDY_OUT", ROOT / "bench-output" / "anomaly"))  # a scratch folder
TRAIN_FILE = OUT / "bkg_train_rows0-11999.h5"
TEST_ROWS = (12000, 15000)
CAL_ROWS = (10000, 12000)
# The held-out split of the pair for the ABCD closure (``train pair-heldout``, ``closure``): the
# pair trains on rows 0-9,999 of the first file only (the baseline's training rows), is calibrated
# on rows 10,000-11,999 and closes on rows 12,000-14,999 plus all of part2 (11,201 showers, never
# trained on nor calibrated on).
PAIR_TRAIN_ROWS = (0, 10000)
PAIR_TRAIN_FILE = OUT / "bkg_train_rows0-9999.h5"
PAIR_CAL_ROWS = (10000, 12000)
SEPARATIONS = ("0", "5", "10", "20")


def prepare() -> None:
    from caloforge.data import open_showers, write_showers

    OUT.mkdir(parents=True, exist_ok=True)
    for path, (a, b) in ((TRAIN_FILE, (0, TEST_ROWS[0])), (PAIR_TRAIN_FILE, PAIR_TRAIN_ROWS)):
        if path.is_file():
            continue
        e, s = open_showers(BKG).read(a, b)
        write_showers(path, e, s, compression="lzf")
        print(f"wrote {path} ({len(e):,} showers)")


def train(which: str, max_time: float, decorrelate: float, steps: int | None = None, init: str | None = None,
          lr: float = 2e-3, run: str | None = None, detrend: bool = False) -> None:
    """Train ``which``; ``init``: start from the weights of the trained pair in that run folder
    (its config with ``decorrelate`` replaced), e.g. to fine-tune with another DisCo weight."""
    import dataclasses

    import torch

    from caloforge.models import ShowerModel, load_model
    from caloforge.training import train_files

    torch.set_num_threads(1)
    files = [PAIR_TRAIN_FILE] if which == "pair-heldout" else [TRAIN_FILE, PART2]
    name, cfg, default_steps = (("ae", None, 1300) if which == "ae" else
                                ("ae-pair", {"decorrelate": decorrelate, "decorrelate_detrend": detrend},
                                 800 if which == "pair" else 1400))
    run = run or {"ae": "ae", "pair": "ae-pair", "pair-heldout": "ae-pair-heldout"}[which]
    model: str | ShowerModel = name
    if init is not None:
        model = load_model(str(OUT / init))
        model.config = dataclasses.replace(model.config, decorrelate=decorrelate,  # type: ignore[type-var]
                                           decorrelate_detrend=detrend)
        cfg = None
    r = train_files(model, files, OUT / run, model_config=cfg, val_fraction=0.05, max_time=max_time,
                    steps=steps or default_steps, batch_size=128, lr=lr, progress=False, say=print)
    print(f"{which}: {r.step} steps in {r.elapsed_s / 60:.1f} min, stop {r.stop_reason}, loss {r.train_loss}, "
          f"val {r.val_loss}")


def _score(model_ref: str, label: str, kind: str) -> tuple[dict, dict]:
    from caloforge.anomaly.scores import calibrate, make_score, score_file, write_scores
    from caloforge.data import open_showers
    from caloforge.models import load_model

    model = load_model(model_ref)
    score = make_score(model, kind)  # type: ignore[arg-type]
    bkg = open_showers(BKG)
    cal = score_file(score, bkg, *CAL_ROWS, model_name=label)
    out = {}
    for tag, f, rows in (("bkg", bkg, TEST_ROWS), ("sig", open_showers(SIG), (0, None))):
        res = score_file(score, f, rows[0], rows[1], model_name=label)
        res = calibrate(res, cal)
        write_scores(OUT / f"{tag}_{label}.h5", res)
        out[tag] = res
    return out["bkg"], out["sig"]


def cost(model_ref: str, kind: str, n: int = 1000, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of scoring ``n`` showers held in memory (batch 500), ms/shower."""
    import torch

    from caloforge.anomaly.scores import make_score
    from caloforge.data import open_showers
    from caloforge.models import load_model

    model = load_model(model_ref).eval()
    score = make_score(model, kind)  # type: ignore[arg-type]
    e, s = open_showers(BKG).read(TEST_ROWS[0], TEST_ROWS[0] + n)
    et, st = torch.from_numpy(e.astype(np.float32)), torch.from_numpy(s)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a in range(0, n, 500):
            score(et[a : a + 500], st[a : a + 500])
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best / n


def study(threads: int) -> None:
    from caloforge._threads import configure_threads
    from caloforge.anomaly.abcd import abcd_study
    from caloforge.anomaly.evaluation import evaluate_files, write_anomaly_report

    configure_threads(threads)
    models = [("voxel-lognormal-ds2", "baseline", "likelihood")]
    for which in ("ae", "ae-pair"):
        if (OUT / which / "model").is_dir():
            models.append((str(OUT / which), which, "model"))
        else:
            print(f"note: no trained {which} in {OUT / which} (run 'train' first); left out")
    files, costs = [], {}
    for ref, label, kind in models:
        _score(ref, label, kind)
        files += [OUT / f"bkg_{label}.h5", OUT / f"sig_{label}.h5"]
        costs[label] = cost(ref, kind)
    ev = evaluate_files(BKG, SIG, files, "separation_mm")
    write_anomaly_report(ev, OUT / "eval")
    rows: dict[str, dict[str, tuple[float, float, float]]] = {}
    for m in ev.metrics:
        sep = m.bin.split("=")[1] if "=" in m.bin else "all"
        rows.setdefault(m.score, {})[sep] = (m.auc, m.sic["1e-03"], m.eps_s["1e-02"])
    print(f"background: {BKG.name} rows {TEST_ROWS[0]}-{TEST_ROWS[1] - 1} ({TEST_ROWS[1] - TEST_ROWS[0]:,} showers); "
          f"signal: {SIG.name} (250 per separation)")
    print("\n| score | " + " | ".join(f"{s} mm AUC / SIC(1e-3) / eps_S(1e-2)" for s in SEPARATIONS) + " | all AUC |")
    print("|---|" + "---|" * (len(SEPARATIONS) + 1))
    for name, by in rows.items():
        cells = [f"{by[s][0]:.3f} / {by[s][1]:.2f} / {by[s][2]:.3f}" for s in SEPARATIONS]
        print(f"| {name} | " + " | ".join(cells) + f" | {by['all'][0]:.3f} |")
    for note in ev.notes:
        print(f"note: {note}")
    print(f"\ncost of scoring, ms per shower ({threads} thread(s), batch 500, showers in memory, best of 3):")
    for label, ms in costs.items():
        print(f"  {label}: {ms:.3f}")
    if (OUT / "bkg_ae-pair.h5").is_file():
        from caloforge.anomaly.scores import read_scores

        b, s = read_scores(OUT / "bkg_ae-pair.h5"), read_scores(OUT / "sig_ae-pair.h5")
        result = {}
        for suffix in ("", "_z"):
            names = [f"ae1{suffix}", f"ae2{suffix}"]
            r = abcd_study((b.scores[names[0]], b.scores[names[1]]), (s.scores[names[0]], s.scores[names[1]]),
                           keep=0.01)
            result["+".join(names)] = r
            c = r["correlation"]
            print(f"\nABCD with {names[0]} x {names[1]} (background {r['n_background']:,}): dCorr^2 {c['disco']:.4f}, "
                  f"Pearson {c['pearson']:+.4f}")
            for cl in r["closure"]:
                print(f"  closure keep {cl['keep']:g}: predicted {cl['predicted']:.1f} ± {cl['predicted_error']:.1f}, "
                      f"observed {cl['observed']}, pull {cl['pull']:+.2f}")
            for inj in r["injection"]:
                rr = inj["result"]
                print(f"  signal {inj['fraction']:g} ({inj['n_signal']} events, {inj['signal_in_sr']} in SR): predicted "
                      f"{rr['predicted']:.1f} ± {rr['predicted_error']:.1f}, observed {rr['observed']}, "
                      f"significance {inj['significance']:.2f}")
        (OUT / "abcd.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nreport: {OUT / 'eval' / 'report.html'}")


def closure_study(threads: int, subsets: list[int], bootstrap: int, run: str = "ae-pair-heldout") -> None:
    """ABCD closure of the held-out pair on every background shower it never saw (file 1 rows
    12,000-14,999 + all of part2), calibrated on file 1 rows 10,000-11,999: the full-sample
    closure, its repetition over ``subsets`` disjoint subsets and ``bootstrap`` replicas at keep
    1%, 2%, 5% (and on each of the two files alone); the pair's correlation on that background; signal injection; AUCs per separation."""
    from caloforge._threads import configure_threads
    from caloforge.anomaly.abcd import abcd_study, closure, closure_spread
    from caloforge.anomaly.evaluation import evaluate_scores, read_property
    from caloforge.anomaly.scores import calibrate, make_score, score_file, write_scores
    from caloforge.data import open_showers
    from caloforge.models import load_model

    configure_threads(threads)
    model = load_model(str(OUT / run))
    score = make_score(model, "model")
    cal = score_file(score, open_showers(BKG), *PAIR_CAL_ROWS, model_name=run)
    parts = {"bkg1": (BKG, TEST_ROWS), "bkg2": (PART2, (0, None)), "sig": (SIG, (0, None))}
    res = {}
    for tag, (path, rows) in parts.items():
        r = calibrate(score_file(score, open_showers(path), rows[0], rows[1], model_name=run), cal)
        write_scores(OUT / f"{tag}_{run}.h5", r)
        res[tag] = r
    bkg = {n: np.concatenate([res["bkg1"].scores[n], res["bkg2"].scores[n]]) for n in res["bkg1"].scores}
    sig = res["sig"].scores
    n_b = len(next(iter(bkg.values())))
    log_e = np.log(np.concatenate([res["bkg1"].incident_energies, res["bkg2"].incident_energies]))
    log = json.loads((OUT / run / "config.json").read_text()) if (OUT / run / "config.json").is_file() else {}
    print(f"# python benchmarks/anomaly_study.py closure --threads {threads} --subsets {','.join(map(str, subsets))} "
          f"--bootstrap {bootstrap}")
    print(f"# pair: {OUT / run}, model config {json.dumps(log.get('model_config', {}))}")
    print(f"# trained on {BKG.name} rows {PAIR_TRAIN_ROWS[0]}-{PAIR_TRAIN_ROWS[1] - 1} (5% of them validation); "
          f"calibrated on rows {PAIR_CAL_ROWS[0]}-{PAIR_CAL_ROWS[1] - 1}")
    print(f"# closure background: rows {TEST_ROWS[0]}-{TEST_ROWS[1] - 1} of {BKG.name} + all of {PART2.name} "
          f"({n_b:,} showers, none trained or calibrated on)")
    sep = read_property(SIG, "separation_mm", (0, res["sig"].n))
    ev = evaluate_scores(bkg, sig, sep, "separation_mm")
    rows: dict[str, dict[str, float]] = {}
    for m in ev.metrics:
        rows.setdefault(m.score, {})[m.bin.split("=")[1] if "=" in m.bin else "all"] = m.auc
    print("\n| score | " + " | ".join(f"{s} mm AUC" for s in SEPARATIONS) + " | all AUC |")
    print("|---|" + "---|" * (len(SEPARATIONS) + 1))
    for name, by in rows.items():
        print(f"| {run}:{name} | " + " | ".join(f"{by[s]:.3f}" for s in SEPARATIONS) + f" | {by['all']:.3f} |")
    result = {}
    for suffix in ("", "_z"):
        names = [f"ae1{suffix}", f"ae2{suffix}"]
        r = abcd_study((bkg[names[0]], bkg[names[1]]), (sig[names[0]], sig[names[1]]), keep=0.01,
                       subsets=1, bootstrap=bootstrap)
        result["+".join(names)] = r
        c = r["correlation"]
        print(f"\nABCD with {names[0]} x {names[1]} (background {n_b:,}): dCorr^2 {c['disco']:.4f}, "
              f"Pearson {c['pearson']:+.4f}")
        for cl, sp in zip(r["closure"], r["closure_spread"], strict=True):
            k = cl["keep"]
            print(f"  keep {k:g}: all {n_b:,}: predicted {cl['predicted']:.1f} ± {cl['predicted_error']:.1f}, "
                  f"observed {cl['observed']}, pull {cl['pull']:+.2f}; {len(sp['bootstrap_pulls'])} bootstrap replicas: "
                  f"pulls mean {sp['bootstrap_mean']:+.2f}, std {sp['bootstrap_std']:.2f}")
            for n_sub in subsets:
                s = closure_spread(bkg[names[0]], bkg[names[1]], k, n_sub, 0, seed=1)
                print(f"    {n_sub} disjoint subsets of {s.subset_size:,}: pulls mean {s.subset_mean:+.2f} ± "
                      f"{s.subset_mean_error:.2f}, std {s.subset_std:.2f}  [{', '.join(f'{x:+.1f}' for x in s.subset_pulls)}]")
            for n_bins in (4, 8, 16):
                one = closure(bkg[names[0]], bkg[names[1]], k, log_e, n_bins)
                line = (f"    ABCD in {n_bins} bins of log E_inc: predicted {one.predicted:.1f} ± {one.predicted_error:.1f}, "
                        f"observed {one.observed}, pull {one.pull:+.2f}")
                n_sub = max(m for m in (1, 4, 8) if (n_b // m) // n_bins * k >= 2)
                if n_sub > 1:
                    s = closure_spread(bkg[names[0]], bkg[names[1]], k, n_sub, 0, seed=1, condition=log_e, n_bins=n_bins)
                    line += (f"; {n_sub} subsets: pulls mean {s.subset_mean:+.2f} ± {s.subset_mean_error:.2f}, "
                             f"std {s.subset_std:.2f}")
                print(line)
            for tag, src in (("bkg1", BKG.name), ("bkg2", PART2.name)):
                one = closure(res[tag].scores[names[0]], res[tag].scores[names[1]], k)
                print(f"    {src} alone ({res[tag].n:,}): predicted {one.predicted:.1f} ± {one.predicted_error:.1f}, "
                      f"observed {one.observed}, pull {one.pull:+.2f}")
        for inj in r["injection"]:
            rr = inj["result"]
            print(f"  signal {inj['fraction']:g} ({inj['n_signal']} events, {inj['signal_in_sr']} in SR): predicted "
                  f"{rr['predicted']:.1f} ± {rr['predicted_error']:.1f}, observed {rr['observed']}, "
                  f"significance {inj['significance']:.2f}")
    (OUT / f"abcd_{run}.json").write_text(json.dumps(result, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    sub.add_parser("prepare")
    t = sub.add_parser("train")
    t.add_argument("which", choices=("ae", "pair", "pair-heldout"))
    t.add_argument("--max-time", type=float, default=720.0, help="seconds")
    t.add_argument("--decorrelate", type=float, default=1.0)
    t.add_argument("--steps", type=int, default=None, help="AdamW steps (the cosine schedule's length)")
    t.add_argument("--init", default=None, help="start from the trained pair in this run folder (fine-tuning)")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--detrend", action="store_true", help="DisCo on the errors less their trend in log E (pair)")
    t.add_argument("--run", default=None, help="run folder name (default: ae, ae-pair or ae-pair-heldout)")
    s = sub.add_parser("study")
    s.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("closure")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--subsets", default="4,8", help="numbers of disjoint subsets, comma-separated")
    c.add_argument("--bootstrap", type=int, default=200)
    c.add_argument("--run", default="ae-pair-heldout", help="the trained pair's folder under the output folder")
    a = p.parse_args(argv)
    if not BKG.is_file():
        print(f"the shared data are absent ({BKG})", file=sys.stderr)
        return 1
    if a.step == "prepare":
        prepare()
    elif a.step == "train":
        train(a.which, a.max_time, a.decorrelate, a.steps, a.init, a.lr, a.run, a.detrend)
    elif a.step == "closure":
        closure_study(a.threads, [int(k) for k in a.subsets.split(",")], a.bootstrap, a.run)
    else:
        study(a.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
