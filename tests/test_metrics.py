"""Tests of the functional metrics: binnings, separation power, FPD/KPD, classifier test."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from caloforge.evaluation import (
    ClassifierConfig,
    SampleSizeWarning,
    binning_from_reference,
    classifier_test,
    feature_separation_powers,
    fpd,
    frechet_distance,
    high_level_inputs,
    kpd,
    low_level_inputs,
    mean_separation_powers,
    official_binning,
    separation_power,
    separation_power_counts,
)
from caloforge.evaluation.binning import MIN_ENERGY_DS1, MIN_ENERGY_DS23
from caloforge.evaluation.distances import mmd_poly_unbiased, normalise_features
from caloforge.evaluation.separation import SEPARATION_KEYS, histogram_counts, voxel_energy_counts
from caloforge.features import compute_features
from caloforge.geometry import get_geometry


# --------------------------------------------------------------------------------- helpers
def toy_showers(rng, n: int, scale: float = 1.0):
    """DS2-shaped showers: a longitudinal profile times a transverse falloff, with noise and
    ~80% empty voxels; E_tot / E_inc ~ 0.97 x scale."""
    g = get_geometry("ds2")
    e_inc = 10 ** rng.uniform(3, 5, n)  # 1-100 GeV in MeV
    layers, n_alpha, n_r = g.shape
    z = np.arange(layers)
    t_max = 4 + 2 * np.log10(e_inc / 1e3)[:, None]
    prof = np.clip(z[None, :] / t_max, 1e-3, None) ** 2 * np.exp(-2 * z[None, :] / t_max)
    radial = np.exp(-np.arange(n_r) / 1.5)
    shape = prof[:, :, None, None] * radial[None, None, None, :] * np.ones((1, 1, n_alpha, 1))
    shape *= rng.gamma(4.0, 0.25, size=shape.shape)
    shape[rng.random(shape.shape) < 0.8] = 0.0
    shape = shape.reshape(n, -1)
    showers = shape / shape.sum(axis=1, keepdims=True) * (0.97 * scale * e_inc)[:, None]
    return e_inc, showers.astype(np.float32)


@pytest.fixture(scope="module")
def toy_features():
    rng = np.random.default_rng(3)
    g = get_geometry("ds2")
    e1, s1 = toy_showers(rng, 1200)
    e2, s2 = toy_showers(rng, 1200)
    e3, s3 = toy_showers(rng, 1200, scale=1.1)
    f = [compute_features(e, s, g) for e, s in ((e1, s1), (e2, s2), (e3, s3))]
    return f, (s1, s2, s3)


# --------------------------------------------------------------------------------- binning
def test_official_binning_ds2_and_styles():
    """The edges of the official evaluate_plotting_helper.py (CaloChallenge/homepage, code/)."""
    g = get_geometry("ds2")
    b = official_binning(g, np.full(g.n_layers, 500.0), reference_voxel_max=80.0)
    assert b.style == "official"
    assert np.array_equal(b.etot_einc, np.linspace(0.5, 1.5, 101))
    assert len(b.ec_eta) == len(g.layers_binned_in_alpha) == 45
    assert np.array_equal(b.ec_eta[0], np.linspace(-30, 30, 101))
    assert np.array_equal(b.width_phi[3], np.linspace(0, 30, 101))
    assert np.array_equal(b.sparsity[0], np.linspace(0, 1, 21))
    assert np.array_equal(b.ec_r[7], np.linspace(0, 42, 101))
    assert np.array_equal(b.width_r[7], np.linspace(0, 20, 101))
    assert np.array_equal(b.e_layer[0], np.logspace(np.log10(MIN_ENERGY_DS23), np.log10(500.0), 40))
    assert np.array_equal(b.voxel_energy, np.logspace(np.log10(MIN_ENERGY_DS23), np.log10(80.0), 50))
    coarse = official_binning(g, np.full(g.n_layers, 500.0), style="coarse")
    assert len(coarse.etot_einc) == 31 and len(coarse.ec_phi[0]) == 51 and coarse.voxel_energy is None
    assert official_binning(g, np.full(g.n_layers, 500.0), style="2022").style == "official"
    with pytest.raises(ValueError):
        official_binning(g, np.ones(g.n_layers), style="nope")


def test_log_edges_take_the_float32_logarithm_of_float32_maxima():
    """The official code takes np.log10 of float32 maxima (float32 layer sums and voxels): the last
    edge is 10 ** float32(log10(max)), not the maximum itself."""
    g = get_geometry("ds2")
    m32 = np.float32(6326.69)
    b = official_binning(g, np.full(g.n_layers, m32, dtype=np.float32), reference_voxel_max=m32)
    expected = np.logspace(np.log10(MIN_ENERGY_DS23), np.log10(m32), 40)
    assert np.array_equal(b.e_layer[5], expected)
    assert not np.array_equal(expected, np.logspace(np.log10(MIN_ENERGY_DS23), np.log10(float(m32)), 40))
    assert b.voxel_energy[-1] == np.logspace(np.log10(MIN_ENERGY_DS23), np.log10(m32), 50)[-1]


def test_official_binning_ds1_layer_limits():
    g = get_geometry("ds1-pions")
    maxes = np.full(g.n_layers, 1e4)
    maxes[0] = 0.5  # below the official 1 MeV min_energy of DS1: no histogram
    b = official_binning(g, maxes)
    lims = {l: e[-1] for l, e in zip(g.layers_binned_in_alpha, b.ec_eta, strict=True)}
    assert lims[12] == 500.0 and lims[13] == 500.0 and lims[1] == 100.0
    wl = {l: e[-1] for l, e in zip(g.layers_binned_in_alpha, b.width_eta, strict=True)}
    assert wl[12] == 400.0 and wl[2] == 100.0
    rl = {l: e[-1] for l, e in zip(g.relevant_layers, b.ec_r, strict=True)}
    assert rl[14] == 1500.0 and rl[0] == 500.0
    assert MIN_ENERGY_DS1 == 1.0 == g.readout_threshold
    assert b.min_energy == MIN_ENERGY_DS1 and b.e_layer[0] is None and b.notes
    assert b.e_layer[1][0] == 1.0


def test_etot_einc_discrete_ds1_official_definition(rng):
    """DS1: E_tot / E_inc per incident energy as plot_Etot_Einc_discrete (2^8 <= E < 2^9 ... MeV;
    linspace(0.4, 1.4, 21), for photons linspace(0.9, 1.1, 21) from the fifth energy on; NaN where
    a sample has no shower of that energy)."""
    g = get_geometry("ds1-photons")
    energies = 2.0 ** np.arange(8, 23)

    def sample(n, scale, drop_last):
        e = rng.choice(energies[:-1] if drop_last else energies, n).astype(np.float32)
        s = rng.exponential(1.0, (n, g.n_voxels)).astype(np.float32)
        s *= (0.95 * scale * e / s.sum(axis=1))[:, None] * rng.normal(1, 0.03, (n, 1)).astype(np.float32)
        return compute_features(e, s, g)

    a, b = sample(3000, 1.0, False), sample(3000, 1.01, True)
    sep = feature_separation_powers(a, b)
    assert len(sep["etot_einc_discrete"]) == 15 and math.isnan(sep["etot_einc_discrete"][-1])
    for i in range(14):
        bins = np.linspace(0.9, 1.1, 21) if i > 3 else np.linspace(0.4, 1.4, 21)
        ha = np.histogram(a.etot_einc[(a.e_inc >= 2.0 ** (8 + i)) & (a.e_inc < 2.0 ** (9 + i))], bins, density=True)[0]
        hb = np.histogram(b.etot_einc[(b.e_inc >= 2.0 ** (8 + i)) & (b.e_inc < 2.0 ** (9 + i))], bins, density=True)[0]
        assert sep["etot_einc_discrete"][i] == pytest.approx(separation_power(ha, hb, bins), rel=1e-12)
    assert "etot_einc_discrete" not in feature_separation_powers(*toy_features_pair(rng))


def toy_features_pair(rng):
    g = get_geometry("ds2")
    e, s = toy_showers(rng, 200)
    f = compute_features(e, s, g)
    return f, f


# ------------------------------------------------------------------------ separation power
def test_histogram_counts_match_numpy(rng):
    edges = np.linspace(-1, 1, 11)
    x = np.concatenate([rng.normal(size=5000), edges, [-5.0, 5.0]])  # values on every edge
    assert np.array_equal(histogram_counts(x, edges), np.histogram(x, bins=edges)[0])
    log_edges = np.logspace(-2, 2, 40)
    y = rng.lognormal(size=3000).astype(np.float32)
    assert np.array_equal(histogram_counts(y, log_edges), np.histogram(y, bins=log_edges)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histogram_counts_arithmetic_path_equals_binary_search(rng, dtype):
    # evenly spaced (linear or log) edges take the arithmetic path; it must bin every value,
    # including values on an edge and one ulp below it, as numpy.histogram does
    log_edges = np.logspace(np.log10(0.0151), np.log10(1234.5), 101)
    lin_edges = np.linspace(-30.0, 30.0, 61)
    for edges, x in ((log_edges, 10 ** rng.uniform(-2.5, 3.3, 20000)), (lin_edges, rng.uniform(-40, 40, 20000))):
        x = np.concatenate([x, edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf), [np.nan]]).astype(dtype)
        x[rng.permutation(len(x))[:50]] = edges[-1]
        expected = np.histogram(x[np.isfinite(x)], bins=edges)[0]
        assert np.array_equal(histogram_counts(x, edges), expected)
    uneven = np.array([0.0, 1.0, 5.0, 6.0, 20.0])  # not evenly spaced: binary search
    y = rng.uniform(-1, 25, 5000).astype(dtype)
    assert np.array_equal(histogram_counts(y, uneven), np.histogram(y, bins=uneven)[0])


def test_separation_power_official_definition(rng):
    edges = np.linspace(-4, 4, 31)
    a, b = rng.normal(size=4000), rng.normal(0.3, 1.2, size=3000)
    h1 = np.histogram(a, bins=edges, density=True)[0]
    h2 = np.histogram(b, bins=edges, density=True)[0]
    w = np.diff(edges)
    p1, p2 = h1 * w, h2 * w
    expected = 0.5 * np.sum((p1 - p2) ** 2 / (p1 + p2 + 1e-16))
    assert separation_power(h1, h2, edges) == pytest.approx(expected, rel=1e-12)
    c1, c2 = histogram_counts(a, edges), histogram_counts(b, edges)
    assert separation_power_counts(c1, c2, edges) == pytest.approx(expected, rel=1e-12)
    assert separation_power_counts(c1, c1, edges) == 0.0
    disjoint = separation_power_counts(np.array([5, 0]), np.array([0, 7]), np.array([0.0, 1.0, 2.0]))
    assert disjoint == pytest.approx(1.0)
    # vectorised over leading axes
    stacked = separation_power_counts(np.stack([c1, c1]), np.stack([c2, c1]), edges)
    assert stacked.shape == (2,) and stacked[0] == pytest.approx(expected) and stacked[1] == 0.0
    # a histogram with no entry inside the edges: NaN, as the official densities are 0/0
    assert math.isnan(separation_power_counts(np.zeros(30), c2, edges))


def test_feature_separation_identical_and_misscaled(toy_features):
    (f1, f2, f3), (s1, s2, s3) = toy_features
    same = feature_separation_powers(f1, f1, reference_showers=s1, generated_showers=s1)
    assert tuple(same) == SEPARATION_KEYS
    for key, v in same.items():
        vals = np.atleast_1d(np.asarray(v, dtype=float))
        assert np.all(vals[np.isfinite(vals)] == 0.0), key
    assert len(same["e_layer"]) == 45 and len(same["ec_eta"]) == 45 and len(same["sparsity"]) == 45
    resample = feature_separation_powers(f1, f2, reference_showers=s1, generated_showers=s2)
    scaled = feature_separation_powers(f1, f3, reference_showers=s1, generated_showers=s3)
    assert scaled["etot_einc"] > 0.5 > 10 * resample["etot_einc"]
    m_res, m_sc = mean_separation_powers(resample), mean_separation_powers(scaled)
    # layer energies span decades (1-100 GeV): 10% is a small shift next to the statistical floor
    assert m_sc["e_layer"] > m_res["e_layer"]
    assert scaled["voxel_energy"] > resample["voxel_energy"]
    # the binning comes from the reference: voxel edges end at its largest voxel
    b = binning_from_reference(f1, s1)
    assert b.voxel_energy[-1] == pytest.approx(float(s1.max()))
    counts = voxel_energy_counts(s1, b.voxel_energy, f1.threshold)
    thr = np.where(s1 < f1.threshold, 0, s1)
    assert np.array_equal(counts, np.histogram(thr.ravel(), bins=b.voxel_energy)[0])


def test_separation_on_geant4(g4_file):
    from caloforge.data import open_showers

    f = open_showers(g4_file)
    e, s = f.read(0, 3000)
    a = compute_features(e[:1500], s[:1500], f.geometry)
    b = compute_features(e[1500:], s[1500:], f.geometry)
    c = compute_features(e[1500:], s[1500:] * np.float32(1.05), f.geometry)
    base = feature_separation_powers(a, b)
    off = feature_separation_powers(a, c)
    assert off["etot_einc"] > 5 * base["etot_einc"]


# ----------------------------------------------------------------------------- FPD / KPD
def test_frechet_distance_analytic():
    assert frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9 + (2 - 1) ** 2)
    c1, c2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    expected = 1.0 + 0.0 + 4.0 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance([0, 0, 0], c1, [1, 0, 2], c2) == pytest.approx(expected)


def test_fpd_gaussians_match_analytic(rng):
    d, n = 5, 60_000
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d)) * 1.1 + 0.05
    res = fpd(x, y)
    value, error = res  # unpacks like jetnet's tuple
    assert res.note == "" or "recommended" not in res.note
    a, b = normalise_features(x, y)
    empirical = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert abs(value - empirical) < 4 * error
    m = np.abs(x).max(axis=0)  # the analytic distance in the normalised units
    analytic = frechet_distance(np.zeros(d), np.diag(1 / m**2), 0.05 / m, np.diag(1.21 / m**2))
    assert value == pytest.approx(analytic, rel=0.05)


def test_fpd_identical_samples_is_zero(rng):
    x = rng.normal(size=(20_000, 4))
    with pytest.warns(SampleSizeWarning):
        res = fpd(x, x, num_batches=5, num_points=5)
    assert res.value <= max(3 * res.error, 1e-6)
    assert "reduced" in res.note and res.settings["max_samples"] == 20_000


def test_fpd_small_sample_adapts_and_says_so(rng):
    x, y = rng.normal(size=(3000, 3)), rng.normal(size=(4000, 3))
    with pytest.warns(SampleSizeWarning, match="reduced"):
        res = fpd(x, y, num_batches=3, num_points=4)
    assert res.settings["max_samples"] == 3000 and res.settings["min_samples"] == 1500
    with pytest.warns(SampleSizeWarning):
        exact = fpd(x, y, num_batches=3, num_points=4, adapt_to_sample_size=False)
    assert exact.settings["max_samples"] == 50_000
    with pytest.raises(ValueError):
        fpd(x[:, :2], y)


def test_fast_frechet_equals_scipy_sqrtm(rng):
    """The eigenvalue route to Tr(sqrt(C1 C2)) equals scipy.linalg.sqrtm's trace on random
    positive-definite covariances, and falls back to it (jetnet's regularisation) on singular ones."""
    from scipy import linalg

    from caloforge.evaluation.distances import frechet_distance_fast, trace_sqrt_product

    for d in (3, 40, 120):
        a, b = rng.normal(size=(4 * d, d)), rng.normal(size=(4 * d, d)) * rng.uniform(0.5, 2, d)
        c1, c2 = np.cov(a, rowvar=False), np.cov(b @ rng.normal(size=(d, d)), rowvar=False)
        slow = np.trace(linalg.sqrtm(c1 @ c2).real)
        assert trace_sqrt_product(c1, c2) == pytest.approx(slow, rel=1e-9)
        mu1, mu2 = a.mean(0), b.mean(0)
        assert frechet_distance_fast(mu1, c1, mu2, c2) == pytest.approx(frechet_distance(mu1, c1, mu2, c2), rel=1e-9)
    singular = np.diag([1.0, 2.0, 0.0])
    assert trace_sqrt_product(singular, np.eye(3)) is None
    m = np.zeros(3)
    assert frechet_distance_fast(m, singular, m, np.eye(3)) == frechet_distance(m, singular, m, np.eye(3))


def test_resampled_moments_equal_gathered_batches(rng):
    from caloforge.evaluation.distances import _mean_cov, _ResampledMoments

    x = rng.normal(size=(500, 6)) * np.arange(1, 7) + 50.0  # large offset: centring matters
    moments = _ResampledMoments(x, 400)
    for size in (50, 400):
        idx = rng.choice(len(x), size=size)
        mu, cov = moments(idx)
        mu_ref, cov_ref = _mean_cov(x[idx])
        np.testing.assert_allclose(mu, mu_ref, rtol=1e-12)
        np.testing.assert_allclose(cov, cov_ref, rtol=1e-10, atol=1e-12 * np.abs(cov_ref).max())


def test_fast_fpd_equals_jetnet_computation(rng):
    """fpd's default path (draw counts, eigenvalues) against the gathered-batch, scipy.linalg.sqrtm
    computation of jetnet on the same draws: every batch-size mean to 1e-9, the fitted value to 1e-6
    (curve_fit's own tolerance is ~1e-8)."""
    d = 30
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    x, y = rng.normal(size=(3000, d)) @ mix, (rng.normal(size=(3000, d)) * 1.05 + 0.02) @ mix
    kw = dict(min_samples=800, max_samples=3000, num_batches=4, num_points=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        fast, slow = fpd(x, y, **kw), fpd(x, y, method="sqrtm", **kw)
    np.testing.assert_allclose(fast.settings["means"], slow.settings["means"], rtol=1e-9)
    assert fast.value == pytest.approx(slow.value, rel=1e-6)
    assert fast.error == pytest.approx(slow.error, rel=1e-4)
    with pytest.raises(ValueError, match="method"):
        fpd(x, y, method="svd", **kw)


def test_mmd_blocks_match_full_matrices(rng):
    x, y = rng.normal(size=(157, 6)), rng.normal(0.2, 1.0, size=(157, 6))
    g = 1 / 6
    kxx, kyy, kxy = ((x @ x.T) * g + 1) ** 4, ((y @ y.T) * g + 1) ** 4, ((x @ y.T) * g + 1) ** 4
    m = len(x)
    full = (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    assert mmd_poly_unbiased(x, y, block_rows=16) == pytest.approx(full, rel=1e-10)
    assert mmd_poly_unbiased(x, y, block_rows=1000) == pytest.approx(full, rel=1e-10)


def test_kpd_identical_distributions_and_misscaling(rng):
    d = 8
    x, y = rng.normal(size=(20_000, d)), rng.normal(size=(20_000, d))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        same = kpd(x, y, batch_size=2000)
        off = kpd(x, y * 1.25, batch_size=2000)
        self_ = kpd(x, x, batch_size=2000)
    assert abs(same.value) < 3 * same.error + 1e-6
    assert abs(self_.value) < 3 * self_.error + 1e-6
    assert off.value > 5 * off.error and off.value > 10 * abs(same.value)
    assert len(same.settings["values"]) == 10


def test_misscaled_sample_detected_by_fpd_and_kpd(toy_features):
    (f1, f2, f3), _ = toy_features

    # a few energy features: 1200 showers are far too few for the 362-dim high-level vector
    def vec(f):
        return np.column_stack([f.etot_einc, f.e_layer[:, 3:9] / f.e_inc[:, None], np.log10(f.e_inc)])

    h1, h2, h3 = vec(f1), vec(f2), vec(f3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SampleSizeWarning)
        kw = dict(num_batches=5, num_points=5)
        f_same, f_off = fpd(h1, h2, **kw), fpd(h1, h3, **kw)
        k_same, k_off = kpd(h1, h2, num_batches=5), kpd(h1, h3, num_batches=5)
    assert f_off.value > 10 * f_same.value and f_off.value > 5 * f_off.error
    assert k_off.value > 5 * k_off.error and k_off.value > 10 * abs(k_same.value)


# ----------------------------------------------------------------------------- classifier
TINY = ClassifierConfig(hidden_layers=1, hidden_units=32, batch_size=256, max_epochs=8, patience=3, learning_rate=3e-3)


def test_classifier_separates_different_samples(rng):
    x = rng.normal(size=(2000, 10)).astype(np.float32)
    y = (rng.normal(size=(2000, 10)) + 1.0).astype(np.float32)
    res = classifier_test(x, y, TINY, seed=1)
    assert res.auc > 0.95 and res.jsd > 0.5
    assert res.n_train == 2400 and res.n_test == 800 and res.n_val == 800
    assert 1 <= res.best_epoch <= res.epochs_run <= 8


def test_classifier_same_distribution_is_chance_and_seeded(rng):
    x = rng.normal(size=(2500, 10)).astype(np.float32)
    y = rng.normal(size=(3000, 10)).astype(np.float32)  # larger: cut to equal class sizes
    res = classifier_test(x, y, TINY, seed=5)
    # validation split: 500 + 500 showers; the null AUC spread is sqrt((n1+n2+1)/(12 n1 n2)) ~ 0.018
    sigma = math.sqrt((500 + 500 + 1) / (12 * 500 * 500))
    assert abs(res.auc - 0.5) < 4 * sigma
    assert abs(res.jsd) < 0.05
    again = classifier_test(x, y, TINY, seed=5)
    assert again.auc == res.auc and again.jsd == res.jsd and again.best_epoch == res.best_epoch


def test_classifier_presets():
    off, fast = ClassifierConfig.official(), ClassifierConfig.fast()
    assert (off.hidden_layers, off.hidden_units, off.learning_rate, off.batch_size, off.max_epochs) == (3, 2048, 2e-4, 1000, 50)
    assert off.patience is None and fast.patience == 10 and fast.max_epochs == 25
    assert fast.hidden_units == 2048
    with pytest.raises(ValueError):
        ClassifierConfig(split=(0.7, 0.2, 0.2))


def test_low_and_high_level_inputs(toy_features):
    (f1, _, _), (s1, _, _) = toy_features
    e = f1.e_inc
    thr = 0.5
    x = low_level_inputs(e, s1, threshold=thr, chunk_size=333)
    assert x.dtype == np.float32 and x.shape == (len(s1), s1.shape[1] + 1)
    expected = np.where(s1 < thr, 0, s1) / e.astype(np.float32)[:, None]
    assert np.allclose(x[:, 1:], expected, rtol=1e-6)
    assert np.allclose(x[:, 0], np.log10(e), rtol=1e-6)
    h = high_level_inputs(f1)
    assert h.dtype == np.float32 and h.shape == (len(f1), 1 + 45 + 4 * 45 + 1 + 3 * 45)
