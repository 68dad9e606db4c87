import numpy as np
import pytest

from caloforge.data import open_showers
from caloforge.features import apply_threshold, compute_features, compute_features_streamed
from caloforge.geometry import get_geometry


def _reference_features(showers, geometry, threshold):
    """Straightforward per-layer transcription of the official formulas and dtypes
    (``HighLevelFeatures.CalculateFeatures`` after ``np.where(showers < min_energy, 0, showers)``):
    sums in the showers' dtype, float64 products, r at the midpoint (a + b) * 0.5."""
    s = np.where(showers < threshold, np.zeros_like(showers), showers)
    out = {k: [] for k in ("e_layer", "ec_r", "width_r", "sparsity", "ec_eta", "ec_phi", "width_eta", "width_phi")}
    for layer in geometry.relevant_layers:
        sl = geometry.layer_slice(layer)
        d = s[:, sl]
        edges = geometry.layers[layer].r_edges
        r = np.array(geometry.layers[layer].n_alpha * [(edges[i] + edges[i + 1]) * 0.5 for i in range(len(edges) - 1)])
        eta, phi = geometry.voxel_eta[sl], geometry.voxel_phi[sl]
        out["e_layer"].append(d.sum(axis=-1))
        out["sparsity"].append(1.0 - (d > 0).mean(axis=-1))
        ec = (r * d).sum(-1) / (d.sum(-1) + 1e-16)
        out["ec_r"].append(ec)
        out["width_r"].append(np.sqrt(((r * r * d).sum(-1) / (d.sum(-1) + 1e-16) - ec**2).clip(min=0.0)))
        if layer in geometry.layers_binned_in_alpha:
            for name, x in (("eta", eta), ("phi", phi)):
                c = (x * d).sum(-1) / (d.sum(-1) + 1e-16)
                out["ec_" + name].append(c)
                out["width_" + name].append(np.sqrt(((x * x * d).sum(-1) / (d.sum(-1) + 1e-16) - c**2).clip(min=0.0)))
    return {k: np.stack(v, axis=1) for k, v in out.items()}, s.sum(axis=-1)


