"""HEP-style plots of showers and their features, written as PNG files.

Every function takes arrays (or :class:`~caloforge.features.ShowerFeatures`) and a path, draws
on a figure of its own outside pyplot (Agg, no global state, no LaTeX) and returns the path.
matplotlib is imported when this package is, so import it lazily from command-line code.
"""

from caloforge.plotting.histograms import (
    auto_edges,
    draw_comparison,
    normalised_histogram,
    plot_etot_einc,
    plot_histogram_grid,
    plot_histograms,
)
from caloforge.plotting.profiles import (
    energy_bin_edges,
    energy_bin_index,
    energy_bin_labels,
    plot_longitudinal_profile,
    plot_radial_profile,
    radial_energies,
)
from caloforge.plotting.showers import mean_shower, plot_average_shower, plot_shower_side_view
from caloforge.plotting.style import figure, hep_style, new_figure, save_figure

__all__ = [
    "auto_edges",
    "draw_comparison",
    "energy_bin_edges",
    "energy_bin_index",
    "energy_bin_labels",
    "figure",
    "hep_style",
    "mean_shower",
    "new_figure",
    "normalised_histogram",
    "plot_average_shower",
    "plot_etot_einc",
    "plot_histogram_grid",
    "plot_histograms",
    "plot_longitudinal_profile",
    "plot_radial_profile",
    "plot_shower_side_view",
    "radial_energies",
    "save_figure",
]
