"""Energy calibration on Geant4 showers: maximum likelihood vs a regression network vs E_tot / response.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/calibration_study.py --threads 1 \
        --out benchmarks/calibration_study.txt --plots calib-plots/

Data (../shared/data): training = ``g4_ds2_electrons_1-100GeV.h5`` rows 0-11,999 + ``..._part2.h5``
(20,201 showers, log-uniform 1-100 GeV); test = rows 12,000-14,999 of the first file (3,000
showers no model has seen; the shipped ``voxel-lognormal-ds2`` was fitted on rows 0-9,999).

Estimators, all per shower:

(a) MLE: :func:`caloforge.inference.mle_calibrate` with the shipped default model
    ``ds2-electrons`` (the Gaussian copula, fitted on the same training rows; its
    pseudo-likelihood, see ``GaussianCopula.log_prob``) and, as ``MLE-vox``, with the per-voxel
    baseline ``voxel-lognormal-ds2`` (independent voxels); default preset, float64;
(b) regression: scikit-learn ``MLPRegressor`` (64, 64) on log10 E_tot, the 45 layer fractions
    E_layer / E_tot and the mean shower centre/width in r (from
    :func:`caloforge.inference.unfolding.detector_features`), target log(E_inc / E_tot), loss
    weighted by E_tot, trained on the training showers with their log-uniform spectrum (this
    form came out best of four tried; a plain MLP on log10 layer energies -> log E_inc was worse); (b') the same network trained on a training subsample with the test's
    falling spectrum, to show how the regression's answer moves with its training prior;
(c) classic: E_tot / <E_tot / E_inc> of the training showers (one constant).

Reported per bin of true E_inc: bias = mean(E_hat / E - 1) (with its standard error) and
resolution = std(E_hat / E), on the log-uniform test sample and on a "falling" test sample
(the test showers subsampled with acceptance (E / 1 GeV)^-0.5: dN/dE ~ E^-1.5). A per-shower
estimator's response at a given true E does not depend on the sample it is applied to, so the
per-bin figures of the two samples differ only by statistics; the spectrum enters (1) through the
training prior of the regression (b vs b') and (2) in bins of the *estimated* energy, where a
falling spectrum feeds more low-energy showers upwards; both are tabulated.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILE1 = SHARED / "g4_ds2_electrons_1-100GeV.h5"
FILE2 = SHARED / "g4_ds2_electrons_1-100GeV_part2.h5"
EDGES_GEV = np.array([1, 2, 3.5, 6, 10, 18, 32, 56, 100.0])


def features_of(path: Path, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E_inc, detector features, showers as float32 only when asked via the stop range)."""
    from caloforge.data import open_showers
    from caloforge.inference.unfolding import detector_features

    f = open_showers(path)
    es, xs = [], []
    for e, s in f.iter_chunks(start=start, stop=stop):
        es.append(e)
        xs.append(detector_features(e, s, f.geometry))
    return np.concatenate(es), np.concatenate(xs), np.zeros(0)


def regression(x: np.ndarray, e: np.ndarray, seed: int = 0):
    """MLP (64, 64) on [log10 E_tot, E_layer / E_tot per layer, mean centre and width in r]
    predicting log(E_inc / E_tot), squared error weighted by E_tot (~ 1 / resolution^2, so that
    the high-energy showers, whose errors are small, are fitted as precisely as the low-energy
    ones). Returns a function features -> E_hat (MeV)."""
    from sklearn.neural_network import MLPRegressor
    from sklearn.preprocessing import StandardScaler

    def inputs(xx: np.ndarray) -> np.ndarray:
        e_tot = 10 ** xx[:, 0]
        layers = np.clip(10 ** xx[:, 1:-2] - 1e-3, 0, None)
        return np.concatenate([xx[:, :1], layers / e_tot[:, None], xx[:, -2:]], axis=1)

    scaler = StandardScaler().fit(inputs(x))
    net = MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=500, n_iter_no_change=20, tol=1e-7,
                       early_stopping=True, random_state=seed)
    log_e_tot = x[:, 0] * np.log(10)
    net.fit(scaler.transform(inputs(x)), np.log(e) - log_e_tot, sample_weight=10 ** x[:, 0] / 1e4)
    return lambda xx: np.exp(net.predict(scaler.transform(inputs(xx))) + xx[:, 0] * np.log(10))


