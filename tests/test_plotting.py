"""Plots, ``caloforge info`` and ``caloforge plot`` on small toy samples (fast)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from caloforge.cli.main import app
from caloforge.data import write_showers
from caloforge.data.hdf5 import provenance
from caloforge.features import compute_features
from caloforge.features.summary import summarize
from caloforge.geometry import get_geometry
from caloforge.plotting import (
    energy_bin_edges,
    energy_bin_index,
    energy_bin_labels,
    mean_shower,
    normalised_histogram,
    plot_average_shower,
    plot_etot_einc,
    plot_histogram_grid,
    plot_histograms,
    plot_longitudinal_profile,
    plot_radial_profile,
    plot_shower_side_view,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def toy_showers(geometry, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sparse toy showers (MeV): a gamma-like longitudinal profile, an exponential radial one."""
    e_inc = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    depth = np.searchsorted(geometry.relevant_layers, geometry.voxel_layer).astype(float)
    t_max = 1.0 + 0.3 * np.log(e_inc / 1e3)[:, None]
    long = (depth[None, :] + 0.5) ** 2 * np.exp(-(depth[None, :] + 0.5) / t_max)
    shape = long * np.exp(-geometry.voxel_r / 15.0)[None, :] * geometry.voxel_area[None, :]
    shape /= shape.sum(axis=1, keepdims=True)
    showers = e_inc[:, None] * 0.95 * shape * rng.gamma(2.0, 0.5, shape.shape)
    showers[rng.random(shape.shape) < 0.6] = 0.0
    return e_inc, showers.astype(np.float32)


def assert_png(path: Path) -> None:
    path = Path(path)
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000, path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


# ---------------------------------------------------------------------------- plots


@pytest.mark.parametrize("name", ["ds2", "ds1-photons"])
def test_geometry_plots_write_pngs(name, tmp_path, rng):
    g = get_geometry(name)
    e, s = toy_showers(g, 60, rng)
    # DS2: a few layers keep the test fast; DS1: all (irregular binning, 1-bin-in-alpha layers)
    layers = [0, 5, 20] if name == "ds2" else None
    assert_png(plot_average_shower(s, g, tmp_path / "avg.png", layers=layers))
    assert_png(plot_shower_side_view(s, g, tmp_path / "side.png"))
    assert_png(plot_radial_profile(s, g, tmp_path / "radial.png", e_inc=e, energy_bins=2))
    means = {"all": mean_shower(s), "high": mean_shower(s[e > 1e4])}
    assert_png(plot_radial_profile(means, g, tmp_path / "radial_ratio.png", normalise=True, ratio_to="all"))
    assert_png(plot_longitudinal_profile(compute_features(e, s, g), tmp_path / "long.png", energy_bins=3))


def test_feature_plots_write_pngs(tmp_path, rng):
    g = get_geometry("ds1-photons")
    e, s = toy_showers(g, 60, rng)
    feats = compute_features(e, s, g)
    assert_png(plot_average_shower(mean_shower(s), g, tmp_path / "avg_mean.png", r_scale="sqrt"))
    assert_png(plot_longitudinal_profile({"toy": feats.e_layer.mean(axis=0)}, tmp_path / "long.png", geometry=g,
                                         normalise=True))
    assert_png(plot_etot_einc(feats, tmp_path / "etot.png", reference=feats.etot_einc[::-1], reference_label="G4"))
    assert_png(
        plot_histogram_grid({"toy": feats.e_layer}, tmp_path / "layers.png", reference=feats.e_layer[:30], logx=True,
                            panel_titles=[f"layer {l}" for l in g.relevant_layers], max_cols=3)
    )


