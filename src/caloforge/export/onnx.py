"""ONNX export of a model's sampler, and :class:`OnnxSampler` to run it with ONNX Runtime.

Any model with the :class:`~caloforge.models.capabilities.NoiseMap` capability exports. The
graph is the deterministic part of sampling: inputs ``e_inc`` (B,) MeV and the Gaussian noise
the model would draw, named and sized by ``model.noise_shapes()`` (for the CFM models
``z_energy`` (B, layers) and ``z_shape`` (B, voxels)); output ``showers`` (B, voxels) MeV,
readout threshold applied. Noise as explicit inputs makes results reproducible and comparable
with torch (``model.sample_from_noise`` on the same noise agrees within 1e-4). For a model with
:class:`~caloforge.models.capabilities.SolverSteps` (``cfm``) the solver loop is unrolled for a
fixed number of steps (``steps``/``solver`` at export, default: the model's sampling defaults);
the one-step ``cfm-student`` is a single pass through each network.

Requires the ``onnx`` extra (``pip install 'caloforge[onnx]'``: onnx, onnxruntime). Uses the
TorchScript-based exporter of torch (``dynamo=False``), which needs no further package.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from caloforge import __version__
from caloforge.models.capabilities import NoiseMap, SolverSteps

if TYPE_CHECKING:
    from caloforge.models.base import ShowerModel

CONDITION = "e_inc"
#: The inputs of the CFM models' graphs (other families name their noise in ``noise_shapes()``).
INPUTS = (CONDITION, "z_energy", "z_shape")
OUTPUT = "showers"
DEFAULT_OPSET = 17


class _SamplerGraph(nn.Module):
    def __init__(self, model: NoiseMap, options: dict[str, Any]):
        super().__init__()
        self.model = model
        self.options = options

    def forward(self, e_inc: Tensor, *noise: Tensor) -> Tensor:
        return self.model.sample_from_noise(e_inc, *noise, **self.options)


def _exact_sigmoid(g: Any, x: Any) -> Any:
    one = g.op("Constant", value_t=torch.tensor(1.0))
    return g.op("Reciprocal", g.op("Add", one, g.op("Exp", g.op("Neg", x))))


@contextlib.contextmanager
def accurate_sigmoid(opset: int) -> Iterator[None]:
    """Export ``torch.sigmoid`` as ``1 / (1 + exp(-x))`` while the block runs.

    Why: ONNX Runtime's CPU ``Sigmoid`` is a polynomial approximation with a small *absolute*
    error; the inverse logit of the voxel fractions subtracts alpha (1e-6) from sigmoid outputs
    of the same size, so that error became up to 1.4e-3 relative in the faintest voxels (against
    a float64 reference; torch's float32 stays within 3e-5). ``Exp`` is accurate in relative
    terms, and the graph then agrees with torch within 1e-4 per voxel."""
    torch.onnx.register_custom_op_symbolic("aten::sigmoid", _exact_sigmoid, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::sigmoid", opset)


def export_onnx(
    model: ShowerModel,
    path: str | Path,
    batch_size: int | None = None,
    steps: int | None = None,
    solver: str | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Write ``model``'s sampler to ``path`` (ONNX). ``batch_size`` fixes the batch dimension
    (None: dynamic). ``steps``/``solver``: ODE steps unrolled into the graph, for models with
    solver steps (default: the model's config). Raises ``NotImplementedError`` for models that
    have no noise-to-shower map (:class:`~caloforge.models.capabilities.NoiseMap`)."""
    if not isinstance(model, NoiseMap):
        raise NotImplementedError(f"model {getattr(model, 'name', type(model).__name__)!r} has no noise-to-shower map")
    options: dict[str, Any] = dict(model.graph_options())
    if isinstance(model, SolverSteps):
        options.update(model.solver_options(steps, solver))
    elif (steps is not None and steps != 1) or solver is not None:
        raise ValueError(f"model {model.name!r} samples in one step; steps={steps} / solver={solver} do not apply")
    noise_shapes = model.noise_shapes()
    path = Path(path)
    was_training = model.training
    model.eval()
    device = model.device
    model.cpu()
    b = int(batch_size) if batch_size is not None else 2
    g = model.geometry
    example = (torch.full((b,), 1e4), *(torch.zeros(b, width) for width in noise_shapes.values()))
    inputs = [CONDITION, *noise_shapes]
    dynamic = None if batch_size is not None else {name: {0: "batch"} for name in (*inputs, OUTPUT)}
    try:
        with warnings.catch_warnings(), torch.no_grad(), accurate_sigmoid(opset):
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                _SamplerGraph(model, options), example, str(path), dynamo=False, input_names=inputs,
                output_names=[OUTPUT], dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True,
            )
    finally:
        model.to(device)
        model.train(was_training)
    _add_metadata(path, {
        "caloforge_version": __version__,
        "caloforge_weights_sha256": weights_digest(model),
        "caloforge_model": model.name,
        "caloforge_config": json.dumps(model.config.to_dict(), default=str),
        "geometry": g.name,
        "n_voxels": str(g.n_voxels),
        "n_layers": str(g.n_layers),
        "steps": str(options.get("steps", 1)),
        "solver": str(options.get("solver", "one-step")),
    })
    return path


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's weights and buffers (names, dtypes, shapes and values, in order):
    stored in the ONNX metadata by :func:`export_onnx`, so that an export can be matched with
    the model it came from."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its bits
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def check_export(sampler: OnnxSampler, model: ShowerModel) -> str:
    """Check that the export ``sampler`` runs was made from ``model``; raise ``ValueError`` naming
    the first difference (voxel count, noise inputs, model type, geometry, configuration,
    weights). Returns a short description of what was checked (for the user)."""
    g = model.geometry
    where = sampler.path
    if sampler.n_voxels != g.n_voxels:
        raise ValueError(f"{where}: the export makes showers of {sampler.n_voxels} voxels, "
                         f"the model {g.n_voxels} ({g.name})")
    if isinstance(model, NoiseMap):
        want = {k: int(v) for k, v in model.noise_shapes().items()}
        if dict(sampler.noise_shapes) != want:
            raise ValueError(f"{where}: noise inputs {sampler.noise_shapes} differ from the model's {want}")
    meta = sampler.metadata
    checks = [("caloforge_model", model.name, "model type"), ("geometry", g.name, "geometry")]
    for key, value, what in checks:
        if key in meta and meta[key] != str(value):
            raise ValueError(f"{where}: exported from a {meta[key]!r} {what}, the model is {value!r}")
    if "caloforge_config" in meta:
        try:
            exported = json.loads(meta["caloforge_config"])
        except json.JSONDecodeError:
            raise ValueError(f"{where}: unreadable caloforge_config metadata") from None
        current = json.loads(json.dumps(model.config.to_dict(), default=str))
        if exported != current:
            diff = sorted(k for k in set(exported) | set(current) if exported.get(k) != current.get(k))
            raise ValueError(f"{where}: exported from a model with a different configuration ({', '.join(diff)})")
    digest = meta.get("caloforge_weights_sha256")
    if digest is None:
        return "voxel count and metadata match; the weights are not verifiable (the export records no digest)"
    if digest != weights_digest(model):
        raise ValueError(f"{where}: exported from other weights than the model's (weights digest differs); "
                         "re-export it from this model")
    return "voxel count, configuration and weights match the model"


