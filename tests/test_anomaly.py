"""Anomaly detection: scores (likelihood, autoencoder, decorrelated pair), DisCo, ROC/SIC, ABCD, the CLI."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import torch
from scipy.stats import norm
from typer.testing import CliRunner

from caloforge.anomaly import (
    LikelihoodScore,
    ModelScore,
    abcd,
    closure,
    closure_spread,
    distance_correlation,
    evaluate_scores,
    inject,
    make_score,
    read_scores,
    score_file,
    write_scores,
)
from caloforge.anomaly.evaluation import roc, signal_efficiency_at
from caloforge.anomaly.scores import EnergyCalibration, calibrate
from caloforge.cli.main import app
from caloforge.data import open_showers, write_showers
from caloforge.errors import InputError
from caloforge.geometry import get_geometry
from caloforge.models import build_model, get_model_class, save_model
from caloforge.models.autoencoder import distance_correlation_sq
from caloforge.models.capabilities import HasAnomalyScore, capabilities
from caloforge.simulation import ParametricSimulator
from caloforge.training import TrainConfig, train

torch.set_num_threads(1)
G = get_geometry("ds2")
runner = CliRunner()


@pytest.fixture(scope="module")
def showers():
    rng = np.random.default_rng(3)
    e = np.exp(rng.uniform(np.log(2e3), np.log(5e4), 240)).astype(np.float32)
    return e, ParametricSimulator("ds2").sample(e, rng).astype(np.float32)


def _anomalous(e: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The showers rotated by half a turn in alpha and pushed three rings outwards: the same
    energies, at a place no electron shower puts them."""
    v = x.reshape(len(x), *G.shape)
    v = np.roll(v, G.shape[1] // 2, axis=2)
    out = np.zeros_like(v)
    out[..., 3:] = v[..., :-3]
    return out.reshape(len(x), -1)


# ------------------------------------------------------------------------------------ scores
def test_likelihood_score_is_minus_log_prob(showers):
    e, x = (torch.from_numpy(a) for a in showers)
    model = build_model("voxel-lognormal", G)
    model.fit_preprocessing(e, x)
    score = make_score(model)
    assert isinstance(score, LikelihoodScore) and score.names == ("nll",)
    got = score(e[:20], x[:20])
    assert got.shape == (20, 1) and got.dtype == torch.float64
    assert torch.allclose(got[:, 0], -model.log_prob(e[:20], x[:20]).double())
    with pytest.raises(InputError, match="has no likelihood"):
        LikelihoodScore(build_model("ae", G, get_model_class("ae").Config.tiny()))


def test_autoencoder_trains_and_ranks_an_anomaly_above_normal_showers(showers, tmp_path):
    e, x = showers
    model = build_model("ae", G, get_model_class("ae").Config.tiny())
    assert capabilities(model) == ["HasAnomalyScore", "TrainableByLoss"]
    cfg = TrainConfig.tiny().replace(steps=40, batch_size=32, lr=3e-3)
    result = train(model, (e[:200], x[:200]), config=cfg, run_dir=tmp_path / "run", progress=False, device="cpu")
    assert result.completed and math.isfinite(result.train_loss)
    model.eval()
    score = make_score(model)
    assert isinstance(score, ModelScore) and score.names == ("ae",)
    et = torch.from_numpy(e[200:])
    normal = score(et, torch.from_numpy(x[200:]))[:, 0]
    odd = score(et, torch.from_numpy(_anomalous(e[200:], x[200:])))[:, 0]
    # every anomalous shower scores above the median normal one, most above all of them
    assert (odd > normal.median()).all() and (odd > normal.max()).float().mean() > 0.8
    # the score is the per-shower reconstruction loss the model trains on
    with torch.no_grad():
        assert torch.isclose(normal.mean(), model.loss(et, torch.from_numpy(x[200:])).double(), rtol=1e-4)


def test_pair_gives_two_scores_and_penalises_their_distance_correlation(showers):
    e, x = (torch.from_numpy(a[:64]) for a in showers)
    cls = get_model_class("ae-pair")
    torch.manual_seed(0)
    free = build_model("ae-pair", G, cls.Config.tiny().replace(decorrelate=0.0))
    torch.manual_seed(0)
    tied = build_model("ae-pair", G, cls.Config.tiny().replace(decorrelate=5.0, decorrelate_groups=1))
    for m in (free, tied):
        m.fit_preprocessing(e, x)
    assert isinstance(tied, HasAnomalyScore) and tied.score_names() == ("ae1", "ae2")
    s = tied.anomaly_score(e, x)
    assert s.shape == (64, 2)
    e1, e2 = s[:, 0], s[:, 1]
    with torch.no_grad():
        penalty = tied.loss(e, x) - free.loss(e, x)
    assert torch.isclose(penalty, 5.0 * distance_correlation_sq(e1, e2), rtol=1e-3)
    # in groups of similar energy: the mean of the groups' dCorr^2
    grouped = tied.config.replace(decorrelate_groups=4)
    tied.config = grouped
    order = torch.argsort(e)
    want = torch.stack([distance_correlation_sq(e1[g], e2[g]) for g in order.chunk(4)]).mean()
    assert torch.isclose(tied.disco(e, e1, e2), want)


def test_pair_detrended_disco_ignores_linear_energy_trends():
    """Errors that are independent apart from opposite trends in log E_inc: the plain penalty sees
    the trends, the detrended one (``decorrelate_detrend``) sees only what is left."""
    g = torch.Generator().manual_seed(2)
    e = torch.exp(torch.empty(400).uniform_(7, 11, generator=g))
    pair = build_model("ae-pair", G, get_model_class("ae-pair").Config.tiny().replace(decorrelate_groups=1))
    pair.fit_preprocessing(e, torch.zeros(400, G.n_voxels))
    c = pair._condition(e)
    n1, n2 = torch.randn(400, generator=g), torch.randn(400, generator=g)
    e1, e2 = 3 * c + n1, -3 * c + n2
    plain = pair.disco(e, e1, e2)
    pair.config = pair.config.replace(decorrelate_detrend=True)
    detrended = pair.disco(e, e1, e2)
    assert plain > 0.5 and detrended < 0.05
    assert torch.isclose(detrended, distance_correlation_sq(e1 - e1.mean() - 3 * (c - c.mean()),
                                                            e2 - e2.mean() + 3 * (c - c.mean())), atol=0.02)


def test_distance_correlation_tells_dependence_from_independence():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=2000), rng.normal(size=2000)
    assert distance_correlation(a, b) < 0.01
    assert distance_correlation(a, 2 * a + 1) == pytest.approx(1.0, abs=1e-6)
    # a dependence Pearson misses (symmetric, non-monotonic): DisCo sees it
    y = a**2 + 0.1 * b
    assert abs(np.corrcoef(a, y)[0, 1]) < 0.1 and distance_correlation(a, y) > 0.1
    # the torch version, weights of one, is the same number
    t = distance_correlation_sq(torch.from_numpy(a[:300]), torch.from_numpy(y[:300]))
    assert float(t) == pytest.approx(distance_correlation(a[:300], y[:300]), rel=1e-9)


