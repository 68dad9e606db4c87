"""Training infrastructure: the voxel-lognormal baseline, the loop (determinism, checkpoints,
exact resume, a SIGKILL in the middle, torchrun data parallelism) and the train/generate/export/
models commands. Everything runs on a tiny synthetic ds1-photons sample (368 voxels)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from caloforge.cli.main import app
from caloforge.data import read_showers, write_showers
from caloforge.errors import InputError
from caloforge.geometry import get_geometry
from caloforge.models import available_models, build_model, load_model
from caloforge.training import TrainResult, lr_factor, train

torch.set_num_threads(1)

GEOMETRY = get_geometry("ds1-photons")
V = GEOMETRY.n_voxels
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Showers whose occupancy and voxel energies depend on the incident energy."""
    rng = np.random.default_rng(seed)
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e6), n)).astype(np.float32)
    x = np.log(e / 3e4)[:, None]
    occupancy = 1.0 / (1.0 + np.exp(-(np.linspace(-2.0, 1.5, V)[None] + 0.4 * x)))
    hit = rng.random((n, V)) < occupancy
    energy = e[:, None] * 2e-2 * np.exp(rng.normal(np.linspace(-2.0, 0.0, V)[None] + 0.1 * x, 0.7, (n, V)))
    return e, (energy * hit).astype(np.float32)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    write_showers(d / "train.h5", *synthetic(600, 1))
    write_showers(d / "ref.h5", *synthetic(120, 2))
    return {"train": d / "train.h5", "ref": d / "ref.h5"}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_files) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    model = build_model("voxel-lognormal", GEOMETRY)
    e, s = read_showers(data_files["train"])
    train(model, (e[:500], s[:500]), (e[500:], s[500:]), steps=60, batch_size=64, lr=1e-2, run_dir=run, progress=False)
    return run


def _fit(steps=40, seed=0, run_dir=None, data=None, **kw) -> tuple[torch.nn.Module, TrainResult]:
    model = build_model("voxel-lognormal", GEOMETRY)
    e, s = data if data is not None else synthetic(400, 5)
    opts = dict(steps=steps, batch_size=32, lr=2e-2, seed=seed, run_dir=run_dir, progress=False)
    opts.update(kw)
    return model, train(model, (e, s), **opts)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _one_line_error(result) -> str:
    text = result.stderr.strip()
    lines = [l for l in text.splitlines() if "error" in l]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# ----------------------------------------------------------------------- model
def test_voxel_lognormal_is_registered_and_genuine(tmp_path):
    assert "voxel-lognormal" in available_models()
    e, s = synthetic(300, 3)
    et, st = torch.from_numpy(e), torch.from_numpy(s)
    model = build_model("voxel-lognormal", GEOMETRY)
    model.fit_preprocessing(et, st)
    lp = model.log_prob(et, st)
    assert lp.shape == (300,) and torch.isfinite(lp).all()
    x = model.sample(et, generator=torch.Generator().manual_seed(0))
    assert x.shape == (300, V) and x.dtype == torch.float32 and (x >= 0).all()
    nonzero = x[x > 0]
    assert (nonzero >= GEOMETRY.readout_threshold).all()  # truncated at the readout threshold
    # occupancy after preprocessing already matches the data's (above threshold)
    occ_data = (st >= GEOMETRY.readout_threshold).float().mean()
    assert abs((x > 0).float().mean() - occ_data) < 0.05
    # same generator seed, same showers
    y = model.sample(et, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, y)
    # save/load round trip through the registry
    from caloforge.models import save_model

    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert torch.allclose(again.log_prob(et, st), lp.detach())
    with pytest.raises(InputError, match="unknown key .bogus."):
        build_model("voxel-lognormal", GEOMETRY, {"bogus": 1})


def test_voxel_lognormal_log_prob_is_normalised():
    """Voxels are independent, so exp(log p(x with voxel k = E) - log p(x with voxel k = 0))
    integrated over E from the threshold to the cap must be P(hit) / P(miss) of voxel k."""
    e, s = synthetic(200, 4)
    model = build_model("voxel-lognormal", GEOMETRY)
    model.fit_preprocessing(torch.from_numpy(e), torch.from_numpy(s))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
    e_inc = torch.tensor([2e4])
    for k in (0, 100, 300):
        hit_logit = (model.hit_base + model._features(e_inc) @ model.hit_coef)[0, k].detach()
        top = 2e4 * float(torch.exp(model.log_upper))  # hit energies are capped here
        grid = torch.logspace(np.log10(GEOMETRY.readout_threshold), np.log10(top), 8001, dtype=torch.float64)
        showers = torch.zeros(len(grid), V)
        showers[:, k] = grid.float()
        base = model.log_prob(e_inc, torch.zeros(1, V)).detach().double()
        lp = model.log_prob(e_inc.expand(len(grid)), showers).detach().double()
        density = torch.exp(lp - base) * grid  # per unit log E
        integral = torch.trapezoid(density, torch.log(grid))
        assert float(integral) == pytest.approx(float(torch.exp(hit_logit)), rel=2e-3)
        # sampling agrees with the density: hit fraction and mean log energy of the hits
        x = model.sample(e_inc.expand(8000), generator=torch.Generator().manual_seed(k))[:, k].double()
        p_hit = float(torch.sigmoid(hit_logit))
        assert float((x > 0).double().mean()) == pytest.approx(p_hit, abs=4 * (p_hit / 8000) ** 0.5 + 1e-3)
        mean_log = float(torch.trapezoid(density * torch.log(grid), torch.log(grid)) / integral)
        assert float(torch.log(x[x > 0]).mean()) == pytest.approx(mean_log, abs=0.1)


