"""The conditional quantile Gaussianiser, the Gaussian-copula model (``copula``) and the
simulator with learned marginals (``sim-quantile``): closed-form fits on small samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caloforge.errors import InputError
from caloforge.geometry import get_geometry
from caloforge.models import build_model, load_model, save_model
from caloforge.models.copula import alpha_fourier_basis
from caloforge.training import train
from caloforge.transforms.quantile import ConditionalQuantileGaussianizer

torch.set_num_threads(1)
G = get_geometry("ds2")
SMALL = {"n_energy_bins": 3, "n_knots": 33}


def toy(n: int, seed: int, tilt: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse showers, alpha-symmetric unless ``tilt``: a dipole in alpha of that amplitude,
    with a shared per-shower scale so that voxels are correlated."""
    rng = np.random.default_rng(seed)
    L, A, R = G.shape
    e = np.exp(rng.uniform(np.log(2e3), np.log(5e4), n))
    depth = (3 + 2 * np.log10(e / 1e3))[:, None, None, None]
    layer = np.arange(L)[None, :, None, None]
    alpha = np.arange(A)[None, None, :, None]
    r = np.arange(R)[None, None, None, :]
    mean = np.exp(-0.5 * ((layer - depth) / 4.0) ** 2) * np.exp(-r / 1.5) * (1 + tilt * np.cos(2 * np.pi * alpha / A))
    mean = mean / mean.sum(axis=(1, 2, 3), keepdims=True) * e[:, None, None, None] * 0.95
    hit = rng.random((n, L, A, R)) < np.clip(60 * mean / e[:, None, None, None] ** 0.5, 0, 0.95)
    scale = rng.lognormal(0.0, 0.3, (n, 1, 1, 1))
    x = mean * scale * rng.lognormal(0.0, 0.4, (n, L, A, R)) * hit
    return torch.tensor(e, dtype=torch.float32), torch.tensor(x.reshape(n, -1), dtype=torch.float32)


@pytest.fixture(scope="module")
def data():
    return toy(500, 0)


@pytest.fixture(scope="module")
def copula(data):
    torch.manual_seed(0)
    m = build_model("copula", G, SMALL)
    m.fit(*data)
    return m


def test_quantile_gaussianizer_is_normal_and_round_trips(data):
    e, x = data
    q = ConditionalQuantileGaussianizer(G, n_energy_bins=4, n_knots=65)
    torch.manual_seed(1)
    z = q.fit(x, e)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    back = q.inverse(z, e)
    hit = x >= G.readout_threshold
    assert torch.equal(back > 0, hit)
    rel = (back[hit] - x[hit]).abs() / x[hit]
    assert float(rel.median()) < 1e-4  # hits come back up to the knot interpolation
    assert float(torch.quantile(rel, 0.99)) < 0.05


def test_quantile_gaussianizer_follows_the_energy(data):
    """Marginals conditional on E_inc: showers at twice the energy carry about twice the energy
    through the inverse map even though the normal scores are the same."""
    e, x = data
    q = ConditionalQuantileGaussianizer(G, n_energy_bins=4, n_knots=33)
    q.fit(x, e)
    z = torch.randn(200, G.n_voxels, generator=torch.Generator().manual_seed(0))
    lo = q.inverse(z, torch.full((200,), 5e3)).sum(1).mean()
    hi = q.inverse(z, torch.full((200,), 1e4)).sum(1).mean()
    assert 1.6 < float(hi / lo) < 2.4


def test_fourier_basis_is_orthonormal():
    f, freq = alpha_fourier_basis(16)
    assert torch.allclose(f.T @ f, torch.eye(16), atol=1e-5)
    assert freq.tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8]