def test_energy_calibration_removes_the_energy_dependence():
    rng = np.random.default_rng(1)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), 4000))
    raw = 3.0 * np.log(e) ** 2 + np.sqrt(e) / 50 * rng.normal(size=4000)  # mean and width grow with E
    cal = EnergyCalibration.fit(e[:2000], raw[:2000])
    z = cal.apply(e[2000:], raw[2000:])
    low, high = np.log(e[2000:]) < np.log(1e4), np.log(e[2000:]) >= np.log(1e4)
    assert abs(z[low].mean()) < 0.1 and abs(z[high].mean()) < 0.1
    assert z[low].std() == pytest.approx(1.0, abs=0.15) and z[high].std() == pytest.approx(1.0, abs=0.15)


# -------------------------------------------------------------------------------- evaluation
def test_roc_auc_and_efficiencies_of_known_distributions():
    rng = np.random.default_rng(2)
    d = 1.5
    b, s = rng.normal(size=40000), rng.normal(d, 1.0, size=40000)
    ev = evaluate_scores({"x": b}, {"x": s})
    m = ev.metrics[0]
    assert m.auc == pytest.approx(norm.cdf(d / math.sqrt(2)), abs=0.006)
    for wp in (1e-2, 1e-3):
        exact = norm.sf(norm.isf(wp) - d)
        assert m.eps_s[f"{wp:.0e}"] == pytest.approx(exact, abs=0.02 if wp == 1e-2 else 0.03)
        assert m.sic[f"{wp:.0e}"] == pytest.approx(m.eps_s[f"{wp:.0e}"] / math.sqrt(wp))
    fpr, tpr, _ = roc(b, s)
    assert fpr[0] == 0 and fpr[-1] == 1 and np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    eff, above, _ = signal_efficiency_at(b, s, 1e-2)
    assert above <= 400 and eff == m.eps_s["1e-02"]
    # per bin of a signal property: a bin of pure background-like signal has AUC ~ 0.5
    prop = np.repeat([0.0, 20.0], 20000)
    s2 = np.where(prop == 0, rng.normal(size=40000), s)
    ev = evaluate_scores({"x": b}, {"x": s2}, prop, "separation_mm")
    by_bin = {mm.bin: mm.auc for mm in ev.metrics}
    assert by_bin["separation_mm=0"] == pytest.approx(0.5, abs=0.02) and by_bin["separation_mm=20"] > 0.84
    with pytest.raises(InputError, match="only one"):
        evaluate_scores({"x": b}, {"y": s})


