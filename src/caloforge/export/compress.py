"""Compressed variants of a trained model: fp16 / int8 ONNX graphs, ternary weights, pruning.

``compress_model(model_dir, method, out_dir)`` writes a folder that caloforge reads like any
model folder (``model.json`` + ``model.safetensors``) plus, per method:

==========  ===============================================================================
method      what is written
==========  ===============================================================================
fp16        ``model.onnx``: the model's ONNX sampler with the network weights and arithmetic
            in float16 (ONNX Runtime's float16 converter), the preprocessing (logits,
            exponentials, the readout) kept in float32; the original weights beside it.
            Sample with ``caloforge generate OUT --onnx``.
int8        ``model.onnx``: dynamic int8 quantisation (ONNX Runtime) of the MatMul/Gemm weights
            (int8 weights, activations quantised per batch at run time). Convolutions stay
            float32: ONNX Runtime's dynamic ``ConvInteger`` ran 2.7x slower than float here.
ternary     ``model.safetensors`` with every Linear/Conv weight of at least ``min_size``
            numbers ternary, BitNet b1.58 style: ``W = gamma * round_clip(W / gamma, -1, 1)``,
            ``gamma = mean |W|`` (absmean, per tensor), after a short quantisation-aware
            fine-tune (straight-through estimator) against the original model's showers;
            stored as 2-bit codes packed four to a byte plus the scales
            (:mod:`caloforge.models.packed`). Biases, norms and small weights stay float32.
prune:P     ``model.safetensors`` with a fraction P of the Linear/Conv weights (global L1
            magnitude, ``torch.nn.utils.prune``) set to zero, after the same short fine-tune
            with the mask held. Stored dense: same size, same speed on dense kernels.
==========  ===============================================================================

Fine-tuning needs the :class:`~caloforge.models.capabilities.NoiseMap` capability (the
original model's shower for the same noise is the target); the loss is the mean squared
difference of ``log(1 + E_voxel / 1 MeV)``.

References:
    Ma et al., *The Era of 1-bit LLMs: All Large Language Models are in 1.58 Bits*,
    arXiv:2402.17764 (absmean ternary weights, straight-through estimator).
    *Ternary quantisation for detector simulation*, arXiv:2504.03387 (BitNet-style weights for
    calorimeter surrogates).
    Han, Pool, Tran, Dally, *Learning both Weights and Connections for Efficient Neural
    Networks*, arXiv:1506.02626 (magnitude pruning with retraining).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize, prune

from caloforge.config import preset
from caloforge.errors import InputError
from caloforge.models.base import ShowerModel
from caloforge.models.capabilities import NoiseMap
from caloforge.models.packed import CODES, SCALE, pack_codes
from caloforge.models.serialization import (
    CONFIG as MODEL_JSON,
    FORMAT_VERSION,
    WEIGHTS,
    load_model,
    read_model_json,
)

METHODS = ("fp16", "int8", "ternary", "prune:P")
ONNX_FILE = "model.onnx"
_PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class Method:
    """A parsed ``--method``: ``name`` (fp16, int8, ternary, prune) and, for prune, ``sparsity``."""

    name: str
    sparsity: float = 0.0

    @property
    def label(self) -> str:
        return f"prune:{self.sparsity:g}" if self.name == "prune" else self.name


def parse_method(text: str) -> Method:
    """``fp16``, ``int8``, ``ternary`` or ``prune:P`` (0 < P < 1) -> :class:`Method`; anything
    else is an :class:`~caloforge.errors.InputError`."""
    t = text.strip().lower()
    if t in ("fp16", "int8", "ternary"):
        return Method(t)
    if t.startswith("prune:"):
        try:
            p = float(t.split(":", 1)[1])
        except ValueError:
            p = math.nan
        if not 0.0 < p < 1.0:
            raise InputError(f"prune sparsity must be a fraction between 0 and 1 (e.g. prune:0.5), got {text!r}")
        return Method("prune", p)
    raise InputError(f"unknown compression method {text!r}; choose one of {', '.join(METHODS)}")


@dataclass(frozen=True)
class FineTuneConfig:
    """The short fine-tune after ternarisation or pruning (against the original model).

    References:
        Ma et al., arXiv:2402.17764 (quantisation-aware training with a straight-through
        estimator).
    """

    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 1e-4
    e_min_mev: float = 1e3  # incident energies log-uniform in [e_min, e_max]
    e_max_mev: float = 1e5
    min_size: int = 1024  # weights with fewer numbers stay float32 (ternary)
    seed: int = 0

    @classmethod
    @preset
    def default(cls) -> FineTuneConfig:
        """300 steps of 16 showers: about 2-3 minutes for the DS2 student on one CPU thread."""
        return cls()

    @classmethod
    @preset
    def none(cls) -> FineTuneConfig:
        """No fine-tune: quantise or prune only (what it costs is then the raw effect)."""
        return cls(steps=0)

    @classmethod
    @preset
    def tiny(cls) -> FineTuneConfig:
        """Two small steps: for tests."""
        return cls(steps=2, batch_size=2)


# ====================================================================== ternary (BitNet b1.58)
def absmean_ternary(w: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
    """BitNet b1.58 quantisation of a weight tensor: ``(codes in {-1, 0, 1} (int8), gamma)``
    with ``gamma = mean |w|`` and ``codes = round_clip(w / gamma, -1, 1)``."""
    gamma = w.detach().abs().mean().clamp(min=eps)
    codes = torch.clamp(torch.round(w / gamma), -1, 1)
    return codes.to(torch.int8), gamma.reshape(1).float()


class _TernarySTE(nn.Module):
    """Parametrisation: the forward pass sees ``gamma * codes``, the gradient passes straight
    through to the latent float weight (straight-through estimator)."""

    def forward(self, w: Tensor) -> Tensor:
        gamma = w.detach().abs().mean().clamp(min=1e-8)
        q = torch.clamp(torch.round(w / gamma), -1, 1) * gamma
        return w + (q - w).detach()


def _weights(model: nn.Module, min_size: int = 0) -> Iterator[tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if isinstance(module, _PRUNABLE) and _weight(module).numel() >= min_size:
            yield name, module


def _weight(module: nn.Module) -> Tensor:
    w = module.weight
    assert isinstance(w, Tensor)
    return w


# ====================================================================== fine-tune
def _finetune_loss(student: ShowerModel, teacher: ShowerModel, e: Tensor, noise: tuple[Tensor, ...]) -> Tensor:
    assert isinstance(student, NoiseMap) and isinstance(teacher, NoiseMap)
    with torch.no_grad():
        target = teacher.sample_from_noise(e, *noise, **teacher.graph_options())
    pred = student.sample_from_noise(e, *noise, **student.graph_options())
    return ((torch.log1p(pred.clamp(min=0)) - torch.log1p(target)) ** 2).mean()


def finetune(student: ShowerModel, teacher: ShowerModel, config: FineTuneConfig,
             log: Callable[[str], None] | None = None) -> list[float]:
    """Train ``student`` (parametrised or pruned in place) towards ``teacher``'s showers for the
    same noise and energies; returns the loss per step. No-op for ``config.steps == 0``."""
    if config.steps <= 0:
        return []
    if not isinstance(student, NoiseMap):
        raise InputError(f"model {student.name!r} has no noise-to-shower map; it cannot be fine-tuned "
                         "after compression (use FineTuneConfig.none())")
    gen = torch.Generator().manual_seed(config.seed)
    teacher.eval()
    student.train()
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=config.learning_rate)
    lo, hi = math.log(config.e_min_mev), math.log(config.e_max_mev)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(config.steps):
        e = torch.exp(lo + (hi - lo) * torch.rand(config.batch_size, generator=gen))
        noise = student.draw_noise(config.batch_size, gen)
        loss = _finetune_loss(student, teacher, e, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
        if log is not None and (step + 1) % 50 == 0:
            log(f"  fine-tune {step + 1}/{config.steps}: loss {sum(losses[-50:]) / 50:.4g} "
                f"({time.perf_counter() - t0:.0f} s)")
    student.eval()
    return losses


# ====================================================================== the methods
def ternarise(model: ShowerModel, config: FineTuneConfig, log: Callable[[str], None] | None = None
              ) -> tuple[dict[str, Tensor], dict[str, list[int]], list[float]]:
    """Quantisation-aware fine-tune of ``model``'s Linear/Conv weights to ternary values (in
    place); returns ``(state to store, {packed weight: shape}, fine-tune losses)``."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    targets = list(_weights(model, config.min_size))
    for _, module in targets:
        parametrize.register_parametrization(module, "weight", _TernarySTE())
    try:
        losses = finetune(model, teacher, config, log)
    finally:
        for _, module in targets:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    model.eval()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    shapes: dict[str, list[int]] = {}
    for name, module in targets:
        key = f"{name}.weight"
        codes, gamma = absmean_ternary(state[key])
        shapes[key] = list(state.pop(key).shape)
        state[key + CODES] = pack_codes(codes)
        state[key + SCALE] = gamma
        with torch.no_grad():  # the in-memory model equals what is stored
            _weight(module).copy_(codes.float() * gamma)
    return state, shapes, losses


