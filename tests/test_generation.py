"""The generation library (:mod:`caloforge.generation`) used directly, without the CLI, with a
tiny untrained voxel-lognormal model fitted to a few simulated DS2 showers (seconds on one core)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from caloforge.data import open_showers
from caloforge.errors import InputError
from caloforge.generation import GenerationResult, Sampler, generate, generate_to_file, make_sampler
from caloforge.geometry import get_geometry
from caloforge.models import ShowerModel, build_model
from caloforge.simulation import ParametricSimulator

torch.set_num_threads(1)

GEOMETRY = get_geometry("ds2")
V = GEOMETRY.n_voxels


@pytest.fixture(scope="module")
def model():
    e = np.exp(np.random.default_rng(0).uniform(np.log(1e3), np.log(1e5), 32))
    showers = ParametricSimulator("ds2").sample(e, np.random.default_rng(1))
    m = build_model("voxel-lognormal", GEOMETRY)
    m.fit_preprocessing(torch.tensor(e, dtype=torch.float32), torch.from_numpy(showers))
    return m.eval()


@pytest.fixture
def energies() -> np.ndarray:
    return np.exp(np.random.default_rng(5).uniform(np.log(2e3), np.log(8e4), 23)).astype(np.float32)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------- in memory
def test_generate_is_reproducible_per_seed(model, energies):
    a = generate(model, energies, seed=7, batch_size=10)
    assert a.shape == (len(energies), V) and a.dtype == np.float32
    assert np.isfinite(a).all() and (a >= 0).all() and (a > 0).any()
    np.testing.assert_array_equal(generate(model, energies, seed=7, batch_size=10), a)
    b = generate(model, energies, seed=8, batch_size=10)
    assert not np.array_equal(a, b)


def test_sampler_draw_and_warm_up(model, energies):
    s = make_sampler(model, device="cpu", seed=3)
    assert isinstance(s, Sampler) and s.backend == "torch (cpu)"
    s.warm_up(energies)  # its own random stream: the draws that follow are unchanged
    first = s.draw(energies[:10])
    second = s(energies[10:])
    assert first.shape == (10, V) and second.shape == (13, V) and first.dtype == np.float32
    fresh = make_sampler(model, seed=3)  # device None: where the model is
    np.testing.assert_array_equal(fresh.draw(energies[:10]), first)
    np.testing.assert_array_equal(fresh.draw(energies[10:]), second)
    # successive batches continue one stream, as generate() does (batches of 10, 10, 3)
    third = make_sampler(model, seed=3)
    batches = [third.draw(energies[a : a + 10]) for a in range(0, len(energies), 10)]
    np.testing.assert_array_equal(generate(model, energies, seed=3, batch_size=10), np.concatenate(batches))
    assert not np.array_equal(batches[1], generate(model, energies[10:20], seed=3))  # not a restart


def test_unsupported_options_are_input_errors(model, energies):
    class NoSteps(ShowerModel):  # a sampler without solver steps (like the one-step student)
        name = "no-steps"

        def sample(self, e_inc, generator=None):
            return torch.zeros(len(e_inc), V)

    with pytest.raises(InputError, match="no solver steps"):
        make_sampler(NoSteps(GEOMETRY), seed=0, steps=4)
    with pytest.raises(InputError, match="at least 1"):
        make_sampler(model, seed=0, steps=0)
    # voxel-lognormal declares no solver steps: refused before anything is drawn
    with pytest.raises(InputError, match="no solver steps"):
        make_sampler(model, seed=0, steps=4)
    with pytest.raises(InputError, match="batch_size"):
        generate(model, energies, batch_size=0)
    with pytest.raises(InputError, match="non-positive"):
        generate(model, np.array([1e4, -1.0]))


def test_onnx_without_export_is_an_input_error(model, tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(InputError, match="no ONNX export"):
        make_sampler(model, seed=0, onnx=True, model_dir=tmp_path)
    assert _names(tmp_path) == []


# -------------------------------------------------------------------- to file
def test_generate_to_file_rows_energies_attrs(model, energies, tmp_path):
    out = tmp_path / "gen.h5"
    sampler = make_sampler(model, device="cpu", seed=11)
    attrs = {"generator": "voxel-lognormal", "seed": 11, "note": "library test"}
    r = generate_to_file(model, energies, out, sampler=sampler, batch_size=10, attrs=attrs, progress=False)
    assert isinstance(r, GenerationResult)
    assert r.n == len(energies) == 23 and r.output == out and r.backend == "torch (cpu)" and r.seed == 11
    assert r.seconds_sampling > 0 and r.showers_per_second > 0
    assert r.ms_per_shower == pytest.approx(1e3 / r.showers_per_second)
    f = open_showers(out)
    assert f.n == 23 and f.geometry.name == "ds2"
    a = f.attrs
    assert a["generator"] == "voxel-lognormal" and a["seed"] == 11 and a["note"] == "library test"
    assert a["n_showers"] == 23
    e, s = f.read()
    np.testing.assert_array_equal(e, energies)
    # batch 10 does not divide 23: the last batch of 3 is there, and the file holds exactly
    # what generate() returns for the same seed and batch size
    np.testing.assert_array_equal(s, generate(model, energies, seed=11, batch_size=10))
    assert _names(tmp_path) == ["gen.h5"]


def test_generate_to_file_default_provenance(model, energies, tmp_path):
    out = tmp_path / "gen.h5"
    r = generate_to_file(model, energies[:5], out, sampler=make_sampler(model, seed=4, device="cpu"), progress=False)
    assert r.n == 5
    a = open_showers(out).attrs
    assert a["generator"] == "voxel-lognormal" and a["seed"] == 4
    assert a["backend"] == "torch (cpu)" and a["batch_size"] == 1000 and "caloforge_version" in a


class FailingSampler:
    """Draws like ``inner`` but raises on the second batch."""

    backend = "test"

    def __init__(self, inner: Sampler):
        self.inner, self.calls = inner, 0

    def draw(self, energies: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("sampler broke")
        return self.inner.draw(energies)


def test_failure_midway_leaves_no_file(model, energies, tmp_path):
    out = tmp_path / "gen.h5"
    failing = FailingSampler(make_sampler(model, seed=0))
    with pytest.raises(RuntimeError, match="sampler broke"):
        generate_to_file(model, energies, out, sampler=failing, batch_size=10, attrs={}, progress=False)
    assert failing.calls == 2
    assert not out.exists() and _names(tmp_path) == []  # no temporary file either
    # an existing file at the target is left as it was
    out.write_bytes(b"old contents")
    with pytest.raises(RuntimeError, match="sampler broke"):
        generate_to_file(model, energies, out, sampler=FailingSampler(make_sampler(model, seed=0)), batch_size=10,
                         attrs={}, progress=False)
    assert out.read_bytes() == b"old contents" and _names(tmp_path) == ["gen.h5"]


def test_wrong_shower_shape_leaves_no_file(model, energies, tmp_path):
    class Short:
        def draw(self, e):
            return np.zeros((len(e), V - 1), np.float32)

    out = tmp_path / "gen.h5"
    with pytest.raises(RuntimeError, match="shape"):
        generate_to_file(model, energies, out, sampler=Short(), attrs={}, progress=False)
    assert _names(tmp_path) == []


def test_library_does_not_import_the_cli():
    import subprocess
    import sys

    code = "import sys, caloforge.generation; print(sorted(m for m in sys.modules if m.startswith(('caloforge.cli', 'typer'))))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
