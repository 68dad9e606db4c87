"""``caloforge generate --onnx FILE`` samples from exactly the ONNX file ``caloforge export --onnx
FILE`` wrote, checked against the model; bare ``--onnx`` says which export it used. A tiny
two-step ``cfm`` on a few simulated DS2 showers (seconds on one core)."""

from __future__ import annotations

import types
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from caloforge.cli.generate import split_onnx_value
from caloforge.cli.main import app
from caloforge.geometry import get_geometry
from caloforge.models import build_model, save_model
from caloforge.simulation import simulate

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

torch.set_num_threads(1)
runner = CliRunner()
TINY = {"energy_width": 16, "energy_depth": 1, "shape_channels": [8, 16], "shape_emb": 16, "steps": 2}


def _cfm(seed: int):
    e, s = simulate("ds2", 48, "log-uniform:1GeV:100GeV", seed=seed)
    model = build_model("cfm", get_geometry("ds2"), TINY)
    model.fit_preprocessing(torch.tensor(e, dtype=torch.float32), torch.tensor(s))
    with torch.no_grad():  # zero-initialised output layers make a fresh model trivial
        gen = torch.Generator().manual_seed(seed)
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx-cli")
    out = {"a": save_model(_cfm(1), d / "model-a"), "b": save_model(_cfm(2), d / "model-b")}
    for key in ("a", "b"):
        r = runner.invoke(app, ["export", str(out[key]), "--onnx", str(d / f"{key}.onnx")])
        assert r.exit_code == 0, r.output
        out[f"{key}.onnx"] = d / f"{key}.onnx"
    return out


def _generate(model: Path, out: Path, *extra: str):
    return runner.invoke(app, ["generate", str(model), *extra, "--n", "6", "--energy", "fixed:10GeV",
                               "--seed", "3", "-o", str(out)])


def _showers(path: Path) -> np.ndarray:
    with h5py.File(path) as f:
        return f["showers"][()]


def test_split_onnx_value(tmp_path):
    assert split_onnx_value(["m", "--onnx", "--n", "3"]) == ["m", "--onnx", "--n", "3"]
    assert split_onnx_value(["m", "--onnx", "x.onnx", "--n", "3"]) == ["m", "--onnx", "--onnx-file", "x.onnx", "--n", "3"]
    assert split_onnx_value(["m", "--onnx=x.bin"]) == ["m", "--onnx", "--onnx-file", "x.bin"]
    assert split_onnx_value(["--onnx", str(tmp_path), "-o", "g.h5"]) == ["--onnx", str(tmp_path), "-o", "g.h5"]  # a folder: the model
    (tmp_path / "export.bin").write_bytes(b"")
    assert split_onnx_value(["m", "--onnx", str(tmp_path / "export.bin")])[2] == "--onnx-file"


def test_generate_uses_the_given_onnx_file(models, tmp_path):
    out = tmp_path / "gen.h5"
    r = _generate(models["a"], out, "--onnx", str(models["a.onnx"]))
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert f"sampling with ONNX Runtime from {models['a.onnx']}" in text
    assert "configuration and weights match the model" in text
    assert f"onnxruntime from {models['a.onnx']}" in text  # the throughput line names the file too
    with h5py.File(out) as f:
        assert f.attrs["backend"] == "onnxruntime"
        assert f.attrs["onnx_file"] == str(models["a.onnx"].resolve())
    # the same graph as a fresh export of the same model: the same showers for the same seed
    fresh = tmp_path / "fresh.h5"
    r = _generate(models["a"], fresh, "--onnx")
    assert r.exit_code == 0, r.output
    assert "a fresh export of the model, not kept" in " ".join(r.output.split())
    with h5py.File(fresh) as f:
        assert "onnx_file" not in f.attrs
    np.testing.assert_allclose(_showers(out), _showers(fresh), rtol=1e-5, atol=1e-5)
    # --onnx=FILE is the same
    r = _generate(models["a"], tmp_path / "eq.h5", f"--onnx={models['a.onnx']}")
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(_showers(tmp_path / "eq.h5"), _showers(out))


def test_generate_refuses_an_export_of_another_model(models, tmp_path):
    out = tmp_path / "gen.h5"
    r = _generate(models["a"], out, "--onnx", str(models["b.onnx"]))
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output
    assert str(models["b.onnx"]) in lines[0] and "does not match the model" in lines[0] and "weights" in lines[0]
    assert not out.exists()


def test_export_without_digest_is_used_and_said(models, tmp_path):
    m = onnx.load(str(models["a.onnx"]))
    keep = [(p.key, p.value) for p in m.metadata_props if p.key != "caloforge_weights_sha256"]
    del m.metadata_props[:]
    for k, v in keep:
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    old = tmp_path / "old.onnx"
    onnx.save(m, str(old))
    r = _generate(models["a"], tmp_path / "gen.h5", "--onnx", str(old))
    assert r.exit_code == 0, r.output
    assert "weights are not verifiable" in " ".join(r.output.split())


@pytest.mark.parametrize("case", ["missing", "garbage", "folder", "steps"])
def test_bad_onnx_files_one_line_exit_2(models, tmp_path, case):
    target = tmp_path / "x.onnx"
    extra: list[str] = []
    if case == "garbage":
        target.write_bytes(b"not an onnx graph at all")
    elif case == "folder":
        target = tmp_path / "dir.onnx"
        target.mkdir()
    elif case == "steps":
        target = models["a.onnx"]
        extra = ["--steps", "3"]
    out = tmp_path / "gen.h5"
    r = _generate(models["a"], out, "--onnx", str(target), *extra)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert not out.exists()


def test_check_export_names_the_difference(models):
    from caloforge.export.onnx import check_export
    from caloforge.models import load_model

    model = load_model(models["a"])
    noise = {k: int(v) for k, v in model.noise_shapes().items()}
    fake = types.SimpleNamespace(path=Path("x.onnx"), n_voxels=368, noise_shapes=noise, metadata={})
    with pytest.raises(ValueError, match="368 voxels"):
        check_export(fake, model)
    fake.n_voxels = model.geometry.n_voxels
    assert "not verifiable" in check_export(fake, model)
    fake.metadata = {"caloforge_model": "cfm-student"}
    with pytest.raises(ValueError, match="'cfm-student' model type"):
        check_export(fake, model)
    fake.metadata = {"caloforge_config": '{"energy_width": 999}'}
    with pytest.raises(ValueError, match="different configuration"):
        check_export(fake, model)