# ---------------------------------------------------------------------------------------- ABCD
def test_abcd_closes_on_independent_scores_and_not_on_correlated_ones():
    rng = np.random.default_rng(4)
    n = 200_000
    a, b = rng.normal(size=n), rng.normal(size=n)
    r = closure(a, b, keep=0.01)
    assert r.observed == pytest.approx(0.01 * n, rel=0.1)
    assert abs(r.pull) < 3 and r.predicted_error > 0
    c = 0.6 * a + 0.8 * rng.normal(size=n)  # Pearson 0.6 with a
    bad = closure(a, c, keep=0.01)
    assert bad.observed > bad.predicted + 5 * bad.predicted_error
    # the prediction is the ratio of the control regions
    assert r.predicted == pytest.approx(r.cr1 * r.cr3 / r.cr2)
    with pytest.raises(InputError, match="empty"):
        abcd(a, b, a.max() + 1, b.max() + 1)


def test_abcd_error_propagates_all_three_control_regions_and_the_observed_count():
    # points placed by hand: SR 12, CR1 50 (s1 > 0, s2 <= 0), CR2 400, CR3 80
    counts = {(1.0, 1.0): 12, (1.0, -1.0): 50, (-1.0, -1.0): 400, (-1.0, 1.0): 80}
    s1 = np.concatenate([np.full(n, a) for (a, _), n in counts.items()])
    s2 = np.concatenate([np.full(n, b) for (_, b), n in counts.items()])
    r = abcd(s1, s2, 0.0, 0.0)
    assert (r.sr, r.cr1, r.cr2, r.cr3) == (12, 50, 400, 80)
    assert r.predicted == pytest.approx(10.0)
    assert r.predicted_error == pytest.approx(10.0 * math.sqrt(1 / 50 + 1 / 400 + 1 / 80))
    assert r.pull == pytest.approx((12 - 10.0) / math.sqrt(12 + r.predicted_error**2))


def test_closure_pulls_are_unit_normal_on_independent_scores_and_not_on_correlated_ones():
    """The stated error is the right one: over 100 disjoint subsets (about 20 showers expected in
    each signal region) the pulls have mean 0 and spread 1 (without the observed count's Poisson
    term in the denominator their spread would be about 2.2; with one control region's error
    alone, larger still)."""
    rng = np.random.default_rng(7)
    n = 200_000
    a, b = rng.normal(size=n), rng.normal(size=n)
    s = closure_spread(a, b, keep=0.01, subsets=100, bootstrap=40, seed=3)
    assert len(s.subset_pulls) == 100 and s.subset_size == 2000 and len(s.bootstrap_pulls) == 40
    assert abs(s.subset_mean) < 0.35 and 0.8 < s.subset_std < 1.2
    assert s.subset_mean_error == pytest.approx(s.subset_std / 10)
    assert 0.7 < s.bootstrap_std < 1.3  # the bootstrap spread agrees with the stated error too
    c = 0.3 * a + math.sqrt(1 - 0.09) * rng.normal(size=n)  # a mild correlation (Pearson 0.3)
    bad = closure_spread(a, c, keep=0.01, subsets=100, seed=3)
    assert bad.subset_mean > 1.0 and bad.subset_mean > 5 * bad.subset_mean_error
    with pytest.raises(InputError, match="fewer subsets"):
        closure_spread(a[:1000], b[:1000], keep=0.01, subsets=20)


