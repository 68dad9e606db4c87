"""``caloforge unfold``: unfold the incident-energy spectrum of a data file with a simulated one."""

from __future__ import annotations

from pathlib import Path

import typer

from caloforge._atomic import check_output
from caloforge.cli._common import console, progress_bar, threads_option, use_threads, user_errors
from caloforge.errors import InputError


def unfold(
    sim: Path = typer.Option(..., "--sim", help="Simulated showers with their incident energies (CaloChallenge HDF5)."),
    data: Path = typer.Option(..., "--data", help="Measured showers whose incident-energy spectrum is unfolded."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: weights.h5, spectrum.json, spectrum.png, index.html."),
    iterations: int = typer.Option(4, "--iterations", help="OmniFold (and IBU) iterations."),
    bins: int = typer.Option(12, "--bins", help="Log-spaced bins of the unfolded spectrum (over the sim's energies)."),
    bootstrap: int | None = typer.Option(None, "--bootstrap", help="Bootstrap replicas for the uncertainty bands, data and sim resampled (0: none; default: the preset's)."),
    data_only: bool = typer.Option(False, "--bootstrap-data-only", help="Resample only the data in the bootstrap (default: data and sim)."),
    seeds: int | None = typer.Option(None, "--seeds", help="Extra unfoldings with other classifier seeds, to report the classifiers' own spread (default: the preset's)."),
    features: str | None = typer.Option(None, "--features", help="Detector-level features: full (E_tot + 45 layer energies + r shape), compact (E_tot + depth/lateral shape), etot (default: the preset's)."),
    closure: bool = typer.Option(False, "--closure", help="Closure test: compare with the data file's stored incident energies."),
    preset: str = typer.Option("default", "--preset", help="default (2-fold cross-fitting) or fast (no cross-fitting, smaller classifiers)."),
    max_showers: int | None = typer.Option(None, "--max-showers", help="Use at most the first N showers of each file."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the classifiers and the bootstrap."),
    threads: int | None = threads_option(),
) -> None:
    """Unfold with OmniFold (per-event weights, bootstrap bands) and iterative Bayesian unfolding.

    Example: caloforge unfold --sim train.h5 --data measured.h5 --iterations 4 -o unfolded/
    """
    _run(sim, data, output, iterations, bins, bootstrap, data_only, seeds, features, closure, preset, max_showers,
         seed, threads)


@user_errors
def _run(sim: Path, data: Path, output: Path, iterations: int, bins: int, n_boot: int | None, data_only: bool,
         seeds: int | None, features: str | None, closure: bool, preset: str, max_showers: int | None, seed: int,
         threads: int | None) -> None:
    for p in (sim, data):
        if not p.is_file():
            raise InputError("file not found", p)
    check_output(output, [sim, data], folder=True)
    if preset not in ("default", "fast"):
        raise InputError(f"--preset must be default or fast, got {preset!r}")
    if max_showers is not None and max_showers < 2:
        raise InputError("--max-showers must be at least 2")
    if bins < 2:
        raise InputError("--bins must be at least 2")

    from caloforge.inference.unfolding import OmniFoldConfig
    from caloforge.inference.unfolding_report import unfold_files, write_unfolding

    make = OmniFoldConfig.fast if preset == "fast" else OmniFoldConfig.default
    changes: dict[str, object] = {"iterations": iterations, "seed": seed, "bootstrap_sim": not data_only}
    for key, value in (("n_bootstrap", n_boot), ("n_seeds", seeds), ("features", features)):
        if value is not None:
            changes[key] = value
    cfg = make(**changes)
    use_threads(threads)
    with progress_bar() as bar:
        tasks: dict[str, object] = {}

        def progress(name: str, done: float, total: float) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)  # type: ignore[arg-type]

        u = unfold_files(sim, data, cfg, bins=bins, closure=closure, max_showers=max_showers, progress=progress)
    paths = write_unfolding(u, output)
    for note in u.result.notes():
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    typer.echo(f"wrote {paths['weights']}, {paths['json']}, {paths['png']} and {paths['html']}")
    c = u.closure()
    if c is not None:
        typer.echo(f"closure (bins with >= {c['min_count']:.0f} showers): OmniFold chi2/ndf "
                   f"{c['omnifold_chi2']:.1f}/{c['omnifold_ndf']}, IBU {c['ibu_chi2']:.1f}/{c['ibu_ndf']}; "
                   f"OmniFold within its 1-sigma band in {c['omnifold_bins_within_1sigma']}/{c['bins_used']} bins")
        if "omnifold_chi2_diff" in c:
            typer.echo(f"  against the bootstrap spread of (unfolded - truth): OmniFold chi2 {c['omnifold_chi2_diff']:.1f}, "
                       f"IBU {c['ibu_chi2_diff']:.1f}")
