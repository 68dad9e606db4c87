"""``caloforge calibrate``: maximum-likelihood incident energy of every shower of a file."""

from __future__ import annotations

from pathlib import Path

import typer

from caloforge._atomic import check_output
from caloforge.cli._common import console, progress_bar, threads_option, use_threads, user_errors
from caloforge.errors import InputError


def calibrate(
    model: str = typer.Argument(..., help="A model with a likelihood: run folder, model folder or shipped name "
                                "(e.g. ds2-electrons, the default Gaussian copula, or voxel-lognormal-ds2)."),
    file: Path = typer.Argument(..., help="CaloChallenge HDF5 file of showers to calibrate."),
    output: Path = typer.Option(..., "--output", "-o", help="Output HDF5 file (E_hat, sigma, 68% interval, flags)."),
    n: int | None = typer.Option(None, "--n", "-n", help="Calibrate only the first N showers."),
    start: int = typer.Option(0, "--start", help="First row of the file to calibrate."),
    preset: str = typer.Option("default", "--preset", help="default (31-point grid, 1e-4 in log E) or fast."),
    e_min: str | None = typer.Option(None, "--e-min", help="Lowest energy searched, e.g. 1GeV (default: the model's range)."),
    e_max: str | None = typer.Option(None, "--e-max", help="Highest energy searched (default: the model's range)."),
    batch_size: int = typer.Option(256, "--batch-size", help="Showers per likelihood call."),
    threads: int | None = threads_option(),
) -> None:
    """Maximum-likelihood energy calibration: E_hat = argmax_E log p(shower | E) for every shower.

    Example: caloforge calibrate ds2-electrons showers.h5 -o calib.h5 --n 1000 --threads 1
    """
    _run(model, file, output, n, start, preset, e_min, e_max, batch_size, threads)


@user_errors
def _run(model_name: str, file: Path, output: Path, n: int | None, start: int, preset: str,
         e_min: str | None, e_max: str | None, batch_size: int, threads: int | None) -> None:
    if preset not in ("default", "fast"):
        raise InputError(f"--preset must be default or fast, got {preset!r}")
    if n is not None and n < 1:
        raise InputError("--n must be at least 1")
    if start < 0:
        raise InputError("--start must be at least 0")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if not file.is_file():
        raise InputError("file not found", file)
    check_output(output, [file])

    from caloforge.data.energy import parse_quantity
    from caloforge.inference import CalibrationConfig, calibrate_file, require_likelihood

    lo = None if e_min is None else parse_quantity(e_min)
    hi = None if e_max is None else parse_quantity(e_max)
    make = CalibrationConfig.fast if preset == "fast" else CalibrationConfig.default
    cfg = make(batch_size=batch_size, e_min=lo, e_max=hi)

    use_threads(threads)
    from caloforge.models.pretrained import resolve
    from caloforge.models.serialization import load_model

    model_dir = resolve(model_name)
    check_output(output, [file, model_dir])
    model = load_model(model_dir)
    require_likelihood(model)  # before reading any shower
    stop = None if n is None else start + n
    with progress_bar() as bar:
        task = bar.add_task("calibrating", total=None, unit="showers")

        def progress(name: str, done: float, total: float) -> None:
            bar.update(task, description=name, completed=done, total=total)

        result = calibrate_file(model, file, cfg, start=start, stop=stop, progress=progress)
    result.write(output, attrs={"model_path": str(Path(model_dir).resolve()), "input": str(file.resolve()),
                                "first_row": start})
    import numpy as np

    flagged = int(np.sum(result.at_boundary))
    typer.echo(f"wrote maximum-likelihood energies of {len(result):,} showers to {output} "
               f"({result.ms_per_shower:.1f} ms/shower, {result.likelihood_calls:,} batched likelihood calls)")
    if result.e_true is not None and len(result):
        rel = result.e_hat / result.e_true - 1.0
        typer.echo(f"against the stored incident energies: mean (E_hat - E)/E {np.mean(rel):+.4f}, "
                   f"std {np.std(rel):.4f}; median sigma/E_hat {np.nanmedian(result.sigma / result.e_hat):.4f}")
    if flagged:
        console.print(f"[yellow]note:[/] {flagged:,} showers have their maximum or interval at the edge of the "
                      f"energy range {result.e_range[0]:.4g}-{result.e_range[1]:.4g} MeV (flag at_boundary)",
                      highlight=False)
