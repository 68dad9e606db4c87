"""The likelihood of the flow-matching teacher (``ds2-electrons-teacher``) as an anomaly score.

    python benchmarks/anomaly_cfm_likelihood.py cost [--n 4]            # ms/shower first (1 thread)
    python benchmarks/anomaly_cfm_likelihood.py study --n-bkg 300 --n-sig 300 --n-cal 300

The same separation as ``benchmarks/anomaly_study.py``, on subsamples (the teacher's ODE
likelihood costs of order a second per shower on one CPU thread): background = a random subset
of rows 12,000-14,999 of ``g4_ds2_electrons_1-100GeV.h5`` (the teacher trained on rows 0-11,999);
signal = a random subset of the 1,000 two-electron events of ``g4_ds2_two_electrons_dev.h5``.
The energy calibration (``nll_z``) is fitted on a random subset of ``..._part2.h5`` (never
trained on, never scored: rows 10,000-11,999 of the first file, which anomaly_study.py uses,
are training rows of the teacher).

The score is ``-log p`` of :meth:`caloforge.models.cfm.ConditionalFlowMatching.log_prob`: RK4
along both probability-flow ODEs, the energy flow's divergence exact (45 dimensions), the shape
flow's by Hutchinson (Rademacher probes), a one-draw estimate of the dequantisation lower bound.
Prints the AUC / SIC table per separation, the cost, and the Hutchinson standard error per shower
(compared with the width of the background's score at fixed energy). Scores and figures go to
``bench-output/anomaly/cfm_likelihood.{npz,json}``; the printout is copied to
``benchmarks/anomaly_cfm_likelihood.txt``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BKG = DATA / "g4_ds2_electrons_1-100GeV.h5"
PART2 = DATA / "g4_ds2_electrons_1-100GeV_part2.h5"
SIG = DATA / "g4_ds2_two_electrons_dev.h5"
OUT = ROOT / "bench-output" / "anomaly"
MODEL = "ds2-electrons-teacher"
TEST_ROWS = (12000, 15000)
CAL_ROWS = (0, 3000)  # of PART2
SEPARATIONS = ("0", "5", "10", "20")


def _setup(threads: int, steps: int, probes: int):  # type: ignore[no-untyped-def]
    import torch

    from caloforge._threads import configure_threads
    from caloforge.anomaly.scores import make_score
    from caloforge.flowmatching.likelihood import ODELikelihoodConfig
    from caloforge.models import load_model

    configure_threads(threads)
    torch.manual_seed(0)  # the dequantisation noise
    model = load_model(MODEL).eval()
    opts = ODELikelihoodConfig(steps=steps, probes=probes)
    return model, make_score(model, "likelihood", opts), opts


def _score(score, e: np.ndarray, s: np.ndarray, batch: int = 50) -> tuple[np.ndarray, np.ndarray, float]:  # type: ignore[no-untyped-def]
    """(-log p, standard error, seconds per shower) of showers in memory."""
    import torch

    nll, err = [], []
    t0 = time.perf_counter()
    for a in range(0, len(e), batch):
        v, se = score.with_errors(torch.from_numpy(e[a : a + batch].astype(np.float32)), torch.from_numpy(s[a : a + batch]))
        nll.append(v[:, 0].numpy())
        err.append(se[:, 0].numpy())
    return np.concatenate(nll), np.concatenate(err), (time.perf_counter() - t0) / len(e)


def _subset(path: Path, rows: tuple[int, int], n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from caloforge.data import open_showers

    e, s = open_showers(path).read(*rows)
    idx = np.sort(np.random.default_rng(seed).choice(len(e), min(n, len(e)), replace=False))
    return e[idx], s[idx], idx + rows[0]


def cost(n: int, threads: int, steps: int, probes: int) -> None:
    _, score, opts = _setup(threads, steps, probes)
    e, s, _ = _subset(BKG, (TEST_ROWS[0], TEST_ROWS[0] + 50), n, 0)
    _score(score, e[:1], s[:1])  # warm-up
    nll, err, sec = _score(score, e, s, batch=n)
    print(f"{MODEL} likelihood ({opts.steps} RK4 steps, energy exact, shape Hutchinson x{opts.probes}), "
          f"{threads} thread(s): {1e3 * sec:.0f} ms/shower over {n} showers; -log p {np.round(nll, 1)}, "
          f"standard error {np.round(err, 2)}")


def study(n_bkg: int, n_sig: int, n_cal: int, threads: int, steps: int, probes: int, seed: int) -> None:
    from caloforge.anomaly.evaluation import evaluate_scores, read_property
    from caloforge.anomaly.scores import EnergyCalibration

    _, score, opts = _setup(threads, steps, probes)
    sets = {"bkg": _subset(BKG, TEST_ROWS, n_bkg, seed), "sig": _subset(SIG, (0, 1000), n_sig, seed + 1),
            "cal": _subset(PART2, CAL_ROWS, n_cal, seed + 2)}
    res = {}
    for tag, (e, s, rows) in sets.items():
        nll, err, sec = _score(score, e, s)
        res[tag] = {"e": e, "nll": nll, "err": err, "rows": rows, "sec": sec}
        print(f"scored {tag}: {len(e)} showers, {1e3 * sec:.0f} ms/shower", flush=True)
    cal = EnergyCalibration.fit(res["cal"]["e"], res["cal"]["nll"])
    for r in res.values():
        r["nll_z"] = cal.apply(r["e"], r["nll"])
    sep = read_property(SIG, "separation_mm", (0, 1000))
    assert sep is not None
    sep = sep[res["sig"]["rows"]]
    ev = evaluate_scores({"cfm:nll": res["bkg"]["nll"], "cfm:nll_z": res["bkg"]["nll_z"]},
                         {"cfm:nll": res["sig"]["nll"], "cfm:nll_z": res["sig"]["nll_z"]}, sep, "separation_mm")
    counts = {s_: int((sep == float(s_)).sum()) for s_ in SEPARATIONS}
    print(f"\nbackground: {BKG.name}, {len(res['bkg']['e'])} random rows of {TEST_ROWS[0]}-{TEST_ROWS[1] - 1} "
          f"(seed {seed}); signal: {SIG.name}, {len(res['sig']['e'])} random events "
          f"({', '.join(f'{v} at {k} mm' for k, v in counts.items())}); calibration: {PART2.name}, "
          f"{len(res['cal']['e'])} random rows of {CAL_ROWS[0]}-{CAL_ROWS[1] - 1}")
    print(f"likelihood: {opts.steps} RK4 steps per flow, energy flow exact divergence, shape flow Hutchinson with "
          f"{opts.probes} Rademacher probes; one dequantisation draw per shower\n")
    rows: dict[str, dict[str, tuple[float, float, float]]] = {}
    for m in ev.metrics:
        s_ = m.bin.split("=")[1] if "=" in m.bin else "all"
        s_ = s_.removesuffix(".0")
        rows.setdefault(m.score, {})[s_] = (m.auc, m.sic["1e-03"], m.eps_s["1e-02"])
    print("| score | " + " | ".join(f"{s} mm AUC / SIC(1e-3) / eps_S(1e-2)" for s in SEPARATIONS) + " | all AUC |")
    print("|---|" + "---|" * (len(SEPARATIONS) + 1))
    for name, by in rows.items():
        cells = [f"{by[s][0]:.3f} / {by[s][1]:.2f} / {by[s][2]:.3f}" if s in by else "-" for s in SEPARATIONS]
        print(f"| {name} | " + " | ".join(cells) + f" | {by['all'][0]:.3f} |")
    for note in ev.notes:
        print(f"note: {note}")
    all_err = np.concatenate([r["err"] for r in res.values()])
    width = np.exp(np.polyval(cal.log_width_coef, np.clip(np.log(res["bkg"]["e"]), *cal.x_range)))
    rel = res["bkg"]["err"] / width
    sec = sum(r["sec"] * len(r["e"]) for r in res.values()) / sum(len(r["e"]) for r in res.values())
    print(f"\ncost: {1e3 * sec:.0f} ms/shower ({threads} thread(s), batch 50, showers in memory)")
    print(f"Hutchinson standard error of -log p per shower (all {len(all_err)}): median {np.median(all_err):.2f}, "
          f"mean {all_err.mean():.2f}, 90% {np.quantile(all_err, 0.9):.2f}, max {all_err.max():.2f} nats "
          f"(single-probe spread = x{np.sqrt(opts.probes):.0f}); relative to the background's width at fixed energy "
          f"(calibration): median {np.median(rel):.3f}, max {rel.max():.3f}")
    print(f"-log p on background: median {np.median(res['bkg']['nll']):.0f} nats; width at fixed energy (median) "
          f"{np.median(width):.1f}")
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / "cfm_likelihood.npz", **{f"{t}_{k}": v for t, r in res.items() for k, v in r.items() if k != "sec"})
    (OUT / "cfm_likelihood.json").write_text(json.dumps(ev.to_json(), indent=2, default=float) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("cost", "study"))
    p.add_argument("--n", type=int, default=4, help="cost: showers")
    p.add_argument("--n-bkg", type=int, default=300)
    p.add_argument("--n-sig", type=int, default=300)
    p.add_argument("--n-cal", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=8, help="RK4 steps of the likelihood ODE")
    p.add_argument("--probes", type=int, default=4, help="Hutchinson probes")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not BKG.is_file():
        print(f"the shared data are absent ({BKG})", file=sys.stderr)
        return 1
    if a.step == "cost":
        cost(a.n, a.threads, a.steps, a.probes)
    else:
        study(a.n_bkg, a.n_sig, a.n_cal, a.threads, a.steps, a.probes, a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
