"""Tests of the parametric shower simulator (caloforge.simulation) and `caloforge simulate`."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from caloforge.cli.main import app
from caloforge.data import open_showers
from caloforge.errors import InputError
from caloforge.features import compute_features
from caloforge.geometry import Geometry, LayerBinning, get_geometry
from caloforge.simulation import (
    GENERATOR_NAME,
    ParametricSimulator,
    SimulationParams,
    detector_for,
    iter_simulate,
    simulate,
    simulate_to_file,
)

DS2 = get_geometry("ds2")
G4_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "g4_ds2_electrons_1-100GeV.h5"


def _fixed(ds2_sim: ParametricSimulator, energy_mev: float, n: int, seed: int = 0) -> np.ndarray:
    return ds2_sim.sample(np.full(n, energy_mev), np.random.default_rng(seed))


@pytest.fixture(scope="module")
def sim() -> ParametricSimulator:
    return ParametricSimulator(DS2)


# ----------------------------------------------------------------- parameters
def test_params_round_trip_through_json():
    p = SimulationParams().replace(hit_energy=8.5, lnT_a=-0.7)
    q = SimulationParams.from_json(p.to_json())
    assert q == p
    assert json.loads(p.to_json())["hit_energy"] == 8.5
    assert SimulationParams.from_dict({}) == SimulationParams()


def test_params_reject_unknown_and_bad_values():
    with pytest.raises(InputError, match="unknown simulation parameter"):
        SimulationParams.from_dict({"no_such_thing": 1.0})
    with pytest.raises(InputError):
        SimulationParams(hit_energy=-1.0)
    with pytest.raises(InputError):
        SimulationParams.from_json("[1, 2]")


# ---------------------------------------------------------- shape, determinism
@pytest.mark.parametrize("name", ["ds2", "ds3", "ds1-photons"])
def test_shape_dtype_and_non_negative(name):
    g = get_geometry(name)
    e, s = simulate(g, 20, "log-uniform:1GeV:1TeV", seed=3)
    assert e.shape == (20,) and s.shape == (20, g.n_voxels)
    assert s.dtype == np.float32
    assert np.all(np.isfinite(s)) and s.min() >= 0
    assert np.all((e >= 1e3) & (e <= 1e6))
    assert np.all(s.sum(axis=1) > 0)


def test_same_seed_is_bit_identical_whatever_batch_size_and_threads():
    e1, s1 = simulate("ds2", 300, "log-uniform:1GeV:1TeV", seed=11)
    e2, s2 = simulate("ds2", 300, "log-uniform:1GeV:1TeV", seed=11, batch_size=37, threads=2)
    assert np.array_equal(e1, e2) and np.array_equal(s1, s2)
    sizes = [e.size for e, _ in iter_simulate("ds2", 300, "fixed:5GeV", seed=1, batch_size=128)]
    assert sizes == [128, 128, 44]


def test_different_seeds_differ():
    _, s1 = simulate("ds2", 50, "fixed:10GeV", seed=1)
    _, s2 = simulate("ds2", 50, "fixed:10GeV", seed=2)
    assert not np.array_equal(s1, s2)


def test_sample_is_deterministic_for_a_given_generator_state(sim):
    energies = np.array([1e3, 2e4, 3e5])
    a = sim.sample(energies, np.random.default_rng(5))
    b = sim.sample(energies, np.random.default_rng(5))
    assert np.array_equal(a, b)


def test_bad_inputs_raise_input_errors(sim):
    with pytest.raises(InputError):
        sim.sample(np.array([1e3, -1.0]), np.random.default_rng(0))
    with pytest.raises(InputError):
        simulate("ds2", 0, "fixed:1GeV")
    with pytest.raises(InputError):
        simulate("ds2", 10, "bogus:1GeV")
    with pytest.raises(InputError, match="electromagnetic"):
        detector_for(get_geometry("ds1-pions"))


# -------------------------------------------------------------------- physics
def test_response_near_geant4_and_resolution_improves_with_energy(sim):
    ratios = {}
    for gev in (2.0, 50.0):
        s = _fixed(sim, gev * 1e3, 300, seed=1)
        ratios[gev] = s.sum(axis=1) / (gev * 1e3)
    for r in ratios.values():
        assert abs(r.mean() - 0.967) < 0.03
    res2 = ratios[2.0].std() / ratios[2.0].mean()
    res50 = ratios[50.0].std() / ratios[50.0].mean()
    # Geant4: ~ 13% / sqrt(E / GeV): 9% at 2 GeV, 2% at 50 GeV
    assert 0.06 < res2 < 0.13
    assert 0.01 < res50 < 0.035
    assert res50 < res2 / 2.5


def test_shower_maximum_moves_deeper_with_energy(sim):
    peaks = {}
    for gev in (1.0, 100.0):
        s = _fixed(sim, gev * 1e3, 200, seed=2)
        profile = s.reshape(len(s), DS2.n_layers, -1).sum(axis=2).mean(axis=0)
        peaks[gev] = int(np.argmax(profile))
    assert 3 <= peaks[1.0] <= 7  # Geant4: layer ~5
    assert peaks[100.0] >= peaks[1.0] + 3  # Geant4: layer ~10


def test_lateral_containment_within_ds2_radius():
    # the DS2 layers with one ring inside the DS2 radius and one out to 10 m
    layers = tuple(LayerBinning(i, (0.0, 41.85, 10_000.0), 1) for i in range(45))
    wide = Geometry("wide", layers)
    s = ParametricSimulator(wide).sample(np.full(200, 2e4), np.random.default_rng(3))
    inside = s.reshape(200, 45, 2)[:, :, 0].sum(axis=1)
    containment = inside.sum() / s.sum()
    assert 0.9 < containment < 0.995


def test_sparsity_and_voxel_spectrum_are_geant4_like(sim):
    s = _fixed(sim, 1e4, 200, seed=4)
    empty = np.mean(s == 0)
    assert 0.8 < empty < 0.97  # Geant4 at 10 GeV: ~91%
    nonzero = s[s > 0]
    below = np.mean(nonzero < DS2.readout_threshold)
    assert below < 0.003  # Geant4: 0.03% of non-empty voxels are below 15.15 keV
    assert 3.0 < np.median(nonzero) < 20.0  # Geant4: ~10 MeV


def test_optional_clustering_keeps_layer_energies():
    e = np.full(300, 5e3)
    plain = ParametricSimulator(DS2).sample(e, np.random.default_rng(6))
    lumpy = ParametricSimulator(DS2, SimulationParams(cluster_size=5.0)).sample(e, np.random.default_rng(6))
    assert lumpy.min() >= 0
    assert abs(lumpy.sum(1).mean() / plain.sum(1).mean() - 1) < 0.01
    # lumpier azimuthal distribution: the per-layer energy in one angular bin fluctuates more
    def wedge(s):
        return s.reshape(len(s), 45, 16, 9).sum(axis=3)[:, 5:10].std()

    assert wedge(lumpy) > wedge(plain)


# ------------------------------------------------------------------------ files
def test_simulate_to_file_writes_provenance(tmp_path):
    out = tmp_path / "sim.h5"
    seen = []
    simulate_to_file(out, "ds2", 40, "fixed:10GeV", seed=9, batch_size=16, progress=seen.append)
    assert sum(seen) == 40
    f = open_showers(out)
    e, s = f.read()
    assert s.shape == (40, 6480) and np.allclose(e, 1e4)
    attrs = f.attrs
    assert attrs["generator"] == GENERATOR_NAME and attrs["seed"] == 9
    assert SimulationParams.from_json(attrs["simulation_params"]) == SimulationParams()
    _, s_mem = simulate("ds2", 40, "fixed:10GeV", seed=9)
    assert np.array_equal(s, s_mem)


# -------------------------------------------------------------------------- CLI
def test_cli_simulate_end_to_end(tmp_path):
    out = tmp_path / "cli.h5"
    res = CliRunner().invoke(
        app, ["simulate", "--dataset", "ds2", "--n", "30", "--energy", "log-uniform:1GeV:100GeV",
              "--seed", "1", "-o", str(out), "--batch-size", "8", "--threads", "1"],
    )
    assert res.exit_code == 0, res.output
    e, s = open_showers(out).read()
    assert s.shape == (30, 6480) and np.all((e >= 1e3) & (e <= 1e5))
    with h5py.File(out, "r") as f:
        assert f.attrs["generator"] == GENERATOR_NAME


@pytest.mark.parametrize(
    "args",
    [
        ["--energy", "log-uniform:1GeV"],
        ["--energy", "bogus"],
        ["--dataset", "ds7"],
        ["--dataset", "ds1-pions"],
        ["--n", "0"],
    ],
)
def test_cli_bad_arguments_give_one_line_errors_and_no_file(tmp_path, args):
    out = tmp_path / "bad.h5"
    res = CliRunner().invoke(app, ["simulate", "-o", str(out), "--n", "5", *args])
    assert res.exit_code == 2
    assert "error" in res.output and "Traceback" not in res.output
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_cli_params_file(tmp_path):
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"hit_energy": 7.5}))
    out = tmp_path / "p.h5"
    res = CliRunner().invoke(app, ["simulate", "--n", "5", "-o", str(out), "--params", str(params)])
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["simulation_params"])["hit_energy"] == 7.5
    params.write_text(json.dumps({"no_such_parameter": 1}))
    res = CliRunner().invoke(app, ["simulate", "--n", "5", "-o", str(tmp_path / "q.h5"), "--params", str(params)])
    assert res.exit_code == 2 and "no_such_parameter" in res.output
    assert not (tmp_path / "q.h5").exists()


def test_cli_geometry_xml(tmp_path):
    xml = tmp_path / "binning.xml"
    layers = "\n".join(
        f'<Layer id="{i}" r_edges="0,10,20,40" n_bin_alpha="4"/>' for i in range(15)
    )
    xml.write_text(f'<Bins><Bin pid="11" name="electron">\n{layers}\n</Bin></Bins>')
    out = tmp_path / "xml.h5"
    res = CliRunner().invoke(app, ["simulate", "--geometry-xml", str(xml), "--n", "10", "-o", str(out)])
    assert res.exit_code == 0, res.output
    with h5py.File(out, "r") as f:
        assert f["showers"].shape == (10, 15 * 4 * 3)


def test_official_binning_files_give_the_builtin_showers(binning_dir):
    from caloforge.geometry import read_binning_xml

    xml = read_binning_xml(binning_dir / "binning_dataset_2.xml")
    _, s_xml = simulate(xml, 20, "fixed:10GeV", seed=4)
    _, s_builtin = simulate("ds2", 20, "fixed:10GeV", seed=4)
    assert np.array_equal(s_xml, s_builtin)
    photons = read_binning_xml(binning_dir / "binning_dataset_1_photons.xml")
    assert detector_for(photons).photon_start
    _, s = simulate(photons, 20, "fixed:65GeV", seed=4)
    assert s.shape == (20, 368) and s.min() >= 0


# ------------------------------------------------------------- against Geant4
@pytest.mark.skipif(not G4_FILE.is_file(), reason=f"Geant4 reference file not found at {G4_FILE}")
def test_close_to_geant4_reference():
    e_g4, s_g4 = open_showers(G4_FILE).read(stop=1500)
    s_sim = ParametricSimulator(DS2).sample(e_g4, np.random.default_rng(0))
    f_g4 = compute_features(e_g4, s_g4, DS2)
    f_sim = compute_features(e_g4, s_sim, DS2)
    for lo, hi in ((1e3, 5e3), (2e4, 1e5)):
        m = (e_g4 >= lo) & (e_g4 < hi)
        r_g4, r_sim = f_g4.etot_einc[m], f_sim.etot_einc[m]
        assert abs(r_sim.mean() - r_g4.mean()) < 0.01
        assert 0.8 < (r_sim.std() / r_g4.std()) < 1.25
        layers = np.arange(DS2.n_layers)
        depth_g4 = (f_g4.e_layer[m] @ layers / f_g4.e_tot[m]).mean()
        depth_sim = (f_sim.e_layer[m] @ layers / f_sim.e_tot[m]).mean()
        assert abs(depth_sim - depth_g4) < 0.5  # layers
        assert abs(f_sim.sparsity[m].mean() - f_g4.sparsity[m].mean()) < 0.03
