"""``caloforge anomaly``: anomaly scores of showers, their evaluation, and the ABCD background estimate."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from caloforge._atomic import check_output
from caloforge.cli._common import console, progress_bar, threads_option, use_threads, user_errors
from caloforge.errors import InputError

anomaly = typer.Typer(
    name="anomaly",
    help="Anomaly detection: score showers with a model, evaluate scores (ROC, SIC), ABCD background estimate.",
    no_args_is_help=True,
    add_completion=False,
)


def _rows(text: str | None) -> tuple[int, int | None]:
    if not text:
        return 0, None
    try:
        a, _, b = text.partition(":")
        return int(a or 0), (int(b) if b else None)
    except ValueError:
        raise InputError(f"--rows must be START:STOP (e.g. 12000:15000), got {text!r}") from None


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag} must be comma-separated numbers, got {text!r}") from None


@anomaly.command("score")
@user_errors
def score(
    model: str = typer.Argument(..., help="A shipped model name, a model folder or a run folder."),
    file: Path = typer.Argument(..., metavar="FILE.h5", help="CaloChallenge HDF5 file with the showers to score."),
    output: Path = typer.Option(..., "--output", "-o", help="Score file to write (HDF5)."),
    kind: str = typer.Option("auto", "--kind", help="auto (the model's own score, else its likelihood), likelihood or model."),
    rows: str | None = typer.Option(None, "--rows", help="Row range START:STOP of FILE (default: all)."),
    batch_size: int = typer.Option(500, "--batch-size", help="Showers per batch."),
    calibrate_on: Path | None = typer.Option(None, "--calibrate", help="Background file to calibrate the scores in "
                                             "incident energy on (adds '<score>_z' scores; other showers than FILE's)."),
    calibrate_rows: str | None = typer.Option(None, "--calibrate-rows", help="Row range START:STOP of --calibrate."),
    estimator: str | None = typer.Option(None, "--estimator", help="Likelihood of a flow-matching model (cfm): "
                                         "auto (exact divergence up to 64 dimensions, Hutchinson above), exact or "
                                         "hutchinson."),
    probes: int | None = typer.Option(None, "--probes", help="Hutchinson probes per shower (cfm; default 4)."),
    ode_steps: int | None = typer.Option(None, "--ode-steps", help="RK4 steps of the likelihood ODE (cfm; default 8)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int | None = threads_option(),
) -> None:
    """Score every shower of FILE.h5 (conditional on its incident energy) into a score file.

    With --calibrate, each score also gets a version standardised at fixed incident energy
    (mean and spread as functions of log E_inc fitted on the calibration background).

    The likelihood of a flow-matching model (cfm) is integrated along its ODE, the divergence of
    its 6,480-voxel shape flow by Hutchinson's estimator: the file also holds each shower's
    standard error (errors/nll), and the mean is printed. It is a lower bound (dequantisation) on
    the log probability of the shower; cfm-student has no likelihood.

    Example: caloforge anomaly score voxel-lognormal-ds2 showers.h5 -o scores.h5
    """
    from caloforge.anomaly.scores import calibrate, make_score, score_file, write_scores
    from caloforge.cli._common import check_count
    from caloforge.data import open_showers
    from caloforge.models import load_model
    from caloforge.models.pretrained import resolve

    check_output(output, [file, resolve(model), *([calibrate_on] if calibrate_on is not None else [])])
    check_count(batch_size, "--batch-size")
    if kind not in ("auto", "likelihood", "model"):
        raise InputError(f"--kind must be auto, likelihood or model, got {kind!r}")
    given = {k: v for k, v in (("estimator", estimator), ("probes", probes), ("steps", ode_steps)) if v is not None}
    options = None
    if given:
        from caloforge.flowmatching.likelihood import ODELikelihoodConfig

        options = ODELikelihoodConfig().replace(**given)
    use_threads(threads)
    start, stop = _rows(rows)
    sample = open_showers(file)
    m = load_model(model, device=device)
    s = make_score(m, kind, options)  # type: ignore[arg-type]
    label = Path(model).name if Path(model).exists() else model  # how the scores are named in evaluations
    n = (stop if stop is not None else sample.n) - start
    with progress_bar(transient=True) as bar:
        task = bar.add_task(f"scoring with {m.name}", total=max(n, 0), unit="showers")
        result = score_file(s, sample, start, stop, batch_size, model_name=label,
                            progress=lambda k: bar.advance(task, k))
        if calibrate_on is not None:
            c_start, c_stop = _rows(calibrate_rows)
            c_sample = open_showers(calibrate_on, sample.geometry)
            c_n = (c_stop if c_stop is not None else c_sample.n) - c_start
            c_task = bar.add_task("scoring the calibration sample", total=max(c_n, 0), unit="showers")
            reference = score_file(s, c_sample, c_start, c_stop, batch_size, model_name=label,
                                   progress=lambda k: bar.advance(c_task, k))
            result = calibrate(result, reference)
    write_scores(output, result)
    means = ", ".join(f"{k} mean {v.mean():.4g}" for k, v in result.scores.items())
    for k, v in result.errors.items():
        means += f", {k} standard error per shower: mean {v.mean():.3g}, max {v.max():.3g}"
    console.print(f"scored {result.n:,} showers with {s.describe()} of {model} "
                  f"({1e3 * (result.seconds_per_shower or 0):.3g} ms/shower on {result.threads} thread(s)); "
                  f"{means}; wrote {output}", highlight=False)


@anomaly.command("evaluate")
@user_errors
def evaluate(
    scores: list[Path] = typer.Argument(..., metavar="SCORES...", help="Score files of 'caloforge anomaly score' "
                                        "for the background and the signal file."),
    background: Path = typer.Option(..., "--background", help="The background shower file the scores were computed on."),
    signal: Path = typer.Option(..., "--signal", help="The signal shower file the scores were computed on."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: metrics.json, report.html, plots/."),
    by: str = typer.Option("separation_mm", "--by", help="Signal property to bin in, when the signal file has it "
                           "('' for none)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the ROC/SIC plots."),
) -> None:
    """ROC, AUC, SIC and signal efficiency at eps_B = 1e-2 / 1e-3 of each score, per signal bin.

    Example: caloforge anomaly evaluate --background bkg.h5 --signal sig.h5 bkg_nll.h5 sig_nll.h5 -o eval/
    """
    from caloforge.anomaly.evaluation import evaluate_files, write_anomaly_report

    check_output(output, [*scores, background, signal], folder=True)
    ev = evaluate_files(background, signal, scores, by or None)
    out = write_anomaly_report(ev, output, plots=plots)
    for m in ev.metrics:
        console.print(f"{m.score:>24s}  {m.bin:<22s} AUC {m.auc:.3f}  eps_S(1e-2) {m.eps_s['1e-02']:.3f}  "
                      f"eps_S(1e-3) {m.eps_s['1e-03']:.3f}  SIC(1e-3) {m.sic['1e-03']:.2f}", highlight=False)
    for note in ev.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"wrote {out['report']} and {out['metrics']}", highlight=False)


@anomaly.command("abcd")
@user_errors
def abcd(
    background: Path = typer.Argument(..., metavar="BKG_SCORES.h5", help="Score file of the background (two scores)."),
    signal: Path | None = typer.Option(None, "--signal", help="Score file of the signal, for the injection test."),
    names: str | None = typer.Option(None, "--scores", help="The two score names, comma-separated (default: the "
                                     "file's two scores)."),
    keep: float = typer.Option(0.01, "--keep", help="Fraction of background in the signal region (each cut keeps its "
                               "square root)."),
    fractions: str = typer.Option("0.001,0.01,0.1", "--inject", help="Signal fractions to inject, comma-separated."),
    seed: int = typer.Option(0, "--seed", help="Seed of the injected signal's choice, the subsets and replicas."),
    subsets: int = typer.Option(1, "--subsets", help="Also repeat the closure on this many disjoint random subsets "
                                "of the background and report the pulls' mean and spread."),
    bootstrap: int = typer.Option(0, "--bootstrap", help="Also repeat the closure on this many bootstrap replicas of "
                                  "the background (the pulls' spread checks the stated error)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the results as JSON here."),
) -> None:
    """ABCD background estimate with two scores: closure on background, signal injection.

    Example: caloforge anomaly abcd bkg_pair.h5 --signal sig_pair.h5 --keep 0.01 -o abcd.json
    """
    from caloforge._atomic import atomic_write_text
    from caloforge.anomaly.abcd import abcd_study
    from caloforge.anomaly.scores import read_scores

    b = read_scores(background)
    wanted = [n.strip() for n in names.split(",")] if names else list(b.scores)
    if len(wanted) != 2:
        raise InputError(f"ABCD needs exactly two scores; the file has {', '.join(b.scores)} (choose with --scores A,B)",
                         background)
    for n in wanted:
        if n not in b.scores:
            raise InputError(f"has no score {n!r} (it has {', '.join(b.scores)})", background)
    sig = None
    if signal is not None:
        s = read_scores(signal)
        for n in wanted:
            if n not in s.scores:
                raise InputError(f"has no score {n!r} (it has {', '.join(s.scores)})", signal)
        sig = (s.scores[wanted[0]], s.scores[wanted[1]])
    if output is not None:
        check_output(output, [p for p in (background, signal) if p is not None])
    result = abcd_study((b.scores[wanted[0]], b.scores[wanted[1]]), sig, keep, _floats(fractions, "--inject"), seed,
                        subsets, bootstrap)
    result["scores"] = wanted
    c = result["correlation"]
    console.print(f"background: {result['n_background']:,} showers; {wanted[0]} vs {wanted[1]}: "
                  f"dCorr^2 (DisCo) {c['disco']:.4f}, Pearson {c['pearson']:+.4f}", highlight=False)
    for r in result["closure"]:
        console.print(f"closure, keep {r['keep']:g}: predicted {r['predicted']:.1f} ± {r['predicted_error']:.1f}, "
                      f"observed {r['observed']}, pull {r['pull']:+.2f}", highlight=False)
    for s in result.get("closure_spread", []):
        parts = []
        if s["subsets"] > 1:
            parts.append(f"{s['subsets']} subsets of {s['subset_size']:,}: pulls mean {s['subset_mean']:+.2f} "
                         f"± {s['subset_mean_error']:.2f}, std {s['subset_std']:.2f}")
        if s["bootstrap_pulls"]:
            parts.append(f"{len(s['bootstrap_pulls'])} bootstrap replicas: mean {s['bootstrap_mean']:+.2f}, "
                         f"std {s['bootstrap_std']:.2f}")
        console.print(f"closure spread, keep {s['keep']:g}: " + "; ".join(parts), highlight=False)
    for inj in result.get("injection", []):
        r = inj["result"]
        console.print(f"signal {inj['fraction']:g} ({inj['n_signal']} showers, {inj['signal_in_sr']} in SR): predicted "
                      f"{r['predicted']:.1f} ± {r['predicted_error']:.1f}, observed {r['observed']}, "
                      f"significance {inj['significance']:.2f}", highlight=False)
    if output is not None:
        atomic_write_text(output, json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {output}", highlight=False)
