"""The plots of an evaluation report: every feature histogram (official binnings) with ratio
panels, voxel-energy spectra, average showers and profiles. Built on :mod:`caloforge.plotting`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _voxel_spectrum(ref_counts, gen_counts: dict[str, np.ndarray], edges: np.ndarray, path: Path) -> Path:
    from caloforge.plotting.style import hep_style, new_figure, save_figure

    with hep_style():
        fig = new_figure((7.5, 7.0))
        ax, rax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        ref = ref_counts / max(ref_counts.sum(), 1)
        ax.stairs(ref, edges, fill=True, alpha=0.25, color="0.4", label="reference")
        for name, c in gen_counts.items():
            h = c / max(c.sum(), 1)
            ax.stairs(h, edges, linewidth=2, label=name)
            with np.errstate(divide="ignore", invalid="ignore"):
                rax.stairs(np.where(ref > 0, h / ref, np.nan), edges, linewidth=1.5)
        rax.axhline(1.0, color="0.4", linestyle="--", linewidth=1)
        rax.set_ylim(0.5, 1.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("fraction of voxels per bin")
        rax.set_xlabel("voxel energy [MeV]")
        rax.set_ylabel("ratio")
        ax.tick_params(labelbottom=False)
        ax.legend(loc="upper right")
        return save_figure(fig, path)


def make_plots(results: dict, context: dict[str, Any], out_dir: Path,
               progress: Callable[[int, int], None] | None = None) -> dict[str, list[Path]]:
    """Write every report plot into ``out_dir``; returns them grouped by report section.
    ``progress`` is called with (plots drawn, plots in all) after each plot."""
    from caloforge.plotting import (
        plot_average_shower,
        plot_etot_einc,
        plot_histogram_grid,
        plot_longitudinal_profile,
        plot_radial_profile,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    ref = context["reference"]
    samples = context["samples"]
    b = context["binning"]
    g = context["geometry"]
    rf = ref.features
    gens = {name: s.features for name, s in samples.items()}
    layers = [f"layer {l}" for l in g.relevant_layers]
    alayers = [f"layer {l}" for l in g.layers_binned_in_alpha]
    sections: dict[str, list[Path]] = {"Energy response": [], "Per-layer features": [], "Showers": []}
    with_voxels = (b.voxel_energy is not None and all(s.voxel_counts is not None for s in samples.values())
                   and context.get("reference_voxel_counts") is not None)
    n_grids = sum(1 for titles in (layers, alayers, alayers, alayers, alayers, layers, layers) if titles)
    total = 1 + int(with_voxels) + n_grids + 1 + 3 + len(samples)
    drawn = [0]

    def add(section: str, path: Path) -> None:
        sections[section].append(path)
        drawn[0] += 1
        if progress is not None:
            progress(drawn[0], max(total, drawn[0]))

    add("Energy response", plot_etot_einc(gens, out_dir / "etot_einc.png", reference=rf))
    if b.voxel_energy is not None and all(s.voxel_counts is not None for s in samples.values()):
        ref_counts = context.get("reference_voxel_counts")
        if ref_counts is not None:
            add("Energy response", _voxel_spectrum(
                ref_counts, {n: s.voxel_counts for n, s in samples.items()}, b.voxel_energy, out_dir / "voxel_energy.png"))

    grids = [
        ("e_layer", "E_layer", layers, b.e_layer, True, "energy in layer [MeV]"),
        ("ec_eta", "EC_eta", alayers, b.ec_eta, False, "centre of energy in eta (x) [mm]"),
        ("ec_phi", "EC_phi", alayers, b.ec_phi, False, "centre of energy in phi (y) [mm]"),
        ("width_eta", "width_eta", alayers, b.width_eta, False, "width in eta (x) [mm]"),
        ("width_phi", "width_phi", alayers, b.width_phi, False, "width in phi (y) [mm]"),
        ("ec_r", "EC_r", layers, b.ec_r, False, "centre of energy in r [mm]"),
        ("width_r", "width_r", layers, b.width_r, False, "width in r [mm]"),
    ]
    for key, fname, titles, edges, logx, xlabel in grids:
        if not titles:
            continue
        add("Per-layer features", plot_histogram_grid(
            {n: getattr(f, key) for n, f in gens.items()}, out_dir / f"{fname}.png", panel_titles=titles,
            reference=getattr(rf, key), edges=edges, logx=logx, xlabel=xlabel, title=fname.replace("_", " ")))
    add("Per-layer features", plot_histogram_grid(
        {n: f.sparsity for n, f in gens.items()}, out_dir / "sparsity.png", panel_titles=layers,
        reference=rf.sparsity, edges=b.sparsity, xlabel="fraction of voxels with 0 energy deposition",
        title="sparsity"))

    add("Showers", plot_longitudinal_profile(
        {"reference": rf.e_layer.mean(0), **{n: f.e_layer.mean(0) for n, f in gens.items()}},
        out_dir / "longitudinal_profile.png", geometry=g, title="mean energy per layer"))
    add("Showers", plot_radial_profile(
        {"reference": ref.mean_shower, **{n: s.mean_shower for n, s in samples.items()}}, g,
        out_dir / "radial_profile.png", threshold=0.0, ratio_to="reference", title="mean radial profile"))
    vmax = float(ref.mean_shower.max())
    add("Showers", plot_average_shower(
        ref.mean_shower, g, out_dir / "average_shower_reference.png", threshold=0.0, vmax=vmax,
        title="average shower: reference"))
    for n, s in samples.items():
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in n)
        add("Showers", plot_average_shower(
            s.mean_shower, g, out_dir / f"average_shower_{safe}.png", threshold=0.0, vmax=vmax,
            title=f"average shower: {n}"))
    return sections
