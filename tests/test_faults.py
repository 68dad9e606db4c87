"""Faults and tampering over every command, as a user meets them.

Each case runs the real ``caloforge`` command in a subprocess and checks the contract of a
failure: exit status 2 (130 for Ctrl-C, 143 for SIGTERM), exactly one ``caloforge: error:``
line that names the file and the problem, no traceback, every input byte for byte as before,
nothing under the output name and no temporary ``.part`` file left beside it. A few cases check
that unusual but valid input is accepted (exit 0).

The cases run two at a time in one pool (they are independent); each is reported as its own test.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from caloforge.models.pretrained import PRETRAINED_DIR

CLI = [sys.executable, "-m", "caloforge"]
ENV = {**os.environ, "COLUMNS": "100", "CALOFORGE_PROGRESS_INTERVAL": "1000", "OMP_NUM_THREADS": "1"}
ENV.pop("CALOFORGE_DEBUG", None)
BASELINE = PRETRAINED_DIR / "voxel-lognormal-ds2"  # small (58k numbers) and fast to sample


def sha(path: Path) -> str:
    if path.is_dir():
        return "|".join(f"{p.name}:{sha(p)}" for p in sorted(path.iterdir()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- the world
def _write(path: Path, e: np.ndarray, s: np.ndarray, **showers_kw) -> Path:
    with h5py.File(path, "w") as f:
        f["incident_energies"] = e.reshape(-1, 1)
        f.create_dataset("showers", data=s, **showers_kw)
    return path


def _flip_bytes(src: Path, dst: Path, start_fraction: float, count: int, mask: int) -> Path:
    b = bytearray(src.read_bytes())
    a = int(len(b) * start_fraction)
    for i in range(a, min(a + count, len(b))):
        b[i] ^= mask
    dst.write_bytes(bytes(b))
    return dst


def _tampered_model(root: Path, name: str, edit_json: Callable[[dict], None] | None = None,
                    edit_tensors: Callable[[dict], None] | None = None) -> Path:
    d = root / name
    shutil.copytree(BASELINE, d)
    if edit_json is not None:
        meta = json.loads((d / "model.json").read_text())
        edit_json(meta)
        (d / "model.json").write_text(json.dumps(meta))
    if edit_tensors is not None:
        state = load_file(str(d / "model.safetensors"))
        edit_tensors(state)
        save_file(state, str(d / "model.safetensors"))
    return d


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("faults")
    from caloforge.simulation import simulate_to_file

    simulate_to_file(w / "ref.h5", "ds2", 120, "log-uniform:1GeV:100GeV", seed=1)
    simulate_to_file(w / "gen.h5", "ds2", 60, "log-uniform:1GeV:100GeV", seed=2)
    with h5py.File(w / "ref.h5") as f:
        e, s = f["incident_energies"][:, 0], f["showers"][...]
    _write(w / "two.h5", e[:2], s[:2])
    # damaged and unusual HDF5 files
    _write(w / "gzip.h5", e, s, compression="gzip", chunks=(20, s.shape[1]))
    _flip_bytes(w / "gzip.h5", w / "corrupt_chunk.h5", 0.5, 2000, 0x5A)
    _write(w / "fletcher.h5", e, s, fletcher32=True, chunks=(20, s.shape[1]))
    _flip_bytes(w / "fletcher.h5", w / "bad_checksum.h5", 0.5, 100, 0x01)
    with h5py.File(w / "external.h5", "w") as f:
        f["incident_energies"] = e.reshape(-1, 1)
        f.create_dataset("showers", shape=s.shape, dtype="<f4", external=[("missing.bin", 0, h5py.h5f.UNLIMITED)])
    with h5py.File(w / "dangling.h5", "w") as f:
        f["incident_energies"] = e.reshape(-1, 1)
        f["showers"] = h5py.SoftLink("/nowhere")
    _write(w / "lzf.h5", e, s, compression="lzf", chunks=(20, s.shape[1]))
    raw = bytearray((w / "lzf.h5").read_bytes())  # rename the filter: an unknown plugin filter id
    at = raw.find(b"lzf\x00")
    fid = raw.rfind((32000).to_bytes(2, "little"), 0, at)
    raw[fid : fid + 2] = (32123).to_bytes(2, "little")
    (w / "unknown_filter.h5").write_bytes(bytes(raw))
    (w / "truncated.h5").write_bytes((w / "ref.h5").read_bytes()[: (w / "ref.h5").stat().st_size // 2])
    (w / "text.h5").write_text("incident_energies,showers\n1,2\n")
    with h5py.File(w / "unusual.h5", "w") as f:  # valid: big-endian float64 showers, integer energies
        f["incident_energies"] = np.round(e).astype(">i8").reshape(-1, 1)
        f["showers"] = s.astype(">f8")
    # tampered model folders
    m = w / "models"
    m.mkdir()
    shutil.copytree(BASELINE, m / "good")
    _tampered_model(m, "config_list", lambda j: j.update(config=[2, 0.02]))
    _tampered_model(m, "config_string", lambda j: j["config"].update(degree="two"))
    _tampered_model(m, "config_huge", lambda j: j["config"].update(degree=10**12))
    _tampered_model(m, "config_shapes", lambda j: j["config"].update(degree=5))
    _tampered_model(m, "geometry_string", lambda j: j.update(geometry="ds2"))
    _tampered_model(m, "json_list", lambda j: None)
    (m / "json_list" / "model.json").write_text("[1, 2, 3]")
    _tampered_model(m, "json_broken")
    (m / "json_broken" / "model.json").write_text('{"format": "caloforge-model", "model": ')
    _tampered_model(m, "width_huge", lambda j: j["config"].update(min_sigma=1e300))
    _tampered_model(m, "tensor_shape", edit_tensors=lambda t: t.update(mu_base=torch.zeros(100)))
    _tampered_model(m, "tensor_nan", edit_tensors=lambda t: t["mu_coef"].view(-1)[7].fill_(float("nan")))
    _tampered_model(m, "truncated_weights")
    wpath = m / "truncated_weights" / "model.safetensors"
    wpath.write_bytes(wpath.read_bytes()[: wpath.stat().st_size // 3])
    # a training run with a checkpoint, and damaged copies of it
    run = w / "run"
    subprocess.run([*CLI, "train", "--model", "voxel-lognormal", "--data", str(w / "ref.h5"), "--steps", "3",
                    "--batch-size", "16", "--val-fraction", "0", "--no-progress", "--threads", "1", "-o", str(run)],
                   env=ENV, check=True, capture_output=True, timeout=300)
    for name in ("ckpt_json", "ckpt_truncated", "ckpt_partial", "ckpt_no_tensors"):
        shutil.copytree(run, w / name)
    (w / "ckpt_json" / "checkpoint" / "checkpoint.json").write_text('{"format": "caloforge-checkpoint", "step": ')
    tensors = next((w / "ckpt_truncated" / "checkpoint").glob("state-*.safetensors"))
    tensors.write_bytes(tensors.read_bytes()[:1000])
    tensors = next((w / "ckpt_partial" / "checkpoint").glob("state-*.safetensors"))
    state = load_file(str(tensors))
    save_file({k: v for k, v in state.items() if k != "model.mu_base"}, str(tensors))
    next((w / "ckpt_no_tensors" / "checkpoint").glob("state-*.safetensors")).unlink()
    (w / "not_a_folder.txt").write_text("a file\n")
    return w


# --------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # "{w}" is replaced by the world folder
    expect: tuple[str, ...] = ()  # substrings of the error line (or, with code 0, of the output)
    code: int = 2
    untouched: tuple[str, ...] = ()  # inputs that must keep their bytes (relative to the world)
    absent: tuple[str, ...] = ()  # outputs that must not exist afterwards
    file_size_limit: int | None = None  # bytes (RLIMIT_FSIZE): a "full disk" for this process
    python: tuple[str, ...] = field(default=())  # code run before the CLI (e.g. hide a package)


def _gen(*args: str) -> tuple[str, ...]:
    return ("generate", "{w}/models/good", *args)


CASES = [
    # ---- info: damaged, unusual and missing files
    Case("info-corrupt-gzip-chunk", ("info", "{w}/corrupt_chunk.h5"), ("corrupt_chunk.h5", "corrupt data")),
    Case("info-failed-checksum", ("info", "{w}/bad_checksum.h5"), ("bad_checksum.h5", "corrupt data")),
    Case("info-missing-external-file", ("info", "{w}/external.h5"), ("external.h5", "external raw-data file")),
    Case("info-dangling-soft-link", ("info", "{w}/dangling.h5"), ("dangling.h5", "broken link")),
    Case("info-unknown-filter", ("info", "{w}/unknown_filter.h5"), ("unknown_filter.h5", "filter")),
    Case("info-truncated-file", ("info", "{w}/truncated.h5"), ("truncated.h5",)),
    Case("info-not-hdf5", ("info", "{w}/text.h5"), ("text.h5", "not an HDF5 file")),
    Case("info-brackets-in-name", ("info", "{w}/run[1].h5"), ("run[1].h5", "no such file")),
    Case("info-unusual-dtypes-accepted", ("info", "{w}/unusual.h5"), ("120",), code=0),
    # ---- simulate: arguments and outputs
    Case("simulate-negative-seed", ("simulate", "--n", "5", "--seed", "-1", "-o", "{w}/s.h5"), ("--seed",),
         absent=("s.h5",)),
    Case("simulate-n-1e20", ("simulate", "--n", "100000000000000000000", "-o", "{w}/s.h5"), ("--n",),
         absent=("s.h5",)),
    Case("simulate-infinite-energy", ("simulate", "--n", "5", "--energy", "fixed:1e400MeV", "-o", "{w}/s.h5"),
         ("1e400MeV", "out of range"), absent=("s.h5",)),
    Case("simulate-device-output", ("simulate", "--n", "5", "-o", "/dev/null"), ("/dev/null", "device")),
    Case("simulate-unwritable-folder", ("simulate", "--n", "5", "-o", "/proc/caloforge-test.h5"),
         ("/proc/caloforge-test.h5",)),
    Case("simulate-threads-100000-clamped", ("simulate", "--n", "5", "--threads", "100000", "-o", "{w}/t.h5"),
         ("is more than the",), code=0),
    Case("simulate-full-disk", ("simulate", "--n", "400", "--compression", "none", "-o", "{w}/full.h5"),
         ("full.h5", "too large"), absent=("full.h5",), file_size_limit=300_000),
    # ---- generate: outputs that are inputs, arguments, tampered models, a full disk
    Case("generate-over-energies-input", _gen("--energies-from", "{w}/ref.h5", "-o", "{w}/ref.h5"),
         ("ref.h5", "input"), untouched=("ref.h5",)),
    Case("generate-over-model-weights", _gen("--n", "5", "-o", "{w}/models/good/model.safetensors"),
         ("model.safetensors", "input"), untouched=("models/good",)),
    Case("generate-device-output", _gen("--n", "5", "-o", "/dev/null"), ("/dev/null", "device")),
    Case("generate-negative-seed", _gen("--n", "5", "--seed", "-1", "-o", "{w}/g.h5"), ("--seed",), absent=("g.h5",)),
    Case("generate-n-1e20", _gen("--n", "100000000000000000000", "-o", "{w}/g.h5"), ("--n",), absent=("g.h5",)),
    Case("generate-batch-1e20", _gen("--n", "5", "--batch-size", "100000000000000000000", "-o", "{w}/g.h5"),
         ("--batch-size",), absent=("g.h5",)),
    Case("generate-outside-training-range-warns", _gen("--n", "4", "--energy", "fixed:10TeV", "--seed", "1",
                                                        "-o", "{w}/far.h5"),
         ("outside the model's training range",), code=0),
    Case("generate-full-disk", _gen("--n", "300", "--seed", "1", "-o", "{w}/full2.h5"), ("full2.h5", "too large"),
         absent=("full2.h5",), file_size_limit=200_000),
    *[Case(f"generate-model-{name.replace('_', '-')}", ("generate", f"{{w}}/models/{name}", "--n", "5", "--seed", "1",
                                                         "-o", f"{{w}}/{name}.h5"),
           (f"models/{name}", *words), untouched=(f"models/{name}",), absent=(f"{name}.h5",))
      for name, words in [
          ("config_list", ("'config' must be a JSON object",)),
          ("config_string", ("degree",)),
          ("config_huge", ("degree",)),
          ("config_shapes", ("shape",)),
          ("geometry_string", ("'geometry'",)),
          ("json_list", ("JSON object",)),
          ("json_broken", ("invalid JSON",)),
          ("tensor_shape", ("mu_base", "shape")),
          ("tensor_nan", ("mu_coef", "NaN")),
          ("truncated_weights", ("cannot read weights",)),
      ]],
    Case("generate-model-huge-width-garbage", ("generate", "{w}/models/width_huge", "--n", "5", "--seed", "1",
                                               "-o", "{w}/wide.h5"),
         ("NaN or inf",), absent=("wide.h5",)),
    # ---- evaluate
    Case("evaluate-output-is-input", ("evaluate", "{w}/ref.h5", "{w}/gen.h5", "-o", "{w}/ref.h5"),
         ("ref.h5", "not a folder"), untouched=("ref.h5", "gen.h5")),
    Case("evaluate-no-metric", ("evaluate", "{w}/ref.h5", "{w}/gen.h5", "-o", "{w}/ev1", "--metrics", ","),
         ("no metric",), absent=("ev1/metrics.json", "ev1/report.html")),
    Case("evaluate-two-showers", ("evaluate", "{w}/ref.h5", "{w}/two.h5", "-o", "{w}/ev2", "--metrics", "hist"),
         ("two.h5", "at least"), absent=("ev2/metrics.json", "ev2/report.html")),
    Case("evaluate-corrupt-sample", ("evaluate", "{w}/ref.h5", "{w}/corrupt_chunk.h5", "-o", "{w}/ev3",
                                     "--metrics", "hist", "--no-plots"),
         ("corrupt_chunk.h5", "corrupt data"), absent=("ev3/metrics.json", "ev3/report.html")),
    # ---- plot
    Case("plot-output-is-input", ("plot", "{w}/ref.h5", "-o", "{w}/ref.h5"), ("ref.h5", "not a folder"),
         untouched=("ref.h5",)),
    Case("plot-corrupt-file", ("plot", "{w}/corrupt_chunk.h5", "-o", "{w}/plots"), ("corrupt_chunk.h5",)),
    # ---- train
    Case("train-output-is-data", ("train", "--model", "voxel-lognormal", "--data", "{w}/ref.h5", "-o", "{w}/ref.h5"),
         ("ref.h5", "not a folder"), untouched=("ref.h5",)),
    Case("train-negative-seed", ("train", "--model", "voxel-lognormal", "--data", "{w}/ref.h5", "--seed", "-3",
                                 "-o", "{w}/run2"), ("--seed",)),
    Case("train-resume-broken-checkpoint-json", ("train", "--resume", "--threads", "1", "-o", "{w}/ckpt_json"),
         ("checkpoint.json", "damaged"), untouched=("ckpt_json/checkpoint",)),
    Case("train-resume-truncated-tensors", ("train", "--resume", "--threads", "1", "-o", "{w}/ckpt_truncated"),
         ("cannot read checkpoint tensors",), untouched=("ckpt_truncated/checkpoint",)),
    Case("train-resume-partial-checkpoint", ("train", "--resume", "--threads", "1", "-o", "{w}/ckpt_partial"),
         ("ckpt_partial", "mu_base"), untouched=("ckpt_partial/checkpoint",)),
    Case("train-resume-tensor-file-missing", ("train", "--resume", "--threads", "1", "-o", "{w}/ckpt_no_tensors"),
         ("ckpt_no_tensors", "missing"), untouched=("ckpt_no_tensors/checkpoint",)),
    # ---- export
    Case("generate-onnx-without-onnxruntime", ("generate", "ds2-electrons-cfm", "--onnx", "--n", "3", "--seed", "1",
                                                "-o", "{w}/o.h5"),
         ("pip install 'caloforge[onnx]'",), absent=("o.h5",),
         python=("import sys", "sys.modules['onnxruntime'] = None")),
    Case("export-over-model-weights", ("export", "{w}/models/good", "--onnx", "{w}/models/good/model.safetensors"),
         ("model.safetensors", "input"), untouched=("models/good",)),
    Case("export-model-without-onnx-export", ("export", "{w}/models/good", "--onnx", "{w}/baseline.onnx"),
         ("has no caloforge ONNX export",), absent=("baseline.onnx",)),
    # ---- demo and models
    Case("demo-output-is-a-file", ("demo", "-o", "{w}/not_a_folder.txt"), ("not_a_folder.txt", "not a folder"),
         untouched=("not_a_folder.txt",)),
    Case("demo-zero-threads", ("demo", "-o", "{w}/demo", "--threads", "0"), ("--threads",), absent=("demo",)),
    Case("usage-not-a-number", ("generate", "ds2-electrons", "--n", "1e20", "-o", "{w}/x.h5"), ("--n", "--help")),
    Case("usage-unknown-option", ("simulate", "--bogus", "-o", "{w}/x.h5"), ("--bogus",)),
    Case("usage-missing-argument", ("evaluate", "{w}/ref.h5"), ("Missing",)),
    Case("models-unknown-name", ("generate", "no-such-model", "--n", "3", "-o", "{w}/x.h5"), ("no-such-model",)),
]


def _limit(nbytes: int | None) -> Callable[[], None] | None:
    if nbytes is None:
        return None
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))


def _run(case: Case, w: Path) -> tuple[subprocess.CompletedProcess, dict[str, str], dict[str, str]]:
    before = {p: sha(w / p) for p in case.untouched}
    args = [a.replace("{w}", str(w)) for a in case.args]
    if case.python:
        code = "; ".join([*case.python, "from caloforge.cli.main import app", "app()"])
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [*CLI, *args]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=w,
                          preexec_fn=_limit(case.file_size_limit))
    after = {p: sha(w / p) for p in case.untouched}
    return proc, before, after


@pytest.fixture(scope="module")
def outcomes(world) -> dict[str, tuple[subprocess.CompletedProcess, dict[str, str], dict[str, str]]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {c.id: pool.submit(_run, c, world) for c in CASES}
        return {k: f.result() for k, f in futures.items()}


def _stray_parts(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*.part")] if folder.is_dir() else []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, world: Path, outcomes) -> None:
    proc, before, after = outcomes[case.id]
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == case.code, output
    if case.code == 2:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("caloforge: error:")]
        assert len(errors) == 1, output
        for word in case.expect:
            assert word in errors[0], errors[0]
    else:
        for word in case.expect:
            assert word in " ".join(output.split()), output
    assert before == after, f"an input changed: {case.untouched}"
    for rel in case.absent:
        assert not (world / rel).exists(), f"{rel} was left behind"
    assert not _stray_parts(world), _stray_parts(world)


# --------------------------------------------------------------------------- signals and kills
def _start_generate(w: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "generate", str(w / "models" / "good"), "--n", "200000", "--batch-size", "200",
                             "--seed", "1", "--threads", "1", "-o", str(out)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_part(folder: Path, timeout: float = 120.0) -> None:
    t = time.monotonic()
    while not _stray_parts(folder):
        if time.monotonic() - t > timeout:
            raise AssertionError("generation never started writing")
        time.sleep(0.05)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_interrupted_generation_leaves_nothing(world: Path, tmp_path: Path, sig: int, code: int) -> None:
    out = tmp_path / "interrupted.h5"
    proc = _start_generate(world, out)
    _wait_for_part(tmp_path)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert not out.exists()
    assert not _stray_parts(tmp_path)


def test_swallowed_interrupt_prints_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C that lands in a finaliser (Python prints it as "ignored" with a traceback) is
    silent once the flag has it; any other exception raised in a finaliser is still reported."""
    import gc
    import sys

    from caloforge import _signals

    class Raises:
        def __init__(self, exc: BaseException):
            self.exc = exc

        def __del__(self) -> None:
            raise self.exc

    def finalise(exc: BaseException) -> str:
        obj = Raises(exc)
        del obj
        gc.collect()
        return capsys.readouterr().err

    previous = sys.unraisablehook
    sys.unraisablehook = _signals.unraisable_hook
    try:
        assert "KeyboardInterrupt" in finalise(KeyboardInterrupt())  # not from our handler: reported
        with pytest.raises(KeyboardInterrupt):
            _signals.on_sigint(signal.SIGINT, None)
        assert finalise(KeyboardInterrupt()) == ""
        assert "real problem" in finalise(ValueError("real problem"))
    finally:
        sys.unraisablehook = previous
        _signals.reset()


def test_killed_generation_is_cleaned_up_by_the_next_write(world: Path, tmp_path: Path) -> None:
    """SIGKILL cannot be caught: its temporary file stays until the next write to the same name
    removes it (its process is gone); a live writer's temporary file is left alone."""
    out = tmp_path / "killed.h5"
    proc = _start_generate(world, out)
    _wait_for_part(tmp_path)
    proc.kill()
    proc.wait(timeout=60)
    assert len(_stray_parts(tmp_path)) == 1 and not out.exists()
    host = socket.gethostname().replace(".", "_")
    live = tmp_path / f".killed.h5.{host}.{os.getpid()}.abc123.part"  # this test process: alive
    live.write_bytes(b"")
    done = subprocess.run([*CLI, "generate", str(world / "models" / "good"), "--n", "3", "--seed", "1",
                           "-o", str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.is_file()
    assert _stray_parts(tmp_path) == [live.name]
