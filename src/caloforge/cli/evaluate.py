"""``caloforge evaluate``: CaloChallenge metrics of generated showers against a reference."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from caloforge.cli._common import console, progress_bar, threads_option, use_threads, user_errors

if TYPE_CHECKING:
    from rich.progress import TaskID


def _files(arg: str) -> list[Path]:
    """One sample: a file, or several joined with commas (DS3 ships in two files)."""
    return [Path(p) for p in arg.split(",") if p]


@user_errors
def evaluate(
    reference: str = typer.Argument(..., help="Reference (Geant4) file; join several with commas: a.h5,b.h5"),
    generated: list[str] = typer.Argument(..., help="Generated file(s); each argument is one sample "
                                          "(join a sample's parts with commas)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder for metrics.json, report.html, plots."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Geometry (ds1-photons, ds1-pions, ds2, ds3); "
                                "default: recognised from the voxel count."),
    metrics: str = typer.Option("hist,fpd,kpd,cls-low,cls-high", "--metrics", "-m",
                                help="Comma-separated subset of hist,fpd,kpd,cls-low,cls-high,prdc,multiclass,cnn "
                                "(multiclass: one classifier over the reference and every sample given)."),
    floor: bool = typer.Option(False, "--floor", help="Also compare two halves of the reference: its noise floor (Geant4 vs Geant4 when the "
                           "reference file's provenance says Geant4)."),
    fast: bool = typer.Option(False, "--fast", help="Classifier: at most 25 epochs with early stopping "
                              "(patience 10) instead of the official 50 epochs."),
    cls_epochs: int = typer.Option(None, "--cls-epochs", help="Override the classifier's maximum epochs."),
    cls_width: int = typer.Option(None, "--cls-width", help="Override the classifier's hidden units (official 2048)."),
    cls_depth: int = typer.Option(None, "--cls-depth", help="Override the classifier's hidden layers (official 3)."),
    cls_batch_size: int = typer.Option(None, "--cls-batch-size", help="Override the classifier's batch size (official 1000)."),
    cls_max_showers: int = typer.Option(None, "--cls-max-showers", help="Use at most this many showers per "
                                        "sample in the low-level classifier."),
    cls_memory: float = typer.Option(8.0, "--cls-memory", help="GiB of memory for the low-level classifier "
                                     "inputs of all samples; beyond it they are written to scratch files (--scratch) "
                                     "and read batch by batch, with the same results."),
    scratch: Path = typer.Option(None, "--scratch", help="Folder for those scratch files (default: the system's "
                                 "temporary folder, $TMPDIR); deleted at the end."),
    device: str = typer.Option(None, "--device", help="Where the classifiers train: cpu, cuda, cuda:1, ... "
                               "(default: cuda when available, else cpu)."),
    cnn_depth: int = typer.Option(None, "--cnn-depth", help="Depth of the ResNet classifier (--metrics cnn): "
                                  "18 (official), 10 or 34."),
    prdc_inputs: str = typer.Option("high-level", "--prdc-inputs", help="PRDC on 'high-level' features "
                                    "(standardised) or on 'voxels' (log10 energies, as the official evaluate.py)."),
    threshold: float = typer.Option(None, "--threshold", help="Readout threshold in MeV (default: the dataset's, "
                                   "as the official min_energy); histogram edges keep the official min_energy."),
    seed: int = typer.Option(0, "--seed", help="Seed of splits, batches and classifier training."),
    names: str = typer.Option(None, "--names", help="Comma-separated names of the generated samples."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw the plots (and embed them in the report)."),
    scheduler: str = typer.Option(None, "--scheduler", help="Run the independent parts (per sample, per metric, "
                                  "the floor) as dask tasks: 'local' or 'local:N' (a local cluster of N worker "
                                  "processes) or a dask.distributed scheduler address (tcp://host:8786). "
                                  "Needs caloforge[dask]."),
    threads: int | None = threads_option(),
) -> None:
    """Evaluate generated showers against a reference: metrics.json, report.html and plots."""
    from caloforge._atomic import check_output
    from caloforge.data import open_showers
    from caloforge.errors import InputError
    from caloforge.evaluation.classifier import ClassifierConfig
    from caloforge.evaluation.pipeline import EvaluationOptions, evaluate as run, write_json
    from caloforge.evaluation.report import write_report
    from caloforge.geometry import get_geometry

    inputs = [*_files(reference), *(p for arg in generated for p in _files(arg))]
    check_output(output, inputs, folder=True)
    if output.is_dir():
        for name in ("metrics.json", "report.html"):
            check_output(output / name, inputs)
    if scheduler is not None:
        from caloforge.evaluation.distributed import SchedulerSpec

        SchedulerSpec.parse(scheduler)  # a bad --scheduler fails before any file is read
    n_threads = use_threads(threads)
    geometry = get_geometry(dataset) if dataset else None
    ref = open_showers(_files(reference), geometry)
    sample_names = names.split(",") if names else []
    if sample_names and len(sample_names) != len(generated):
        raise InputError(f"--names gives {len(sample_names)} names for {len(generated)} generated samples")
    gens = {}
    for i, arg in enumerate(generated):
        f = open_showers(_files(arg), ref.geometry)
        name = sample_names[i] if sample_names else (f.attrs.get("model") or f.paths[0].stem)
        while name in gens:
            name += "'"
        gens[str(name)] = f
    cfg = ClassifierConfig.fast() if fast else ClassifierConfig.official()
    overrides: dict[str, Any] = {"max_epochs": cls_epochs, "hidden_units": cls_width, "hidden_layers": cls_depth,
                 "batch_size": cls_batch_size, "device": device}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        from dataclasses import replace

        try:
            cfg = replace(cfg, **overrides)
        except ValueError as exc:
            raise InputError(f"classifier settings: {exc}") from None
    if device is not None:
        import torch

        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise InputError(f"--device {device}: {exc}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available on this machine")
    from caloforge.evaluation.prdc import PRDCConfig
    from caloforge.evaluation.resnet import ResNetConfig

    if prdc_inputs not in ("high-level", "voxels"):
        raise InputError(f"--prdc-inputs must be 'high-level' or 'voxels', not {prdc_inputs!r}")
    prdc = PRDCConfig.voxels() if prdc_inputs == "voxels" else PRDCConfig.official()
    if not cls_memory > 0:
        raise InputError(f"--cls-memory must be positive (GiB), not {cls_memory}")
    if scratch is not None and not scratch.is_dir():
        raise InputError("--scratch: not an existing folder", scratch)

    try:
        resnet = ResNetConfig.official() if cnn_depth is None else ResNetConfig.official(depth=cnn_depth)
    except ValueError as exc:
        raise InputError(f"--cnn-depth: {exc}") from None
    opts = EvaluationOptions(
        metrics=tuple(m.strip() for m in metrics.split(",") if m.strip()), floor=floor, classifier=cfg,
        cls_max_showers=cls_max_showers, seed=seed, threshold=threshold, resnet=resnet, prdc=prdc,
        low_level_budget=int(cls_memory * 2**30), scratch=None if scratch is None else str(scratch),
    )
    output.mkdir(parents=True, exist_ok=True)
    from contextlib import ExitStack

    with ExitStack() as stack, progress_bar() as bar:
        runner = None
        if scheduler is not None:
            from caloforge.evaluation.distributed import dask_runner

            runner = stack.enter_context(dask_runner(scheduler, n_threads))
        tasks: dict[str, TaskID] = {}

        def progress(task: str, done: float, total: float) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total, unit=_unit(task))
            bar.update(tasks[task], completed=done, total=total)

        results, context = run(ref, gens, opts, progress, runner)
        sections = {}
        if plots:
            from caloforge.evaluation.plots import make_plots

            task = bar.add_task("drawing plots", total=None, unit="plots")
            sections = make_plots(results, context, output / "plots",
                                  progress=lambda done, total: bar.update(task, completed=done, total=total))
    write_json(results, output / "metrics.json")
    report = write_report(results, sections, output / "report.html",
                          title=f"caloforge evaluation: {', '.join(gens)} vs {Path(ref.paths[0]).name}")
    _print_summary(results)
    _print_caveats(results)
    console.print(f"wrote [bold]{output / 'metrics.json'}[/] and [bold]{report}[/]")


def _unit(task: str) -> str:
    """The unit of a progress task of the evaluation, for its rate."""
    if task.startswith(("reading", "voxel energies")):
        return "showers"
    if task.startswith("evaluation parts"):
        return "parts"
    return "epochs" if "classifier" in task else ""


def _print_caveats(results: dict) -> None:
    """The warnings and notes of metrics.json (the report shows the same), as plain lines."""
    from rich.markup import escape

    from caloforge.evaluation.report import all_notes

    for w in results.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {escape(str(w))}", highlight=False)
    for note in all_notes(results):
        console.print(f"[dim]note:[/] {escape(note)}", highlight=False)


def _print_summary(results: dict) -> None:
    from rich.table import Table

    t = Table(title=f"{results['dataset']}: {results['n_reference']} reference showers")
    t.add_column("metric")
    for b in results["generated"]:
        t.add_column(b["name"], justify="right")
    floor = results.get("floor")
    if floor:  # the report names the floor in full (floor_label); the console keeps it short
        geant4 = (results.get("reference") or {}).get("source") == "geant4"
        t.add_column("floor (Geant4 vs Geant4)" if geant4 else "floor (reference halves)", justify="right")

    def fmt(d, key):
        if not d or d.get(key) is None:
            return "–"
        if key == "value":
            return f"{d['value']:.3g} ± {d['error']:.2g}"
        return f"{d[key]:.4f}"

    rows = [("AUC low-level", "cls_low", "auc"), ("AUC high-level", "cls_high", "auc"),
            ("AUC ResNet (voxels)", "cls_cnn", "auc"),
            ("FPD x1e3", "fpd", "value"), ("KPD x1e3", "kpd", "value"), ("precision", "prdc", "precision"),
            ("recall", "prdc", "recall"), ("density", "prdc", "density"), ("coverage", "prdc", "coverage")]
    for label, key, sub in rows:
        if any(key in b for b in results["generated"]):
            cells = [fmt(b.get(key), sub) for b in results["generated"]]
            t.add_row(label, *cells, *( [fmt(floor.get(key), sub)] if floor else []))
    if any("multiclass_log_posterior" in b for b in results["generated"]):
        def lp(d):
            v = (d or {}).get("multiclass_log_posterior")
            return "–" if v is None else f"{v:.3f}"
        chance = (results.get("multiclass") or {}).get("chance")
        t.add_row(f"multiclass log-posterior (chance {chance:.3f})" if chance is not None else "multiclass log-posterior",
                  *[lp(b) for b in results["generated"]], *([lp(floor)] if floor else []))
    import numpy as np

    def sep_mean(b, k):
        v = (b.get("separation_power") or {}).get(k)
        if v is None:
            return "–"
        a = np.asarray(v if isinstance(v, list) else [v], dtype=float)
        return f"{np.nanmean(a):.2e}" if np.isfinite(a).any() else "–"

    for k in ("etot_einc", "e_layer", "ec_eta", "width_eta", "sparsity", "voxel_energy"):
        if any("separation_power" in b for b in results["generated"]):
            t.add_row(f"sep. power {k}", *[sep_mean(b, k) for b in results["generated"]],
                      *([sep_mean(floor, k)] if floor else []))
    console.print(t)
