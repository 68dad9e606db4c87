"""The FPGA anomaly trigger: trigger inputs, fixed-point arithmetic, and the hls4ml C simulation
equal bit for bit to the quantised torch network (skipped without hls4ml or g++)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from caloforge.export.trigger import (
    FixedPoint,
    TriggerConfig,
    anomaly_score,
    fixed_inputs,
    train_trigger,
    trigger_features,
)
from caloforge.geometry import get_geometry
from caloforge.simulation import simulate

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained():
    g = get_geometry("ds2")
    _, s = simulate("ds2", 400, "log-uniform:2GeV:100GeV", seed=5)
    x = trigger_features(s, g)
    model, qmodel, losses = train_trigger(x[:300], TriggerConfig.tiny())
    return x, model, qmodel, losses


def test_fixed_point_rounds_half_up_and_saturates():
    t = FixedPoint(8, 2)  # 6 fractional bits, range [-2, 2 - 1/64]
    x = torch.tensor([0.5 / 64, -0.5 / 64, 1.0 / 64 * 2.4, 5.0, -5.0, 0.3])
    q = t.quantise(x)
    assert q.tolist() == [1 / 64, 0.0, 2 / 64, 2 - 1 / 64, -2.0, 19 / 64]
    assert t.hls() == "ap_fixed<8,2,AP_RND,AP_SAT>"
    y = torch.tensor([0.3], requires_grad=True)
    t.fake(y).sum().backward()
    assert y.grad is not None and y.grad.item() == 1.0  # straight-through


def test_trigger_features():
    g = get_geometry("ds2")
    _, s = simulate("ds2", 5, "fixed:10GeV", seed=1)
    x = trigger_features(s, g)
    assert x.shape == (5, 45 + 24 + 1)
    np.testing.assert_allclose((x[:, :45] ** 2).sum(1), 1.0, rtol=1e-5)  # square roots of fractions
    np.testing.assert_allclose((x[:, 45:69] ** 2).sum(1), 1.0, rtol=1e-5)
    e_dep = s.sum(1)
    np.testing.assert_allclose(x[:, 69], (np.log10(e_dep) - 3.5) / 1.5, rtol=1e-5)


def test_qat_model_is_fixed_point(trained):
    x, model, qmodel, losses = trained
    c = qmodel.config
    assert len(losses["float"]) == c.epochs and len(losses["qat"]) == c.qat_epochs
    out = qmodel.forward_fixed(x[300:])
    assert np.array_equal(out, np.round(out / c.data_t.lsb) * c.data_t.lsb)  # multiples of the LSB
    lo, hi = c.data_t.bounds
    assert out.min() >= lo and out.max() <= hi
    with torch.no_grad():  # the fake-quantised float32 forward agrees up to float32 rounding
        fake = qmodel(torch.from_numpy(x[300:])).numpy()
    assert np.mean(np.abs(fake - out) <= c.data_t.lsb) > 0.99
    assert qmodel.multiplications() == 70 * 16 + 16 * 8 + 8 * 16 + 16 * 70
    score = anomaly_score(fixed_inputs(qmodel, x[300:]), out)
    assert score.shape == (100,) and np.all(score >= 0)


def test_hls4ml_csim_is_bit_exact(trained, tmp_path):
    pytest.importorskip("hls4ml", reason="the HLS conversion needs hls4ml: pip install 'caloforge[fpga]'")
    if shutil.which("g++") is None:
        pytest.skip("hls4ml's C simulation is built with g++, which is not installed")
    from caloforge.export.trigger import convert_to_hls, hls_config

    x, _, qmodel, _ = trained
    cfg = hls_config(qmodel)
    assert cfg["Model"]["ReuseFactor"] == qmodel.config.reuse_factor
    hls = convert_to_hls(qmodel, tmp_path / "prj")
    hls.compile()
    inputs = np.ascontiguousarray(x[300:])
    got = hls.predict(inputs)
    np.testing.assert_array_equal(np.asarray(got, np.float64).reshape(inputs.shape), qmodel.forward_fixed(inputs))


def test_trigger_command(tmp_path):
    from typer.testing import CliRunner

    from caloforge.cli.main import app
    from caloforge.data import write_showers
    from caloforge.export.trigger import load_trigger

    e, s = simulate("ds2", 200, "log-uniform:2GeV:100GeV", seed=7)
    write_showers(tmp_path / "bkg.h5", e, s)
    # a crude "signal": each shower plus a second one shifted by four alpha bins
    two = s.reshape(-1, 45, 16, 9) + np.roll(s.reshape(-1, 45, 16, 9), 4, axis=2)
    write_showers(tmp_path / "sig.h5", 2 * e, two.reshape(len(s), -1))
    runner = CliRunner()
    out = tmp_path / "trig"
    r = runner.invoke(app, ["trigger", str(tmp_path / "bkg.h5"), "--signal", str(tmp_path / "sig.h5"), "-o", str(out),
                            "--no-hls", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "anomaly AUC: float" in r.output and "2,496 multiplications" in r.output
    model = load_trigger(out)
    assert model.quantised and model.multiplications() == 2496
    r = runner.invoke(app, ["trigger", str(tmp_path / "bkg.h5"), "-o", str(out), "--no-hls"])
    assert r.exit_code == 2 and "not an empty folder" in r.output and "Traceback" not in r.output


def test_distilled_score_follows_its_teacher(trained):
    from scipy.stats import spearmanr

    from caloforge.export.trigger import distill_score

    x, model, _, _ = trained

    def teacher(f: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return anomaly_score(f, model(torch.from_numpy(f)).numpy())

    student = distill_score(x[:300], teacher, TriggerConfig(hidden=(16,), epochs=60, qat_epochs=10, batch_size=32),
                            noise_levels=(0.0, 0.05))
    held_out = x[300:]
    rho = spearmanr(student.score(held_out, fixed=False), teacher(held_out)).statistic
    assert rho > 0.5, rho  # the small network ranks unseen showers as its teacher does
    assert student.quantised_model.multiplications() == 70 * 16 + 16
    assert np.all(student.score(held_out) > 0)
