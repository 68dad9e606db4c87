"""The likelihood of the ``cfm`` model: preprocessing Jacobians, exact vs Hutchinson, sanity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from caloforge.flowmatching.likelihood import ODELikelihoodConfig
from caloforge.geometry import Geometry, get_geometry
from caloforge.geometry.binning import LayerBinning
from caloforge.models import build_model
from caloforge.models.capabilities import EstimatesLikelihood, HasLikelihood
from caloforge.models.cfm import CFMConfig
from caloforge.simulation import ParametricSimulator
from caloforge.transforms import (
    BelowThresholdNoise,
    Compose,
    LogEnergyScale,
    Logit,
    SequentialFractions,
    ShapeNormalize,
    Standardize,
    Threshold,
)

DS2 = get_geometry("ds2")
# 4 layers x 4 alpha x 2 r = 32 voxels: exact divergences are cheap
TINY = Geometry("tiny-4x4x2", tuple(LayerBinning(i, (0.0, 5.0, 40.0), 4) for i in range(4)), "electron",
                DS2.readout_threshold, "DS2 showers summed into 4 x 4 x 2 bins (tests)")


def _tiny_showers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated DS2 showers summed into TINY's bins (layers 0-43 in 4 groups of 11, alpha in 4
    groups of 4, r in bins 0-2 and 3-8), thresholded."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(2e3), np.log(1e5), n))
    s = ParametricSimulator(DS2).sample(e, rng).reshape(n, 45, 16, 9)[:, :44]
    s = s.reshape(n, 4, 11, 4, 4, 9).sum((2, 4))
    s = np.stack([s[..., :3].sum(-1), s[..., 3:].sum(-1)], -1).reshape(n, TINY.n_voxels)
    s = np.where(s >= TINY.readout_threshold, s, 0.0)
    return torch.tensor(e, dtype=torch.float32), torch.tensor(s, dtype=torch.float32)


def _logdet(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det J| of fn at every row of x (float64), by autograd."""
    return torch.stack([torch.linalg.slogdet(jacobian(fn, row))[1] for row in x])


def test_log_abs_det_jacobians_match_autograd():
    torch.manual_seed(0)
    x = torch.rand(5, 6, dtype=torch.float64) * 0.9 + 0.05
    logit = Logit(1e-3)
    std = Standardize(6)
    std.fit(torch.randn(50, 6, dtype=torch.float64) * 3 + 1)
    std.double()
    for t in (logit, std, Compose([Logit(1e-3), std])):
        got = t.log_abs_det_jacobian(x)
        want = _logdet(lambda r, t=t: t(r[None])[0], x)
        assert torch.allclose(got, want, atol=1e-9), type(t).__name__
    # a mask leaves the unselected entries out
    mask = torch.tensor([True, False, True, True, False, True])
    part = logit.log_abs_det_jacobian(x, mask=mask)
    want = torch.stack([torch.linalg.slogdet(jacobian(lambda r: logit(r[None])[0], row)[mask][:, mask])[1] for row in x])
    assert torch.allclose(part, want, atol=1e-9)

    energies = torch.tensor([2e3, 3e4, 8e4], dtype=torch.float64)
    scale = LogEnergyScale(1e3, 1e5).double()
    want = torch.stack([jacobian(lambda r: scale(r[None])[0], e[None]).abs().log().reshape(()) for e in energies])
    assert torch.allclose(scale.log_abs_det_jacobian(energies), want, atol=1e-9)

    # sequential fractions: layer energies (all layers hit) -> fractions, E_inc fixed
    seq = SequentialFractions(6).double()
    e_layer = torch.rand(3, 6, dtype=torch.float64) * 1e3 + 10
    seq.fit(e_layer, energies)
    got = seq.log_abs_det_jacobian(e_layer, energies)
    want = torch.stack([torch.linalg.slogdet(jacobian(lambda r, k=k: seq(r[None], energies[k : k + 1])[0], e_layer[k]))[1]
                        for k in range(3)])
    assert torch.allclose(got, want, atol=1e-9)

    # shape normalisation with the layer energies held fixed; empty layers do not count
    norm = ShapeNormalize(TINY)
    showers = _tiny_showers(3, 1)[1].double()
    cond = norm.layer_sum(showers)
    cond[0, 1] = 0.0  # an empty layer
    got = norm.log_abs_det_jacobian(showers, cond)
    ok = norm.layer_sum.expand(cond) > 0
    want = torch.stack([torch.linalg.slogdet(jacobian(lambda r, k=k: norm(r[None], cond[k : k + 1])[0],
                                                      showers[k])[ok[k]][:, ok[k]])[1] for k in range(3)])
    assert torch.allclose(got, want, atol=1e-9)
    with pytest.raises(NotImplementedError):
        Threshold(0.1).log_abs_det_jacobian(showers)