def test_binned_closure_removes_a_shared_dependence_on_the_condition():
    """Two scores independent at fixed energy but both drifting with it: ABCD over all showers
    fails (the drift correlates them), ABCD in bins of the energy closes."""
    rng = np.random.default_rng(8)
    n = 200_000
    level = rng.integers(0, 4, n)  # four energy levels (x: with a little spread within each)
    x = level + rng.uniform(0, 0.5, n)
    a, b = rng.normal(size=n) + level, rng.normal(size=n) + level
    assert closure(a, b, keep=0.01).pull > 10
    r = closure(a, b, keep=0.01, condition=x, n_bins=4)
    assert abs(r.pull) < 3 and r.observed == pytest.approx(0.01 * n, rel=0.1)
    label = np.searchsorted(np.quantile(x, [0.25, 0.5, 0.75]), x, side="right")  # the quantile bins
    parts = [closure(a[label == k], b[label == k], keep=0.01) for k in range(4)]
    assert r.predicted == pytest.approx(sum(p.predicted for p in parts))
    assert r.predicted_error == pytest.approx(math.sqrt(sum(p.predicted_error**2 for p in parts)))
    s = closure_spread(a, b, keep=0.01, subsets=20, seed=1, condition=x, n_bins=4)
    assert abs(s.subset_mean) < 4 * s.subset_mean_error + 0.2


def test_signal_injection_grows_significance():
    rng = np.random.default_rng(5)
    bkg = (rng.normal(size=20000), rng.normal(size=20000))
    sig = (rng.normal(3, 1, size=3000), rng.normal(3, 1, size=3000))
    res = inject(bkg, sig, fractions=(0.001, 0.01, 0.1), keep=0.01, seed=1)
    assert [r.n_signal for r in res] == [20, 200, 2000]
    z = [r.significance for r in res]
    assert z[0] < z[1] < z[2] and z[1] > 5
    assert all(r.signal_in_sr <= r.n_signal for r in res)


# ----------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def files(tmp_path_factory, showers):
    d = tmp_path_factory.mktemp("anomaly")
    e, x = showers
    write_showers(d / "bkg.h5", e[:160], x[:160])
    sig = _anomalous(e[160:], x[160:])
    write_showers(d / "sig.h5", e[160:], sig)
    with h5py.File(d / "sig.h5", "a") as f:
        f["separation_mm"] = np.tile([0.0, 20.0], 40)
    model = build_model("voxel-lognormal", G)
    model.fit_preprocessing(torch.from_numpy(e[:100]), torch.from_numpy(x[:100]))
    save_model(model, d / "vln")
    pair = build_model("ae-pair", G, get_model_class("ae-pair").Config.tiny())
    pair.fit_preprocessing(torch.from_numpy(e[:100]), torch.from_numpy(x[:100]))
    with torch.no_grad():  # a fresh pair returns the mean shower twice: make the two networks differ
        gen = torch.Generator().manual_seed(1)
        for p in pair.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    save_model(pair, d / "pair")
    return d


