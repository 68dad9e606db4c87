"""Longitudinal (mean energy per layer) and radial (mean energy per r bin) shower profiles.

Both accept raw inputs (per-shower arrays, averaged here, with standard errors drawn as bands,
optionally split into incident-energy bins) or already averaged curves as a mapping
``{legend label: mean}`` from a streamed computation (no error bands then).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path

import numpy as np

from caloforge.features import ShowerFeatures
from caloforge.geometry import Geometry
from caloforge.plotting.showers import as_mean_shower
from caloforge.plotting.style import (
    REFERENCE_COLOR,
    SAMPLE_COLORS,
    format_energy,
    grid_shape,
    hep_style,
    label,
    new_figure,
    save_figure,
)

# ------------------------------------------------------------------ energy bins


def energy_bin_edges(e_inc: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """Edges (MeV) splitting incident energies into ``n_bins`` logarithmic bins.

    The outer edges enclose every energy; inner edges are rounded to two significant digits.
    Discrete energies (DS1: powers of two) that are no more than ``n_bins`` get one bin each.
    """
    e = np.asarray(e_inc, dtype=np.float64).reshape(-1)
    e = e[np.isfinite(e) & (e > 0)]
    if e.size == 0:
        raise ValueError("no positive incident energy to bin")
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    lo, hi = float(e.min()), float(e.max())
    values = np.unique(e)
    if len(values) <= n_bins:
        if len(values) == 1:
            return np.array([lo * 0.99, hi * 1.01])
        mids = np.sqrt(values[:-1] * values[1:])
        return np.concatenate([[lo * 0.99], mids, [hi * 1.01]])
    inner = np.geomspace(lo, hi, n_bins + 1)[1:-1]
    inner = np.array([float(f"{x:.2g}") for x in inner])
    return np.concatenate([[lo], inner, [np.nextafter(hi, np.inf)]])


def energy_bin_labels(edges: np.ndarray) -> list[str]:
    """Legend texts such as ``1–3.2 GeV`` for consecutive edges (MeV)."""
    out = []
    for a, b in pairwise(edges):
        ta, tb = format_energy(a), format_energy(b)
        ua, ub = ta.split()[1], tb.split()[1]
        out.append(f"{ta.split()[0]}–{tb}" if ua == ub else f"{ta}–{tb}")
    return out


def energy_bin_index(e_inc: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of every energy (0 .. len(edges) - 2), -1 outside the edges."""
    e = np.asarray(e_inc, dtype=np.float64).reshape(-1)
    idx = np.searchsorted(edges, e, side="right") - 1
    idx[(idx < 0) | (idx >= len(edges) - 1)] = -1
    return idx


