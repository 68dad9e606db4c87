"""The flow-matching teacher (``cfm``), its one-step student (``cfm-student``) and their ONNX
export, with tiny networks on a synthetic DS2-shaped sample (seconds on one core)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caloforge.errors import InputError
from caloforge.flowmatching import SOLVERS
from caloforge.geometry import get_geometry
from caloforge.models import available_models, build_model, load_model, save_model
from caloforge.models.student import make_distillation_data

torch.set_num_threads(1)

GEOMETRY = get_geometry("ds2")
TINY = {"energy_width": 32, "energy_depth": 1, "shape_channels": [8, 16], "shape_emb": 16, "steps": 3}
STUDENT_TINY = {k: v for k, v in TINY.items() if k != "steps"}


def toy_ds2(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse showers whose depth, width and total energy follow the incident energy."""
    rng = np.random.default_rng(seed)
    L, A, R = GEOMETRY.shape
    e = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    layer = np.arange(L)[None, :, None, None]
    r = np.arange(R)[None, None, None, :]
    depth = (3 + 2 * np.log10(e / 1e3))[:, None, None, None]
    mean = np.exp(-0.5 * ((layer - depth) / 4.0) ** 2) * np.exp(-r / 1.5)
    mean = mean / mean.sum(axis=(1, 2, 3), keepdims=True) * e[:, None, None, None] * 0.95
    hit = rng.random((n, L, A, R)) < np.clip(40 * mean / e[:, None, None, None] ** 0.5, 0, 0.95)
    x = mean * rng.lognormal(0.0, 0.5, (n, L, A, R)) * hit
    return torch.tensor(e, dtype=torch.float32), torch.tensor(x.reshape(n, -1), dtype=torch.float32)


@pytest.fixture(scope="module")
def data():
    return toy_ds2(96, 0)