def test_average_shower_orientation(tmp_path):
    """alpha = 0 points right (+x, "eta"), alpha = +pi/2 up (+y, "phi"), as x = r cos(alpha)."""
    from matplotlib.image import imread

    g = get_geometry("ds2")
    n_alpha, n_r = g.layers[0].n_alpha, g.layers[0].n_r

    def hot_spot(alpha_bin: int) -> np.ndarray:
        mean = np.full(g.n_voxels, 1e-3)
        mean[alpha_bin * n_r + 6] = 100.0  # layer 0, r bin 6
        png = plot_average_shower(mean, g, tmp_path / f"a{alpha_bin}.png", layers=[0])
        rgb = imread(png)[..., :3]
        rgb = rgb[:, : int(rgb.shape[1] * 0.65)]  # the panel, not the colour bar on the right
        yellow = np.all(np.abs(rgb - np.array([0.993, 0.906, 0.144])) < 0.08, axis=-1)
        rows, cols = np.nonzero(yellow)
        assert rows.size > 20
        return np.array([cols.mean(), rows.mean()])  # (x right, y down) in pixels

    centres = {k: -np.pi + (k + 0.5) * 2 * np.pi / n_alpha for k in range(n_alpha)}
    right, left = min(centres, key=lambda k: abs(centres[k])), min(centres, key=lambda k: abs(abs(centres[k]) - np.pi))
    up, down = min(centres, key=lambda k: abs(centres[k] - np.pi / 2)), min(centres, key=lambda k: abs(centres[k] + np.pi / 2))
    assert hot_spot(right)[0] > hot_spot(left)[0] + 50
    assert hot_spot(up)[1] < hot_spot(down)[1] - 50


def test_average_shower_rejects_wrong_shapes(tmp_path, rng):
    g = get_geometry("ds1-photons")
    with pytest.raises(ValueError, match="368"):
        plot_average_shower(np.zeros((3, 10)), g, tmp_path / "x.png")
    with pytest.raises(ValueError, match="layer 5"):
        plot_average_shower(np.ones(g.n_voxels), g, tmp_path / "x.png", layers=[5])


def test_normalised_histogram_empty_and_normalisation():
    edges = np.linspace(0, 1, 11)
    h, err = normalised_histogram(np.array([]), edges)
    assert np.all(h == 0) and np.all(err == 0)
    h, _ = normalised_histogram(np.array([np.nan, np.inf]), edges)
    assert np.all(h == 0)
    v = np.array([0.05, 0.15, 0.15, 0.95, 2.0])
    h, _ = normalised_histogram(v, edges)
    assert np.sum(h * np.diff(edges)) == pytest.approx(1.0)  # area 1 over in-range entries
    h, _ = normalised_histogram(v, edges, overflow=True)
    assert h[-1] * 0.1 == pytest.approx(2 / 5)  # 0.95 and the clipped 2.0
    log_edges = np.logspace(0, 2, 5)
    h, _ = normalised_histogram(np.array([1.5, 2.0, 50.0]), log_edges, per="auto")
    assert h.sum() == pytest.approx(1.0)  # fraction per bin on log edges


def test_histogram_ratio_handles_empty_bins_and_zero_reference(tmp_path, rng):
    edges = np.linspace(0, 10, 11)
    sample = rng.uniform(0, 5, 200)  # upper bins empty
    reference = rng.uniform(2, 10, 200)  # lower bins empty: no ratio there
    assert_png(plot_histograms({"a": sample, "b": sample[:0]}, tmp_path / "h1.png", reference=reference,
                               edges=edges, reference_label="Geant4"))
    assert_png(plot_histograms(sample, tmp_path / "h2.png", reference=np.array([]), edges=edges))  # empty reference
    assert_png(plot_histograms(np.zeros(0), tmp_path / "h3.png"))  # nothing at all: automatic edges still work
    assert_png(plot_histograms(sample, tmp_path / "h4.png", reference=reference, logy=True, edges=edges))
    assert_png(plot_histograms(np.full(50, 3.0), tmp_path / "h5.png", logx=True))  # a single value


def test_energy_bins():
    e = np.geomspace(1e3, 1e5, 101)
    edges = energy_bin_edges(e, 4)
    assert len(edges) == 5 and np.all(np.diff(edges) > 0)
    idx = energy_bin_index(e, edges)
    assert idx.min() == 0 and idx.max() == 3  # every energy binned
    assert energy_bin_labels(edges)[0].endswith("GeV")
    discrete = np.repeat([256.0, 512.0, 1024.0], 5)  # DS1-like powers of two
    edges = energy_bin_edges(discrete, 4)
    assert len(edges) == 4
    assert np.array_equal(np.bincount(energy_bin_index(discrete, edges)), [5, 5, 5])


# ---------------------------------------------------------------------------- info