def prune_model(model: ShowerModel, sparsity: float, config: FineTuneConfig,
                log: Callable[[str], None] | None = None) -> tuple[dict[str, Tensor], list[float]]:
    """Global L1 magnitude pruning of ``model``'s Linear/Conv weights to ``sparsity`` (in place),
    the short fine-tune with the mask held, then the mask made permanent."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    targets = [(module, "weight") for _, module in _weights(model)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    try:
        losses = finetune(model, teacher, config, log)
    finally:
        for module, name in targets:
            prune.remove(module, name)
    model.eval()
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, losses


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero numbers among ``model``'s Linear/Conv weights."""
    zeros = total = 0
    for _, module in _weights(model):
        w = _weight(module)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


def _network_nodes_only(graph: Any) -> list[str]:
    """Names of the ONNX nodes outside the networks (kept float32 by the fp16 conversion)."""
    return [n.name for n in graph.node if "energy_net" not in n.name and "shape_net" not in n.name]


def onnx_fp16(src: Path, dst: Path) -> None:
    """Convert an exported sampler to float16 networks (inputs, outputs and preprocessing float32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m16 = convert_float_to_float16(m, keep_io_types=True, node_block_list=_network_nodes_only(m.graph))
    onnx.save(m16, str(dst))


def onnx_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation (ONNX Runtime) of an exported sampler's MatMul/Gemm weights."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, printed at every call
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        logging.getLogger().setLevel(level)


# ====================================================================== the folder
def compress_model(model_dir: str | Path, method: str | Method, out_dir: str | Path,
                   finetune_config: FineTuneConfig | None = None,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the compressed variant of the model in ``model_dir`` to the new folder ``out_dir``
    (written beside it and renamed into place); returns the summary also stored in
    ``model.json`` under ``compression``."""
    m = parse_method(method) if isinstance(method, str) else method
    cfg = finetune_config or FineTuneConfig.default()
    from caloforge.models.pretrained import resolve

    src = resolve(model_dir)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("exists and is not an empty folder; give a new output folder", out)
    if out.resolve() == src.resolve():
        raise InputError("is the model folder itself; give a new output folder", out)
    meta = read_model_json(src)
    model = load_model(src)
    summary: dict[str, Any] = {"method": m.label, "source": str(src), "source_model": meta.get("model")}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        t0 = time.perf_counter()
        if m.name in ("fp16", "int8"):
            from caloforge.export.onnx import export_onnx

            try:
                export_onnx(model, tmp / "float32.onnx")
            except NotImplementedError as exc:
                raise InputError(f"model {model.name!r} has no ONNX export, so no {m.name} graph ({exc})") from None
            (onnx_fp16 if m.name == "fp16" else onnx_int8)(tmp / "float32.onnx", tmp / ONNX_FILE)
            (tmp / "float32.onnx").unlink()
            shutil.copyfile(src / WEIGHTS, tmp / WEIGHTS)
            summary["file"] = ONNX_FILE
            summary["use"] = "caloforge generate OUT --onnx (the torch weights beside it are the original ones)"
        elif m.name == "ternary":
            state, shapes, losses = ternarise(model, cfg, log)
            _save_state(state, tmp / WEIGHTS)
            summary.update(ternary=shapes, finetune={**asdict(cfg), "final_loss": _tail(losses)},
                           ternary_weights=sum(math.prod(s) for s in shapes.values()))
        else:
            state, losses = prune_model(model, m.sparsity, cfg, log)
            _save_state(state, tmp / WEIGHTS)
            summary.update(sparsity=round(sparsity(model), 4),
                           finetune={**asdict(cfg), "final_loss": _tail(losses)})
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        summary["bytes"] = (tmp / (ONNX_FILE if m.name in ("fp16", "int8") else WEIGHTS)).stat().st_size
        if m.name in ("ternary", "prune"):  # new weights, written in the current format
            meta = {**meta, "format_version": FORMAT_VERSION, "config": model.config.to_dict()}
        new_meta = {**meta, "compression": summary,
                    "description": f"{m.label} compression of {meta.get('model')} from {src}"}
        (tmp / MODEL_JSON).write_text(json.dumps(new_meta, indent=2, default=str) + "\n", encoding="utf-8")
        if out.is_dir():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _tail(losses: list[float]) -> float | None:
    return None if not losses else float(sum(losses[-20:]) / len(losses[-20:]))


def _save_state(state: dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "caloforge-model"})
