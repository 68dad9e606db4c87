"""PRDC (Naeem et al. 2020): a hand-computed case, identical samples, a shifted sample."""

from __future__ import annotations

import numpy as np
import pytest

from caloforge.evaluation.prdc import PRDCConfig, kth_neighbour_distances, pairwise_distances64, prdc

RAW = PRDCConfig(nearest_k=1, standardise=False)


def test_hand_computed_one_dimensional_case():
    # real 0,1,2,3: every nearest-neighbour radius is 1. fake 0.5 lies in the balls of 0 and 1
    # (distance 0.5 < 1), fake 10 in none. Fake radii: 9.5 each, so the ball around 0.5 holds
    # every real point.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0]])
    np.testing.assert_array_equal(kth_neighbour_distances(real, 1), [1.0, 1.0, 1.0, 1.0])
    r = prdc(real, fake, RAW)
    assert r.precision == 0.5  # 1 of 2 fake points in a real ball
    assert r.recall == 1.0  # all 4 real points in the fake ball of radius 9.5 around 0.5
    assert r.density == 1.0  # (2 balls + 0 balls) / (k=1 x 2 fake points)
    assert r.coverage == 0.5  # real 0 and 1 have a fake point closer than 1; 2 and 3 do not
    # the ball is open: a fake point at exactly the radius is outside
    on_edge = prdc(real, np.array([[-1.0], [4.0]]), RAW)
    assert on_edge.precision == 0.0 and on_edge.coverage == 0.0
    # k = 2: real radii 2, 1, 1, 2; fake 0.5 lies in the balls of 0 (0.5 < 2) and 1 (0.5 < 1),
    # not of 2 (1.5 >= 1) or 3 (2.5 >= 2); fakes 10 and 20 in none
    k2 = prdc(real, np.array([[0.5], [10.0], [20.0]]), PRDCConfig(nearest_k=2, standardise=False))
    assert k2.density == pytest.approx(2 / (2 * 3)) and k2.precision == pytest.approx(1 / 3)


def test_standardising_and_scaling_change_nothing_in_one_dimension():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0]])
    a = prdc(real, fake, RAW)
    b = prdc(real * 7.0 + 3.0, fake * 7.0 + 3.0, PRDCConfig(nearest_k=1))
    assert a == b


def test_sample_with_itself_and_same_distribution_are_near_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1500, 6))
    same = prdc(x, x, PRDCConfig(nearest_k=5))
    assert same.precision == 1.0 and same.recall == 1.0 and same.coverage == 1.0
    assert same.density == pytest.approx(1.0, abs=0.05)
    other = prdc(x, rng.normal(size=(1500, 6)), PRDCConfig(nearest_k=5))
    for v in (other.precision, other.recall, other.coverage):
        assert 0.85 < v <= 1.0
    assert other.density == pytest.approx(1.0, abs=0.15)


def test_shifted_and_collapsed_samples_are_detected():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, 6))
    shifted = prdc(x, rng.normal(size=(1500, 6)) + 2.0)
    assert shifted.precision < 0.3 and shifted.coverage < 0.3
    collapsed = prdc(x, rng.normal(size=(1500, 6)) * 0.3)  # all mass in the dense core
    assert collapsed.precision > 0.95 and collapsed.recall < 0.5 and collapsed.coverage < 0.6
    assert collapsed.density > 1.5


def test_subsets_config_and_errors():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(500, 3)), rng.normal(size=(400, 3))
    r = prdc(x, y, PRDCConfig(max_samples=100), seed=3)
    assert (r.n_real, r.n_fake) == (100, 100)
    assert r == prdc(x, y, PRDCConfig(max_samples=100), seed=3)
    assert PRDCConfig.fast().max_samples == 2000 and PRDCConfig.official().nearest_k == 5
    with pytest.raises(ValueError):
        PRDCConfig(nearest_k=0)
    with pytest.raises(ValueError):
        prdc(x, y[:, :2])
    with pytest.raises(ValueError):
        prdc(x[:3], y, PRDCConfig(nearest_k=5))


def test_float32_inputs_are_upcast_by_chunks_with_the_float64_numbers():
    """Float32 inputs are not copied whole to float64; chunking both sides changes no bit of the
    distances and no metric, against sklearn on whole float64 copies."""
    from sklearn.metrics import pairwise_distances

    rng = np.random.default_rng(5)
    x = np.log10(rng.gamma(0.3, size=(230, 40)) + 0.1).astype(np.float32)
    y = np.log10(rng.gamma(0.3, size=(170, 40)) * 1.1 + 0.1).astype(np.float32)
    whole = pairwise_distances(x.astype(np.float64), y.astype(np.float64), metric="euclidean")
    for chunk in (7, 64, 1000):
        d = pairwise_distances64(x, y, chunk)
        assert d.dtype == np.float64
        np.testing.assert_allclose(d, whole, rtol=1e-13, atol=1e-12)
    cfg = PRDCConfig.voxels(nearest_k=3)
    small = prdc(x, y, PRDCConfig.voxels(nearest_k=3, chunk_rows=16))
    assert small == prdc(x.astype(np.float64), y.astype(np.float64), cfg)
    assert small == prdc(x, y, cfg)
    assert 0 < small.density and small.n_real == 230


def test_voxel_inputs_as_the_official_script_and_in_the_pipeline(tmp_path):
    from caloforge.data import open_showers, write_showers
    from caloforge.evaluation.pipeline import EvaluationOptions, evaluate
    from caloforge.evaluation.prdc import voxel_inputs
    from caloforge.simulation import simulate

    s = np.array([[0.0, 1.0, 100.0]], dtype=np.float32)
    np.testing.assert_allclose(voxel_inputs(s), [[-1.0, 0.0, 2.0]], rtol=1e-6)  # empty voxel -> 0.1 MeV
    e1, s1 = simulate("ds2", 160, "log-uniform:1GeV:100GeV", seed=1)
    e2, s2 = simulate("ds2", 150, "log-uniform:1GeV:100GeV", seed=2)
    write_showers(tmp_path / "ref.h5", e1, s1)
    write_showers(tmp_path / "gen.h5", e2, s2 * np.float32(3.0))
    opts = EvaluationOptions(metrics=("prdc",), floor=True, prdc=PRDCConfig.voxels(max_samples=120))
    m, _ = evaluate(open_showers(tmp_path / "ref.h5"), {"gen": open_showers(tmp_path / "gen.h5")}, opts)
    assert m["prdc"]["inputs"] == "voxels" and (m["prdc"]["n_real"], m["prdc"]["n_fake"]) == (120, 120)
    assert m["floor"]["prdc"]["n_real"] + m["floor"]["prdc"]["n_fake"] == 120  # the halves of the same rows
    assert m["prdc_settings"]["inputs"] == "voxels"
    # the same computation by hand on the rows the pipeline drew (its own stream: seed + 2)
    rng = np.random.default_rng(2)
    rows_ref = np.sort(rng.choice(160, 120, replace=False))
    rows_gen = np.sort(rng.choice(150, 120, replace=False))
    from caloforge.features import apply_threshold
    from caloforge.geometry import get_geometry

    thr = get_geometry("ds2").readout_threshold
    a = voxel_inputs(apply_threshold(s1[rows_ref], thr))
    b = voxel_inputs(apply_threshold(s2[rows_gen] * np.float32(3.0), thr))
    direct = prdc(a, b, PRDCConfig.voxels(max_samples=120))
    assert m["prdc"]["precision"] == direct.precision and m["prdc"]["coverage"] == direct.coverage