@pytest.fixture
def small_file(tmp_path, rng) -> Path:
    g = get_geometry("ds1-photons")
    e, s = toy_showers(g, 25, rng)
    return write_showers(tmp_path / "toy.h5", e, s, attrs=provenance("toy-generator", seed=7))


def test_summarize_counts_and_ratios(small_file):
    from caloforge.data import open_showers

    f = open_showers(small_file)
    s = summarize(f)
    e, showers = f.read()
    thr = f.geometry.readout_threshold
    kept = np.where(showers < thr, 0.0, showers.astype(np.float64))
    assert s["n_showers"] == 25 and s["geometry"]["name"] == "ds1-photons"
    assert s["sparsity"] == pytest.approx(float(np.mean(kept == 0)))
    assert s["etot_einc"]["mean"] == pytest.approx(float(np.mean(kept.sum(axis=1) / e)), rel=1e-6)
    assert s["incident_energy_gev"]["min"] == pytest.approx(e.min() / 1e3)
    assert summarize(f, max_showers=10)["n_showers"] == 10


def test_info_table_and_json(runner, small_file):
    result = runner.invoke(app, ["info", str(small_file)])
    assert result.exit_code == 0, result.output
    assert re.search(r"showers\s+25\b", result.stdout)
    assert "ds1-photons" in result.stdout and "toy-generator" in result.stdout

    result = runner.invoke(app, ["info", "--json", str(small_file)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n_showers"] == 25
    assert data["geometry"]["name"] == "ds1-photons" and data["geometry"]["n_voxels"] == 368
    assert data["provenance"]["generator"] == "toy-generator" and data["provenance"]["seed"] == 7
    assert data["provenance"]["version"]  # caloforge_version
    assert 0.0 < data["sparsity"] < 1.0
    assert data["etot_einc"]["mean"] > 0 and data["etot_einc"]["std"] >= 0
    assert data["files"][0]["size_bytes"] == small_file.stat().st_size


def test_info_two_files_and_dataset_option(runner, small_file, tmp_path):
    other = tmp_path / "copy.h5"
    other.write_bytes(small_file.read_bytes())
    result = runner.invoke(app, ["info", "--json", "--dataset", "ds1-photons", str(small_file), str(other)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_showers"] == 50
    result = runner.invoke(app, ["info", "--dataset", "ds2", str(small_file)])
    assert result.exit_code == 2 and "ds2" in result.stderr


@pytest.mark.parametrize("kind", ["missing", "not-hdf5"])
def test_info_bad_input_exits_2_with_one_line(runner, tmp_path, kind):
    path = tmp_path / ("nothing-here.h5" if kind == "missing" else "notes.h5")
    if kind == "not-hdf5":
        path.write_text("not an HDF5 file\n")
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], result.stderr
    assert "Traceback" not in result.output


# ---------------------------------------------------------------------------- plot


def test_plot_command_writes_index_and_pngs(runner, small_file, tmp_path):
    out = tmp_path / "plots" / "nested"
    result = runner.invoke(app, ["plot", str(small_file), "-o", str(out), "--max-showers", "20", "--energy-bins", "2"])
    assert result.exit_code == 0, result.output
    index = out / "index.html"
    assert index.is_file()
    html = index.read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) >= 8 and "average_shower.png" in images and "etot_einc.png" in images
    for name in images:
        assert_png(out / name)
    assert "<figcaption>" in html and "20 of 25" in html
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_plot_output_is_a_file_exits_2(runner, small_file, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    result = runner.invoke(app, ["plot", str(small_file), "-o", str(target)])
    assert result.exit_code == 2 and str(target) in result.stderr


# ---------------------------------------------------------------------------- Geant4


def test_summary_of_geant4_file(g4_file):  # g4_file (conftest) skips when ../shared is absent
    from caloforge.data import open_showers

    s = summarize(open_showers(g4_file), max_showers=500)
    assert s["geometry"]["name"] == "ds2" and s["n_showers"] == 500 and s["n_showers_total"] == 15000
    assert 0.8 < s["sparsity"] < 0.95  # ~90 % of the voxels are zero
    assert 0.93 < s["etot_einc"]["mean"] < 1.0  # sampling-fraction-corrected: close to 1
    assert s["provenance"]["generator"].startswith("Geant4")
