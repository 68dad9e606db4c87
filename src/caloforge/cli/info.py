"""``caloforge info``: what a shower file holds, at a glance."""

from __future__ import annotations

from pathlib import Path

import typer

from caloforge.cli._common import console, progress_bar, user_errors


def _size(n_bytes: int) -> str:
    value = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n_bytes} B"


def _num(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


@user_errors
def info(
    files: list[Path] = typer.Argument(..., metavar="FILE...", help="CaloChallenge HDF5 file(s), read as one sample."),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Geometry (ds1-photons, ds1-pions, ds2, ds3); default: from the voxel count."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable JSON summary to stdout."),
) -> None:
    """Summarise shower file(s): counts, geometry, energies, sparsity, E_tot/E_inc, provenance."""
    import json

    from caloforge.data import open_showers
    from caloforge.features.summary import summarize
    from caloforge.geometry import get_geometry

    geometry = get_geometry(dataset) if dataset else None
    sample = open_showers(files, geometry)
    with progress_bar(transient=True) as bar:
        task = bar.add_task("reading", total=sample.n, unit="showers")
        s = summarize(sample, progress=lambda k: bar.advance(task, k))

    if as_json:
        typer.echo(json.dumps(s, indent=2, allow_nan=False))
        return

    from rich.console import Console
    from rich.table import Table

    g, e, r, p = s["geometry"], s["incident_energy_gev"], s["etot_einc"], s["provenance"]
    table = Table(title="caloforge info", show_header=False, title_justify="left", box=None, padding=(0, 2))
    table.add_column("quantity", style="bold")
    table.add_column("value", overflow="fold")
    for f in s["files"]:
        table.add_row("file", f"{f['path']}  ({f['n_showers']:,} showers, {_size(f['size_bytes'])})")
    table.add_row("showers", f"{s['n_showers']:,}")
    table.add_row("size", _size(s["size_bytes"]))
    table.add_row("geometry", f"{g['name']}: {g['n_voxels']:,} voxels in {g['n_layers']} layers"
                  + ("" if g["regular"] else " (irregular binning)"))
    table.add_row("particle", str(g["particle"]))
    distinct = f", {e['distinct_values']} distinct values" if e["distinct_values"] <= 32 else ""
    table.add_row("incident energy", f"{_num(e['min'], '.4g')} – {_num(e['max'], '.4g')} GeV "
                  f"(median {_num(e['median'], '.3g')} GeV{distinct})")
    table.add_row("readout threshold", f"{s['threshold_mev'] * 1e3:.4g} keV")
    table.add_row("sparsity", f"{_num(s['sparsity'], '.1%')} of voxels are zero "
                  f"({_num(s['nonzero_voxels_per_shower'], ',.0f')} non-zero per shower)")
    if s["empty_showers"]:
        table.add_row("empty showers", f"[yellow]{s['empty_showers']:,}[/]")
    table.add_row("E_tot / E_inc", f"mean {_num(r['mean'], '.4f')}, std {_num(r['std'], '.4f')} "
                  f"(range {_num(r['min'], '.3f')} – {_num(r['max'], '.3f')})")
    for key in ("generator", "version", "seed", "created"):
        if p.get(key) is not None:
            table.add_row(key, str(p[key]))
    Console(highlight=False, soft_wrap=False).print(table)
    if console.is_terminal:  # a hint for people, not for pipelines
        console.print("[dim]all attributes: caloforge info --json FILE[/]")
