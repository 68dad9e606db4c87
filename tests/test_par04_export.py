"""``caloforge export MODEL --format par04``: a graph Geant4's Par04 example runs as it is. The
file runs in ONNX Runtime and, after undoing Par04's layout and energy normalisation, equals the
torch model per voxel within 1e-4 (relative); bad formats and models give one-line errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from caloforge.cli.main import app
from caloforge.export.par04 import (
    PAR04_MAX_ENERGY_MEV,
    from_par04_layout,
    par04_contract,
    par04_input,
    to_par04_layout,
)
from caloforge.geometry import get_geometry
from caloforge.models import build_model, load_model
from caloforge.models.pretrained import resolve
from caloforge.simulation import simulate

ort = pytest.importorskip("onnxruntime", reason="the Par04 export runs in ONNX Runtime: pip install 'caloforge[onnx]'")
pytest.importorskip("onnx", reason="ONNX export needs the onnx package: pip install 'caloforge[onnx]'")

torch.set_num_threads(1)
runner = CliRunner()


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _torch_showers(model, x: np.ndarray, latent: int) -> np.ndarray:
    """The model's showers (MeV, CaloChallenge layout) for Par04 input vectors ``x``."""
    e = torch.from_numpy(x[:, latent].copy()) * PAR04_MAX_ENERGY_MEV
    noise, a = [], 0
    for width in model.noise_shapes().values():
        noise.append(torch.from_numpy(x[:, a : a + width].copy()))
        a += width
    with torch.no_grad():
        return model.sample_from_noise(e, *noise, **model.graph_options()).numpy()


def _check_equal(par04_out: np.ndarray, x: np.ndarray, model, latent: int) -> None:
    ref = _torch_showers(model, x, latent)
    e = (x[:, latent] * np.float32(PAR04_MAX_ENERGY_MEV)).astype(np.float64)
    back = from_par04_layout(par04_out, model.geometry.shape) * e[:, None]
    np.testing.assert_array_equal(back == 0, ref == 0)  # the same voxels read out
    hit = ref != 0
    rel = np.abs(back[hit] - ref[hit]) / np.abs(ref[hit])
    assert rel.max() < 1e-4, rel.max()


def test_layout_is_par04s_r_phi_z_with_z_fastest():
    shape = (3, 4, 2)  # layers, alpha, r
    voxels = np.arange(24.0).reshape(1, -1)  # CaloChallenge: value = (l * 4 + a) * 2 + r
    cells = to_par04_layout(voxels, shape)
    for l in range(3):
        for a in range(4):
            for r in range(2):  # Par04 GetPositions: for r, for phi, for z -> cpt = (r * n_phi + phi) * n_z + z
                assert cells[0, (r * 4 + a) * 3 + l] == (l * 4 + a) * 2 + r
    np.testing.assert_array_equal(from_par04_layout(cells, shape), voxels)
    t = to_par04_layout(torch.from_numpy(voxels), shape)
    np.testing.assert_array_equal(t.numpy(), cells)


def test_shipped_student_exports_for_par04_and_matches_torch(tmp_path):
    out = tmp_path / "model.onnx"
    r = runner.invoke(app, ["export", "ds2-electrons-cfm", "--format", "par04", "-o", str(out), "--threads", "1"])
    assert r.exit_code == 0, r.output
    macro = dict(re.findall(r"^/Par04/inference/(\w+) (.+)$", r.output, flags=re.M))
    assert macro["setSizeLatentVector"] == "6525" and macro["setSizeConditionVector"] == "4"
    assert (macro["setNbOfRhoCells"], macro["setNbOfPhiCells"], macro["setNbOfZCells"]) == ("9", "16", "45")
    assert macro["setSizeOfRhoCells"] == "4.65 mm" and macro["setSizeOfZCells"] == "3.4 mm"
    assert macro["setModelPathName"] == str(out)

    model = load_model(resolve("ds2-electrons-cfm")).eval()
    session = _session(out)
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert inp.shape[1] == 6525 + 4 and outp.shape[1] == 6480
    rng = np.random.default_rng(4)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), 6))
    x = par04_input(e, rng.standard_normal((6, 6525)))
    cells = session.run(None, {inp.name: x})[0]
    _check_equal(cells, x, model, 6525)
    # Par04's own reading: z is the layer; the cells sum to about E_inc after Par04 multiplies by E
    layers = cells.reshape(6, 9, 16, 45).sum(axis=(1, 2)) * e[:, None]
    ref = _torch_showers(model, x, 6525).reshape(6, 45, -1).sum(-1)
    np.testing.assert_allclose(layers, ref, rtol=1e-4, atol=1e-6)
    assert 0.5 < float(np.median(cells.sum(1))) < 1.5
    # the angle and the geometry one-hot are accepted and do not change the showers
    other = par04_input(e, x[:, :6525], angle_deg=30.0, geometry_onehot=(1.0, 0.0))
    np.testing.assert_array_equal(session.run(None, {inp.name: other})[0], cells)


def test_multistep_teacher_unrolls_into_the_par04_graph(tmp_path):
    from caloforge.export.par04 import export_par04

    e, s = simulate("ds2", 32, "log-uniform:1GeV:100GeV", seed=2)
    model = build_model("cfm", get_geometry("ds2"), {"energy_width": 16, "energy_depth": 1, "shape_channels": [8, 16],
                                                     "shape_emb": 16, "steps": 2})
    model.fit_preprocessing(torch.tensor(e, dtype=torch.float32), torch.tensor(s))
    with torch.no_grad():  # zero-initialised output layers make a fresh model trivial
        gen = torch.Generator().manual_seed(2)
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    model.eval()
    contract = export_par04(model, tmp_path / "t.onnx")
    assert contract == par04_contract(model) and contract.latent == 45 + 6480
    rng = np.random.default_rng(1)
    x = par04_input(np.array([2e3, 5e4, 9e4]), rng.standard_normal((3, contract.latent)))
    _check_equal(_session(tmp_path / "t.onnx").run(None, {"input": x})[0], x, model, contract.latent)


@pytest.mark.parametrize("args", [["ds2-electrons", "--format", "par04"], ["ds2-electrons-cfm", "--format", "geant5"]])
def test_unexportable_one_line_exit_2(tmp_path, args):
    out = tmp_path / "x.onnx"
    r = runner.invoke(app, ["export", *args, "-o", str(out)])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert ("no par04 ONNX export" in lines[0]) if args[0] == "ds2-electrons" else ("unknown export format" in lines[0])
    assert not out.exists() and not list(tmp_path.iterdir())  # no partial file left behind
