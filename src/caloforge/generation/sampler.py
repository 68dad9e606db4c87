"""Samplers: ``draw(energies) -> showers`` with torch or with ONNX Runtime, seeded.

A :class:`Sampler` turns incident energies (MeV, a 1-D numpy array) into showers (float32,
``(n, voxels)``, MeV). Successive calls continue one random stream, so a sampler made with the
same model, seed and options and called with the same batches gives the same showers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloforge.errors import InputError
from caloforge.models.capabilities import SolverSteps

#: Showers in the warm-up draw.
WARM_UP_SHOWERS = 8


def _as_energies(energies: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(energies, dtype=np.float32).reshape(-1))


class Sampler:
    """Draws showers for incident energies; call :meth:`draw` (or the sampler itself).

    Attributes: ``backend`` (e.g. ``"torch (cpu)"``, ``"onnxruntime"``), ``seed``, ``steps``
    (solver steps, None for the model's default) and ``n_voxels``.
    """

    backend: str = ""

    def __init__(self, model, seed: int, steps: int | None) -> None:
        self.model = model
        self.seed = int(seed)
        self.steps = steps
        self.n_voxels = int(model.geometry.n_voxels)

    def draw(self, energies: np.ndarray) -> np.ndarray:
        """Showers (float32, ``(len(energies), voxels)``, MeV) for incident energies in MeV."""
        raise NotImplementedError

    def __call__(self, energies: np.ndarray) -> np.ndarray:
        return self.draw(energies)

    def warm_up(self, energies: np.ndarray) -> None:
        """Draw a few showers (the first of ``energies``) and discard them: surfaces unsupported
        options before any file is opened and keeps one-time costs (CUDA context, kernel
        selection) out of throughput measurements."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model.name!r}, backend={self.backend!r}, seed={self.seed})"


class TorchSampler(Sampler):
    """Samples with the torch model itself (``model.sample``) on ``device``."""

    def __init__(self, model, device: torch.device, seed: int, steps: int | None) -> None:
        super().__init__(model, seed, steps)
        self.device = device
        self.options: dict[str, Any] = {} if steps is None else model.solver_options(steps=steps)
        self.generator = torch.Generator(device=device).manual_seed(self.seed)
        self.backend = f"torch ({device})"

    def _sample(self, energies: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        e = torch.from_numpy(_as_energies(energies)).to(self.device)
        with torch.no_grad():
            x = self.model.sample(e, generator=generator, **self.options)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return x

    def draw(self, energies: np.ndarray) -> np.ndarray:
        x = self._sample(energies, self.generator)
        return x.detach().to("cpu", torch.float32).numpy()

    def warm_up(self, energies: np.ndarray) -> None:
        # A generator of its own: the warm-up does not move the main random stream.
        warm = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self._sample(_as_energies(energies)[:WARM_UP_SHOWERS], warm)


class OnnxRuntimeSampler(Sampler):
    """Samples with ONNX Runtime (CPU) from the model's ONNX export; Gaussian noise from a numpy
    generator seeded with ``[seed, 2]``.

    ``onnx_path``: the ONNX file it runs (None for a fresh export that was not kept);
    ``source``: a line saying which export that is and how it was checked against the model."""

    backend = "onnxruntime"

    def __init__(self, model, onnx_sampler, seed: int, steps: int | None, onnx_path: Path | None = None,
                 source: str = "") -> None:
        super().__init__(model, seed, steps)
        self.onnx_sampler = onnx_sampler
        self.onnx_path = onnx_path
        self.source = source
        self.rng = np.random.default_rng([self.seed, 2])
        if steps is not None:
            raise InputError("--steps is fixed in the ONNX export; re-export with the steps you want")

    def draw(self, energies: np.ndarray) -> np.ndarray:
        return np.asarray(self.onnx_sampler.sample(_as_energies(energies), rng=self.rng), dtype=np.float32)

    def warm_up(self, energies: np.ndarray) -> None:
        # Unlike torch's, this draw uses the main noise stream (kept as the CLI always did it,
        # so that a seed gives the same file as before).
        self.draw(_as_energies(energies)[:WARM_UP_SHOWERS])


def make_sampler(
    model,
    *,
    device: str | torch.device | None = None,
    seed: int,
    steps: int | None = None,
    onnx: bool | str | Path = False,
    model_dir: str | Path | None = None,
) -> Sampler:
    """A :class:`Sampler` for ``model``.

    ``device``: where torch samples (``"cpu"``, ``"cuda"``, ``"auto"`` or a ``torch.device``);
    None: the model's own device. The model is moved there if it is elsewhere. Ignored with
    ``onnx`` (ONNX Runtime runs on the CPU).
    ``steps``: solver steps, for models that integrate an ODE (None: the model's default).
    ``onnx``: sample with ONNX Runtime (needs ``pip install 'caloforge[onnx]'``). A path: that
    ONNX file (as ``caloforge export --onnx FILE`` writes it); True: ``model_dir/model.onnx`` when
    that exists, otherwise a fresh export of ``model``. The file is checked against ``model``
    (voxel count, noise inputs, model type, geometry, configuration and, when the export records
    it, the weights digest); a mismatch raises :class:`~caloforge.errors.InputError`. The
    sampler's ``source`` says which export it runs.

    Unsupported options raise :class:`~caloforge.errors.InputError`.
    """
    if steps is not None:
        if steps < 1:
            raise InputError("steps must be at least 1")
        if not isinstance(model, SolverSteps):
            raise InputError(f"model {model.name!r} has no solver steps to set (--steps)")
    if onnx is not False:
        if onnx is True:
            runtime, path, source = _onnx_runtime(model, model_dir)
        else:
            runtime, path, source = _onnx_runtime(model, None, Path(onnx))
        return OnnxRuntimeSampler(model, runtime, seed, steps, path, source)
    if device is None:
        dev = model.device
    elif isinstance(device, torch.device):
        dev = device
    else:
        from caloforge.training.distributed import resolve_device

        dev = resolve_device(device)
    if model.device != dev:
        model.to(dev)
    return TorchSampler(model, dev, seed, steps)


def _onnx_runtime(model, model_dir: str | Path | None, file: Path | None = None):
    """``(OnnxSampler, path or None, source line)`` for the model's ONNX export: ``file`` when
    given, else ``model_dir/model.onnx`` when it exists, else a fresh export (not kept)."""
    try:
        import onnxruntime  # noqa: F401

        from caloforge.export.onnx import OnnxSampler, check_export, describe_export, export_onnx
    except ModuleNotFoundError as exc:
        if exc.name in ("onnx", "onnxruntime"):
            raise InputError("--onnx needs ONNX Runtime: pip install 'caloforge[onnx]'") from None
        raise InputError("--onnx: ONNX export is not available in this caloforge installation") from None
    threads = torch.get_num_threads()  # what configure_threads set (ONNX Runtime would take every core)
    path = file
    if path is None and model_dir is not None and (Path(model_dir) / "model.onnx").is_file():
        path = Path(model_dir) / "model.onnx"
    if path is not None:
        if not path.exists():
            raise InputError("ONNX file not found (write one with: caloforge export MODEL --onnx FILE)", path)
        if not path.is_file():
            raise InputError("is not a file; give the ONNX file that 'caloforge export --onnx' wrote", path)
        try:
            runtime = OnnxSampler(path, threads=threads)
        except ValueError as exc:
            raise InputError(str(exc).removeprefix(f"{path}: ") + "; write one with caloforge export", path) from None
        except Exception as exc:  # onnxruntime's own errors: not an ONNX model, a truncated file, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"not a readable ONNX model ({first[:200]})", path) from None
        try:
            checked = check_export(runtime, model)
        except ValueError as exc:
            raise InputError(f"does not match the model: {str(exc).removeprefix(f'{path}: ')}", path) from None
        return runtime, path, f"{path} ({describe_export(runtime)}; {checked})"
    # ONNX Runtime reads the whole graph when the session is made, so the export can go.
    with tempfile.TemporaryDirectory(prefix="caloforge-onnx-") as tmp:
        fresh = Path(tmp) / "model.onnx"
        try:
            export_onnx(model, fresh)
        except NotImplementedError as exc:
            raise InputError(f"model {model.name!r} has no ONNX export ({exc})") from None
        runtime = OnnxSampler(fresh, threads=threads)
        return runtime, None, f"a fresh export of the model, not kept ({describe_export(runtime)})"
