"""``caloforge compress``: fp16/int8 ONNX graphs that ``generate --onnx`` uses, ternary weights
stored in 2 bits and loaded back, magnitude pruning to the asked sparsity, one-line errors.
A tiny one-step ``cfm`` on a few simulated DS2 showers (seconds on one core)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from caloforge.cli.main import app
from caloforge.export.compress import FineTuneConfig, absmean_ternary, compress_model, parse_method, sparsity
from caloforge.geometry import get_geometry
from caloforge.models import build_model, load_model, save_model
from caloforge.models.packed import pack_codes, unpack_codes
from caloforge.simulation import simulate

torch.set_num_threads(1)
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    e, s = simulate("ds2", 48, "log-uniform:1GeV:100GeV", seed=3)
    model = build_model("cfm", get_geometry("ds2"), {"energy_width": 32, "energy_depth": 1, "shape_channels": [8, 16],
                                                     "shape_emb": 16, "steps": 1})
    model.fit_preprocessing(torch.tensor(e, dtype=torch.float32), torch.tensor(s))
    with torch.no_grad():  # zero-initialised output layers make a fresh model trivial
        gen = torch.Generator().manual_seed(3)
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return save_model(model.eval(), tmp_path_factory.mktemp("compress") / "model")


def test_packing_round_trip_and_absmean():
    codes = torch.randint(-1, 2, (7, 5, 3), generator=torch.Generator().manual_seed(0), dtype=torch.int8)
    packed = pack_codes(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == (105 + 3) // 4
    assert torch.equal(unpack_codes(packed, codes.shape), codes)
    with pytest.raises(ValueError):
        unpack_codes(packed, (7, 5, 4))
    w = torch.tensor([0.3, -0.05, 0.01, -0.6])
    q, gamma = absmean_ternary(w)
    assert gamma.item() == pytest.approx(0.24)
    assert q.tolist() == [1, 0, 0, -1]  # round(w / 0.24) clipped to [-1, 1]


def test_parse_method():
    assert parse_method("prune:0.7").sparsity == 0.7 and parse_method("FP16").name == "fp16"
    from caloforge.errors import InputError

    for bad in ("int4", "prune:1.5", "prune:x", "prune:0"):
        with pytest.raises(InputError):
            parse_method(bad)


def test_ternary_folder_is_small_and_loads(tiny, tmp_path):
    out = tmp_path / "ternary"
    summary = compress_model(tiny, "ternary", out, FineTuneConfig.tiny())
    orig = load_model(tiny)
    model = load_model(out)  # the loader unpacks the 2-bit codes
    n_ternary = 0
    for name, t in model.state_dict().items():
        if name in summary["ternary"]:
            values = torch.unique(t)  # {-gamma, 0, +gamma}
            assert len(values) <= 3 and torch.allclose(values.abs(), values.abs().max() * (values != 0))
            n_ternary += t.numel()
        elif name.endswith("weight") and t.numel() > 64:
            assert len(torch.unique(t)) > 3  # small weights, norms and biases stay float
    weights = sum(p.numel() for n, p in orig.state_dict().items() if n.endswith("weight"))
    assert n_ternary == summary["ternary_weights"] and n_ternary > 0.5 * weights
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    packed = sum(v.numel() for k, v in stored.items() if k.endswith(".__ternary_codes"))
    assert packed == sum((int(np.prod(s)) + 3) // 4 for s in summary["ternary"].values())  # 2 bits each
    assert (out / "model.safetensors").stat().st_size < (tiny / "model.safetensors").stat().st_size
    with torch.no_grad():
        s = model.sample(torch.full((4,), 2e4), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(s).all() and (s >= 0).all()


def test_prune_reaches_the_sparsity(tiny, tmp_path):
    summary = compress_model(tiny, "prune:0.6", tmp_path / "pruned", FineTuneConfig.tiny())
    model = load_model(tmp_path / "pruned")
    assert sparsity(model) == pytest.approx(0.6, abs=1e-3) == summary["sparsity"]  # the mask held in the fine-tune
    assert sparsity(load_model(tiny)) < 0.01


@pytest.mark.parametrize("method,tol", [("fp16", 1e-2), ("int8", 5e-2)])
def test_onnx_methods_generate_with_onnx(tiny, tmp_path, method, tol):
    pytest.importorskip("onnxruntime", reason="fp16/int8 graphs run in ONNX Runtime: pip install 'caloforge[onnx]'")
    pytest.importorskip("onnx", reason="fp16/int8 graphs need the onnx package")
    from caloforge.export.onnx import OnnxSampler

    out = tmp_path / method
    r = runner.invoke(app, ["compress", str(tiny), "--method", method, "-o", str(out), "--threads", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["generate", str(out), "--onnx", "--n", "4", "--energy", "fixed:20GeV", "--seed", "1",
                            "-o", str(tmp_path / "c.h5"), "--threads", "1"])
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "c.h5") as f:
        assert f.attrs["onnx_file"].endswith(f"{method}/model.onnx") and np.isfinite(f["showers"][()]).all()
    # the compressed graph against the float torch model on the same noise
    model = load_model(tiny)
    sampler = OnnxSampler(out / "model.onnx", threads=1)
    e = np.full(6, 2e4, np.float32)
    noise = sampler.noise(6, np.random.default_rng(0))
    got = sampler.run(e, *noise)
    with torch.no_grad():
        want = model.sample_from_noise(torch.from_numpy(e), *map(torch.from_numpy, noise), bf16=False).numpy()
    assert not np.allclose(got, want, rtol=1e-6, atol=0)  # a different graph ...
    np.testing.assert_allclose(got.sum(1), want.sum(1), rtol=tol)  # ... that makes about the same showers


@pytest.mark.parametrize("case", ["method", "sparsity", "copula", "exists"])
def test_bad_input_one_line_exit_2(tiny, tmp_path, case):
    model, method = str(tiny), "ternary"
    out = tmp_path / "out"
    if case == "method":
        method = "int4"
    elif case == "sparsity":
        method = "prune:1.2"
    elif case == "copula":
        model, method = "ds2-electrons", "int8"
    else:
        out.mkdir()
        (out / "keep.txt").write_text("x")
    r = runner.invoke(app, ["compress", model, "--method", method, "-o", str(out), "--finetune-steps", "1"])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    assert (out / "keep.txt").is_file() if case == "exists" else not out.exists()