def test_dequantisation_volume_is_the_noise_box():
    deq = BelowThresholdNoise(TINY, TINY.readout_threshold)
    showers = _tiny_showers(4, 2)[1].double()
    cond = deq.layer_sum(showers)
    f = ShapeNormalize(TINY)(showers, cond)
    zeros = (f == 0) & (deq.layer_sum.expand(cond) > 0)
    assert zeros.any()
    width = 0.999 * TINY.readout_threshold / deq.layer_sum.expand(cond)
    want = torch.where(zeros, width.clamp(max=1.0).log(), torch.zeros_like(width)).sum(1)
    assert torch.allclose(deq.log_volume(f, cond), want)
    noisy = deq(f, cond)
    assert ((noisy[zeros] > 0) & (noisy[zeros] < width[zeros])).all()
    assert torch.equal(noisy[~zeros], f[~zeros]) and torch.equal(deq.log_abs_det_jacobian(f, cond), torch.zeros(4))


@pytest.fixture(scope="module")
def tiny_cfm():
    torch.manual_seed(0)
    e, s = _tiny_showers(600, 3)
    model = build_model("cfm", TINY, CFMConfig.tiny().replace(energy_repeats=2))
    model.fit_preprocessing(e, s)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(250):
        idx = torch.randint(0, len(e), (64,))
        loss = model.loss(e[idx], s[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_exact_divergence_equals_the_hutchinson_mean_within_its_error(tiny_cfm):
    assert isinstance(tiny_cfm, HasLikelihood) and isinstance(tiny_cfm, EstimatesLikelihood)
    e, s = _tiny_showers(6, 4)
    torch.manual_seed(5)  # the same dequantisation noise in both
    exact, err0 = tiny_cfm.log_prob_estimate(e, s, ODELikelihoodConfig.exact())
    torch.manual_seed(5)
    hut, err = tiny_cfm.log_prob_estimate(e, s, ODELikelihoodConfig(estimator="hutchinson", probes=32),
                                          generator=torch.Generator().manual_seed(1))
    assert torch.equal(err0, torch.zeros(6)) and (err > 0).all()
    assert torch.isfinite(exact).all() and torch.isfinite(hut).all()
    assert ((hut - exact).abs() <= 4 * err + 1e-3).all(), (exact, hut, err)
    # a single probe is much noisier than 32: its error is larger
    torch.manual_seed(5)
    _, err1 = tiny_cfm.log_prob_estimate(e, s, ODELikelihoodConfig(estimator="hutchinson", probes=2),
                                         generator=torch.Generator().manual_seed(1))
    assert float(err1.mean()) > float(err.mean())


def test_in_distribution_showers_are_more_likely_than_odd_ones(tiny_cfm):
    e, s = _tiny_showers(16, 5)
    torch.manual_seed(0)
    lp = tiny_cfm.log_prob(e, s)
    # the same energies, deposited back to front and at large radius
    odd = s.reshape(16, 4, 4, 2).flip(1).flip(3).reshape(16, -1)
    lp_odd = tiny_cfm.log_prob(e, odd)
    assert torch.isfinite(lp).all() and torch.isfinite(lp_odd).all()
    assert float(lp.mean()) > float(lp_odd.mean()) + 10
    assert float(torch.median(lp - lp_odd)) > 0


def test_cli_scores_a_cfm_by_its_likelihood_with_errors_and_refuses_the_student(tmp_path):
    from typer.testing import CliRunner

    from caloforge.anomaly.scores import read_scores
    from caloforge.cli.main import app
    from caloforge.data import write_showers
    from caloforge.models import get_model_class, save_model

    rng = np.random.default_rng(7)
    e = np.exp(rng.uniform(np.log(2e3), np.log(8e4), 40)).astype(np.float32)
    x = ParametricSimulator(DS2).sample(e, rng).astype(np.float32)
    write_showers(tmp_path / "s.h5", e, x)
    torch.manual_seed(0)
    model = build_model("cfm", DS2, CFMConfig.tiny())
    model.fit_preprocessing(torch.from_numpy(e), torch.from_numpy(x))
    with torch.no_grad():  # zero-initialised output layers make a fresh network trivial
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape))
    save_model(model, tmp_path / "cfm")
    runner = CliRunner()
    r = runner.invoke(app, ["anomaly", "score", str(tmp_path / "cfm"), str(tmp_path / "s.h5"), "--rows", "0:5",
                            "--kind", "likelihood", "--ode-steps", "2", "--probes", "2", "-o", str(tmp_path / "n.h5"),
                            "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "standard error per shower" in r.output
    res = read_scores(tmp_path / "n.h5")
    assert res.kind == "likelihood" and res.n == 5 and np.isfinite(res.scores["nll"]).all()
    assert set(res.errors) == {"nll"} and (res.errors["nll"] > 0).all() and np.isfinite(res.errors["nll"]).all()

    student = build_model("cfm-student", DS2, get_model_class("cfm-student").Config.tiny().replace(
        teacher=str(tmp_path / "cfm")))
    save_model(student, tmp_path / "student")
    r = runner.invoke(app, ["anomaly", "score", str(tmp_path / "student"), str(tmp_path / "s.h5"),
                            "--kind", "likelihood", "-o", str(tmp_path / "x.h5")])
    assert r.exit_code == 2 and "no tractable" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["anomaly", "score", str(tmp_path / "cfm"), str(tmp_path / "s.h5"), "--probes", "0",
                            "--kind", "likelihood", "-o", str(tmp_path / "y.h5")])
    assert r.exit_code == 2 and not (tmp_path / "y.h5").exists()
