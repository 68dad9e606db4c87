"""Normalised histograms of a feature for one or several samples against a reference, with a
ratio panel below: the building block of the dataset overview and of the evaluation report.

- :func:`normalised_histogram`: unit-area histogram and its statistical error, safe for empty input;
- :func:`draw_comparison`: draw samples vs a reference on given axes (main + optional ratio);
- :func:`plot_histograms`: one feature, one figure;
- :func:`plot_histogram_grid`: one feature per column of (N, K) arrays, e.g. per-layer energies;
- :func:`plot_etot_einc`: the E_tot / E_inc distribution.

Histograms are normalised over the entries inside the edges (or all entries with
``overflow=True``, which moves out-of-range values into the first and last bins): to unit area
like the official CaloChallenge plots (``density=True``) on linear edges, to a fraction of the
entries per bin on logarithmic edges (where a density per unit x would distort the shape). Bins where the reference is empty get no ratio
point; ratio points outside the ratio range are drawn as triangles on its edge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from caloforge.features import ShowerFeatures
from caloforge.plotting.style import (
    REFERENCE_COLOR,
    SAMPLE_COLORS,
    grid_shape,
    hep_style,
    label,
    new_figure,
    save_figure,
    tidy_log_axis,
)

Samples = np.ndarray | Mapping[str, np.ndarray]


def _as_mapping(samples: Samples | None, default: str) -> dict[str, np.ndarray]:
    if samples is None:
        return {}
    if isinstance(samples, Mapping):
        return {k: np.asarray(v, dtype=np.float64) for k, v in samples.items()}
    return {default: np.asarray(samples, dtype=np.float64)}


def normalised_histogram(
    values: np.ndarray, edges: np.ndarray, *, overflow: bool = False, per: str = "width"
) -> tuple[np.ndarray, np.ndarray]:
    """``(height, error)`` of the finite ``values`` with Poisson errors; zeros when empty.

    ``per="width"``: a density of unit area (``np.histogram(density=True)``); ``per="bin"``: the
    fraction of the entries in each bin (heights sum to 1), the readable choice on a log x axis;
    ``per="auto"``: ``bin`` for logarithmic edges, ``width`` otherwise.
    """
    if per == "auto":
        per = "bin" if _is_log(np.asarray(edges, dtype=np.float64)) else "width"
    if per not in ("width", "bin"):
        raise ValueError(f"per must be 'width', 'bin' or 'auto', got {per!r}")
    edges = np.asarray(edges, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if overflow:
        v = np.clip(v, edges[0], edges[-1])
    counts, _ = np.histogram(v, edges)
    n = counts.sum()
    width = np.diff(edges) if per == "width" else np.ones(len(edges) - 1)
    if n == 0:
        return np.zeros(len(width)), np.zeros(len(width))
    return counts / (n * width), np.sqrt(counts) / (n * width)


def auto_edges(arrays: Sequence[np.ndarray], n_bins: int = 50, log: bool = False) -> np.ndarray:
    """Edges covering the 0.05-99.95 % quantiles of all finite (positive, when ``log``) values."""
    parts = [np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays]
    v = np.concatenate(parts) if parts else np.zeros(0)
    v = v[np.isfinite(v) & ((v > 0) if log else True)]
    if v.size == 0:
        return np.logspace(-1, 1, n_bins + 1) if log else np.linspace(0.0, 1.0, n_bins + 1)
    lo, hi = (float(x) for x in np.quantile(v, [0.0005, 0.9995]))
    if log:
        lo, hi = np.log10(lo), np.log10(hi)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.03 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if not log and lo < 0 <= float(v.min()):
        lo = 0.0  # a non-negative quantity starts at 0
    return np.logspace(lo, hi, n_bins + 1) if log else np.linspace(lo, hi, n_bins + 1)


def _is_log(edges: np.ndarray) -> bool:
    if len(edges) < 3 or edges[0] <= 0:
        return False
    ratios = edges[1:] / edges[:-1]
    return bool(np.allclose(ratios, ratios[0], rtol=1e-6) and not np.allclose(np.diff(edges), edges[1] - edges[0]))


def _stats(v: np.ndarray) -> str:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "empty"
    return f"μ = {v.mean():.3g}, σ = {v.std():.2g}"


def draw_comparison(
    ax,
    samples: Samples,
    edges: np.ndarray,
    *,
    reference: np.ndarray | None = None,
    reference_label: str = "reference",
    ratio_ax=None,
    overflow: bool = False,
    ratio_range: tuple[float, float] = (0.5, 1.5),
    show_errors: bool = True,
    stats: bool = False,
    per: str = "auto",
) -> dict[str, np.ndarray]:
    """Draw normalised histograms of ``samples`` (and ``reference``) on ``ax``; ratios to the
    reference on ``ratio_ax`` when both are given. Returns ``{label: density}`` (reference too).

    The reference is a filled grey histogram with its statistical uncertainty as a grey band in
    the ratio panel; each sample is a coloured line with error bars.
    """
    edges = np.asarray(edges, dtype=np.float64)
    centres = np.sqrt(edges[:-1] * edges[1:]) if _is_log(edges) else 0.5 * (edges[:-1] + edges[1:])
    out: dict[str, np.ndarray] = {}
    ref_h = ref_e = None
    if reference is not None:
        ref = np.asarray(reference, dtype=np.float64)
        ref_h, ref_e = normalised_histogram(ref, edges, overflow=overflow, per=per)
        text = f"{reference_label} ({_stats(ref)})" if stats else reference_label
        ax.stairs(ref_h, edges, fill=True, color=REFERENCE_COLOR, alpha=0.35, label=text)
        ax.stairs(ref_h, edges, color=REFERENCE_COLOR, linewidth=1.2)
        out[reference_label] = ref_h
    for k, (name, values) in enumerate(_as_mapping(samples, "sample").items()):
        colour = SAMPLE_COLORS[k % len(SAMPLE_COLORS)]
        h, e = normalised_histogram(values, edges, overflow=overflow, per=per)
        text = f"{name} ({_stats(values)})" if stats else name
        ax.stairs(h, edges, color=colour, linewidth=1.6, label=text)
        if show_errors:
            nz = h > 0
            ax.errorbar(centres[nz], h[nz], yerr=e[nz], fmt="none", ecolor=colour, elinewidth=0.9)
        out[name] = h
        if ratio_ax is not None and ref_h is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.where(ref_h > 0, h / ref_h, np.nan)
                r_err = np.where(ref_h > 0, e / ref_h, np.nan)
            lo, hi = ratio_range
            inside = np.isfinite(r) & (r >= lo) & (r <= hi)
            ratio_ax.errorbar(centres[inside], r[inside], yerr=r_err[inside], fmt="o", color=colour, markersize=3, elinewidth=0.9)
            above, below = np.isfinite(r) & (r > hi), np.isfinite(r) & (r < lo)
            span = hi - lo
            ratio_ax.plot(centres[above], np.full(above.sum(), hi - 0.04 * span), "^", color=colour, markersize=4)
            ratio_ax.plot(centres[below], np.full(below.sum(), lo + 0.04 * span), "v", color=colour, markersize=4)
    if ratio_ax is not None and ref_h is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            band = np.where(ref_h > 0, ref_e / ref_h, np.nan)
        ratio_ax.stairs(1 + band, edges, baseline=1 - band, fill=True, color=REFERENCE_COLOR, alpha=0.3)
        ratio_ax.axhline(1.0, color=REFERENCE_COLOR, linewidth=1.0, linestyle="--")
        ratio_ax.set_ylim(*ratio_range)
    return out


def _finish_axes(ax, ratio_ax, edges, *, logx, logy, xlabel, ylabel, ratio_label) -> None:
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlim(edges[0], edges[-1])
    if logx:
        tidy_log_axis(ax.xaxis)
    top = ax.get_ylim()[1]
    ax.set_ylim(top=top * (20.0 if logy else 1.3))  # room for the legend
    ax.set_ylabel(ylabel)
    if ratio_ax is not None:
        ratio_ax.set_xlabel(xlabel)
        ratio_ax.set_ylabel(ratio_label)
        ax.tick_params(labelbottom=False)
    else:
        ax.set_xlabel(xlabel)


def _y_label(edges: np.ndarray, per: str) -> str:
    if per == "bin" or (per == "auto" and _is_log(np.asarray(edges, dtype=np.float64))):
        return "fraction of entries per bin"
    return "normalised entries"


def _below_note(arrays: Sequence[np.ndarray], edges: np.ndarray) -> str:
    """``"12.5% zero, 0.3% below range"`` for the sample with most entries under the first edge."""
    worst, note = 0.0, ""
    for a in arrays:
        v = np.asarray(a, dtype=np.float64).reshape(-1)
        v = v[np.isfinite(v)]
        if v.size == 0:
            continue
        zero = float((v == 0).mean()) if edges[0] > 0 else 0.0
        below = float((v < edges[0]).mean()) - zero
        if zero + below > worst:
            worst = zero + below
            parts = [f"{zero:.1%} zero"] if zero >= 0.0005 else []
            parts += [f"{below:.1%} below range"] if below >= 0.0005 else []
            note = ", ".join(parts)
    return note


def plot_histograms(
    samples: Samples,
    path: str | Path,
    *,
    reference: np.ndarray | None = None,
    reference_label: str = "reference",
    edges: np.ndarray | None = None,
    n_bins: int = 50,
    logx: bool = False,
    logy: bool = False,
    xlabel: str = "",
    ylabel: str | None = None,
    title: str | None = None,
    right_label: str | None = None,
    overflow: bool = False,
    ratio_range: tuple[float, float] = (0.5, 1.5),
    ratio_label: str | None = None,
    stats: bool = False,
    per: str = "auto",
) -> Path:
    """One feature: normalised histograms of ``samples`` (array or ``{label: array}``), with a
    ratio panel to ``reference`` when one is given. ``edges`` default to :func:`auto_edges` of all
    inputs (logarithmic with ``logx``). ``stats`` adds mean and standard deviation to the legend.
    ``per``: normalisation (see :func:`normalised_histogram`); ``ylabel`` defaults to match it.
    """
    sample_map = _as_mapping(samples, "sample")
    arrays = list(sample_map.values()) + ([np.asarray(reference)] if reference is not None else [])
    edges = auto_edges(arrays, n_bins, log=logx) if edges is None else np.asarray(edges, dtype=np.float64)
    with hep_style():
        fig = new_figure((7.5, 7.0 if reference is not None else 6.0))
        if reference is not None:
            ax, rax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
            fig.get_layout_engine().set(h_pad=0.02, hspace=0.0)
        else:
            ax, rax = fig.subplots(), None
        draw_comparison(
            ax, sample_map, edges, reference=reference, reference_label=reference_label, ratio_ax=rax,
            overflow=overflow, ratio_range=ratio_range, stats=stats, per=per,
        )
        _finish_axes(
            ax, rax, edges, logx=logx, logy=logy, xlabel=xlabel, ylabel=ylabel or _y_label(edges, per),
            ratio_label=ratio_label or (f"ratio to {reference_label}" if len(reference_label) < 12 else "ratio"),
        )
        ax.legend(loc="upper right")
        label(ax, title, right_label)
        return save_figure(fig, path)


def plot_histogram_grid(
    samples: Samples,
    path: str | Path,
    *,
    panel_titles: Sequence[str] | None = None,
    reference: np.ndarray | None = None,
    reference_label: str = "reference",
    edges: np.ndarray | Sequence[np.ndarray | None] | None = None,
    n_bins: int = 40,
    logx: bool = False,
    logy: bool = False,
    xlabel: str = "",
    ylabel: str | None = None,
    title: str | None = None,
    overflow: bool = False,
    ratio_range: tuple[float, float] = (0.5, 1.5),
    max_cols: int = 6,
    per: str = "auto",
) -> Path:
    """One panel per column of (N, K) arrays (e.g. one per layer), each with a ratio panel when
    ``reference`` (N_ref, K) is given. ``edges``: one array for all panels, one per panel (None
    entries: automatic), or None (automatic per panel). Panels note the fractions of entries that
    are zero or below their first edge (e.g. layers without energy, on a log axis).
    """
    sample_map = _as_mapping(samples, "sample")
    for name, arr in sample_map.items():
        if arr.ndim != 2:
            raise ValueError(f"sample {name!r}: expected an (N, K) array, got shape {arr.shape}")
    ref = None if reference is None else np.asarray(reference, dtype=np.float64)
    k_cols = (next(iter(sample_map.values())) if sample_map else ref).shape[1]  # type: ignore[union-attr]
    titles = list(panel_titles) if panel_titles is not None else [str(i) for i in range(k_cols)]
    if len(titles) != k_cols:
        raise ValueError(f"{len(titles)} panel titles for {k_cols} columns")
    if edges is None or (isinstance(edges, np.ndarray) and edges.ndim == 1):
        per_edges: list[np.ndarray | None] = [edges] * k_cols
    else:
        per_edges = list(edges)
        if len(per_edges) != k_cols:
            raise ValueError(f"{len(per_edges)} edge arrays for {k_cols} columns")

    from matplotlib.ticker import MaxNLocator

    rows, cols = grid_shape(k_cols, max_cols)
    with hep_style(font_scale=0.6, rc={"xtick.minor.visible": False}):
        # a fixed layout: constrained layout costs seconds per figure with dozens of panels
        panel_h = 3.0 if ref is not None else 2.3
        fig_w, fig_h = cols * 2.9, rows * panel_h + 1.0
        fig = new_figure((fig_w, fig_h), layout=None)
        outer = fig.add_gridspec(
            rows, cols, left=0.75 / fig_w, right=1 - 0.15 / fig_w, bottom=0.5 / fig_h, top=1 - 0.85 / fig_h,
            wspace=0.5 / (2.9 - 0.5), hspace=0.55 / (panel_h - 0.55),  # gaps of 0.5 and 0.55 inch
        )
        for c in range(k_cols):
            i, j = divmod(c, cols)
            if ref is not None:
                cell = outer[i, j].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.06)
                ax = fig.add_subplot(cell[0])
                rax = fig.add_subplot(cell[1], sharex=ax)
            else:
                ax, rax = fig.add_subplot(outer[i, j]), None
            col_samples = {k: v[:, c] for k, v in sample_map.items()}
            arrays = list(col_samples.values()) + ([ref[:, c]] if ref is not None else [])
            e = per_edges[c]
            e = auto_edges(arrays, n_bins, log=logx) if e is None else np.asarray(e, dtype=np.float64)
            draw_comparison(
                ax, col_samples, e, reference=None if ref is None else ref[:, c], reference_label=reference_label,
                ratio_ax=rax, overflow=overflow, ratio_range=ratio_range, show_errors=False, per=per,
            )
            bottom = c + cols >= k_cols  # nothing below this panel
            _finish_axes(ax, rax, e, logx=logx, logy=logy, xlabel=xlabel if bottom else "",
                         ylabel=(ylabel or _y_label(e, per)) if j == 0 else "", ratio_label="ratio" if j == 0 else "")
            ax.set_title(titles[c], fontsize="medium", pad=2)
            for a_ in (ax, rax):
                if a_ is not None:  # many small panels: minor ticks cost much drawing time, say little
                    a_.minorticks_off()
                    a_.tick_params(top=False, right=False)
                    if not (logy and a_ is ax):
                        a_.yaxis.set_major_locator(MaxNLocator(4))
            if not overflow:
                note = _below_note(arrays, e)
                if note:
                    ax.text(0.03, 0.95, note, transform=ax.transAxes, fontsize="x-small", va="top", ha="left",
                            color="0.3")
            if c == 0:
                ax.legend(loc="upper right", fontsize="x-small")
        if title:
            fig.suptitle(title, fontweight="bold", y=1 - 0.15 / fig_h, va="top")
        return save_figure(fig, path)


def plot_etot_einc(
    data: ShowerFeatures | np.ndarray | Mapping[str, ShowerFeatures | np.ndarray],
    path: str | Path,
    *,
    reference: ShowerFeatures | np.ndarray | None = None,
    reference_label: str = "reference",
    edges: np.ndarray | None = None,
    title: str | None = None,
    right_label: str | None = None,
    logy: bool = False,
) -> Path:
    """Histogram of E_tot / E_inc for ``data`` (features, ratios, or ``{label: either}``) against
    an optional reference, legend with mean and standard deviation.

    Default edges: the official 100 bins on [0.5, 1.5], or automatic ones when more than 2 % of
    the entries fall outside that range (e.g. pions, or a model far off).
    """

    def ratio(x: ShowerFeatures | np.ndarray) -> np.ndarray:
        return x.etot_einc if isinstance(x, ShowerFeatures) else np.asarray(x, dtype=np.float64).reshape(-1)

    sample_map = {k: ratio(v) for k, v in data.items()} if isinstance(data, Mapping) else {"sample": ratio(data)}
    ref = None if reference is None else ratio(reference)
    if edges is None:
        edges = np.linspace(0.5, 1.5, 101)
        everything = np.concatenate(list(sample_map.values()) + ([ref] if ref is not None else []))
        everything = everything[np.isfinite(everything)]
        if everything.size and np.mean((everything < 0.5) | (everything > 1.5)) > 0.02:
            edges = auto_edges([everything], 80)
    return plot_histograms(
        sample_map, path, reference=ref, reference_label=reference_label, edges=edges, logy=logy,
        xlabel=r"$E_\mathrm{tot}\,/\,E_\mathrm{inc}$", ylabel="normalised entries", title=title, right_label=right_label, stats=True,
    )
