"""Preprocessing transforms: exact round trips (float64 and float32), empty layers, fitting,
buffers in the state dict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caloforge.geometry import get_geometry
from caloforge.transforms import (
    BelowThresholdNoise,
    Compose,
    LayerSum,
    LogEnergyScale,
    Logit,
    SequentialFractions,
    ShapeNormalize,
    ShowerPreprocessing,
    Standardize,
    Threshold,
    hit_floor,
)

torch.set_num_threads(1)


def toy_showers(geometry, n: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse showers with energy-dependent depth, some empty layers (incl. a whole tail and a
    layer in the middle), a few voxels below the readout threshold."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    v = geometry.n_voxels
    layer = np.repeat(np.arange(geometry.n_layers), np.diff(geometry.layer_offsets))
    depth = 2 + 3 * np.log10(e / 1e3)
    profile = np.exp(-0.5 * ((layer[None] - depth[:, None]) / 3.0) ** 2)
    hit = rng.random((n, v)) < 0.3 * profile + 0.02
    x = e[:, None] * 1e-2 * profile * rng.lognormal(0.0, 1.0, (n, v)) * hit
    x[0, layer >= 3] = 0.0  # empty tail
    x[1, layer == 2] = 0.0  # empty layer between hit ones
    x[2, :5] = geometry.readout_threshold * 0.5  # below threshold
    return torch.tensor(e, dtype=dtype), torch.tensor(x, dtype=dtype)


@pytest.fixture(params=["ds2", "ds1-photons"])
def geometry(request):
    return get_geometry(request.param)


def test_logit_round_trip_and_range():
    t = Logit(1e-6)
    x = torch.tensor([0.0, 1e-12, 1e-6, 0.3, 1 - 1e-9, 1.0], dtype=torch.float64)
    y = t(x)
    assert torch.isfinite(y).all()
    assert y[0] == pytest.approx(-np.log(1e6 - 1), rel=1e-9)
    torch.testing.assert_close(t.inverse(y), x, atol=1e-15, rtol=0)
    x32 = x.float()
    torch.testing.assert_close(t.inverse(t(x32)), x32, atol=2e-7, rtol=0)
    assert t.inverse(torch.tensor([-40.0, 40.0])).tolist() == [0.0, 1.0]  # clamped into [0, 1]


def test_standardize_fit_with_mask():
    x = torch.randn(1000, 4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 3.0, 4.0]) + 5
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, 3] = False
    x[:, 3] = 1e6  # entirely masked: keeps mean 0 / std 1
    s = Standardize(4).double()  # float64 statistics for a float64 check
    y = s.fit(x, mask=mask)
    torch.testing.assert_close(y[:, :3].mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(y[:, :3].std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert s.mean[3] == 0 and s.std[3] == 1
    torch.testing.assert_close(s.inverse(y), x, atol=1e-9, rtol=1e-14)
    assert set(s.state_dict()) == {"mean", "std"}


def test_log_energy_scale():
    e = torch.tensor([1e3, 1e4, 1e5], dtype=torch.float64)
    t = LogEnergyScale().double()
    c = t.fit(e)
    torch.testing.assert_close(c, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(t.inverse(c), e, rtol=1e-6, atol=0)


def test_threshold_projection():
    t = Threshold(0.5)
    x = torch.tensor([0.0, 0.49, 0.5, 3.0])
    assert t(x).tolist() == [0.0, 0.0, 0.5, 3.0]
    assert torch.equal(t.inverse(t(x)), t(x))


def test_sequential_fractions_round_trip_float64(geometry):
    e, x = toy_showers(geometry, 64, 1)
    layers = LayerSum(geometry)(x)
    t = SequentialFractions(geometry.n_layers).double()
    u = t.fit(layers, e)
    assert ((u >= 0) & (u <= 1)).all()
    back = t.inverse(u, e)
    torch.testing.assert_close(back, layers, rtol=1e-12, atol=1e-12 * float(layers.sum(1).max()))
    # Empty layers come back exactly zero: the tail after the last hit layer and a middle gap.
    assert torch.equal(back[layers == 0], torch.zeros_like(back[layers == 0]))


def test_shape_normalize_empty_layers(geometry):
    e, x = toy_showers(geometry, 16, 2)
    ls = LayerSum(geometry)
    layers = ls(x)
    t = ShapeNormalize(geometry)
    f = t(x, layers)
    sums = ls(f)
    hit = layers > 0
    torch.testing.assert_close(sums[hit], torch.ones_like(sums[hit]), atol=1e-12, rtol=0)
    assert torch.equal(sums[~hit], torch.zeros_like(sums[~hit]))
    back = t.inverse(f, layers)
    torch.testing.assert_close(back, x, rtol=1e-12, atol=1e-12)
    assert (back[x == 0] == 0).all()


@pytest.mark.parametrize("dequantize", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_full_pipeline_round_trip(geometry, dtype, dequantize):
    e, x = toy_showers(geometry, 200, 3)
    pre = ShowerPreprocessing(geometry, dequantize=dequantize).to(dtype)
    pre.fit(e, x)
    e, x = e.to(dtype), x.to(dtype)
    c, y_e, y_s, layers = pre(e, x)
    assert ((c >= 0) & (c <= 1)).all()
    assert torch.isfinite(y_e).all() and torch.isfinite(y_s).all()
    back = pre.inverse(e, y_e, y_s)
    expected = pre.threshold(x)
    if dtype == torch.float64:
        torch.testing.assert_close(back, expected, rtol=1e-9, atol=1e-9)
    else:  # float32: relative 1e-4 per voxel, absolute 1e-6 of the shower's energy
        atol = 1e-6 * expected.sum(1, keepdim=True)
        assert ((back - expected).abs() <= 1e-4 * expected + atol).all()
    # Zero voxels stay exactly zero, hit ones stay hit, all-zero layers stay all-zero.
    assert torch.equal(back == 0, expected == 0)
    empty = pre.layer_sum(expected) == 0
    assert empty.any()
    assert (pre.layer_sum(back)[empty] == 0).all()


def test_below_threshold_noise():
    """Zero voxels of hit layers become noise in (0, t / E_l); the inverse reads them out as
    zero again and leaves hits (>= t) and empty layers alone."""
    g = get_geometry("ds2")
    e, x = toy_showers(g, 100, 5)
    x = Threshold(g.readout_threshold)(x)
    norm = ShapeNormalize(g)
    layers = norm.layer_sum(x)
    f = norm(x)
    t = BelowThresholdNoise(g, g.readout_threshold)
    torch.manual_seed(0)
    y = t(f, layers)
    limit = g.readout_threshold / norm.layer_sum.expand(layers)
    hit_layer = norm.layer_sum.expand(layers) > 0
    zero = (f == 0) & hit_layer
    assert zero.any() and (~hit_layer).any()
    assert ((y[zero] > 0) & (y[zero] < limit[zero])).all()
    assert torch.equal(y[f > 0], f[f > 0])  # hits untouched
    assert (y[~hit_layer] == 0).all()  # nothing to dequantise in an empty layer
    assert torch.equal(t.inverse(y, layers), f)
    assert torch.equal(BelowThresholdNoise(g, g.readout_threshold, noise=False)(f, layers), f)


def test_hit_floor_and_readout_from_it():
    """hit_floor is the quantile of the hit energies (never below the threshold); a pipeline
    with a floor reads out only voxels at or above it and keeps each layer's energy."""
    g = get_geometry("ds2")
    t = g.readout_threshold
    x = torch.zeros(4, g.n_voxels, dtype=torch.float64)
    x[:, :100] = torch.linspace(0.01, 10.0, 100, dtype=torch.float64)  # layer 0: 100 hits, some below t
    hits = x[x >= t]
    assert hit_floor(x, t, 0.0) == t
    assert abs(hit_floor(x, t, 0.1) - float(torch.quantile(hits, 0.1))) < 1e-12
    assert hit_floor(x * 1e-3, t, 0.5) == t  # all below the threshold: nothing to learn
    e = torch.full((4,), 1e3, dtype=torch.float64)
    pre = ShowerPreprocessing(g, dequantize=True).double()
    pre.fit(e, x)
    _, y_e, y_s, layers = pre(e, x)
    exact = pre.inverse(e, y_e, y_s)
    torch.testing.assert_close(exact, pre.threshold(x), rtol=1e-9, atol=1e-9)
    pre.set_hit_floor(1.0)
    cut = pre.inverse(e, y_e, y_s)
    assert (cut[(x < 1.0)] == 0).all() and (cut[x >= 1.0] > 0).all()
    torch.testing.assert_close(pre.layer_sum(cut), pre.layer_sum(exact))  # energy kept in the layer
    pre.set_hit_floor(None)
    torch.testing.assert_close(pre.inverse(e, y_e, y_s), exact)


