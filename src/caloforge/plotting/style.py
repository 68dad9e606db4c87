"""A neutral HEP plotting style (mplhep's look, no experiment label) and figure helpers.

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas: pyplot's
global figure registry and the session's backend are never touched, so nothing has to be closed
and plotting works the same in scripts, tests, notebooks and on machines without a display.
The style is applied with :func:`hep_style`, a context manager around ``matplotlib.rc_context``:
rcParams are restored afterwards.

>>> with hep_style():                                   # doctest: +SKIP
...     fig = new_figure((7, 6))
...     ax = fig.subplots()
...     ax.plot([1, 2], [3, 4])
...     save_figure(fig, "out.png")
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

#: Colour of the reference sample (filled grey histogram) and the colours of the other samples.
REFERENCE_COLOR = "#7f7f7f"
SAMPLE_COLORS = ("#5790fc", "#e42536", "#f89c20", "#964a8b", "#2ca02c", "#7a21dd", "#9c9ca1", "#17becf")
#: Colour map of shower images (perceptually uniform; readable in grey scale).
SHOWER_CMAP = "viridis"
DPI = 110
#: The layout engines :func:`new_figure` accepts (those of :class:`matplotlib.figure.Figure`).
Layout = Literal["constrained", "compressed", "tight"]


def style_rc(font_scale: float = 1.0) -> dict[str, Any]:
    """rcParams of the caloforge style: mplhep's CMS look with sizes for reports, no label.

    ``font_scale`` shrinks or grows every font (grids of many small panels use ~0.6).
    """
    import mplhep  # registers the TeX Gyre Heros fonts it ships
    from cycler import cycler

    rc = dict(mplhep.style.CMS)
    size = 14.0 * font_scale
    rc.update(
        {
            "font.size": size,
            "axes.titlesize": "medium",
            "axes.labelsize": "medium",
            "axes.linewidth": 1.1,
            "axes.prop_cycle": cycler("color", SAMPLE_COLORS),
            "legend.fontsize": "small",
            "xtick.major.size": 6 * font_scale,
            "xtick.minor.size": 3 * font_scale,
            "ytick.major.size": 6 * font_scale,
            "ytick.minor.size": 3 * font_scale,
            "xtick.major.pad": 4,
            "ytick.major.pad": 4,
            "lines.linewidth": 1.6,
            "figure.figsize": (7.0, 6.0),
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "savefig.facecolor": "white",
            "figure.facecolor": "white",
            "image.cmap": SHOWER_CMAP,
            "text.usetex": False,
            "axes.unicode_minus": True,
        }
    )
    return rc


@contextlib.contextmanager
def hep_style(font_scale: float = 1.0, rc: dict[str, Any] | None = None) -> Iterator[None]:
    """Apply the caloforge style (plus ``rc`` overrides) inside the block; rcParams are restored."""
    import matplotlib as mpl

    merged: dict[Any, Any] = {**style_rc(font_scale), **(rc or {})}
    with mpl.rc_context(merged):
        yield


def new_figure(figsize: tuple[float, float] | None = None, layout: Layout | None = "constrained") -> Any:
    """A new Agg-rendered :class:`~matplotlib.figure.Figure` outside pyplot (call in :func:`hep_style`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float] | None = None,
    layout: Layout | None = "constrained",
    **subplots_kw: Any,
) -> tuple[Any, Any]:
    """``(fig, axes)`` like ``pyplot.subplots`` but outside pyplot (call in :func:`hep_style`)."""
    fig = new_figure(figsize, layout)
    return fig, fig.subplots(nrows, ncols, **subplots_kw)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (parent folders created), free it and return the path."""
    from caloforge._atomic import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))  # no half-written PNG on failure
    finally:
        fig.clear()
    return path


def label(ax: Any, left: str | None = None, right: str | None = None) -> None:
    """Texts above the top-left (sample, in bold) and top-right (dataset, energies) of ``ax``."""
    if left:
        ax.set_title(left, loc="left", fontweight="bold", fontsize="small")
    if right:
        ax.set_title(right, loc="right", fontsize="small")


def grid_shape(n: int, max_cols: int = 9) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding ``n`` panels with at most ``max_cols`` columns."""
    import math

    if n <= 0:
        return 1, 1
    cols = min(n, max_cols, max(1, math.ceil(math.sqrt(n * 1.3))))
    return math.ceil(n / cols), cols


def format_energy(mev: float) -> str:
    """An energy in MeV as short text in a sensible unit: ``256 MeV``, ``1.5 GeV``, ``4.1 TeV``."""
    if mev >= 1e6:
        return f"{mev / 1e6:.3g} TeV"
    if mev >= 1e3:
        return f"{mev / 1e3:.3g} GeV"
    if mev >= 1:
        return f"{mev:.3g} MeV"
    return f"{mev * 1e3:.3g} keV"


def tidy_log_axis(axis: Any) -> None:
    """Plain numbers (0.1, 1, 10, ...) on a log-scaled x or y ``axis``; no minor-tick labels
    when it spans a decade or more (they would overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def fmt(v: float, _pos: object = None) -> str:
        if v <= 0:
            return ""
        if 1e-3 <= v < 1e5:
            return f"{v:g}"
        exponent = int(np.floor(np.log10(v) + 1e-9))
        mantissa = v / 10**exponent
        return f"$10^{{{exponent}}}$" if abs(mantissa - 1) < 1e-6 else f"${mantissa:g}\\times10^{{{exponent}}}$"

    lo, hi = sorted(axis.get_view_interval())
    if lo > 0 and hi / lo <= 300:  # about two decades or less: label 1, 2 and 5 of each
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(fmt))
    if lo > 0 and hi / lo >= 10:
        axis.set_minor_formatter(NullFormatter())
    else:
        axis.set_minor_formatter(FuncFormatter(fmt))
