"""OmniFold and iterative Bayesian unfolding (:mod:`caloforge.inference.unfolding`) on a toy:
a Gaussian truth smeared by a Gaussian detector; the data's truth differs from the sim's.
Small samples and the fast preset: seconds on one core."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from caloforge.cli.main import app
from caloforge.data import write_showers
from caloforge.errors import InputError
from caloforge.inference.unfolding import (
    OmniFoldConfig,
    UnfoldingError,
    bootstrap,
    detector_features,
    ibu,
    omnifold,
    seed_ensemble,
    spectrum,
)
from caloforge.simulation import ParametricSimulator

EDGES = np.linspace(-3, 3, 13)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    n = 8000
    t_sim = rng.normal(0.0, 1.0, n)
    t_data = rng.normal(0.6, 0.8, n)
    return t_sim, t_sim + rng.normal(0, 0.5, n), t_data, t_data + rng.normal(0, 0.5, n)


def _moments(x, w=None):
    m = np.average(x, weights=w)
    return m, np.sqrt(np.average((x - m) ** 2, weights=w))


def _chi2(a, b):
    use = b > 20
    return float(np.sum((a - b)[use] ** 2 / b[use]))


@pytest.fixture(scope="module")
def unfolded(toy):
    t_sim, x_sim, _, x_data = toy
    return omnifold(t_sim, x_sim, x_data, OmniFoldConfig.fast())


def test_omnifold_reweights_gaussian_smearing_back_to_the_truth(toy, unfolded):
    t_sim, _, t_data, _ = toy
    w = unfolded.final
    assert w.shape == (len(t_sim),) and np.isfinite(w).all() and (w > 0).all()
    assert w.sum() == pytest.approx(len(t_data))  # normalised to the data
    mean, std = _moments(t_sim, w)
    assert abs(mean - 0.6) < 0.06 and abs(std - 0.8) < 0.06  # sim prior: 0 and 1
    truth = spectrum(t_data, None, EDGES)
    chi2_unf, chi2_prior = _chi2(spectrum(t_sim, w, EDGES), truth), _chi2(spectrum(t_sim, None, EDGES), truth)
    assert chi2_unf < 0.1 * chi2_prior
    # iterations move towards the truth
    first = _chi2(spectrum(t_sim, unfolded.weights[0], EDGES), truth)
    assert chi2_unf < first < chi2_prior


def test_ibu_unfolds_the_same_toy(toy):
    t_sim, x_sim, t_data, x_data = toy
    r = ibu(t_sim, x_sim, x_data, EDGES, np.linspace(-3.5, 3.5, 25), iterations=4)
    truth = spectrum(t_data, None, EDGES)
    assert r.unfolded.shape == (5, 12) and r.final.sum() == pytest.approx(len(t_data))
    np.testing.assert_allclose(r.response.sum(axis=0), 1.0)  # every truth bin is measured somewhere
    assert _chi2(r.final, truth) < 0.1 * _chi2(r.unfolded[0], truth)


def test_bootstrap_gives_bands_that_cover_the_truth(toy):
    t_sim, x_sim, t_data, x_data = toy
    cfg = OmniFoldConfig.fast(n_bootstrap=4, iterations=2)
    reps = bootstrap(t_sim, x_sim, x_data, EDGES, cfg, ibu_reco=(x_sim, x_data, np.linspace(-3.5, 3.5, 25)))
    assert reps["omnifold"].shape == (4, 12) and reps["ibu"].shape == (4, 12)
    sigma = reps["omnifold"].std(axis=0, ddof=1)
    truth = spectrum(t_data, None, EDGES)
    core = truth > 500
    assert (sigma[core] > 0).all()
    assert np.all(np.abs(reps["omnifold"].mean(axis=0) - truth)[core] < 4 * sigma[core] + 0.05 * truth[core])


def test_step2_regressor_unfolds_the_toy_too(toy):
    t_sim, x_sim, t_data, x_data = toy
    w = omnifold(t_sim, x_sim, x_data, OmniFoldConfig.fast(step2="regressor")).final
    assert np.isfinite(w).all() and w.sum() == pytest.approx(len(t_data))
    mean, std = _moments(t_sim, w)
    assert abs(mean - 0.6) < 0.06 and abs(std - 0.8) < 0.06


def test_bootstrap_resamples_the_sim_and_returns_the_truth_replicas():
    # a sim half the size of the data: its statistics dominate, and only a bootstrap that
    # resamples the sim too sees them
    rng = np.random.default_rng(5)
    t_sim, t_data = rng.normal(0.0, 1.0, 1000), rng.normal(0.3, 0.9, 2000)
    x_sim, x_data = t_sim + rng.normal(0, 0.3, len(t_sim)), t_data + rng.normal(0, 0.3, len(t_data))
    both = bootstrap(t_sim, x_sim, x_data, EDGES, OmniFoldConfig.fast(iterations=1, n_bootstrap=5, max_iter=20),
                     data_truth=t_data)
    data_only = bootstrap(t_sim, x_sim, x_data, EDGES,
                          OmniFoldConfig.fast(iterations=1, n_bootstrap=5, max_iter=20, bootstrap_sim=False))
    core = spectrum(t_data, None, EDGES) > 200
    var_both = both["omnifold"].var(axis=0, ddof=1)[core].sum()
    var_data = data_only["omnifold"].var(axis=0, ddof=1)[core].sum()
    assert var_both > 1.5 * var_data > 0
    # the truth of each replica is the data's truth histogram under the same Poisson weights
    truth = spectrum(t_data, None, EDGES)
    assert both["truth"].shape == (5, 12) and "truth" not in data_only
    assert not np.allclose(both["truth"], truth)
    assert np.all(np.abs(both["truth"].sum(axis=1) - len(t_data)) < 5 * np.sqrt(len(t_data)))
    # each unfolded replica follows its resampled truth (positively correlated), so the closure
    # difference varies less than the two would if independent
    var_diff = (both["omnifold"] - both["truth"]).var(axis=0, ddof=1)[core].sum()
    assert 0 < var_diff < var_both + both["truth"].var(axis=0, ddof=1)[core].sum()


def test_classifier_seeds_matter_only_through_early_stopping_and_folds(toy):
    t_sim, x_sim, _, x_data = toy
    n = 3000
    for changes in ({"early_stopping": True}, {"folds": 2}):  # a validation split or folds drawn by the seed
        spread = seed_ensemble(t_sim[:n], x_sim[:n], x_data[:n], EDGES,
                               OmniFoldConfig.fast(iterations=1, n_seeds=3, max_iter=20, **changes))
        assert spread.shape == (3, 12) and spread.std(axis=0).max() > 0
    fixed = seed_ensemble(t_sim[:n], x_sim[:n], x_data[:n], EDGES, OmniFoldConfig.fast(iterations=1, n_seeds=2, max_iter=20))
    np.testing.assert_array_equal(fixed[0], fixed[1])  # no early stopping, no folds: deterministic


def test_detector_feature_sets():
    sim = ParametricSimulator("ds1-photons")
    e = np.array([2e3, 1e4, 5e4])
    showers = sim.sample(e, np.random.default_rng(0))
    full = detector_features(e, showers, sim.geometry)
    compact = detector_features(e, showers, sim.geometry, "compact")
    etot = detector_features(e, showers, sim.geometry, "etot")
    assert compact.shape == (3, 5) and etot.shape == (3, 1) and full.shape[1] == sim.geometry.n_layers + 3
    np.testing.assert_allclose(compact[:, 0], full[:, 0])
    np.testing.assert_allclose(etot[:, 0], full[:, 0])
    # log10 E_tot after the readout threshold: a little below the raw sum
    raw = np.log10(showers.sum(axis=1) + 1e-3)
    assert np.all((etot[:, 0] <= raw + 1e-6) & (etot[:, 0] > raw - 0.01))
    assert np.all((compact[:, 1] >= 0) & (compact[:, 1] < 1))  # mean depth / layers
    with pytest.raises(InputError):
        detector_features(e, showers, sim.geometry, "voxels")
    with pytest.raises(InputError):
        OmniFoldConfig(features="voxels")


def test_weights_are_checked(toy):
    t_sim, x_sim, _, x_data = toy
    bad = x_data.copy()
    bad[3] = np.nan
    with pytest.raises(UnfoldingError, match="non-finite"):
        omnifold(t_sim, x_sim, bad, OmniFoldConfig.fast())
    with pytest.raises(InputError):
        omnifold(t_sim[:10], x_sim, x_data)
    # disjoint supports: the classifier is sure, the ratios are clipped and that is reported
    r = omnifold(t_sim[:2000], x_sim[:2000], x_sim[:2000] + 8.0, OmniFoldConfig.fast(iterations=1, weight_clip=5.0))
    assert r.clipped[0][0] > 1000 and "clipped" in r.notes()[0]


def test_cli_unfold_writes_weights_spectrum_and_page(tmp_path):
    rng = np.random.default_rng(3)
    sim_e = np.exp(rng.uniform(np.log(2e3), np.log(5e4), 400))
    data_e = np.exp(rng.uniform(np.log(2e3), np.log(8e3), 200))
    simulator = ParametricSimulator("ds1-photons")
    write_showers(tmp_path / "sim.h5", sim_e, simulator.sample(sim_e, np.random.default_rng(1)))
    write_showers(tmp_path / "data.h5", data_e, simulator.sample(data_e, np.random.default_rng(2)))
    out = tmp_path / "unf"
    res = CliRunner().invoke(app, ["unfold", "--sim", str(tmp_path / "sim.h5"), "--data", str(tmp_path / "data.h5"),
                                   "--iterations", "2", "--bootstrap", "2", "--bins", "4", "--preset", "fast",
                                   "--closure", "-o", str(out), "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} >= {"weights.h5", "spectrum.json", "spectrum.png", "index.html"}
    d = json.loads((out / "spectrum.json").read_text())
    assert len(d["omnifold"]) == 4 and sum(d["truth"]) == 200 and d["closure"]["bins_used"] >= 1
    assert d["bootstrap"] == "data + sim" and d["features"] == "etot" and len(d["omnifold_diff_sigma"]) == 4
    assert "omnifold_chi2_diff" in d["closure"] and d["omnifold_seed_sigma"] is None  # the fast preset: no seeds
    # the data sit at low energies: the unfolded spectrum moves there from the sim's flat prior
    assert d["omnifold"][0] > d["sim_prior"][0] and d["omnifold"][-1] < d["sim_prior"][-1]
    res = CliRunner().invoke(app, ["unfold", "--sim", str(tmp_path / "nope.h5"), "--data", str(tmp_path / "data.h5"),
                                   "-o", str(out)])
    assert res.exit_code == 2 and "not found" in res.output
    res = CliRunner().invoke(app, ["unfold", "--sim", str(tmp_path / "sim.h5"), "--data", str(tmp_path / "data.h5"),
                                   "--features", "voxels", "-o", str(tmp_path / "unf2")])
    assert res.exit_code == 2 and "features must be one of" in res.output
