"""Geant4 drop-in export: an ONNX graph that Geant4's extended example Par04 loads as it is.

Par04 (``examples/extended/parameterisations/Par04``, classes ``Par04InferenceSetup`` and
``Par04OnnxInference``) runs an ML fast-simulation model through ONNX Runtime with this contract,
which :func:`export_par04` produces from any model with the
:class:`~caloforge.models.capabilities.NoiseMap` capability:

* **one input** (batch, ``latent + 4``), float32: ``latent`` standard-normal numbers that Par04
  draws itself (``setSizeLatentVector``), then the condition vector (``setSizeConditionVector 4``):
  the incident energy divided by Par04's ``fMaxEnergy`` (1,024,000 MeV = 1024 GeV), the incident
  polar angle in degrees divided by ``fMaxAngle`` (90), and a two-entry geometry one-hot (Par04
  writes ``[0, 1]``). caloforge's models are conditioned on the energy alone (normal incidence,
  one geometry): the angle and the one-hot are accepted and ignored. The latent vector is the
  model's noise inputs concatenated in ``model.noise_shapes()`` order (for the CFM models
  ``z_energy`` (layers) then ``z_shape`` (voxels): 45 + 6,480 = 6,525 numbers for DS2).
* **one output** (batch, ``N_r * N_phi * N_z``), float32: the cell energies **divided by the
  incident energy** (Par04 multiplies them back by it), in the order of
  ``Par04InferenceSetup::GetPositions``: loops over r (outer), phi, z (inner), i.e. a C-order
  array (r, phi, z) whose last index, z, runs fastest. CaloChallenge files store (layer, alpha,
  r) with r fastest; the graph transposes (``shower.reshape(L, A, R).transpose(2, 1, 0)``).
  Phi bin k is CaloChallenge's alpha bin k (both split the full circle into equal bins).
* the mesh: ``N_r`` r cells of equal width (``setSizeOfRhoCells``), ``N_phi`` phi cells,
  ``N_z`` z cells of ``setSizeOfZCells`` (DS2: 9 x 4.65 mm, 16, 45 x 3.4 mm; DS3 is Par04's own
  default mesh, 18 x 2.325 mm, 50, 45 x 3.4 mm). Geometries with unequal r bins (DS1) have no
  Par04 mesh and do not export.

The sampler is deterministic given the latent vector: a ``cfm`` teacher's ODE solver is
unrolled for a fixed number of steps, the one-step ``cfm-student`` is one pass through each
network. :func:`par04_macro` prints the ``/Par04/inference/...`` settings that go with a file.

References:
    Geant4 Collaboration, extended example ``parameterisations/Par04`` (Zaborowska, Salamani,
    Hashemi et al.), and Salamani et al., *MetaHEP: Meta learning for fast shower simulation of
    high energy physics experiments*, Phys. Lett. B 844 (2023) 138079.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from caloforge import __version__
from caloforge.export.onnx import DEFAULT_OPSET, _add_metadata, accurate_sigmoid, weights_digest
from caloforge.models.capabilities import NoiseMap, SolverSteps

if TYPE_CHECKING:
    from caloforge.geometry import Geometry
    from caloforge.models.base import ShowerModel

#: Par04's normalisation constants (``Par04InferenceSetup.hh``: ``fMaxEnergy`` in MeV, ``fMaxAngle`` in degrees).
PAR04_MAX_ENERGY_MEV = 1_024_000.0
PAR04_MAX_ANGLE_DEG = 90.0
#: The condition vector Par04 appends to the latent vector: energy, angle, two-entry geometry one-hot.
PAR04_CONDITIONS = ("energy / 1024 GeV", "angle / 90 deg", "geometry one-hot [0]", "geometry one-hot [1]")
#: Longitudinal cell size (mm) of the CaloChallenge geometries made with Par04's SiW readout mesh.
Z_CELL_MM = {"ds2": 3.4, "ds3": 3.4}
INPUT = "input"
OUTPUT = "output"


@dataclass(frozen=True)
class Par04Contract:
    """What a Par04 ONNX file expects and returns, and the macro settings that go with it.

    References:
        Geant4 extended example ``parameterisations/Par04`` (``Par04InferenceSetup``).
    """

    latent: int  # setSizeLatentVector
    noise_shapes: tuple[tuple[str, int], ...]  # how the latent vector splits into the model's noise inputs
    n_r: int
    n_phi: int
    n_z: int
    r_cell_mm: float
    z_cell_mm: float
    max_energy_mev: float = PAR04_MAX_ENERGY_MEV
    max_angle_deg: float = PAR04_MAX_ANGLE_DEG

    @property
    def n_conditions(self) -> int:
        return len(PAR04_CONDITIONS)

    @property
    def n_cells(self) -> int:
        return self.n_r * self.n_phi * self.n_z

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "conditions": list(PAR04_CONDITIONS), "output_order": "(r, phi, z), z fastest",
                "output_units": "cell energy / incident energy"}


def par04_contract(model: ShowerModel, z_cell_mm: float | None = None) -> Par04Contract:
    """The Par04 contract of ``model``. Raises ``NotImplementedError`` (with the reason) for a
    model without a noise map or a geometry that has no Par04 mesh (unequal r bins, layers that
    differ, an unknown z cell size and no ``z_cell_mm``)."""
    if not isinstance(model, NoiseMap):
        raise NotImplementedError("it has no noise-to-shower map (NoiseMap), so no latent-vector input")
    g: Geometry = model.geometry
    if not g.is_regular:
        raise NotImplementedError(f"geometry {g.name} has layers with different binnings; Par04's mesh is one "
                                  "(r, phi, z) grid")
    edges = np.asarray(g.layers[g.relevant_layers[0]].r_edges, dtype=np.float64)
    widths = np.diff(edges)
    if edges[0] != 0.0 or not np.allclose(widths, widths[0], rtol=1e-6):
        raise NotImplementedError(f"geometry {g.name} has unequal r bins; Par04's mesh has r cells of one size")
    if z_cell_mm is None:
        if g.name not in Z_CELL_MM:
            raise NotImplementedError(f"the z cell size of geometry {g.name} is unknown; give z_cell_mm")
        z_cell_mm = Z_CELL_MM[g.name]
    n_layers, n_alpha, n_r = g.shape
    shapes = tuple((k, int(v)) for k, v in model.noise_shapes().items())
    return Par04Contract(latent=sum(v for _, v in shapes), noise_shapes=shapes, n_r=n_r, n_phi=n_alpha,
                         n_z=n_layers, r_cell_mm=float(np.round(widths[0], 6)), z_cell_mm=float(z_cell_mm))


def to_par04_layout(showers: Tensor | np.ndarray, shape: tuple[int, int, int]) -> Any:
    """CaloChallenge voxels (B, layers*alpha*r; r fastest) -> Par04 cells (B, r*phi*z; z fastest)."""
    n_layers, n_alpha, n_r = shape
    if isinstance(showers, Tensor):
        return showers.reshape(-1, n_layers, n_alpha, n_r).permute(0, 3, 2, 1).reshape(showers.shape[0], -1)
    x = np.asarray(showers)
    return x.reshape(-1, n_layers, n_alpha, n_r).transpose(0, 3, 2, 1).reshape(x.shape[0], -1)


def from_par04_layout(cells: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Par04 cells (B, r*phi*z; z fastest) -> CaloChallenge voxels (B, layers*alpha*r; r fastest)."""
    n_layers, n_alpha, n_r = shape
    x = np.asarray(cells)
    return x.reshape(-1, n_r, n_alpha, n_layers).transpose(0, 3, 2, 1).reshape(x.shape[0], -1)


