"""Maximum-likelihood energy calibration (:mod:`caloforge.inference.calibration`) on showers drawn
from a model whose likelihood is known exactly: a voxel-lognormal model with parameters set from
a few simulated DS1-photon showers (368 voxels; seconds on one core)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from caloforge.cli.main import app
from caloforge.data import write_showers
from caloforge.errors import InputError
from caloforge.geometry import get_geometry
from caloforge.inference import CalibrationConfig, likelihood_models, mle_calibrate, read_calibration
from caloforge.models import build_model
from caloforge.models.serialization import save_model
from caloforge.simulation import ParametricSimulator

torch.set_num_threads(1)
GEOMETRY = get_geometry("ds1-photons")


@pytest.fixture(scope="module")
def model():
    """voxel-lognormal with fixed parameters: per-voxel occupancy and log-normal energy scale
    from 200 simulated showers, plus a set energy dependence of the occupancy and of the width."""
    rng = np.random.default_rng(0)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), 200))
    showers = ParametricSimulator("ds1-photons").sample(e, np.random.default_rng(1))
    m = build_model("voxel-lognormal", GEOMETRY)
    m.fit_preprocessing(torch.tensor(e, dtype=torch.float32), torch.from_numpy(showers))
    with torch.no_grad():
        m.hit_coef[1].fill_(0.5)  # more voxels hit at higher energy
        m.log_sigma_coef[1].fill_(-0.2)  # narrower voxel energies at higher energy
    return m.eval()


def _draw(model, energies: np.ndarray, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return model.sample(torch.tensor(energies, dtype=torch.float32), generator=g).numpy()


@pytest.mark.parametrize("energy", [3e3, 3e4])
def test_mle_recovers_the_energy_within_its_uncertainty(model, energy):
    n = 200
    truth = np.full(n, energy)
    showers = _draw(model, truth, seed=int(energy))
    r = mle_calibrate(model, showers, CalibrationConfig.default(batch_size=64), e_true=truth)
    assert r.e_hat.shape == (n,) and np.isfinite(r.e_hat).all() and not r.at_boundary.any()
    assert (r.interval_low < r.e_hat).all() and (r.e_hat < r.interval_high).all()
    # an exact likelihood: the estimate's spread matches its stated uncertainty ...
    pull = (r.e_hat - truth) / r.sigma
    assert 0.75 < np.std(pull) < 1.3
    assert 0.75 < np.mean(np.diff(np.log([r.interval_low, r.e_hat, r.interval_high]), axis=0).sum(0) / 2
                           / (r.sigma / r.e_hat)) < 1.3
    # ... the bias is within the statistical uncertainty of the mean ...
    rel = r.e_hat / truth - 1
    assert abs(rel.mean()) < 4 * rel.std() / np.sqrt(n)
    # ... and the 68% intervals cover the truth about 68% of the time
    cover = np.mean((r.interval_low <= truth) & (truth <= r.interval_high))
    assert 0.55 < cover < 0.8
    assert r.e_true is not None and r.likelihood_calls > 0


def test_mle_finds_each_energy_across_the_range(model):
    truth = np.exp(np.linspace(np.log(2e3), np.log(5e4), 24))
    r = mle_calibrate(model, _draw(model, truth, seed=3), CalibrationConfig.fast())
    assert np.all(np.abs(r.e_hat - truth) < 5 * r.sigma)
    assert np.corrcoef(np.log(r.e_hat), np.log(truth))[0, 1] > 0.99


def test_result_round_trips_through_hdf5(model, tmp_path):
    truth = np.array([5e3, 2e4, 6e4])
    r = mle_calibrate(model, _draw(model, truth, seed=4), CalibrationConfig.fast(), e_true=truth)
    path = r.write(tmp_path / "calib.h5")
    back = read_calibration(path)
    np.testing.assert_allclose(back.e_hat, r.e_hat)
    np.testing.assert_array_equal(back.at_boundary, r.at_boundary)
    np.testing.assert_allclose(back.e_true, truth)
    assert back.model == "voxel-lognormal" and back.e_range == pytest.approx(r.e_range)


def test_refuses_a_model_without_likelihood_and_bad_shapes(model):
    other = build_model("sim-quantile", GEOMETRY)
    with pytest.raises(InputError, match="no likelihood.*voxel-lognormal"):
        mle_calibrate(other, np.zeros((2, GEOMETRY.n_voxels), np.float32))
    with pytest.raises(InputError, match="showers must be"):
        mle_calibrate(model, np.zeros((2, 7), np.float32))
    assert "voxel-lognormal" in likelihood_models() and "sim-quantile" not in likelihood_models()
    with pytest.raises(InputError):
        CalibrationConfig(grid_points=1)


def test_cli_calibrate_writes_the_file_and_refuses_bad_input(model, tmp_path):
    truth = np.array([4e3, 4e4, 8e3, 2e4])
    showers = tmp_path / "showers.h5"
    write_showers(showers, truth, _draw(model, truth, seed=5))
    save_model(model, tmp_path / "m")
    out = tmp_path / "calib.h5"
    runner = CliRunner()
    res = runner.invoke(app, ["calibrate", str(tmp_path / "m"), str(showers), "-o", str(out), "--preset", "fast",
                              "--threads", "1"])
    assert res.exit_code == 0, res.output
    r = read_calibration(out)
    assert len(r) == 4 and np.all(np.abs(np.log(r.e_hat / truth)) < 0.5)
    save_model(build_model("sim-quantile", GEOMETRY), tmp_path / "c")
    res = runner.invoke(app, ["calibrate", str(tmp_path / "c"), str(showers), "-o", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and "no likelihood" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["calibrate", str(tmp_path / "m"), str(showers), "-o", str(showers)])
    assert res.exit_code == 2 and "is an input" in res.output
