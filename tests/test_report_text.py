"""The evaluation report says what it measured: the floor named after the reference's provenance,
the floor sentence only with a floor, every caveat of metrics.json in the report and on the
console, a warning when the incident-energy spectra differ, and a note when a classifier stopped
at its epoch cap. Small DS2 samples of the parametric simulator; cheap metrics only."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from caloforge.cli.main import app
from caloforge.data import write_showers
from caloforge.data.hdf5 import provenance
from caloforge.evaluation.pipeline import epoch_cap_reached, reference_source
from caloforge.evaluation.report import all_notes
from caloforge.simulation import simulate, simulate_to_file

runner = CliRunner()
N = 400


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("report-text")
    out = {
        # written as `caloforge simulate` writes: generator = the parametric simulator
        "parametric": simulate_to_file(d / "parametric.h5", "ds2", N, "log-uniform:1GeV:100GeV", seed=1),
        "same": simulate_to_file(d / "same.h5", "ds2", N, "log-uniform:1GeV:100GeV", seed=2),
        "fixed": simulate_to_file(d / "fixed.h5", "ds2", N, "fixed:50GeV", seed=3),
    }
    e, s = simulate("ds2", N, "log-uniform:1GeV:100GeV", seed=4)
    out["geant4"] = d / "geant4.h5"  # provenance as the shared Geant4 files record it
    write_showers(out["geant4"], e, s, attrs={"generator": "Geant4 11.4.0 (calzone 1.2.2)"})
    out["bare"] = d / "bare.h5"  # no attributes at all, as the official CaloChallenge files
    write_showers(out["bare"], e, s)
    return out


def _evaluate(tmp_path: Path, ref: Path, gen: Path, *extra: str) -> tuple[dict, str, str]:
    out = tmp_path / "eval"
    r = runner.invoke(app, ["evaluate", str(ref), str(gen), "-o", str(out), "--no-plots", *extra])
    assert r.exit_code == 0, r.output
    return json.loads((out / "metrics.json").read_text()), (out / "report.html").read_text(), r.output


def test_reference_source_from_provenance():
    assert reference_source({})["kind"] == "geant4"
    assert reference_source({"generator": "Geant4 11.4.0"})["floor_label"] == "Geant4 vs Geant4"
    sim = reference_source(provenance("caloforge.simulation.parametric"))
    assert sim["kind"] == "parametric" and sim["floor_label"] == "reference vs reference (parametric simulator)"
    other = reference_source({"generator": "copula"})
    assert other["kind"] == "other" and "Geant4" not in other["floor_label"] and "copula" in other["floor_label"]


def test_parametric_reference_floor_and_energy_warning(files, tmp_path):
    m, report, console = _evaluate(tmp_path, files["parametric"], files["fixed"], "--metrics", "hist", "--floor")
    assert m["reference"]["source"] == "parametric"
    assert m["floor"]["label"] == "reference vs reference (parametric simulator)"
    # never called Geant4: the summary column, the per-energy floor and the console table
    assert "Geant4 vs Geant4" not in report and "G4 vs G4" not in console
    assert "floor: reference vs reference (parametric simulator)" in report
    assert "The floor column compares two halves of the reference" in report
    assert "parametric simulator, not Geant4" in report  # next to the published (Geant4) figures
    # fixed:50GeV against log-uniform: warned in metrics.json, the report and the console
    test = m["generated"][0]["incident_energy_test"]
    assert test["test"] == "two-sample Kolmogorov-Smirnov" and test["p_value"] < 1e-3
    (warning,) = m["warnings"]
    assert "reference (log-uniform" in warning and "vs fixed (fixed:50000MeV, 50-50 GeV)" in warning
    assert f"p = {test['p_value']:.2g}" in warning
    assert html.escape(warning) in report
    assert "warning:" in console and "incident-energy spectra differ" in " ".join(console.split())


def test_same_spectrum_no_warning_and_geant4_floor(files, tmp_path):
    for ref in ("geant4", "bare"):
        m, report, console = _evaluate(tmp_path / ref, files[ref], files["same"], "--metrics", "hist", "--floor")
        assert m["reference"]["source"] == "geant4", ref
        assert m["warnings"] == [] and m["incident_energy_test"]["p_value"] > 1e-3
        assert "floor: Geant4 vs Geant4" in report and "warning:" not in report
        assert "Geant4 vs Geant4" in " ".join(console.split()) or "Geant4" in console


def test_no_floor_sentence_without_a_floor(files, tmp_path):
    m, report, _ = _evaluate(tmp_path, files["geant4"], files["same"], "--metrics", "hist")
    assert "floor" not in m
    assert "The floor column compares" not in report and "Geant4 vs Geant4" not in report
    assert "--floor" in report  # says how to get one


def test_every_caveat_in_the_report_and_epoch_cap(files, tmp_path):
    # 400 showers: FPD/KPD batch sizes are reduced (notes inside their blocks); one classifier
    # epoch: best epoch = last epoch = the cap
    m, report, console = _evaluate(
        tmp_path, files["parametric"], files["same"], "--metrics", "fpd,kpd,cls-high", "--floor",
        "--fast", "--cls-epochs", "1", "--cls-width", "16", "--cls-depth", "1", "--cls-batch-size", "100")

    def nested(x):  # every "note" string anywhere in metrics.json
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "note" and isinstance(v, str) and v:
                    yield v
                else:
                    yield from nested(v)
        elif isinstance(x, list):
            for v in x:
                yield from nested(v)

    caveats = list(nested(m)) + m["notes"]
    assert any("reduced" in c or "fewer than the recommended" in c for c in caveats)
    flat_console = " ".join(console.split())
    for c in caveats:
        assert html.escape(c) in report, c
        assert " ".join(c.split()) in flat_console, c
    assert m["cls_high"]["hit_epoch_cap"] and m["floor"]["cls_high"]["hit_epoch_cap"]
    cap = [n for n in m["notes"] if "epoch cap" in n]
    assert len(cap) == 2 and all("the AUC may not have converged" in n for n in cap)
    assert all(html.escape(n) in report for n in cap)
    assert all_notes(m)[: len(m["notes"])] == m["notes"]


def test_epoch_cap_rule():
    assert epoch_cap_reached({"best_epoch": 25, "epochs_run": 25}, 25)
    assert not epoch_cap_reached({"best_epoch": 14, "epochs_run": 24}, 25)  # early stopping
    assert not epoch_cap_reached({"best_epoch": 10, "epochs_run": 25}, 25)  # converged earlier
    assert not epoch_cap_reached({"best_epoch": 3, "epochs_run": 3}, 25)  # perfect separation: stopped
    assert not epoch_cap_reached({}, 25)


def test_energy_test_same_energies_is_silent():
    from caloforge.evaluation.pipeline import energy_spectrum_test

    e = np.exp(np.random.default_rng(0).uniform(np.log(1e3), np.log(1e5), 2000))
    assert energy_spectrum_test(e, e)["p_value"] == pytest.approx(1.0)
    assert energy_spectrum_test(e, np.full(500, 5e4))["p_value"] < 1e-10
