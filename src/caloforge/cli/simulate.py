"""``caloforge simulate``: parametric (GFlash-style) showers into a CaloChallenge HDF5 file."""

from __future__ import annotations

from pathlib import Path

import typer

from caloforge._atomic import check_output
from caloforge.cli._common import (
    check_count,
    check_seed,
    console,
    progress_bar,
    threads_option,
    use_threads,
    user_errors,
)


@user_errors
def simulate(
    output: Path = typer.Option(..., "--output", "-o", help="HDF5 file to write (atomically; an existing file is replaced)."),
    n: int = typer.Option(10_000, "--n", "-n", help="Number of showers."),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Built-in geometry: ds2 (default), ds3 or ds1-photons."
    ),
    geometry_xml: Path | None = typer.Option(
        None, "--geometry-xml", help="Simulate into the binning of a CaloChallenge XML file instead."
    ),
    energy: str = typer.Option(
        "log-uniform:1GeV:1TeV", "--energy", "-e",
        help="Incident energies: log-uniform:LO:HI, uniform:LO:HI, fixed:E or discrete:E1,E2,...",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same file."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Showers per write (default: the simulator's block size); "
        "does not change the showers."
    ),
    threads: int | None = threads_option(),
    params_file: Path | None = typer.Option(
        None, "--params", help="JSON file overriding simulator parameters (see SimulationParams)."
    ),
    compression: str = typer.Option(
        "gzip", "--compression", help="HDF5 compression: gzip (as the official files), lzf or none."
    ),
) -> None:
    """Simulate electromagnetic showers with the built-in parametric (GFlash-style) model."""
    import time

    from caloforge.data import parse_energy
    from caloforge.errors import InputError
    from caloforge.geometry import get_geometry, read_binning_xml
    from caloforge.simulation import SimulationParams, detector_for, simulate_to_file

    check_count(n, "--n")
    check_count(batch_size, "--batch-size")
    check_seed(seed)
    if batch_size is not None:
        batch_size = min(batch_size, n)
    check_output(output, [p for p in (geometry_xml, params_file) if p is not None])
    if compression.lower() not in ("gzip", "lzf", "none"):
        raise InputError(f"--compression must be gzip, lzf or none (got {compression!r})")
    spec = parse_energy(energy)
    if geometry_xml is not None:
        if dataset is not None:
            raise InputError("give either --dataset or --geometry-xml, not both")
        geometry = read_binning_xml(geometry_xml)
    else:
        geometry = get_geometry(dataset or "ds2")
    detector = detector_for(geometry)  # fails early (one line) for geometries it cannot simulate
    if detector.approximate:
        console.print(
            f"note: {geometry.name} is simulated with a rough detector model ({detector.name}); "
            "the defaults are tuned to the DS2/DS3 detector",
            highlight=False,
        )
    params = None
    if params_file is not None:
        if not params_file.is_file():
            raise InputError("no such parameter file", params_file)
        try:
            params = SimulationParams.from_json(params_file.read_text())
        except InputError as exc:
            raise InputError(exc.problem, params_file) from None
    threads = use_threads(threads)  # worker threads; the showers do not depend on them

    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task(f"simulate {geometry.name}", total=n, unit="showers")

        def advance(k: int) -> None:
            bar.update(task, advance=k)

        timings: dict = {}
        simulate_to_file(
            output, geometry, n, spec, seed, batch_size=batch_size, params=params, threads=threads,
            progress=advance, compression=None if compression.lower() == "none" else compression.lower(),
            timings=timings,
        )
    elapsed = time.perf_counter() - start
    console.print(
        f"wrote {n:,} {geometry.name} showers ({energy}, seed {seed}) to {output} in {elapsed:.1f} s: "
        f"{n / max(elapsed, 1e-9):,.0f} showers/s overall, "
        f"{n / max(timings.get('simulate', 0.0), 1e-9):,.0f} showers/s simulating "
        f"({timings.get('write', 0.0):.1f} s spent writing)",
        highlight=False,
    )