def test_copula_matches_marginals_and_energy(copula, data):
    e, x = data
    s = copula.sample(e, generator=torch.Generator().manual_seed(2))
    assert s.shape == x.shape and bool((s >= 0).all())
    assert float(s[(s > 0)].min()) >= G.readout_threshold
    ratio = lambda v: (v.sum(1) / e)  # noqa: E731
    assert abs(float(ratio(s).mean() / ratio(x).mean()) - 1) < 0.03
    assert abs(float(ratio(s).std() / ratio(x).std()) - 1) < 0.25
    occupancy = lambda v: (v > 0).float().mean()  # noqa: E731
    assert abs(float(occupancy(s) / occupancy(x)) - 1) < 0.05
    # the shower-to-shower scale correlates the layers: the copula keeps the correlation
    lay = lambda v: v.reshape(len(v), 45, -1).sum(-1)[:, 4:9].sum(1) / e  # noqa: E731
    early = lambda v: v.reshape(len(v), 45, -1).sum(-1)[:, 0:4].sum(1) / e  # noqa: E731
    c_data = np.corrcoef(lay(x).numpy(), early(x).numpy())[0, 1]
    c_model = np.corrcoef(lay(s).numpy(), early(s).numpy())[0, 1]
    assert abs(c_model - c_data) < 0.2


def test_copula_is_alpha_symmetric_even_for_tilted_data():
    """Alpha symmetry by construction: on training data with a dipole in alpha the mean shower
    of the model is flat in alpha (each alpha bin within 3% of the mean over alpha)."""
    e, x = toy(400, 3, tilt=0.3)
    per_alpha = lambda v: v.reshape(len(v), 45, 16, 9).sum((0, 1, 3))  # noqa: E731
    d = per_alpha(x)
    assert float(d.max() / d.min()) > 1.5  # the data are not flat
    m = build_model("copula", G, SMALL)
    m.fit(e, x)
    s = m.sample(e.repeat(5), generator=torch.Generator().manual_seed(0))
    p = per_alpha(s)
    assert float((p / p.mean() - 1).abs().max()) < 0.03


def test_copula_save_load_same_samples(copula, tmp_path):
    save_model(copula, tmp_path / "m")
    back = load_model(tmp_path / "m")
    e = torch.full((20,), 1e4)
    a = copula.sample(e, generator=torch.Generator().manual_seed(7))
    b = back.sample(e, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert back.config == copula.config


def test_copula_trains_with_the_loop(data, tmp_path):
    """The training loop fits closed-form models and saves them without optimisation steps."""
    m = build_model("copula", G, SMALL)
    res = train(m, data, None, steps=5, run_dir=tmp_path / "run", progress=False)
    assert res.stop_reason == "fitted" and res.step == 0
    back = load_model(tmp_path / "run" / "model")
    assert torch.equal(back.chol0, m.chol0)


def test_copula_config_checked():
    with pytest.raises(InputError):
        build_model("copula", G, {"cov_energy_bins": 0})
    with pytest.raises(InputError):
        build_model("copula", G, {"nonsense": 1})
    with pytest.raises(InputError):
        build_model("copula", get_geometry("ds1-photons"), SMALL)


def test_copula_sample_options_rejected(copula):
    with pytest.raises(InputError):
        copula.sample(torch.full((2,), 1e4), steps=4)


def test_sim_quantile_takes_the_data_marginals():
    m = build_model("sim-quantile", G, SMALL)
    e = torch.exp(torch.empty(300).uniform_(8.5, 10.5, generator=torch.Generator().manual_seed(0)))
    x = m.simulate(e, torch.Generator().manual_seed(1))
    x = x * 1.3  # "data": the simulator 30% hotter
    m.fit(e, x)
    s = m.sample(e, generator=torch.Generator().manual_seed(2))
    raw = m.simulate(e, torch.Generator().manual_seed(2))
    assert abs(float(s.sum() / x.sum()) - 1) < 0.05
    assert abs(float(raw.sum() / x.sum()) - 1 / 1.3) < 0.05


def test_copula_calibration_can_be_skipped(copula):
    e = torch.full((30,), 2e4)
    cal = copula.sample(e, generator=torch.Generator().manual_seed(1))
    raw = copula.sample(e, generator=torch.Generator().manual_seed(1), calibrate=False)
    assert not torch.equal(cal, raw)
    # the calibration keeps every shower's total energy (keep_total) and its ranks
    assert torch.allclose(cal.sum(1), raw.sum(1), rtol=0.02)