def par04_input(e_inc_mev: np.ndarray, latent: np.ndarray, angle_deg: float = 0.0,
                geometry_onehot: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """The input vectors Par04 builds (``Par04InferenceSetup::GetEnergies``): latent, E/1024 GeV,
    angle/90 deg, geometry one-hot; (B, latent + 4) float32."""
    e = np.asarray(e_inc_mev, np.float64).reshape(-1, 1)
    z = np.asarray(latent, np.float32).reshape(len(e), -1)
    cond = np.concatenate([e / PAR04_MAX_ENERGY_MEV, np.full_like(e, angle_deg / PAR04_MAX_ANGLE_DEG),
                           np.tile(np.asarray(geometry_onehot, np.float64), (len(e), 1))], axis=1)
    return np.concatenate([z, cond.astype(np.float32)], axis=1)


class _Par04Graph(nn.Module):
    """(B, latent + 4) -> (B, cells): split the latent vector into the model's noise, sample,
    transpose to (r, phi, z) and divide by the incident energy."""

    def __init__(self, model: NoiseMap, contract: Par04Contract, shape: tuple[int, int, int], options: dict[str, Any]):
        super().__init__()
        self.model = model
        self.contract = contract
        self.shape = shape
        self.options = options

    def forward(self, gen: Tensor) -> Tensor:
        c = self.contract
        noise, a = [], 0
        for _, width in c.noise_shapes:
            noise.append(gen[:, a : a + width])
            a += width
        e_inc = gen[:, c.latent] * c.max_energy_mev
        showers = self.model.sample_from_noise(e_inc, *noise, **self.options)
        return to_par04_layout(showers, self.shape) / e_inc.reshape(-1, 1)


def export_par04(
    model: ShowerModel,
    path: str | Path,
    steps: int | None = None,
    solver: str | None = None,
    z_cell_mm: float | None = None,
    opset: int = DEFAULT_OPSET,
) -> Par04Contract:
    """Write ``model`` as a Par04 ONNX graph at ``path`` (dynamic batch); returns its contract.

    ``steps``/``solver``: ODE steps unrolled into the graph for models with solver steps.
    Raises ``NotImplementedError`` (why) for a model or geometry that cannot be exported."""
    contract = par04_contract(model, z_cell_mm)
    assert isinstance(model, NoiseMap)  # par04_contract checked it
    options: dict[str, Any] = dict(model.graph_options())
    if isinstance(model, SolverSteps):
        options.update(model.solver_options(steps, solver))
    elif (steps is not None and steps != 1) or solver is not None:
        raise ValueError(f"model {model.name!r} samples in one step; steps={steps} / solver={solver} do not apply")
    path = Path(path)
    was_training, device = model.training, model.device
    model.eval()
    model.cpu()
    example = torch.from_numpy(par04_input(np.full(2, 1e4), np.zeros((2, contract.latent))))
    try:
        with warnings.catch_warnings(), torch.no_grad(), accurate_sigmoid(opset):
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                _Par04Graph(model, contract, model.geometry.shape, options), (example,), str(path), dynamo=False,
                input_names=[INPUT], output_names=[OUTPUT], opset_version=opset, do_constant_folding=True,
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )
    finally:
        model.to(device)
        model.train(was_training)
    _fix_output_width(path, contract.n_cells)
    _add_metadata(path, {
        "caloforge_version": __version__,
        "caloforge_weights_sha256": weights_digest(model),
        "caloforge_model": model.name,
        "caloforge_config": json.dumps(model.config.to_dict(), default=str),
        "geometry": model.geometry.name,
        "format": "geant4-par04",
        "par04_contract": json.dumps(contract.to_dict()),
        "steps": str(options.get("steps", 1)),
        "solver": str(options.get("solver", "one-step")),
    })
    return contract