def table(name: str, e: np.ndarray, ests: dict[str, np.ndarray], edges_gev: np.ndarray, by: np.ndarray | None = None,
          by_name: str = "true E") -> list[str]:
    """Rows of bias and resolution per bin of ``by`` (MeV; default the truth)."""
    by = e if by is None else by
    lines = [f"{name} (bins of {by_name}; bias = mean(E_hat/E - 1) +- s.e., res = std(E_hat/E))",
             f"{'bin [GeV]':>12} {'n':>5} " + " ".join(f"{k + ' bias':>17} {k + ' res':>9}" for k in ests)]
    for lo, hi in zip(edges_gev[:-1], edges_gev[1:], strict=True):
        rows = (by >= lo * 1e3) & (by < hi * 1e3)
        n = int(rows.sum())
        cells = []
        for v in ests.values():
            r = v[rows] / e[rows] - 1
            if n > 1:
                cells.append(f"{100 * r.mean():+7.2f}+-{100 * r.std(ddof=1) / np.sqrt(n):4.2f}% {100 * r.std(ddof=1):8.2f}%")
            else:
                cells.append(f"{'-':>17} {'-':>9}")
        lines.append(f"{lo:5.1f}-{hi:5.1f}  {n:5d} " + " ".join(cells))
    lines.append(f"{'all':>12} {len(e):5d} " + " ".join(
        f"{100 * (v / e - 1).mean():+7.2f}+-{100 * (v / e - 1).std(ddof=1) / np.sqrt(len(e)):4.2f}% "
        f"{100 * (v / e - 1).std(ddof=1):8.2f}%" for v in ests.values()))
    return lines


