"""The models shipped in the package generate from a fresh install, with no training."""

import numpy as np
import pytest
from typer.testing import CliRunner

from caloforge.cli.main import app
from caloforge.data import open_showers
from caloforge.features import compute_features
from caloforge.models.pretrained import list_pretrained

runner = CliRunner()


def test_shipped_models_are_listed():
    shipped = list_pretrained()
    assert {"ds2-electrons", "ds2-electrons-cfm", "ds2-electrons-teacher", "voxel-lognormal-ds2"} <= set(shipped)
    assert shipped["ds2-electrons"]["model"] == "copula"
    assert shipped["ds2-electrons-cfm"]["model"] == "cfm-student"


@pytest.mark.parametrize("name, extra", [("ds2-electrons", []), ("ds2-electrons-cfm", []),
                                         ("ds2-electrons-teacher", ["--steps", "4"])])
def test_shipped_model_generates_physical_showers(name, extra, tmp_path):
    out = tmp_path / "out.h5"
    r = runner.invoke(app, ["generate", name, "--n", "200", "--energy", "log-uniform:1GeV:100GeV", "-o", str(out),
                            "--seed", "3", "--threads", "1", *extra])
    assert r.exit_code == 0, r.output
    f = open_showers(out)
    assert f.n == 200 and f.geometry.name == "ds2"
    assert f.attrs["seed"] == 3
    e, s = f.read()
    assert s.min() >= 0 and np.isfinite(s).all()
    feats = compute_features(e, s, f.geometry)
    # trained on Geant4 electrons: the response is near Geant4's 0.97 and showers peak early
    assert 0.85 < feats.etot_einc.mean() < 1.1
    assert 3 <= int(np.argmax(feats.e_layer.mean(0))) <= 14