def describe_export(sampler: OnnxSampler) -> str:
    """One line on an export from its metadata, e.g. ``cfm, 12 midpoint steps, caloforge 0.1.0``."""
    meta = sampler.metadata
    parts = [meta.get("caloforge_model", "unknown model")]
    steps, solver = meta.get("steps"), meta.get("solver")
    if solver == "one-step":
        parts.append("one step")
    elif steps:
        parts.append(f"{steps} {solver or ''} steps".replace("  ", " "))
    if meta.get("caloforge_version"):
        parts.append(f"exported by caloforge {meta['caloforge_version']}")
    return ", ".join(parts)


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    try:
        import onnx
    except ModuleNotFoundError:  # metadata is a convenience; the graph works without it
        return
    m = onnx.load(str(path))
    for k, v in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(m, str(path))


class OnnxSampler:
    """Runs an exported sampler with ONNX Runtime (CPU by default).

    >>> s = OnnxSampler("student.onnx", threads=2)  # doctest: +SKIP
    >>> showers = s.sample(np.full(1000, 5e4, np.float32), rng=np.random.default_rng(0))  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        outputs = [o.name for o in self.session.get_outputs()]
        if not names or names[0] != CONDITION or outputs != [OUTPUT] or any(len(i.shape) != 2 for i in inputs[1:]):
            raise ValueError(f"{path}: not a caloforge sampler (inputs {names}, outputs {outputs})")
        #: The noise inputs in order, with their width per shower.
        self.noise_shapes = {i.name: int(i.shape[1]) for i in inputs[1:]}
        self.n_voxels = int(self.session.get_outputs()[0].shape[1])
        b = inputs[0].shape[0]
        self.batch_size = b if isinstance(b, int) else None

    def run(self, e_inc: np.ndarray, *noise: np.ndarray) -> np.ndarray:
        """Showers (B, voxels) for the given energies (MeV) and noise (one array per noise input)."""
        if len(noise) != len(self.noise_shapes):
            raise ValueError(f"{self.path}: expects {len(self.noise_shapes)} noise arrays ({', '.join(self.noise_shapes)})")
        feeds = {CONDITION: np.ascontiguousarray(np.asarray(e_inc, np.float32).reshape(-1))}
        feeds.update({name: np.ascontiguousarray(z, np.float32)
                      for name, z in zip(self.noise_shapes, noise, strict=True)})
        return self.session.run([OUTPUT], feeds)[0]

    def noise(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Standard-normal noise for ``n`` showers, every input drawn in order from ``rng``."""
        return tuple(rng.standard_normal((n, width), dtype=np.float32) for width in self.noise_shapes.values())

    def sample(self, e_inc: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Showers for incident energies (B,) MeV with fresh Gaussian noise from ``rng``."""
        e = np.asarray(e_inc, np.float32).reshape(-1)
        rng = np.random.default_rng() if rng is None else rng
        return self.run(e, *self.noise(len(e), rng))