def _resolve_bins(e_inc: np.ndarray | None, energy_bins: int | np.ndarray | None) -> np.ndarray | None:
    if energy_bins is None:
        return None
    if e_inc is None:
        raise ValueError("energy_bins needs the incident energies (e_inc)")
    if np.isscalar(energy_bins):
        return energy_bin_edges(e_inc, int(energy_bins))  # type: ignore[arg-type]
    edges = np.asarray(energy_bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("energy_bins must be an int or increasing edges (MeV)")
    return edges


def _mean_and_sem(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    if n == 0:
        return np.full(x.shape[1:], np.nan), np.full(x.shape[1:], np.nan)
    mean = x.mean(axis=0)
    sem = x.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return mean, sem


def _split(
    per_shower: np.ndarray, e_inc: np.ndarray | None, edges: np.ndarray | None, sample_label: str | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{label: (mean, sem)}`` of a per-shower array, overall or per energy bin."""
    if edges is None:
        return {sample_label or "all showers": _mean_and_sem(per_shower)}
    idx = energy_bin_index(e_inc, edges)  # type: ignore[arg-type]
    out = {}
    for b, text in enumerate(energy_bin_labels(edges)):
        sel = per_shower[idx == b]
        if len(sel):
            out[f"{text} ({len(sel):,})"] = _mean_and_sem(sel)
    return out


# ------------------------------------------------------------------ longitudinal


def plot_longitudinal_profile(
    data: ShowerFeatures | np.ndarray | Mapping[str, np.ndarray],
    path: str | Path,
    *,
    geometry: Geometry | None = None,
    e_inc: np.ndarray | None = None,
    energy_bins: int | np.ndarray | None = None,
    normalise: bool = False,
    title: str | None = None,
    sample_label: str | None = None,
) -> Path:
    """Mean energy per layer (log scale), overall or one curve per incident-energy bin.

    ``data``: :class:`ShowerFeatures` (its ``e_layer``, ``e_inc`` and geometry are used), an
    ``e_layer`` array (N, layers) with ``e_inc`` (MeV) for energy bins, or a mapping ``{label:
    mean e_layer (layers,)}`` of precomputed curves. ``energy_bins``: a number of logarithmic bins
    or edges in MeV. ``normalise``: divide each curve by its sum (shape comparison across
    energies). The x axis shows the geometry's layer numbers (``geometry``, default 0, 1, ...).
    """
    if isinstance(data, ShowerFeatures):
        geometry = geometry or data.geometry
        e_inc = data.e_inc if e_inc is None else e_inc
        data = data.e_layer
    if isinstance(data, Mapping):
        curves: Mapping[str, tuple[np.ndarray, np.ndarray | None]] = {
            k: (np.asarray(v, dtype=np.float64), None) for k, v in data.items()
        }
    else:
        arr = np.asarray(data, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"expected e_layer of shape (N, layers), got {arr.shape}")
        curves = _split(arr, e_inc, _resolve_bins(e_inc, energy_bins), sample_label)
    if not curves:
        raise ValueError("no shower to draw")
    n_layers = len(next(iter(curves.values()))[0])
    x = np.asarray(geometry.relevant_layers if geometry is not None else range(n_layers), dtype=float)
    if len(x) != n_layers:
        raise ValueError(f"{n_layers} layers given but geometry {geometry.name} has {len(x)}")  # type: ignore[union-attr]

    from matplotlib.ticker import NullLocator

    with hep_style():
        fig = new_figure((7.5, 6.0))
        ax = fig.subplots()
        few = n_layers <= 12
        for k, (text, (mean, sem)) in enumerate(curves.items()):
            scale = 1.0
            if normalise:
                total = np.nansum(mean)
                scale = 1.0 / total if total > 0 else np.nan
            colour = SAMPLE_COLORS[k % len(SAMPLE_COLORS)]
            y = np.where(mean > 0, mean * scale, np.nan)
            ax.plot(x, y, "o-" if few else ".-", color=colour, label=text, markersize=5 if few else 4)
            if sem is not None:
                ax.fill_between(x, (mean - sem) * scale, (mean + sem) * scale, color=colour, alpha=0.25, lw=0)
        ax.set_yscale("log")
        ax.set_xlabel("layer")
        ax.set_ylabel(r"$\langle E_\mathrm{layer}\rangle\,/\,\langle E_\mathrm{tot}\rangle$" if normalise else "mean energy per layer [MeV]")
        if geometry is not None and not geometry.is_regular:
            ax.set_xticks(x)
            ax.xaxis.set_minor_locator(NullLocator())
        ax.margins(x=0.02)
        _expand_top(ax, 6.0 if len(curves) == 1 else 30.0)
        ax.legend(loc="upper right", title="incident energy" if len(curves) > 1 else None, ncols=1)
        label(ax, title or "Longitudinal profile", geometry.name if geometry is not None else None)
        return save_figure(fig, path)


def _expand_top(ax, factor: float = 30.0) -> None:
    """Leave room for the legend above log-scale curves."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * factor)


# ------------------------------------------------------------------ radial


def radial_energies(mean: np.ndarray, geometry: Geometry) -> dict[int, np.ndarray]:
    """``{layer: energy per r bin summed over alpha}`` of a (voxels,) shower or (N, voxels) showers."""
    m = np.asarray(mean)
    out = {}
    for layer in geometry.relevant_layers:
        lb = geometry.layers[layer]
        block = m[..., geometry.layer_slice(layer)]
        out[layer] = block.reshape(*m.shape[:-1], lb.n_alpha, lb.n_r).sum(axis=-2)
    return out


def plot_radial_profile(
    showers: np.ndarray | Mapping[str, np.ndarray],
    geometry: Geometry,
    path: str | Path,
    *,
    e_inc: np.ndarray | None = None,
    energy_bins: int | np.ndarray | None = None,
    threshold: float | None = None,
    normalise: bool = False,
    ratio_to: str | None = None,
    title: str | None = None,
    sample_label: str | None = None,
) -> Path:
    """Mean energy versus r, overall or one curve per incident-energy bin.

    ``showers``: (N, voxels) showers in MeV (thresholded at ``threshold``, default the geometry's
    readout threshold, then averaged), a (voxels,) mean shower, or a mapping ``{label: mean shower
    (voxels,)}``. Regular geometries (DS2, DS3) get one panel, the energy per radial bin summed over
    layers and angles; irregular ones (DS1) one panel per layer, as dE/dr (MeV/mm) since their
    radial bins differ in width. ``normalise`` divides each curve by its sum. ``ratio_to``: the
    label of a curve (drawn dashed grey) that the others are divided by in ratio panels below.
    """
    thr = geometry.readout_threshold if threshold is None else float(threshold)
    regular = geometry.is_regular
    panels: list[int | None] = [None] if regular else list(geometry.relevant_layers)

    def by_panel(radial: dict[int, np.ndarray]) -> list[np.ndarray]:
        """Per panel: energies per r bin (summed over layers for a regular geometry)."""
        if regular:
            return [np.sum([radial[l] for l in geometry.relevant_layers], axis=0)]
        return [radial[l] for l in geometry.relevant_layers]

    # {label: [(mean per r bin, standard error or None) per panel]}
    curves: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = {}
    means: dict[str, np.ndarray] = {}
    if isinstance(showers, Mapping):
        means = {k: as_mean_shower(v, geometry, thr) for k, v in showers.items()}
    elif np.ndim(showers) == 1:
        means = {sample_label or "all showers": as_mean_shower(showers, geometry, thr)}
    for text, mean in means.items():
        curves[text] = [(m, None) for m in by_panel(radial_energies(mean, geometry))]
    if not means:
        s = np.asarray(showers)
        if s.ndim != 2 or s.shape[1] != geometry.n_voxels:
            raise ValueError(f"expected (N, {geometry.n_voxels}) showers, got {s.shape}")
        s = np.where(s < thr, 0.0, s.astype(np.float64)) if thr > 0 else s.astype(np.float64)
        parts = by_panel(radial_energies(s, geometry))  # (N, n_r) per panel
        offsets = np.cumsum([0] + [p.shape[1] for p in parts])
        split = _split(np.concatenate(parts, axis=1), e_inc, _resolve_bins(e_inc, energy_bins), sample_label)
        for text, (mean_all, sem_all) in split.items():
            curves[text] = [(mean_all[a:b], sem_all[a:b]) for a, b in pairwise(offsets)]
    if not curves:
        raise ValueError("no shower to draw")

    if ratio_to is not None and ratio_to not in curves:
        raise ValueError(f"ratio_to={ratio_to!r} names no curve (have {', '.join(curves)})")
    rows, cols = grid_shape(len(panels), max_cols=4)
    with hep_style(font_scale=1.0 if regular else 0.8):
        height = 3.6 + (1.2 if ratio_to else 0.0)
        fig = new_figure((7.5, 6.0 + (1.5 if ratio_to else 0.0)) if regular else (cols * 4.2, rows * height + 0.4))
        if ratio_to:
            gs = fig.add_gridspec(2 * rows, cols, height_ratios=[3, 1] * rows)
            fig.get_layout_engine().set(h_pad=0.02, hspace=0.0)
        else:
            gs = fig.add_gridspec(rows, cols)
        axes = []
        for p, layer in enumerate(panels):
            i, j = divmod(p, cols)
            ax = fig.add_subplot(gs[2 * i, j] if ratio_to else gs[i, j])
            rax = fig.add_subplot(gs[2 * i + 1, j], sharex=ax) if ratio_to else None
            axes.append(ax)
            r_edges = np.asarray(geometry.layers[geometry.relevant_layers[0] if layer is None else layer].r_edges)
            width = np.diff(r_edges)
            centres = r_edges[:-1] + width / 2
            # regular: energy per bin; irregular: per mm of r (bins of different widths)
            per = np.ones_like(width) if regular else width
            drawn: dict[str, np.ndarray] = {}
            for k, (text, panel_curves) in enumerate(curves.items()):
                mean, sem = panel_curves[p]
                is_ref = text == ratio_to
                colour = REFERENCE_COLOR if is_ref else SAMPLE_COLORS[k % len(SAMPLE_COLORS)]
                scale = 1.0
                if normalise:
                    total = float(np.nansum(mean))
                    scale = 1.0 / total if total > 0 else np.nan
                yy = np.where(mean > 0, mean / per * scale, np.nan)
                drawn[text] = yy
                ax.stairs(yy, r_edges, color=colour, label=text, linewidth=2.4 if is_ref else 1.6,
                          linestyle="--" if is_ref else "-", baseline=None, zorder=3 if is_ref else 2)
                if sem is not None:
                    ax.errorbar(centres, yy, yerr=sem / per * scale, fmt="none", ecolor=colour, elinewidth=1)
            ax.set_yscale("log")
            if not regular:
                ax.set_xscale("symlog", linthresh=10.0, linscale=0.5)
                ax.set_title(f"layer {layer}", fontsize="medium")
            ax.set_xlim(0, r_edges[-1])
            if regular:
                ax.set_ylabel("fraction of energy per radial bin" if normalise else "mean energy per radial bin [MeV]")
            else:
                ax.set_ylabel("(1/E) dE/dr [1/mm]" if normalise else "mean dE/dr [MeV/mm]")
            _expand_top(ax, 20.0)
            if rax is None or ratio_to is None:  # rax exists exactly when ratio_to is given
                ax.set_xlabel("r [mm]")
                continue
            ax.tick_params(labelbottom=False)
            ref = drawn[ratio_to]
            ratios = []
            for k, (text, yy) in enumerate(drawn.items()):
                if text == ratio_to:
                    continue
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = yy / ref
                ratios.append(r)
                rax.plot(centres, r, "o-", color=SAMPLE_COLORS[k % len(SAMPLE_COLORS)], markersize=3, linewidth=1)
            rax.axhline(1.0, color=REFERENCE_COLOR, linestyle="--", linewidth=1.0)
            finite = np.concatenate(ratios)[np.isfinite(np.concatenate(ratios))] if ratios else np.zeros(0)
            if finite.size:
                span = max(0.05, float(np.max(np.abs(finite - 1.0))) * 1.15)
                rax.set_ylim(1.0 - min(span, 1.0), 1.0 + span)
            rax.set_xlabel("r [mm]")
            rax.set_ylabel(f"ratio to {ratio_to.split(' (')[0]}" if len(ratio_to) < 16 else "ratio")
        legend_title = "incident energy" if len(curves) > 1 else None
        axes[0].legend(loc="upper right", title=legend_title, fontsize="small" if regular else "x-small")
        if regular:
            label(axes[0], title or "Radial profile", f"{geometry.name}, all layers")
        else:
            fig.suptitle(f"{title or 'Radial profile'} ({geometry.name})", fontweight="bold")
        return save_figure(fig, path)