@pytest.mark.parametrize("name", ["ds1-photons", "ds1-pions", "ds2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorised_equals_reference_formulas(name, dtype, rng):
    """Bit for bit: the official dtypes and summation order (see caloforge.features.highlevel)."""
    g = get_geometry(name)
    n = 64
    s = (rng.exponential(5.0, (n, g.n_voxels)) * (rng.random((n, g.n_voxels)) < 0.2)).astype(dtype)
    s[0] = 0.0  # an empty shower: features must be finite (the 1e-16 guard)
    s[1, :3] = np.float32(g.readout_threshold)  # at the threshold, in float32: kept, as officially
    e = rng.uniform(1e3, 1e5, n)
    feats = compute_features(e, s, g, threshold=g.readout_threshold, chunk_size=20)
    ref, e_tot = _reference_features(s, g, g.readout_threshold)
    assert feats.e_tot.dtype == dtype and feats.e_layer.dtype == dtype
    np.testing.assert_array_equal(feats.e_tot, e_tot)
    np.testing.assert_array_equal(feats.etot_einc, e_tot / e)
    for key, value in ref.items():
        np.testing.assert_array_equal(getattr(feats, key), value, err_msg=key)
    assert np.all(np.isfinite(feats.high_level_vector()))


def test_incident_energy_dtype_kept():
    g = get_geometry("ds2")
    s = np.full((2, g.n_voxels), 0.1, np.float32)
    f32 = compute_features(np.float32([1000.0, 3000.0]), s, g)
    assert f32.e_inc.dtype == np.float32 and f32.etot_einc.dtype == np.float32
    assert compute_features([1000.0, 3000.0], s, g).etot_einc.dtype == np.float64


def test_single_voxel_shower_known_answers():
    g = get_geometry("ds2")
    s = np.zeros((1, g.n_voxels), np.float32)
    # layer 3, alpha bin 4, r bin 2: 100 MeV
    idx = 3 * 144 + 4 * 9 + 2
    s[0, idx] = 100.0
    f = compute_features([1000.0], s, g)
    r = 2.5 * 4.65
    alpha = -np.pi + (4 + 0.5) * 2 * np.pi / 16
    assert f.e_tot[0] == pytest.approx(100.0)
    assert f.etot_einc[0] == pytest.approx(0.1)
    assert f.e_layer[0, 3] == pytest.approx(100.0) and f.e_layer[0].sum() == pytest.approx(100.0)
    assert f.ec_r[0, 3] == pytest.approx(r)
    assert f.ec_eta[0, 3] == pytest.approx(r * np.cos(alpha))
    assert f.ec_phi[0, 3] == pytest.approx(r * np.sin(alpha))
    assert f.width_r[0, 3] == pytest.approx(0.0, abs=1e-6)
    assert f.sparsity[0, 3] == pytest.approx(1 - 1 / 144)
    assert f.sparsity[0, 0] == 1.0 and f.ec_r[0, 0] == 0.0


def test_two_voxel_width():
    g = get_geometry("ds2")
    s = np.zeros((1, g.n_voxels), np.float32)
    s[0, 0] = 1.0  # r bin 0 (centre 2.325)
    s[0, 4] = 1.0  # r bin 4 (centre 20.925), same alpha bin
    f = compute_features([1000.0], s, g)
    assert f.ec_r[0, 0] == pytest.approx((2.325 + 20.925) / 2)
    assert f.width_r[0, 0] == pytest.approx((20.925 - 2.325) / 2)


def test_threshold_zeroes_small_voxels():
    g = get_geometry("ds2")
    s = np.zeros((1, g.n_voxels), np.float32)
    s[0, :3] = [0.01, 0.02, 5.0]  # first below 15.15 keV
    f = compute_features([1000.0], s, g)
    assert f.e_tot[0] == pytest.approx(5.02)
    assert f.sparsity[0, 0] == pytest.approx(1 - 2 / 144)
    f0 = compute_features([1000.0], s, g, threshold=0.0)
    assert f0.e_tot[0] == pytest.approx(5.03)
    np.testing.assert_array_equal(apply_threshold(s, 0.016)[0, :3], np.float32([0.0, 0.02, 5.0]))


def test_high_level_vector_layout():
    g = get_geometry("ds1-pions")
    rng = np.random.default_rng(0)
    s = rng.exponential(1.0, (5, g.n_voxels)).astype(np.float32)
    f = compute_features(np.full(5, 1e4), s, g)
    n_l, n_a = g.n_layers, len(g.layers_binned_in_alpha)
    hl = f.high_level_vector()
    assert hl.shape == (5, 1 + n_l + 4 * n_a + 1 + 3 * n_l)
    np.testing.assert_allclose(hl[:, 0], 4.0)
    np.testing.assert_allclose(hl[:, 1 : 1 + n_l], np.log10(f.e_layer + 1e-8))


def test_geant4_file_features(g4_file):
    f = open_showers(g4_file)
    feats = compute_features_streamed(f.iter_chunks(chunk_size=4000), f.geometry)
    assert len(feats) == 15000
    # the README of the data: mean E_tot/E_inc 0.967, ~90% empty voxels
    assert feats.etot_einc.mean() == pytest.approx(0.967, abs=0.02)
    assert 0.85 < feats.sparsity.mean() < 0.95
    # showers start near the front: energy-weighted mean layer between 5 and 15
    depth = (feats.e_layer * np.arange(45)).sum(1) / feats.e_tot
    assert 4 < depth.mean() < 15
    # deeper at high energy (logarithmic growth of the shower maximum)
    low, high = feats.e_inc < 3e3, feats.e_inc > 3e4
    assert depth[high].mean() > depth[low].mean() + 1.5
    # showers are centred on the axis: |EC eta| much smaller than the 41.85 mm radius
    assert abs(np.median(feats.ec_eta[:, 8])) < 2.0