@pytest.fixture(scope="module")
def teacher(data):
    torch.manual_seed(0)
    model = build_model("cfm", GEOMETRY, TINY)
    model.fit_preprocessing(*data)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        idx = torch.randint(0, len(data[0]), (32,))
        loss = model.loss(data[0][idx], data[1][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _perturbed(model):
    """The zero-initialised output layers make a fresh model trivial; give every weight a value."""
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return model


def test_registry_builds_both():
    assert {"cfm", "cfm-student"} <= set(available_models())
    t = build_model("cfm", GEOMETRY, TINY)
    s = build_model("cfm-student", GEOMETRY, STUDENT_TINY)
    assert t.n_parameters() == s.n_parameters() > 0
    with pytest.raises(InputError):
        build_model("cfm", GEOMETRY, {"no_such_key": 1})
    with pytest.raises(InputError):  # DS1 has no (layer, alpha, r) grid
        build_model("cfm", get_geometry("ds1-photons"), TINY)


def test_loss_decreases(data):
    torch.manual_seed(0)
    model = build_model("cfm", GEOMETRY, TINY)
    model.fit_preprocessing(*data)
    e, x = data[0][:48], data[1][:48]

    def fixed_loss() -> float:
        state = torch.get_rng_state()
        torch.manual_seed(123)
        with torch.no_grad():
            value = float(model.loss(e, x))
        torch.set_rng_state(state)
        return value

    before = fixed_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        idx = torch.randint(0, len(data[0]), (32,))
        loss = model.loss(data[0][idx], data[1][idx])
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < 0.92 * before


@pytest.mark.parametrize("solver", SOLVERS)
def test_sample_shape_and_threshold(teacher, solver):
    e = torch.tensor([1e3, 1e4, 5e4, 1e5])
    x = teacher.sample(e, generator=torch.Generator().manual_seed(0), steps=2, solver=solver)
    assert x.shape == (4, GEOMETRY.n_voxels) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and (x >= 0).all()
    assert (x[x > 0] >= GEOMETRY.readout_threshold).all()
    assert (x > 0).any()


def test_hit_floor_fitted_saved_and_applied(teacher, data, tmp_path):
    """fit_preprocessing resolves hit_floor "auto" to the quantile of the training hits into a
    buffer (the config keeps "auto"); it is saved with the weights, survives loading, and no
    generated voxel lies below it."""
    floor = teacher.readout_floor()
    assert teacher.config.hit_floor == "auto"
    _, x = data
    hits = x[x >= GEOMETRY.readout_threshold]
    assert floor > GEOMETRY.readout_threshold
    assert abs((hits < floor).float().mean().item() - teacher.config.hit_floor_quantile) < 1e-3
    save_model(teacher, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config.hit_floor == "auto" and loaded.readout_floor() == floor == loaded.pre.dequantizer.floor
    out = loaded.sample(torch.full((20,), 2e4), generator=torch.Generator().manual_seed(0), steps=2)
    assert (out[out > 0] >= floor * (1 - 1e-5)).all() and (out > 0).any()


def test_chunked_sampling_matches_whole_batch(teacher):
    """sample() on the CPU works in slices of cpu_chunk showers; the noise is drawn for the
    whole batch first, so the showers are those of one unchunked call."""
    e = torch.exp(torch.linspace(np.log(1.5e3), np.log(9e4), 7))
    samples = []
    for chunk in (0, 3):
        model = build_model("cfm", GEOMETRY, teacher.config.replace(cpu_chunk=chunk))
        model.load_state_dict(teacher.state_dict())
        samples.append(model.eval().sample(e, generator=torch.Generator().manual_seed(5), steps=2))
    whole, chunked = samples
    scale = whole.abs().amax(1, keepdim=True)
    assert ((chunked - whole).abs() <= 1e-5 * scale).all()
    assert (whole > 0).any()


def test_sample_options_checked(teacher):
    with pytest.raises(InputError):
        teacher.sample(torch.tensor([1e4]), solver="leapfrog")
    with pytest.raises(InputError):
        teacher.sample(torch.tensor([-1.0]))


def test_save_load_identical_samples(teacher, tmp_path):
    save_model(teacher, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    e = torch.tensor([2e3, 3e4, 9e4])
    a = teacher.sample(e, generator=torch.Generator().manual_seed(7))
    b = loaded.sample(e, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def _onnx_matches(model, tmp_path, n: int = 6, **export_options):
    pytest.importorskip("onnxruntime")
    from caloforge.export.onnx import OnnxSampler, export_onnx

    path = export_onnx(model, tmp_path / f"{model.name}.onnx", **export_options)
    sampler = OnnxSampler(path, threads=1)
    e = torch.exp(torch.linspace(np.log(1.5e3), np.log(9e4), n))
    z_e, z_s = model.draw_noise(n, torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model.sample_from_noise(e, z_e, z_s, bf16=False, **export_options).numpy()
    out = sampler.run(e.numpy(), z_e.numpy(), z_s.numpy())
    assert out.shape == ref.shape
    # Same results within 1e-4 of each shower's scale (a voxel at the readout threshold may
    # flip, which costs less than the threshold, 0.015 MeV).
    scale = np.abs(ref).max(axis=1, keepdims=True)
    assert (np.abs(out - ref) <= 1e-4 * scale).all()
    # A dynamic batch dimension: another size runs too.
    assert sampler.sample(np.full(3, 2e4, np.float32), rng=np.random.default_rng(0)).shape == (3, GEOMETRY.n_voxels)
    return sampler


def test_onnx_teacher_matches_torch(teacher, tmp_path):
    model = _perturbed(build_model("cfm", GEOMETRY, TINY))
    model.pre.load_state_dict(teacher.pre.state_dict())
    sampler = _onnx_matches(model.eval(), tmp_path, steps=2, solver="midpoint")
    assert sampler.metadata["steps"] == "2" and sampler.metadata["caloforge_model"] == "cfm"


def test_onnx_student_matches_torch(teacher, tmp_path):
    student = build_model("cfm-student", GEOMETRY, STUDENT_TINY)
    student.pre.load_state_dict(teacher.pre.state_dict())
    _onnx_matches(_perturbed(student).eval(), tmp_path)


def test_onnx_unsupported_model(tmp_path):
    from caloforge.export.onnx import export_onnx

    with pytest.raises(NotImplementedError):
        export_onnx(build_model("voxel-lognormal", get_geometry("ds1-photons")), tmp_path / "x.onnx")


def test_student_distillation(teacher, data, tmp_path):
    save_model(teacher, tmp_path / "teacher")
    pairs_file = tmp_path / "pairs.safetensors"
    cfg = {**STUDENT_TINY, "teacher": str(tmp_path / "teacher"), "n_pairs": 40, "pair_steps": 2, "pairs_file": str(pairs_file)}
    student = build_model("cfm-student", GEOMETRY, cfg)
    student.fit_preprocessing(*data)  # loads the teacher, copies it, makes the pairs
    assert pairs_file.is_file()
    # Initialised from the teacher, the student is exactly the teacher's one-step Euler sampler.
    e = torch.tensor([2e3, 4e4])
    z_e, z_s = teacher.draw_noise(2, torch.Generator().manual_seed(5))
    with torch.no_grad():
        one_step = teacher.sample_from_noise(e, z_e, z_s, steps=1, solver="euler", bf16=False)
        torch.testing.assert_close(student.sample_from_noise(e, z_e, z_s, bf16=False), one_step)
    # The teacher and the pairs are no part of the student's state.
    assert all(not k.startswith(("_teacher", "_pairs")) for k in student.state_dict())
    assert set(student.state_dict()) == set(teacher.state_dict())

    torch.manual_seed(0)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = student.loss(data[0][:16], data[1][:16])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all() and np.mean(losses[-4:]) < np.mean(losses[:4])
    x = student.sample(torch.tensor([1e3, 1e5]), generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, GEOMETRY.n_voxels) and (x >= 0).all()

    # A fresh student (e.g. a resumed run) finds the same pairs in the cache file.
    again = build_model("cfm-student", GEOMETRY, cfg)
    again.fit_preprocessing(*data)
    assert torch.equal(again._pairs["y_shape"], student._pairs["y_shape"])


def test_student_in_memory_and_pairs(teacher, data):
    pairs = make_distillation_data(teacher, 6, seed=1, steps=2, bf16=False)
    assert pairs["y_shape"].shape == (6, GEOMETRY.n_voxels) and pairs["y_energy"].shape == (6, GEOMETRY.n_layers)
    lo, hi = float(teacher.pre.condition.log_min), float(teacher.pre.condition.log_max)
    assert (pairs["e_inc"].log() >= lo - 1e-4).all() and (pairs["e_inc"].log() <= hi + 1e-4).all()
    student = build_model("cfm-student", GEOMETRY, {**STUDENT_TINY, "val_fraction": 0.5})
    student.distill_from(teacher, pairs=pairs)
    student.fit_preprocessing(*data)  # a no-op after distill_from
    student.eval()
    with torch.no_grad():
        assert torch.isfinite(student.loss(data[0][:4], data[1][:4]))  # held-out pairs


def test_student_needs_teacher(data):
    student = build_model("cfm-student", GEOMETRY, STUDENT_TINY)
    with pytest.raises(InputError, match="teacher"):
        student.fit_preprocessing(*data)


def test_student_with_training_loop(teacher, data, tmp_path):
    train = pytest.importorskip("caloforge.training").train
    save_model(teacher, tmp_path / "teacher")
    student = build_model("cfm-student", GEOMETRY, {**STUDENT_TINY, "teacher": str(tmp_path / "teacher"), "n_pairs": 24, "pair_steps": 1})
    result = train(student, data, steps=3, batch_size=8, progress=False, device="cpu")
    assert result.step == 3 and np.isfinite(result.train_loss)