def test_pipeline_buffers_and_features():
    g = get_geometry("ds2")
    e, x = toy_showers(g, 50, 4, torch.float32)
    pre = ShowerPreprocessing(g)
    pre.fit(e, x)
    keys = set(pre.state_dict())
    assert "condition.log_min" in keys and "shape.transforms.2.mean" in keys and "energy.transforms.0.scale" in keys
    assert not any(k.endswith("index") for k in keys)  # derived from the geometry, not saved
    _, _, _, layers = pre(e, x)
    f = pre.layer_features(e, layers)
    assert f.shape == (50, 2, g.n_layers)
    assert torch.equal(f[:, 1].bool(), layers >= g.readout_threshold)
    assert (f[:, 0][~f[:, 1].bool()] == 0).all()


def test_compose_fit_chains():
    x = torch.rand(500, 6, dtype=torch.float64)
    t = Compose([Logit(1e-3), Standardize(6)]).double()
    y = t.fit(x)
    torch.testing.assert_close(y, t(x))
    torch.testing.assert_close(t.inverse(y), x, atol=1e-12, rtol=0)


def test_pipeline_on_geant4_showers(g4_file):
    """Real DS2 showers (sparse, empty back layers, E_tot/E_inc up to ~1.5) round-trip in float32."""
    from caloforge.data import open_showers

    e, x = open_showers(g4_file).read(0, 400)
    e, x = torch.from_numpy(e).float(), torch.from_numpy(x)
    pre = ShowerPreprocessing(get_geometry("ds2"))
    pre.fit(e, x)
    c, y_e, y_s, layers = pre(e, x)
    assert torch.isfinite(y_e).all() and torch.isfinite(y_s).all()
    assert float(pre.energy.transforms[0].scale) > 1.0  # E_tot can exceed E_inc
    back = pre.inverse(e, y_e, y_s)
    expected = pre.threshold(x)
    assert torch.equal(back == 0, expected == 0)
    assert ((back - expected).abs() <= 1e-4 * expected + 1e-6 * expected.sum(1, keepdim=True)).all()