def _fix_output_width(path: Path, n_cells: int) -> None:
    """Declare the output's cell count (the exporter leaves a symbolic name after the transpose)."""
    import onnx

    m = onnx.load(str(path))
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = n_cells
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def par04_macro(contract: Par04Contract, model_path: str | Path) -> str:
    """The Par04 macro lines (``/Par04/inference/...``) for an exported file."""
    return "\n".join([
        f"/Par04/inference/setSizeLatentVector {contract.latent}",
        f"/Par04/inference/setSizeConditionVector {contract.n_conditions}",
        f"/Par04/inference/setModelPathName {model_path}",
        "/Par04/inference/setInferenceLibrary ONNX",
        f"/Par04/inference/setSizeOfRhoCells {contract.r_cell_mm:g} mm",
        f"/Par04/inference/setSizeOfZCells {contract.z_cell_mm:g} mm",
        f"/Par04/inference/setNbOfRhoCells {contract.n_r}",
        f"/Par04/inference/setNbOfPhiCells {contract.n_phi}",
        f"/Par04/inference/setNbOfZCells {contract.n_z}",
    ])


def par04_notes(contract: Par04Contract) -> str:
    """What the file expects besides the macro (for the user)."""
    return (f"input: {contract.latent} standard-normal numbers, then E/{contract.max_energy_mev / 1000:g} GeV, "
            f"angle/{contract.max_angle_deg:g} deg, geometry one-hot (angle and one-hot ignored: the model is "
            f"conditioned on the energy alone); output: {contract.n_cells} cell energies / E in (r, phi, z) "
            "order, z fastest")