def test_lr_schedule_warms_up_and_decays():
    f = [lr_factor(s, 100, 10, 0.01) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False)) and f[-1] < 0.02


# ---------------------------------------------------------------------- the loop
def test_training_decreases_the_loss():
    e, s = synthetic(400, 5)
    et, st = torch.from_numpy(e), torch.from_numpy(s)
    model = build_model("voxel-lognormal", GEOMETRY)
    model.fit_preprocessing(et, st)
    before = float(model.loss(et, st).detach())
    model, result = _fit(steps=150, data=(e, s), val_every=50, ema_decay=0.9)
    after = float(model.loss(et, st).detach())  # the model holds the EMA weights now
    assert result.completed and result.step == 150
    assert after < before - 0.01
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.val_loss is None  # no validation data given


def test_same_seed_same_weights_different_seed_differs():
    m1, _ = _fit(seed=7)
    m2, _ = _fit(seed=7)
    m3, _ = _fit(seed=8)
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    _assert_same(s1, s2)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_resume_gives_the_uninterrupted_weights(tmp_path):
    data = synthetic(300, 6)
    _, full = _fit(steps=50, run_dir=tmp_path / "full", data=data)
    _, part = _fit(steps=50, run_dir=tmp_path / "split", data=data, stop_at=20)
    assert part.stop_reason == "stop_at" and part.step == 20 and not part.completed
    _, rest = _fit(steps=50, run_dir=tmp_path / "split", data=data, resume=True)
    assert rest.resumed_from == 20 and rest.step == 50 and rest.completed
    _assert_same(_weights(full.model_dir), _weights(rest.model_dir))
    ckpt = json.loads((tmp_path / "split" / "checkpoint" / "checkpoint.json").read_text())
    assert ckpt["step"] == 50
    log = [json.loads(l) for l in (tmp_path / "split" / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log]
    assert steps == sorted(set(steps)) and steps[-1] == 50
    # a finished run refuses a fresh start over it, and resume needs a checkpoint
    from caloforge.errors import InputError

    with pytest.raises(InputError, match="already holds a training run"):
        _fit(steps=5, run_dir=tmp_path / "full", data=data)
    with pytest.raises(InputError, match="no checkpoint"):
        _fit(steps=5, run_dir=tmp_path / "none", data=data, resume=True)


def test_run_dir_layout_and_no_pickles(trained_run):
    assert (trained_run / "config.json").is_file() and (trained_run / "train_log.jsonl").is_file()
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["model"] == "voxel-lognormal" and cfg["training"]["steps"] == 60
    files = [p for p in trained_run.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".jsonl", ".safetensors"}, files
    for p in files:
        head = p.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", f"{p} looks like a pickle / torch zip"
    ckpt_dir = trained_run / "checkpoint"
    state = json.loads((ckpt_dir / "checkpoint.json").read_text())
    tensors = load_file(str(ckpt_dir / state["tensors"]))
    assert state["step"] == 60 and state["ema"]["num_updates"] == 60
    assert any(k.startswith("optimizer.") and k.endswith("exp_avg") for k in tensors)
    assert any(k.startswith("ema.") for k in tensors) and any(k.startswith("model.") for k in tensors)
    assert tensors["rng.torch.rank0"].dtype == torch.uint8
    assert state["scheduler"]["last_epoch"] == 60 and "numpy" in state["rng"]
    meta = json.loads((trained_run / "model" / "model.json").read_text())
    assert meta["training"]["step"] == 60
    # the saved model holds the EMA weights of the checkpoint
    for k, v in _weights(trained_run / "model").items():
        if f"ema.{k}" in tensors:
            assert torch.equal(v, tensors[f"ema.{k}"])


def test_sigkill_then_resume_finishes_with_the_same_weights(tmp_path, data_files):
    run = tmp_path / "run"
    steps = 800
    args = [
        sys.executable, "-m", "caloforge", "train", "--model", "voxel-lognormal", "--data", str(data_files["train"]),
        "-o", str(run), "--steps", str(steps), "--batch-size", "16", "--lr", "1e-2", "--val-fraction", "0",
        "--checkpoint-every", "0.2", "--threads", "1", "--seed", "4", "--no-progress",
    ]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt = run / "checkpoint" / "checkpoint.json"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail(f"training ended before it could be killed:\n{proc.stdout.read().decode()}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads(ckpt.read_text())["step"]
    assert 0 < killed_at < steps and not (run / "model").exists()

    done = subprocess.run([*args, "--resume"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    state = json.loads(ckpt.read_text())
    assert state["step"] == steps
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["resumes"][0]["step"] >= killed_at
    log_steps = [json.loads(l)["step"] for l in (run / "train_log.jsonl").read_text().splitlines()]
    assert log_steps == sorted(set(log_steps)) and log_steps[-1] == steps
    assert json.loads((run / "model" / "model.json").read_text())["training"]["step"] == steps
    # identical to an uninterrupted run (same data, seed and settings)
    model = build_model("voxel-lognormal", GEOMETRY)
    result = train(model, read_showers(data_files["train"]), steps=steps, batch_size=16, lr=1e-2, seed=4,
                   run_dir=tmp_path / "ref", progress=False)
    _assert_same(_weights(result.model_dir), _weights(run / "model"))


def _torchrun() -> list[str] | None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        return None
    exe = Path(sys.executable).with_name("torchrun")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("torchrun")
    return [found] if found else None


def test_torchrun_two_processes(tmp_path, data_files):
    launcher = _torchrun()
    if launcher is None:
        pytest.skip("torchrun / gloo backend not available")
    run = tmp_path / "ddp"
    args = [
        *launcher, "--standalone", "--nproc_per_node=2", "-m", "caloforge", "train", "--model", "voxel-lognormal",
        "--data", str(data_files["train"]), "-o", str(run), "--steps", "30", "--batch-size", "64", "--lr", "1e-2",
        "--val-fraction", "0.1", "--threads", "1", "--no-progress",
    ]
    done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (run / "model" / "model.safetensors").is_file()
    state = json.loads((run / "checkpoint" / "checkpoint.json").read_text())
    assert state["step"] == 30 and state["world_size"] == 2
    tensors = load_file(str(run / "checkpoint" / state["tensors"]))
    assert {"rng.torch.rank0", "rng.torch.rank1"} <= tensors.keys()  # both ranks' RNG states
    assert done.stderr.count("trained 30 steps") == 1  # only rank 0 reports
    # two shards of a global batch of 64 train like one process on the whole batch
    from caloforge.training.data import split_fraction

    e, s = read_showers(data_files["train"])
    tr, va = split_fraction(e, s, 0.1, 0)
    model = build_model("voxel-lognormal", GEOMETRY)
    train(model, tr, va, steps=30, batch_size=64, lr=1e-2, progress=False)
    ddp = _weights(run / "model")
    for k, v in model.state_dict().items():
        assert torch.allclose(ddp[k], v, atol=1e-4, rtol=1e-4), k


# ------------------------------------------------------------------------ CLI
runner = CliRunner()


def test_generate_from_run_with_reference_energies(tmp_path, trained_run, data_files):
    out = tmp_path / "gen.h5"
    r = runner.invoke(app, ["generate", str(trained_run), "--energies-from", str(data_files["ref"]),
                            "--seed", "11", "--batch-size", "50", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    assert "showers/s" in r.stdout and "ms/shower" in r.stdout
    ref_e, _ = read_showers(data_files["ref"])
    e, s = read_showers(out)
    np.testing.assert_array_equal(e, ref_e.astype(np.float32))
    assert s.shape == (120, V) and (s >= 0).all() and (s > 0).any()
    with h5py.File(out) as f:
        assert f.attrs["generator"] == "voxel-lognormal" and f.attrs["seed"] == 11
        assert Path(f.attrs["model_path"]) == (trained_run / "model").resolve()
    # same seed, same file contents; the model folder works as well as the run folder
    out2 = tmp_path / "gen2.h5"
    r = runner.invoke(app, ["generate", str(trained_run / "model"), "--energies-from", str(data_files["ref"]),
                            "--seed", "11", "--batch-size", "50", "-o", str(out2)])
    assert r.exit_code == 0, r.stderr
    np.testing.assert_array_equal(read_showers(out2)[1], s)


def test_generate_with_energy_spec(tmp_path, trained_run):
    out = tmp_path / "fixed.h5"
    r = runner.invoke(app, ["generate", str(trained_run), "--n", "40", "--energy", "fixed:10GeV", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    e, s = read_showers(out)
    assert len(e) == 40 and np.all(e == 1e4)
    with h5py.File(out) as f:
        assert "seed" in f.attrs and "fixed" in f.attrs["energies"]


def test_generate_n_alone_uses_training_range(tmp_path, trained_run, data_files):
    """``--n N`` without --energy: log-uniform over the incident energies the model saw."""
    out = tmp_path / "default.h5"
    r = runner.invoke(app, ["generate", str(trained_run), "--n", "300", "-o", str(out), "--seed", "3"])
    assert r.exit_code == 0, r.stderr
    e, _ = read_showers(out)
    e_train, _ = read_showers(data_files["train"])
    assert len(e) == 300 and len(np.unique(e)) == 300
    lo, hi = e_train.min(), e_train.max()
    assert (e >= 0.8 * lo).all() and (e <= 1.25 * hi).all()
    assert np.quantile(e, 0.1) < np.sqrt(lo * hi) < np.quantile(e, 0.9)  # spread over the range
    with h5py.File(out) as f:
        assert "log-uniform" in f.attrs["energies"]


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "{run}", "--n", "5", "--energy", "bogus:1GeV", "-o", "{out}"],
        ["generate", "{run}", "--n", "5", "--energy", "log-uniform:5GeV:1GeV", "-o", "{out}"],
        ["generate", "{missing}", "--n", "5", "--energy", "fixed:1GeV", "-o", "{out}"],
        ["generate", "no-such-model", "--n", "5", "--energy", "fixed:1GeV", "-o", "{out}"],
        ["generate", "{run}", "--energies-from", "{missing}", "-o", "{out}"],
        ["generate", "{run}", "-o", "{out}"],
        ["generate", "{run}", "--n", "5", "--energy", "fixed:1GeV", "--steps", "4", "-o", "{out}"],
        ["train", "--model", "voxel-lognormal", "--data", "{missing}", "-o", "{out}"],
        ["train", "--model", "no-such-model", "--data", "{train}", "-o", "{out}"],
        ["train", "--model", "voxel-lognormal", "--data", "{train}", "--max-time", "soon", "-o", "{out}"],
        ["train", "--resume", "-o", "{out}"],
        ["train", "--model", "voxel-lognormal", "--data", "{train}", "-o", "{run}"],
    ],
)
def test_bad_inputs_exit_2_with_one_line_and_no_output(tmp_path, trained_run, data_files, argv):
    out = tmp_path / "out.h5"
    subs = {"run": str(trained_run), "out": str(out), "missing": str(tmp_path / "missing.h5"),
            "train": str(data_files["train"])}
    argv = [a.format(**subs) for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    _one_line_error(r)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no stray temporary files


def test_export_and_models_commands(tmp_path, trained_run):
    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "voxel-lognormal" in r.stdout
    listing = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    assert "voxel-lognormal" in listing["registered"]
    out = tmp_path / "m.onnx"
    r = runner.invoke(app, ["export", str(trained_run), "--onnx", str(out)])
    if r.exit_code == 0:  # the model has an ONNX export
        assert out.is_file() and out.stat().st_size > 0
    else:  # otherwise a clear one-line message and no file
        assert r.exit_code == 2
        assert "onnx" in _one_line_error(r).lower()
        assert not out.exists()


def test_pretrained_resolution(tmp_path, trained_run):
    from caloforge.errors import InputError
    from caloforge.models.pretrained import list_pretrained, resolve

    assert resolve(trained_run) == trained_run / "model"
    assert resolve(trained_run / "model") == trained_run / "model"
    with pytest.raises(InputError, match="shipped"):
        resolve("surely-not-a-model")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(InputError, match="--resume"):
        resolve(tmp_path / "half")
    for name, meta in list_pretrained().items():  # every shipped model loads and samples
        model = load_model(resolve(name))
        assert model.name == meta["model"]
        x = model.sample(torch.full((3,), 1e4), generator=torch.Generator().manual_seed(0))
        assert x.shape == (3, model.geometry.n_voxels) and torch.isfinite(x).all()
        out = tmp_path / f"{name}.h5"
        r = runner.invoke(app, ["generate", name, "--n", "4", "--energy", "fixed:20GeV", "--seed", "1", "-o", str(out)])
        assert r.exit_code == 0, r.stderr
        with h5py.File(out) as f:
            assert f.attrs["generator"] == meta["model"] and f["showers"].shape == (4, model.geometry.n_voxels)


def test_parse_duration():
    from caloforge.cli.train import parse_duration
    from caloforge.errors import InputError

    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400
    assert parse_duration("90") == 90 and parse_duration("0.5s") == 0.5
    for bad in ("soon", "", "10x", "0"):
        with pytest.raises(InputError):
            parse_duration(bad)
