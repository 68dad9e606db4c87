"""Average showers drawn in the cylindrical readout geometry.

:func:`plot_average_shower` draws every layer as a polar image ("front view"): the angle is the
voxel's alpha bin (alpha = 0 along +x, the official "eta" axis, counter-clockwise towards +y,
"phi"), the radius its r bin, the colour the mean energy per voxel on a logarithmic scale.
:func:`plot_shower_side_view` draws the mean energy per (layer, r bin), summed over alpha.

Both work for every geometry, irregular DS1 ones included: each layer is drawn with its own
radial edges and angular bin count. They take either showers (N, voxels), averaged here after
the readout threshold, or an already averaged shower (voxels,) from a streamed computation.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from caloforge.geometry import Geometry
from caloforge.plotting.style import grid_shape, hep_style, new_figure, save_figure

R_SCALES = ("auto", "linear", "sqrt", "log")
#: Dynamic range (max / min) of the colour scale of the shower images.
DYNAMIC_RANGE = 1e5


def mean_shower(showers: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Mean over showers (N, voxels) in float64, voxels below ``threshold`` (MeV) counted as 0."""
    s = np.asarray(showers)
    if s.ndim != 2:
        raise ValueError(f"expected showers of shape (N, voxels), got {s.shape}")
    total = np.zeros(s.shape[1])
    for a in range(0, len(s), 4096):
        block = np.asarray(s[a : a + 4096], dtype=np.float64)
        if threshold > 0:
            block = np.where(block < threshold, 0.0, block)
        total += block.sum(axis=0)
    return total / max(len(s), 1)


def as_mean_shower(showers: np.ndarray, geometry: Geometry, threshold: float | None = None) -> np.ndarray:
    """``showers`` averaged (when 2-D) or checked (when already a mean vector of the geometry)."""
    s = np.asarray(showers)
    thr = geometry.readout_threshold if threshold is None else float(threshold)
    if s.ndim == 2:
        if s.shape[1] != geometry.n_voxels:
            raise ValueError(f"expected (N, {geometry.n_voxels}) showers for {geometry.name}, got {s.shape}")
        return mean_shower(s, thr)
    if s.ndim == 1 and s.shape[0] == geometry.n_voxels:
        return s.astype(np.float64)
    raise ValueError(f"expected (N, {geometry.n_voxels}) showers or a ({geometry.n_voxels},) mean, got {s.shape}")


def layer_image(mean: np.ndarray, geometry: Geometry, layer: int) -> np.ndarray:
    """The voxels of ``layer`` as an (n_alpha, n_r) array."""
    lb = geometry.layers[layer]
    return np.asarray(mean)[geometry.layer_slice(layer)].reshape(lb.n_alpha, lb.n_r)


def _r_scale(geometry: Geometry, r_scale: str) -> str:
    if r_scale not in R_SCALES:
        raise ValueError(f"r_scale must be one of {R_SCALES}, got {r_scale!r}")
    if r_scale == "auto":
        return "linear" if geometry.is_regular else "log"
    return r_scale


def _transform(kind: str, r: np.ndarray | float) -> np.ndarray:
    r = np.asarray(r, dtype=np.float64)
    if kind == "sqrt":
        return np.sqrt(r)
    if kind == "log":
        return np.log1p(r)  # log(1 + r / 1 mm): 0 stays 0, the inner mm-sized bins stay visible
    return r


def _r_ticks(kind: str, r_max: float) -> np.ndarray:
    """A few readable radii (mm) inside (0, r_max]."""
    if kind == "log":
        ticks = np.array([1.0, 10.0, 100.0, 1000.0, 10000.0])
    else:
        from matplotlib.ticker import MaxNLocator

        ticks = np.asarray(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(0.0, r_max))
    return ticks[(ticks > 0) & (ticks <= r_max * 0.9)]  # none on the rim, where the angle labels are