def plot(path: Path, e: np.ndarray, ests: dict[str, np.ndarray], title: str) -> None:
    from caloforge.plotting.style import figure, hep_style, label, save_figure

    centres = np.sqrt(EDGES_GEV[:-1] * EDGES_GEV[1:])
    with hep_style(font_scale=0.8):
        fig, (ax, rx) = figure(2, 1, figsize=(6.4, 6.0), sharex=True)
        for i, (k, v) in enumerate(ests.items()):
            b, s, r = [], [], []
            for lo, hi in zip(EDGES_GEV[:-1], EDGES_GEV[1:], strict=True):
                rows = (e >= lo * 1e3) & (e < hi * 1e3)
                x = v[rows] / e[rows] - 1
                b.append(100 * x.mean())
                s.append(100 * x.std(ddof=1) / np.sqrt(max(rows.sum(), 1)))
                r.append(100 * x.std(ddof=1))
            ax.errorbar(centres * (1 + 0.02 * i), b, s, marker="o", ms=3, label=k)
            rx.plot(centres, r, marker="o", ms=3, label=k)
        ax.axhline(0, color="k", lw=0.8)
        ax.axhspan(-1, 1, color="0.9")
        ax.set_ylabel("bias [%]")
        ax.legend(fontsize="x-small")
        rx.set_ylabel("resolution [%]")
        rx.set_xscale("log")
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        rx.set_xticks([1, 2, 5, 10, 20, 50, 100])
        rx.xaxis.set_major_formatter(ScalarFormatter())
        rx.xaxis.set_minor_formatter(NullFormatter())
        rx.set_xlabel("true incident energy [GeV]")
        label(ax, title)
        save_figure(fig, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-test", type=int, default=3000, help="held-back test showers (rows 12,000-14,999)")
    p.add_argument("--preset", default="default", choices=["default", "fast"])
    p.add_argument("--out", type=Path, default=None, help="write the tables to this text file too")
    p.add_argument("--plots", type=Path, default=None, help="folder for PNG plots and index.html")
    a = p.parse_args()
    if not FILE1.exists() or not FILE2.exists():
        raise SystemExit(f"needs the shared Geant4 files in {SHARED}")
    from caloforge._threads import configure_threads

    configure_threads(a.threads)
    from caloforge.data import open_showers
    from caloforge.inference import CalibrationConfig, mle_calibrate
    from caloforge.models.pretrained import resolve
    from caloforge.models.serialization import load_model

    out: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    t0 = time.perf_counter()
    e1, x1, _ = features_of(FILE1, 0, 12000)
    e2, x2, _ = features_of(FILE2)
    e_tr, x_tr = np.concatenate([e1, e2]), np.concatenate([x1, x2])
    stop = 12000 + a.n_test
    e_te, x_te, _ = features_of(FILE1, 12000, stop)
    say(f"train {len(e_tr):,} showers (file 1 rows 0-11,999 + part2), test {len(e_te):,} (file 1 rows 12,000-{stop - 1:,});"
        f" features {time.perf_counter() - t0:.0f} s")

    # (c) classic: one mean response from the training showers
    e_tot_tr, e_tot_te = 10 ** x_tr[:, 0], 10 ** x_te[:, 0]
    response = float(np.mean(e_tot_tr / e_tr))
    classic = e_tot_te / response
    say(f"(c) classic: mean response <E_tot/E_inc> = {response:.4f}")

    # (b) regression, log-uniform prior; (b') falling prior
    t = time.perf_counter()
    reg = regression(x_tr, e_tr)(x_te)
    say(f"(b) regression MLP (64,64) on log(E/E_tot), trained on the log-uniform training showers: {time.perf_counter() - t:.0f} s")
    rng = np.random.default_rng(1)
    fall_tr = rng.random(len(e_tr)) < (e_tr / 1e3) ** -0.5
    reg_fall = regression(x_tr[fall_tr], e_tr[fall_tr])(x_te)
    say(f"(b') the same network trained on {int(fall_tr.sum()):,} training showers subsampled to the falling spectrum")

    # (a) MLE with the shipped likelihood models: the Gaussian copula (the default model) and the
    # per-voxel baseline
    _, showers = open_showers(FILE1).read(12000, stop)
    cfg = CalibrationConfig.fast() if a.preset == "fast" else CalibrationConfig.default()
    last = [time.perf_counter()]

    def progress(task: str, done: float, total: float) -> None:
        if time.perf_counter() - last[0] > 30:
            print(f"  {task}: {done:,.0f}/{total:,.0f}", flush=True)
            last[0] = time.perf_counter()

    mles: dict[str, np.ndarray] = {}
    for label, name in (("MLE", "ds2-electrons"), ("MLE-vox", "voxel-lognormal-ds2")):
        model = load_model(resolve(name))
        r = mle_calibrate(model, showers, cfg, e_true=e_te, progress=progress)
        mles[label] = r.e_hat
        say(f"(a) {label}: MLE with {name} ({model.name}, {a.preset} preset): {r.ms_per_shower:.1f} ms/shower on "
            f"{a.threads} thread(s), {r.likelihood_calls / max(1, -(-len(r.e_hat) // cfg.batch_size)):.0f} likelihood "
            f"calls per shower; {int(r.at_boundary.sum())} at the range edge")
        pull = (r.e_hat - e_te) / r.sigma
        cover = np.mean((r.interval_low <= e_te) & (e_te <= r.interval_high))
        say(f"    stated uncertainty: median sigma/E {np.nanmedian(r.sigma / r.e_hat):.4f}; pull std {np.nanstd(pull):.2f}, "
            f"pull half-width of the central 68% {0.5 * np.diff(np.nanpercentile(pull, [16, 84]))[0]:.2f}; "
            f"68% interval covers the truth in {100 * cover:.1f}% of showers")
    say()

    ests = {**mles, "regr": reg, "regr'": reg_fall, "classic": classic}
    say("\n".join(table("log-uniform test sample", e_te, ests, EDGES_GEV)))
    say()
    fall = rng.random(len(e_te)) < (e_te / 1e3) ** -0.5
    ef = e_te[fall]
    fall_ests = {k: v[fall] for k, v in ests.items()}
    say("\n".join(table(f"falling test sample ({int(fall.sum()):,} showers, dN/dE ~ E^-1.5)", ef, fall_ests, EDGES_GEV)))
    say()
    for k, v in fall_ests.items():
        say("\n".join(table(f"falling test sample, estimator {k}", ef, {k: v}, EDGES_GEV, by=v, by_name=f"E_hat of {k}")))
        say()
    say(f"total {time.perf_counter() - t0:.0f} s")
    if a.out:
        a.out.write_text("\n".join(out) + "\n")
    if a.plots:
        a.plots.mkdir(parents=True, exist_ok=True)
        plot(a.plots / "calibration_loguniform.png", e_te, ests, "log-uniform test sample")
        plot(a.plots / "calibration_falling.png", ef, fall_ests, "falling test sample")
        from caloforge._atomic import atomic_write_text
        from caloforge.evaluation.report import REPORT_CSS, _img

        imgs = "".join(f"<figure>{_img(a.plots / n)}</figure>" for n in ("calibration_loguniform.png", "calibration_falling.png"))
        atomic_write_text(a.plots / "index.html", f"<!doctype html><html><head><meta charset='utf-8'><style>{REPORT_CSS}</style>"
                          f"</head><body><h1>Energy calibration study</h1><div class='grid'>{imgs}</div>"
                          f"<pre>{chr(10).join(out)}</pre></body></html>")


if __name__ == "__main__":
    main()
