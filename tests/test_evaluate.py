"""End-to-end tests of `caloforge evaluate` (the pipeline, metrics.json and the report)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from caloforge.cli.main import app
from caloforge.data import write_showers
from caloforge.geometry import get_geometry

runner = CliRunner()


def toy_showers(n: int, seed: int, scale: float = 1.0, geometry: str = "ds1-photons", radius: float = 40.0):
    """Toy showers: a smooth mean profile times gamma fluctuations, some voxels empty."""
    g = get_geometry(geometry)
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    profile = np.exp(-g.voxel_r / radius) * (1 + g.voxel_layer) ** -0.5
    profile /= profile.sum()
    s = e[:, None] * profile[None] * rng.gamma(2.0, 0.5, (n, g.n_voxels))
    s[rng.random((n, g.n_voxels)) < 0.3] = 0.0
    return e.astype(np.float32), (scale * s).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    write_showers(d / "ref.h5", *toy_showers(1500, 1))
    write_showers(d / "same.h5", *toy_showers(1500, 2))
    write_showers(d / "scaled.h5", *toy_showers(1500, 3, scale=1.3, radius=25.0))  # mis-scaled, narrower
    return d


def test_evaluate_detects_mis_scaled_sample(files, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, [
        "evaluate", str(files / "ref.h5"), str(files / "same.h5"), str(files / "scaled.h5"), "-o", str(out),
        "--metrics", "hist,fpd,kpd,cls-high,cls-low", "--floor", "--cls-epochs", "25", "--cls-width", "64", "--cls-depth", "2",
        "--cls-batch-size", "100", "--no-plots",
    ])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["dataset"] == "ds1-photons" and m["n_reference"] == 1500
    same, scaled = m["generated"]
    assert same["name"] == "same" and scaled["n_generated"] == 1500
    for block in (same, scaled, m["floor"]):
        sp = block["separation_power"]
        assert len(sp["e_layer"]) == 5 and len(sp["ec_eta"]) == 2
        for key in ("fpd", "kpd", "cls_low", "cls_high"):
            assert key in block
    # every metric family sees the scale error; the resample stays near the floor
    assert scaled["separation_power"]["etot_einc"] > 10 * max(same["separation_power"]["etot_einc"], 1e-3)
    assert scaled["separation_power"]["voxel_energy"] > same["separation_power"]["voxel_energy"]
    assert scaled["fpd"]["value"] > same["fpd"]["value"] + 3 * scaled["fpd"]["error"]
    assert scaled["kpd"]["value"] > same["kpd"]["value"]
    assert scaled["cls_high"]["auc"] > 0.9
    assert same["cls_high"]["auc"] < 0.62 and m["floor"]["cls_high"]["auc"] < 0.62
    # per-energy-bin view: decades 1-10 and 10-100 GeV
    assert [b["e_min_gev"] for b in scaled["energy_bins"]] == pytest.approx([1.0, 10.0], rel=1e-3)
    assert all(b["etot_einc_mean_ratio"] > 1.2 for b in scaled["energy_bins"])
    assert all(abs(b["etot_einc_mean_ratio"] - 1) < 0.02 for b in same["energy_bins"])
    report = (out / "report.html").read_text()
    assert "floor: Geant4 vs Geant4" in report and "scaled" in report  # toy files carry no provenance


def test_single_sample_schema_and_plots(files, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["evaluate", str(files / "ref.h5"), str(files / "scaled.h5"), "-o", str(out),
                            "--metrics", "hist"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    # the documented single-sample layout: block keys at the top level
    assert m["n_generated"] == 1500 and "separation_power" in m and "fpd" not in m
    assert set(m["separation_power"]) == {
        "etot_einc", "e_layer", "ec_eta", "ec_phi", "ec_r", "width_eta", "width_phi", "width_r", "sparsity",
        "voxel_energy", "etot_einc_discrete"}  # the last: DS1 only, one per incident energy 2^8..2^22 MeV
    assert len(m["separation_power"]["etot_einc_discrete"]) == 15
    pngs = list((out / "plots").glob("*.png"))
    assert len(pngs) >= 10 and all(p.stat().st_size > 1000 for p in pngs)
    assert (out / "report.html").read_text().count("data:image/png;base64") == len(pngs)


def test_evaluate_bad_inputs(files, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["evaluate", str(files / "ref.h5"), str(tmp_path / "absent.h5"), "-o", str(out)])
    assert r.exit_code == 2 and "absent.h5" in r.output and "Traceback" not in r.output
    assert not (out / "metrics.json").exists()
    other = tmp_path / "other.h5"
    write_showers(other, *toy_showers(20, 0, geometry="ds1-pions"))
    r = runner.invoke(app, ["evaluate", str(files / "ref.h5"), str(other), "-o", str(out)])
    assert r.exit_code == 2 and "other.h5" in r.output
    r = runner.invoke(app, ["evaluate", str(files / "ref.h5"), str(files / "same.h5"), "-o", str(out),
                            "--metrics", "hist,magic"])
    assert r.exit_code == 2 and "magic" in r.output
    assert not (out / "metrics.json").exists()


def test_evaluate_prdc_and_multiclass_with_floor(files, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, [
        "evaluate", str(files / "ref.h5"), str(files / "same.h5"), str(files / "scaled.h5"), "-o", str(out),
        "--metrics", "prdc,multiclass", "--floor", "--cls-epochs", "20", "--cls-width", "64", "--cls-depth", "2",
        "--cls-batch-size", "100", "--no-plots", "--threads", "1",
    ])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    same, scaled = m["generated"]
    for block in (same, scaled, m["floor"]):
        assert set(block["prdc"]) >= {"precision", "recall", "density", "coverage", "nearest_k"}
        assert "multiclass_log_posterior" in block
    assert same["prdc"]["coverage"] > scaled["prdc"]["coverage"] + 0.3
    assert same["prdc"]["precision"] > scaled["prdc"]["precision"] + 0.3
    mc = m["multiclass"]
    assert mc["classes"] == ["reference", "floor: reference half B", "same", "scaled"]
    assert mc["chance"] == pytest.approx(np.log(1 / 4))
    # the mis-scaled sample takes the least posterior of the reference's showers; the others near chance
    lp = mc["log_posterior"]
    assert scaled["multiclass_log_posterior"] < min(v for k, v in lp.items() if k != "scaled") - 0.03
    assert max(abs(v - mc["chance"]) for k, v in lp.items() if k != "scaled") < 0.05
    assert m["floor"]["multiclass_log_posterior"] == mc["log_posterior"]["floor: reference half B"]
    report = (out / "report.html").read_text()
    assert "Precision, recall, density, coverage" in report and "Multiclass classifier" in report
    assert "multiclass" in r.output and "coverage" in r.output


def test_multiclass_sample_named_reference_keeps_its_own_class(files, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, [
        "evaluate", str(files / "ref.h5"), str(files / "scaled.h5"), "-o", str(out), "--names", "reference",
        "--metrics", "multiclass", "--cls-epochs", "2", "--cls-width", "16", "--cls-depth", "1", "--no-plots",
        "--threads", "1",
    ])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["multiclass"]["classes"] == ["reference", "reference (sample)"]
    assert m["generated"][0]["multiclass_log_posterior"] == m["multiclass"]["log_posterior"]["reference (sample)"]


def test_threaded_reading_gives_the_same_sample(files):
    # two threads decompress the chunks and compute the features of row slices in parallel; the
    # features, maxima, counts and kept voxels must equal the one-thread pass bit for bit
    import torch

    from caloforge.data import open_showers
    from caloforge.evaluation.pipeline import gather

    before = torch.get_num_threads()
    f = open_showers(files / "scaled.h5")
    edges = np.logspace(-1, 4, 50)
    try:
        torch.set_num_threads(1)
        one = gather(f, "x", 1.0, voxel_edges=edges, keep_voxels_above=1.0)
        torch.set_num_threads(2)
        two = gather(f, "x", 1.0, voxel_edges=edges, keep_voxels_above=1.0)
    finally:
        torch.set_num_threads(before)
    for k, v in one.features.as_dict().items():
        assert np.array_equal(v, two.features.as_dict()[k], equal_nan=True), k
    assert one.voxel_max == two.voxel_max and np.array_equal(one.voxel_counts, two.voxel_counts)
    assert one.voxel_counts.sum() > 0 and np.array_equal(one.mean_shower, two.mean_shower)
    assert all(np.array_equal(a, b) for a, b in zip(one.kept_voxels, two.kept_voxels, strict=True))