def _colour_limits(values: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    pos = values[np.isfinite(values) & (values > 0)]
    hi = float(pos.max()) if vmax is None and pos.size else (vmax if vmax is not None else 1.0)
    if vmin is None:
        lo = max(hi / DYNAMIC_RANGE, float(pos.min())) if pos.size else hi / DYNAMIC_RANGE
    else:
        lo = vmin
    if lo >= hi:
        lo = hi / 10.0
    return lo, hi


def plot_average_shower(
    showers: np.ndarray,
    geometry: Geometry,
    path: str | Path,
    *,
    layers: Sequence[int] | None = None,
    threshold: float | None = None,
    r_scale: str = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
    max_cols: int = 9,
    title: str | None = None,
) -> Path:
    """Draw the average shower as one polar image per layer, sharing a log colour scale.

    ``showers``: (N, voxels) showers (MeV), averaged after ``threshold`` (default: the geometry's
    readout threshold), or a (voxels,) mean shower. ``layers``: layer indices to draw (default:
    every layer holding voxels). ``r_scale``: radial axis ``linear``, ``sqrt`` or ``log``
    (log(1 + r/mm)); ``auto`` picks linear for regular geometries, log for DS1's long radial
    ranges. Voxels whose mean is exactly zero are left white. Returns ``path``.
    """
    mean = as_mean_shower(showers, geometry, threshold)
    layers = list(geometry.relevant_layers if layers is None else layers)
    if not layers:
        raise ValueError("no layer to draw")
    for layer in layers:
        if layer not in geometry.relevant_layers:
            raise ValueError(f"layer {layer} holds no voxel in geometry {geometry.name}")
    kind = _r_scale(geometry, r_scale)
    shown = np.concatenate([mean[geometry.layer_slice(l)] for l in layers])
    lo, hi = _colour_limits(shown, vmin, vmax)

    import matplotlib as mpl
    from matplotlib.colors import LogNorm
    from matplotlib.patheffects import withStroke

    outline = withStroke(linewidth=2.0, foreground="white")
    cmap = mpl.colormaps["viridis"].with_extremes(bad="white")
    norm = LogNorm(vmin=lo, vmax=hi, clip=False)
    rows, cols = grid_shape(len(layers), max_cols)
    rc = {"xtick.minor.visible": False, "ytick.minor.visible": False, "axes.grid": False}
    with hep_style(font_scale=0.62, rc=rc):
        # a fixed layout (inches): constrained layout takes seconds with dozens of polar panels
        panel, gap_w, gap_h = 1.9, 0.35, 0.45
        fig_w = 0.45 + cols * panel + (cols - 1) * gap_w + 1.45
        chars = max(36, int(fig_w * 10))  # characters per line that fit the figure's width
        head = textwrap.fill(title or f"Average shower per layer, {geometry.name}", chars)
        scale_note = {"linear": "r linear", "sqrt": "r on a square-root scale", "log": "r on a log(1 + r/mm) scale"}[kind]
        note = textwrap.fill(
            f"polar images: angle α (0 along +x = η, counter-clockwise to +y = φ), radius r in mm ({scale_note}); "
            "white: no energy", int(chars * 1.4),
        )
        top = 0.5 + 0.25 * (head.count("\n") + 1)  # inches above the panels: title lines + theta labels
        bottom = 0.35 + 0.17 * (note.count("\n") + 1)
        fig_h = bottom + rows * panel + (rows - 1) * gap_h + top
        fig = new_figure((fig_w, fig_h), layout=None)
        gs = fig.add_gridspec(
            rows, cols, left=0.45 / fig_w, right=1 - 1.45 / fig_w, bottom=bottom / fig_h, top=1 - top / fig_h,
            wspace=gap_w / panel, hspace=gap_h / panel,
        )
        axes = np.array([[fig.add_subplot(gs[i, j], projection="polar") for j in range(cols)] for i in range(rows)])
        mesh = None
        for k, ax in enumerate(axes.flat):
            if k >= len(layers):
                ax.set_visible(False)
                continue
            layer = layers[k]
            lb = geometry.layers[layer]
            img = layer_image(mean, geometry, layer)  # (n_alpha, n_r)
            sub = max(1, int(np.ceil(64 / lb.n_alpha)))  # arcs drawn as >= 64 segments
            theta = np.linspace(-np.pi, np.pi, lb.n_alpha * sub + 1)
            radii = _transform(kind, np.asarray(lb.r_edges))
            c = np.repeat(img, sub, axis=0).T  # (n_r, n_alpha * sub)
            c = np.ma.masked_less_equal(c, 0.0)
            mesh = ax.pcolormesh(theta, radii, c, cmap=cmap, norm=norm, shading="flat", rasterized=True)
            ax.set_ylim(0.0, radii[-1])
            r_max = float(lb.r_edges[-1])
            ticks = _r_ticks(kind, r_max)
            ax.set_yticks(_transform(kind, ticks))
            show_r = k == 0 or not geometry.is_regular
            texts = [f"{t:g}" for t in ticks]
            if texts:
                texts[-1] += " mm"
            ax.set_yticklabels(texts if show_r else [])
            for t in ax.get_yticklabels():
                t.set_path_effects([outline])
            ax.set_rlabel_position(112.5)
            ax.set_xticks(np.deg2rad([0, 90, 180, 270]))
            ax.set_xticklabels(["0", "π/2", "π", "−π/2"] if k == 0 else [])
            ax.tick_params(axis="y", labelsize="x-small", labelcolor="black")
            ax.tick_params(axis="x", labelsize="x-small", pad=1)
            ax.grid(True, color="white", alpha=0.35, linewidth=0.5)
            ax.set_title(f"layer {layer}", fontsize="small", pad=12 if k == 0 else 3)
        assert mesh is not None
        cax = fig.add_axes((1 - 1.05 / fig_w, bottom / fig_h, 0.18 / fig_w, 1 - (top + bottom) / fig_h))
        cbar = fig.colorbar(mesh, cax=cax, extend="min")
        cbar.set_label("mean energy per voxel [MeV]")
        fig.suptitle(head, fontweight="bold", y=1 - 0.12 / fig_h, va="top")
        fig.text(0.5, 0.1 / fig_h, note, fontsize="small", ha="center", va="bottom")
        return save_figure(fig, path)


def plot_shower_side_view(
    showers: np.ndarray,
    geometry: Geometry,
    path: str | Path,
    *,
    threshold: float | None = None,
    r_scale: str = "auto",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
) -> Path:
    """Draw the mean energy per (layer, r bin), summed over alpha, as one image (log colours).

    x: layer (depth), y: r in mm, each layer with its own radial edges (DS1). Arguments as in
    :func:`plot_average_shower`. Returns ``path``.
    """
    mean = as_mean_shower(showers, geometry, threshold)
    kind = _r_scale(geometry, r_scale)
    layers = list(geometry.relevant_layers)
    columns = [layer_image(mean, geometry, l).sum(axis=0) for l in layers]  # (n_r,) each
    lo, hi = _colour_limits(np.concatenate(columns), vmin, vmax)

    import matplotlib as mpl
    from matplotlib.colors import LogNorm

    cmap = mpl.colormaps["viridis"].with_extremes(bad="white")
    norm = LogNorm(vmin=lo, vmax=hi, clip=False)
    r_top = max(geometry.layers[l].r_edges[-1] for l in layers)
    with hep_style(font_scale=0.9, rc={"axes.grid": False}):
        fig = new_figure((max(6.5, 0.16 * len(layers) + 4.0), 5.2))
        ax = fig.subplots()
        mesh = None
        for k, (layer, col) in enumerate(zip(layers, columns, strict=True)):
            radii = _transform(kind, np.asarray(geometry.layers[layer].r_edges))
            c = np.ma.masked_less_equal(col[:, None], 0.0)
            mesh = ax.pcolormesh([k - 0.5, k + 0.5], radii, c, cmap=cmap, norm=norm, shading="flat", rasterized=True)
        assert mesh is not None
        ax.set_xlim(-0.5, len(layers) - 0.5)
        ax.set_ylim(0.0, float(_transform(kind, r_top)))
        step = 1 if len(layers) <= 15 else 5
        pos = list(range(0, len(layers), step))
        ax.set_xticks(pos, [str(layers[p]) for p in pos])
        ax.xaxis.set_minor_locator(mpl.ticker.FixedLocator(range(len(layers))))
        ticks = _r_ticks(kind, r_top) if kind == "log" else None
        if ticks is not None:
            ax.set_yticks(_transform(kind, ticks), [f"{t:g}" for t in ticks])
            ax.yaxis.set_minor_locator(mpl.ticker.NullLocator())
        ax.set_xlabel("layer")
        ax.set_ylabel("r [mm]" + ("  (log(1 + r/mm) scale)" if kind == "log" else ""))
        cbar = fig.colorbar(mesh, ax=ax, extend="min", pad=0.01)
        cbar.set_label("mean energy per (layer, r) bin [MeV]")
        ax.set_title(title or f"Average shower, side view ({geometry.name})", fontsize="medium")
        return save_figure(fig, path)
