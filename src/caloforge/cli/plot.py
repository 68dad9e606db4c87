"""``caloforge plot``: a folder of PNGs and an index.html showing a shower sample at a glance."""

from __future__ import annotations

import html
from pathlib import Path

import typer

from caloforge._atomic import atomic_write_text, check_output
from caloforge.cli._common import console, progress_bar, threads_option, use_threads, user_errors


def _sample_label(attrs: dict, path: Path) -> str:
    """A short legend name: the generator's first word (``Geant4``, ``caloforge``...) or the file name."""
    gen = str(attrs.get("generator") or "").strip()
    if gen:
        words = gen.split()
        return " ".join(words[:2]) if len(words) > 1 and words[1][:1].isdigit() else words[0]
    return path.stem


def write_index(out_dir: Path, title: str, facts: list[tuple[str, str]], figures: list[tuple[str, str]]) -> Path:
    """Write ``index.html`` (facts table + every figure with its caption) atomically."""
    esc = html.escape
    rows = "\n".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts)
    figs = "\n".join(
        f'<figure><a href="{esc(name)}"><img src="{esc(name)}" alt="{esc(Path(name).stem)}" loading="lazy"></a>'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
        for name, caption in figures
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th {{ text-align: left; padding: 2px 1em 2px 0; }} td {{ padding: 2px 0; }}
figure {{ margin: 0 0 2em 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ color: #444; max-width: 60em; margin-top: 0.3em; }}
</style></head><body>
<h1>{esc(title)}</h1>
<table>
{rows}
</table>
{figs}
<p style="color:#888">made by caloforge plot</p>
</body></html>
"""
    target = out_dir / "index.html"
    return atomic_write_text(target, page)


@user_errors
def plot(
    files: list[Path] = typer.Argument(..., metavar="FILE...", help="CaloChallenge HDF5 file(s), read as one sample."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the PNGs and index.html (created)."),
    dataset: str | None = typer.Option(
        None, "--dataset", "-d", help="Geometry (ds1-photons, ds1-pions, ds2, ds3); default: from the voxel count."
    ),
    max_showers: int | None = typer.Option(
        None, "--max-showers", "-n", min=1, help="Use only the first N showers (default: all)."
    ),
    energy_bins: int = typer.Option(4, "--energy-bins", min=1, max=10, help="Incident-energy bins of the per-bin plots."),
    label: str | None = typer.Option(None, "--label", help="Sample name in legends (default: from the file's generator)."),
    threads: int | None = threads_option(),
) -> None:
    """Plot average showers, profiles and energy distributions of shower file(s) into a folder."""
    import numpy as np

    from caloforge.data import open_showers
    from caloforge.errors import InputError
    from caloforge.features import apply_threshold, compute_features
    from caloforge.geometry import get_geometry
    from caloforge.plotting import (
        energy_bin_edges,
        energy_bin_index,
        energy_bin_labels,
        plot_average_shower,
        plot_etot_einc,
        plot_histogram_grid,
        plot_histograms,
        plot_longitudinal_profile,
        plot_radial_profile,
        plot_shower_side_view,
    )
    from caloforge.plotting.style import format_energy

    check_output(output, files, folder=True)
    use_threads(threads)
    geometry = get_geometry(dataset) if dataset else None
    sample = open_showers(files, geometry)
    g = sample.geometry
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder ({exc.strerror})", output) from None
    n = sample.n if max_showers is None else min(max_showers, sample.n)
    name = label or _sample_label(sample.attrs, sample.paths[0])
    e_all = sample.incident_energies()[:n]
    edges = energy_bin_edges(e_all, energy_bins)
    bin_names = energy_bin_labels(edges)
    thr = g.readout_threshold

    # one streamed pass: per-shower scalars and per-layer energies, mean showers per energy bin
    sums = np.zeros((len(edges) - 1, g.n_voxels))
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    e_inc, e_tot, e_layer = [], [], []
    with progress_bar() as bar:
        task = bar.add_task("reading", total=n, unit="showers")
        for e, s in sample.iter_chunks(stop=n):
            f = compute_features(e, s, g)
            e_inc.append(f.e_inc)
            e_tot.append(f.e_tot)
            e_layer.append(f.e_layer)
            s = apply_threshold(s, thr, copy=False)
            idx = energy_bin_index(e, edges)
            for b in range(len(counts)):
                sel = idx == b
                if sel.any():
                    sums[b] += s[sel].sum(axis=0, dtype=np.float64)
                    counts[b] += int(sel.sum())
            bar.advance(task, len(s))
    e_inc_a, e_tot_a, e_layer_a = np.concatenate(e_inc), np.concatenate(e_tot), np.concatenate(e_layer)
    mean_all = sums.sum(axis=0) / n
    all_label = f"all ({n:,})"
    per_bin = {all_label: mean_all}
    per_bin.update({f"{bin_names[b]} ({counts[b]:,})": sums[b] / counts[b] for b in range(len(counts)) if counts[b]})
    e_layer_bins = {}
    idx_all = energy_bin_index(e_inc_a, edges)
    for b in range(len(counts)):
        if counts[b]:
            e_layer_bins[f"{bin_names[b]} ({counts[b]:,})"] = e_layer_a[idx_all == b].mean(axis=0)

    where = f"{g.name}, {n:,} showers"
    distinct = len(np.unique(e_inc_a))
    if distinct <= 32:  # discrete energies (DS1): one bin per value
        e_edges_gev = energy_bin_edges(e_inc_a, distinct) / 1e3
    else:
        e_edges_gev = np.geomspace(e_inc_a.min() / 1e3, e_inc_a.max() / 1e3 * 1.0001, 41)
    figures: list[tuple[str, str]] = []

    n_figures = 10

    def add(fname: str, caption: str, draw) -> None:
        draw(output / fname)
        figures.append((fname, caption))
        bar.update(drawing, completed=len(figures), total=max(n_figures, len(figures)))

    with progress_bar() as bar:
        drawing = bar.add_task("drawing plots", total=n_figures, unit="plots")
        add("average_shower.png",
            f"Average shower of {name} ({where}): one polar image per layer, mean energy per voxel (log colour scale, "
            "shared by all layers); angle = alpha bin (0 along +x, counter-clockwise), radius = r in mm; white voxels "
            "never received energy above the readout threshold.",
            lambda p: plot_average_shower(mean_all, g, p, title=f"Average shower per layer: {name}, {where}"))
        add("average_shower_side_view.png",
            "Side view of the average shower: mean energy per (layer, r bin), summed over the angle (log colour scale).",
            lambda p: plot_shower_side_view(mean_all, g, p, title=f"Average shower, side view: {name}, {where}"))
        add("longitudinal_profile.png",
            "Longitudinal profile: mean energy per layer in MeV (band: standard error of the mean).",
            lambda p: plot_longitudinal_profile(e_layer_a, p, geometry=g, sample_label=name, title=name))
        add("longitudinal_profile_energy_bins.png",
            "Longitudinal profile per incident-energy bin, each normalised to its total (showers per bin in "
            "brackets); in real showers the maximum moves deeper as the energy grows.",
            lambda p: plot_longitudinal_profile(e_layer_bins, p, geometry=g, normalise=True, title=name))
        add("radial_profile.png",
            "Radial profile: mean energy per radial bin, summed over layers and angles"
            + ("" if g.is_regular else " (per layer, as dE/dr, for this irregular binning)") + ".",
            lambda p: plot_radial_profile(mean_all, g, p, sample_label=name, title=name))
        add("radial_profile_energy_bins.png",
            "Radial profile per incident-energy bin, each normalised to its total, with its ratio to the profile "
            "of all showers (dashed) below.",
            lambda p: plot_radial_profile(per_bin, g, p, normalise=True, ratio_to=all_label, title=name))
        add("etot_einc.png",
            "Ratio of the deposited (after the readout threshold) to the incident energy, E_tot / E_inc.",
            lambda p: plot_etot_einc({name: e_tot_a / e_inc_a}, p, title=name, right_label=where))
        add("etot_einc_energy_bins.png",
            "E_tot / E_inc per incident-energy bin; the relative width (σ/μ) is the energy resolution, which should "
            "improve as the energy grows.",
            lambda p: plot_etot_einc(
                {bin_names[b]: e_tot_a[idx_all == b] / e_inc_a[idx_all == b] for b in range(len(counts)) if counts[b]},
                p, title=name, right_label=where))
        add("incident_energy.png",
            "Distribution of the incident energies (log scale).",
            lambda p: plot_histograms({name: e_inc_a / 1e3}, p, logx=True, xlabel="incident energy [GeV]",
                                      edges=e_edges_gev, per="bin",
                                      title=name, right_label=where))
        add("energy_per_layer.png",
            "Distribution of the energy deposited in each layer (MeV, log scale); the note in a panel gives the "
            f"fraction of showers with no energy in that layer (above the {format_energy(thr)} readout threshold) "
            "or below the plotted range.",
            lambda p: plot_histogram_grid({name: e_layer_a}, p, panel_titles=[f"layer {l}" for l in g.relevant_layers],
                                          logx=True, xlabel=r"$E_\mathrm{layer}$ [MeV]", title=f"Energy per layer: {name}, {where}",
                                          max_cols=9 if g.n_layers > 20 else 4))

    provenance = sample.attrs
    facts = [
        ("files", ", ".join(str(p) for p in sample.paths)),
        ("showers", f"{n:,}" + ("" if n == sample.n else f" of {sample.n:,}")),
        ("geometry", f"{g.name}: {g.n_voxels:,} voxels in {g.n_layers} layers"),
        ("incident energy", f"{format_energy(float(e_all.min()))} – {format_energy(float(e_all.max()))}"),
        ("readout threshold", format_energy(thr)),
        ("E_tot / E_inc", f"mean {np.mean(e_tot_a / e_inc_a):.4f}, std {np.std(e_tot_a / e_inc_a):.4f}"),
    ]
    for key in ("generator", "caloforge_version", "seed", "created"):
        if key in provenance:
            facts.append((key, str(provenance[key])))
    index = write_index(output, f"{name}: {where}", facts, figures)
    console.print(f"wrote {len(figures)} plots and {index}", highlight=False)
