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


@pytest.mark.parametrize("name", ["ds2-electrons-teacher", "ds2-electrons-cfm"])
def test_format_1_cfm_files_migrate_on_load(name, tmp_path):
    """The shipped CFM files are format 1 (the fitted hit floor in model.json); loading moves it
    into the buffer pre.floor, the student's config loses the key, and a re-saved file is
    format 2 with the floor in the weights and the same samples."""
    import json
    from pathlib import Path

    import torch
    from safetensors import safe_open

    from caloforge.models import load_model, save_model

    path = list_pretrained()[name]["path"]
    meta = json.loads((Path(path) / "model.json").read_text())
    assert meta["format_version"] == 1 and meta["config"]["hit_floor"] == pytest.approx(0.11125379759073258)
    with safe_open(f"{path}/model.safetensors", "pt") as f:
        assert "pre.floor" not in f.keys()
    model = load_model(name)
    assert model.readout_floor() == pytest.approx(0.11125379759073258)
    assert ("hit_floor" in model.config.to_dict()) == (name == "ds2-electrons-teacher")
    save_model(model, tmp_path / "m")
    again = json.loads((tmp_path / "m" / "model.json").read_text())
    assert again["format_version"] == 2
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        assert float(f.get_tensor("pre.floor")) == pytest.approx(0.11125379759073258)
    e = torch.tensor([5e3, 5e4])
    opts = {"steps": 2} if name == "ds2-electrons-teacher" else {}
    a = model.sample(e, generator=torch.Generator().manual_seed(0), **opts)
    b = load_model(tmp_path / "m").sample(e, generator=torch.Generator().manual_seed(0), **opts)
    assert torch.equal(a, b)
