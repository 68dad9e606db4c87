"""The conditional quantile Gaussianiser, the Gaussian-copula model (``copula``) and the
simulator with learned marginals (``sim-quantile``): closed-form fits on small samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caloforge.errors import InputError
from caloforge.geometry import Geometry, LayerBinning, get_geometry
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


# ---------------------------------------------------------------------------- the likelihood
TINY = Geometry("tiny", tuple(LayerBinning(i, (0.0, 5.0, 10.0, 20.0), 4) for i in range(3)))


def tiny_showers(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Showers on a 3-layer, 4-alpha, 3-ring detector with correlated, energy-dependent voxels."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(2e3), np.log(5e4), n))
    depth = np.log10(e / 1e3)[:, None, None, None]
    layer = np.arange(3)[None, :, None, None]
    mean = np.exp(-0.5 * (layer - depth) ** 2) * np.exp(-np.arange(3)[None, None, None, :]) * np.ones((1, 1, 4, 1))
    x = mean * rng.lognormal(0.0, 0.3, (n, 1, 1, 1)) * rng.lognormal(0.0, 0.3, (n, 3, 4, 3))
    x = x * (rng.random(x.shape) < 0.8)
    x = x / x.sum(axis=(1, 2, 3), keepdims=True) * e[:, None, None, None] * rng.normal(0.9, 0.03, (n, 1, 1, 1))
    return torch.tensor(e, dtype=torch.float32), torch.tensor(x.reshape(n, -1), dtype=torch.float32)


@pytest.fixture(scope="module")
def tiny_copula():
    e, x = tiny_showers(3000, 1)
    m = build_model("copula", TINY, {"n_energy_bins": 4, "n_knots": 33, "calibrate": False, "cov_energy_bins": 2,
                                     "likelihood_spacing": 4})
    m.fit(e, x)
    return m.double()


def test_copula_log_prob_equals_the_dense_gaussian_copula(tiny_copula):
    """The Fourier-block evaluation equals the Gaussian copula density written out in voxel
    space (full covariance, dense Cholesky), and ``part="energies"`` equals the dense marginal of
    the scalars."""
    m = tiny_copula
    e, x = tiny_showers(20, 2)
    e, x = e.double(), x.double()
    lp = m.log_prob(e, x)
    d = m.chol.shape[-1]
    n_l, n_a, n_r = TINY.shape
    for i in range(3):
        ei = e[i : i + 1]
        tot, lay, frac = m._split(x[i : i + 1])
        one = torch.ones((), dtype=torch.float64)
        z_t, d_t = m.total.log_density(tot / ei[:, None], ei, scale=one, spacing=m.config.likelihood_spacing)
        z_l, d_l = m.layers.log_density(lay / tot, ei, scale=one, spacing=m.config.likelihood_spacing)
        z_v, d_v = m.voxels.log_density(frac, lay, scale=one, spacing=m.config.likelihood_spacing)
        # the covariance of (voxels, scalars) in voxel space, from the blocks
        l0, lf = m._interp(m.chol0, ei)[0], m._interp(m.chol, ei)[0]
        modes = torch.zeros(n_a, d + 1 + n_l, n_a, d + 1 + n_l, dtype=torch.float64)
        for j in range(n_a):
            f = int(m.freq[j])
            block = l0 @ l0.T if f == 0 else (lf[f - 1] @ lf[f - 1].T)
            if f == 0:
                modes[j, :, j, :] = block
            else:
                modes[j, :d, j, :d] = block
        # modes index: (mode j, layer*ring) -> voxel (layer, alpha, ring) via the basis
        basis = m.basis.double()  # (alpha, mode)
        t = torch.zeros(n_l * n_a * n_r + 1 + n_l, n_a, d + 1 + n_l, dtype=torch.float64)
        for lyr in range(n_l):
            for a in range(n_a):
                for r in range(n_r):
                    t[(lyr * n_a + a) * n_r + r, :, lyr * n_r + r] = basis[a]
        for k in range(1 + n_l):
            t[n_l * n_a * n_r + k, 0, d + k] = 1.0
        t = t.reshape(t.shape[0], -1)
        cov = t @ modes.reshape(n_a * (d + 1 + n_l), -1) @ t.T
        z = torch.cat([z_v[0], z_t[0], z_l[0]])
        dense = torch.distributions.MultivariateNormal(torch.zeros(len(z), dtype=torch.float64), cov).log_prob(z)
        dense = dense - torch.distributions.Normal(0.0, 1.0).log_prob(z).sum()
        expected = dense + d_v.sum() + d_t.sum() + d_l.sum() - torch.log(ei[0])
        assert float(lp[i]) == pytest.approx(float(expected), abs=1e-6)
        s = slice(n_l * n_a * n_r, None)
        zs = z[s]
        dense_s = torch.distributions.MultivariateNormal(torch.zeros(len(zs), dtype=torch.float64), cov[s, s]).log_prob(zs)
        dense_s = dense_s - torch.distributions.Normal(0.0, 1.0).log_prob(zs).sum()
        got = m.log_prob(ei, x[i : i + 1], part="energies")
        assert float(got[0]) == pytest.approx(float(dense_s + d_t.sum() + d_l.sum() - torch.log(ei[0])), abs=1e-6)


@pytest.mark.parametrize("config", [{}, {"voxels_given": "incident"}])
def test_copula_energy_profile_equals_log_prob(config):
    """The cached profile ``likelihood_of_energy`` gives exactly ``log_prob`` at other energies."""
    e, x = tiny_showers(600, 3)
    m = build_model("copula", TINY, {"n_energy_bins": 3, "n_knots": 17, "calibrate": False, **config})
    m.fit(e, x)
    m = m.double()
    e2, x2 = tiny_showers(8, 4)
    profile = m.likelihood_of_energy(x2.double())
    for scale in (0.7, 1.0, 1.3):
        got = profile(e2.double() * scale)
        assert torch.allclose(got, m.log_prob(e2.double() * scale, x2.double()), rtol=0, atol=1e-9)


def test_marginal_density_is_normalised():
    """The hits' density of one class integrates to 1 - p0, with and without the smoothing."""
    rng = np.random.default_rng(5)
    v = torch.tensor(np.where(rng.random(4000) < 0.2, 0.0, rng.lognormal(-2.0, 0.5, 4000)))[:, None]
    q = ConditionalQuantileGaussianizer(classes=np.zeros(1, np.int64), n_energy_bins=1, n_knots=65, tail_z=3.0)
    q.fit(v, torch.ones(4000), scale=torch.ones(()))
    y = torch.linspace(-8.0, 2.0, 20001, dtype=torch.float64)
    for spacing in (0, 1, 4, 16):
        _, logd = q.log_density(torch.exp(y)[:, None], torch.ones(len(y)), scale=torch.ones(()), spacing=spacing)
        mass = float((torch.exp(logd[:, 0] + y) * (y[1] - y[0])).sum())  # density in v times dv/dy
        assert mass == pytest.approx(float(1 - q.p0[0, 0]), rel=2e-3), spacing


def test_copula_mle_recovers_the_energy(tiny_copula):
    """Maximum likelihood with the copula's likelihood finds the energy of the copula's own
    showers (drawn at fixed energies) without bias and with a resolution near the model's."""
    from caloforge.inference import CalibrationConfig, mle_calibrate

    m = tiny_copula
    for energy in (4e3, 2e4):
        e = torch.full((150,), energy, dtype=torch.float64)
        x = m.sample(e, generator=torch.Generator().manual_seed(int(energy)))
        r = mle_calibrate(m, x, CalibrationConfig.fast())
        ratio = r.e_hat / energy
        assert abs(float(np.median(ratio)) - 1) < 0.01, energy
        assert 0.005 < float(np.std(ratio)) < 0.06