def test_cli_score_evaluate_and_abcd(files, tmp_path):
    d = files
    r = runner.invoke(app, ["anomaly", "score", str(d / "vln"), str(d / "bkg.h5"), "--rows", "100:160", "--calibrate",
                            str(d / "bkg.h5"), "--calibrate-rows", "0:100", "-o", str(tmp_path / "b.h5"), "--threads", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["anomaly", "score", str(d / "vln"), str(d / "sig.h5"), "--calibrate", str(d / "bkg.h5"),
                            "--calibrate-rows", "0:100", "-o", str(tmp_path / "s.h5"), "--threads", "1"])
    assert r.exit_code == 0, r.output
    b = read_scores(tmp_path / "b.h5")
    assert b.rows == (100, 160) and set(b.scores) == {"nll", "nll_z"} and b.n == 60
    r = runner.invoke(app, ["anomaly", "evaluate", "--background", str(d / "bkg.h5"), "--signal", str(d / "sig.h5"),
                            str(tmp_path / "b.h5"), str(tmp_path / "s.h5"), "-o", str(tmp_path / "ev"), "--no-plots"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    rows = {(m["score"], m["bin"]): m for m in metrics["metrics"]}
    assert rows[("vln:nll_z", "all")]["auc"] > 0.9  # the rotated, displaced showers are obvious
    assert ("vln:nll", "separation_mm=20") in rows and (tmp_path / "ev" / "report.html").is_file()
    for name in ("bkg", "sig"):
        r = runner.invoke(app, ["anomaly", "score", str(d / "pair"), str(d / f"{name}.h5"),
                                "-o", str(tmp_path / f"{name}_pair.h5"), "--threads", "1"])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["anomaly", "abcd", str(tmp_path / "bkg_pair.h5"), "--signal", str(tmp_path / "sig_pair.h5"),
                            "--keep", "0.1", "--inject", "0.1", "--subsets", "2", "--bootstrap", "3",
                            "-o", str(tmp_path / "abcd.json")])
    assert r.exit_code == 0, r.output
    out = json.loads((tmp_path / "abcd.json").read_text())
    assert out["scores"] == ["ae1", "ae2"] and len(out["injection"]) == 1 and "disco" in out["correlation"]
    spread = out["closure_spread"]
    assert [s["keep"] for s in spread] == [c["keep"] for c in out["closure"]]
    assert all(len(s["subset_pulls"]) == 2 and len(s["bootstrap_pulls"]) == 3 for s in spread)
    assert "closure spread, keep 0.1: 2 subsets" in r.output


def test_cli_bad_inputs_give_one_line(files, tmp_path):
    d = files
    cases = [
        # a model with neither a likelihood nor a score of its own
        (["anomaly", "score", "ds2-electrons-cfm", str(d / "bkg.h5"), "-o", str(tmp_path / "x.h5")], "neither"),
        # a likelihood asked of a model without one
        (["anomaly", "score", str(d / "pair"), str(d / "bkg.h5"), "--kind", "likelihood", "-o", str(tmp_path / "x.h5")],
         "has no likelihood"),
        (["anomaly", "score", str(d / "vln"), str(d / "bkg.h5"), "--rows", "10:5000", "-o", str(tmp_path / "x.h5")],
         "row range"),
        (["anomaly", "score", str(d / "vln"), str(d / "bkg.h5"), "-o", str(d / "bkg.h5")], "is an input"),
        (["anomaly", "abcd", str(d / "bkg.h5")], "not a score file"),
    ]
    other = tmp_path / "photons.h5"
    rng = np.random.default_rng(0)
    e = np.full(10, 1e4, dtype=np.float32)
    write_showers(other, e, ParametricSimulator("ds1-photons").sample(e, rng).astype(np.float32))
    cases.append((["anomaly", "evaluate", "--background", str(d / "bkg.h5"), "--signal", str(other), str(d / "bkg.h5"),
                   "-o", str(tmp_path / "ev")], "geometry"))
    cases.append((["anomaly", "score", str(d / "vln"), str(other), "-o", str(tmp_path / "x.h5")], "voxels"))
    for args, text in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert text in r.output and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "x.h5").exists()


def test_score_file_roundtrip_and_calibration_refuses_overlap(files, tmp_path):
    from caloforge.models import load_model

    sample = open_showers(files / "bkg.h5")
    s = make_score(load_model(files / "vln"))
    a = score_file(s, sample, 0, 100)
    b = score_file(s, sample, 50, 160)
    with pytest.raises(InputError, match="overlap"):
        calibrate(b, a)
    write_scores(tmp_path / "a.h5", a)
    back = read_scores(tmp_path / "a.h5")
    assert np.array_equal(back.scores["nll"], a.scores["nll"]) and back.source == a.source and back.rows == (0, 100)


# ------------------------------------------------------------ flow-matching ODE likelihood
def test_ode_log_prob_matches_a_closed_form_and_hutchinson_agrees_with_exact():
    from caloforge.flowmatching.likelihood import ode_log_prob

    # dx/dt = a x maps N(0, I) to N(0, e^{2a} I)
    a, x1 = 0.7, torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = ode_log_prob(lambda x, t: a * x, x1, steps=16, solver="rk4")
    exact = (-0.5 * x1**2 * math.exp(-2 * a) - a - 0.5 * math.log(2 * math.pi)).sum(1)
    assert torch.allclose(r.log_prob, exact, atol=1e-6) and r.spread is None
    # a tiny time-dependent network: Hutchinson's estimate agrees with the exact divergence
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()

    def v(x, t):
        return net(torch.cat([x, t[:, None]], dim=1))

    x1 = torch.randn(6, 4, dtype=torch.float64)
    ex = ode_log_prob(v, x1, steps=8)
    hu = ode_log_prob(v, x1, steps=8, estimator="hutchinson", probes=64, generator=torch.Generator().manual_seed(2))
    assert hu.spread is not None and (hu.spread > 0).all()
    assert ((hu.log_prob - ex.log_prob).abs() <= 4 * hu.spread / math.sqrt(64) + 1e-9).all()
    assert torch.allclose(hu.x0, ex.x0)
