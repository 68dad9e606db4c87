"""``cfm-student``: a one-step generator distilled from a trained ``cfm`` teacher.

Knowledge distillation of an ODE sampler (Luhman & Luhman, arXiv:2101.02388; the "distill"
step of rectified flow, Liu, Gong, Liu, arXiv:2209.03003): the teacher's probability-flow ODE is
a deterministic map from Gaussian noise to showers, so a network can regress it directly. The
teacher integrates its two ODEs for ``n_pairs`` noise draws, giving pairs (noise -> sample) in the
teacher's preprocessed space; the student, with the teacher's architecture and preprocessing,
maps noise to sample in a single network evaluation:

    y_E = z_E + f_E(z_E | E_inc),   y_S = z_S + f_S(z_S | E_inc, y_E)

and is trained with the mean squared error to the teacher's endpoints (energy space, and the
voxels of the non-empty layers in shape space). ``f`` is the teacher's velocity network at
t = 0 and starts from the teacher's weights, so the untrained student already is the teacher
with one Euler step; distillation removes the error of that step. Sampling costs one evaluation
of each network instead of ``steps x evaluations-per-step``.

Why distillation rather than training from data (e.g. consistency training): on a CPU budget
the teacher has already learnt the hard part (the conditional distribution); regressing a
deterministic map is a plain, stable supervised problem that converges in few steps from the
teacher's initialisation, and the student provably targets the teacher's distribution.

How to train one
----------------
With the generic loop (:func:`caloforge.training.train` / ``caloforge train``): build the student
with ``config={"teacher": "<teacher model or run folder>"}`` and train it on any showers (the
teacher's training file is natural). Its :meth:`~CFMStudent.fit_preprocessing` loads the teacher,
copies its preprocessing and weights and generates the pair set (``n_pairs`` teacher samples
with log-uniform incident energies over the teacher's training range, a deterministic function
of ``pair_seed``; cached in ``pairs_file`` when given). :meth:`~CFMStudent.loss` then ignores
the showers of each batch except for their number and regresses a random batch of pairs
(the held-out ``val_fraction`` of pairs in eval mode). A resumed run regenerates (or reloads) the
same pairs at its first loss call. In memory: ``student.distill_from(teacher)`` (same thing with
a teacher object), then ``train(student, data, ...)``; :func:`make_distillation_data` gives the
pairs alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor

from caloforge.config import preset
from caloforge.errors import InputError
from caloforge.flowmatching import odeint
from caloforge.geometry import Geometry
from caloforge.models._autocast import autocast_context
from caloforge.models.cfm import BF16Mode, CFMArchitecture, CFMConfig, ConditionalFlowMatching, _CFMBase
from caloforge.models.registry import register_model


@dataclass(frozen=True)
class StudentConfig(CFMArchitecture):
    """Config of :class:`CFMStudent`: the teacher's architecture (for ``init_from_teacher``) and
    how the distillation pairs are made."""

    teacher: str | None = None  # teacher model / run folder (what fit_preprocessing distils from)
    init_from_teacher: bool = True  # start from the teacher's weights (= its 1-step Euler sampler)
    n_pairs: int = 10000  # teacher samples to regress
    pair_steps: int | None = None  # teacher solver steps for the pairs (None: the teacher's default)
    pair_solver: Literal["euler", "midpoint", "heun", "rk4"] | None = None  # None: the teacher's default
    pair_seed: int = 0
    pair_batch: int = 500
    pair_bf16: BF16Mode = "auto"  # bfloat16 autocast while integrating the teacher on the CPU
    pairs_file: str | None = None  # optional safetensors cache of the pairs (reused when it matches)
    val_fraction: float = 0.05  # pairs held out for the validation loss

    def validate(self) -> None:
        super().validate()
        if self.n_pairs < 1 or self.pair_batch < 1:
            raise self._error("n_pairs and pair_batch must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise self._error("val_fraction must lie in [0, 1)")

    @classmethod
    @preset
    def tiny(cls) -> StudentConfig:
        """The architecture of ``CFMConfig.tiny()`` and few pairs: for tests."""
        arch = CFMConfig.tiny().architecture()
        return cls(**arch, n_pairs=64, pair_batch=32, cpu_bf16=False, pair_bf16=False)


def pair_noise(seeds: Tensor, n_layers: int, n_voxels: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """The Gaussian inputs (energy (B, layers), shape (B, voxels)) of distillation pairs, each drawn
    from its own seed: pairs need not store their noise (a DS2 pair would hold 26 kB more)."""
    z_e = torch.empty(len(seeds), n_layers)
    z_s = torch.empty(len(seeds), n_voxels)
    g = torch.Generator()
    for i, s in enumerate(seeds.tolist()):
        g.manual_seed(int(s))
        z_e[i] = torch.randn(n_layers, generator=g)
        z_s[i] = torch.randn(n_voxels, generator=g)
    return z_e.to(device), z_s.to(device)


def _pair_seed(base: int, index: Tensor) -> Tensor:
    return index.long() + int(base) * 2**32 + 1


def _f32_velocity(velocity: Callable[..., Tensor], *cond: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """``(x, t) -> velocity(x, t, *cond)`` as float32, with ``cond`` bound now (not at call time)."""
    return lambda x, t: velocity(x, t, *cond).float()


@torch.no_grad()
def make_distillation_data(
    teacher: ConditionalFlowMatching,
    n_pairs: int,
    seed: int = 0,
    steps: int | None = None,
    solver: str | None = None,
    batch_size: int = 500,
    bf16: bool | str = "auto",
    e_inc: Tensor | None = None,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Integrate the teacher's ODEs for ``n_pairs`` noise draws; returns CPU tensors
    ``e_inc`` (N,), ``y_energy`` (N, layers) and ``y_shape`` (N, voxels, float16: the targets in
    the teacher's preprocessed space) and ``index`` (N,): pair i's noise is
    ``pair_noise(_pair_seed(seed, index))``. Incident energies: ``e_inc`` if given (cycled), else
    log-uniform over the teacher's training range, drawn from ``seed``. ``steps``/``solver``
    default to the teacher's sampling defaults; ``bf16`` autocast ("auto": on AMX CPUs)."""
    if n_pairs < 1:
        raise InputError("n_pairs must be >= 1")
    teacher.eval()
    dev = teacher.device
    g = torch.Generator().manual_seed(int(seed))
    if e_inc is None:
        lo, hi = float(teacher.pre.condition.log_min), float(teacher.pre.condition.log_max)
        e = torch.exp(lo + (hi - lo) * torch.rand(n_pairs, generator=g, dtype=torch.float64)).float()
    else:
        e_inc = torch.as_tensor(e_inc).reshape(-1).float().cpu()
        e = e_inc[torch.arange(n_pairs) % len(e_inc)]
    opts = teacher.solver_options(steps, solver)
    steps, solver = opts["steps"], opts["solver"]
    L, V = teacher.geometry.n_layers, teacher.geometry.n_voxels
    index = torch.arange(n_pairs)
    y_energy = torch.empty(n_pairs, L)
    y_shape = torch.empty(n_pairs, V, dtype=torch.float16)
    t0 = time.perf_counter()
    for a in range(0, n_pairs, batch_size):
        sl = slice(a, min(a + batch_size, n_pairs))
        z_e, z_s = pair_noise(_pair_seed(seed, index[sl]), L, V, dev)
        eb = e[sl].to(dev)
        c = teacher.pre.condition(eb)
        with autocast_context(dev, bf16):
            ye = odeint(_f32_velocity(teacher.energy_velocity, c), z_e, steps, solver)
        e_layer = teacher.pre.energy_inverse(eb, ye)
        feats = teacher.pre.layer_features(eb, e_layer)
        with autocast_context(dev, bf16):
            ys = odeint(_f32_velocity(teacher.shape_velocity, c, ye, feats), z_s, steps, solver)
        y_energy[sl] = ye.cpu()
        y_shape[sl] = ys.clamp(-6e4, 6e4).cpu().half()
        if progress:
            done = sl.stop
            rate = done / (time.perf_counter() - t0)
            print(f"  distillation pairs {done}/{n_pairs} ({rate:.1f}/s)", flush=True)
    return {"e_inc": e, "y_energy": y_energy, "y_shape": y_shape, "index": index}


@register_model
class CFMStudent(_CFMBase):
    """One-step student of a ``cfm`` teacher (same networks and preprocessing, see module doc).

    Capabilities: trained by its loss (on the teacher's pairs), a noise map (ONNX export),
    distils from a teacher.

    References:
        Luhman and Luhman, *Knowledge Distillation in Iterative Generative Models for Improved
        Sampling Speed*, arXiv:2101.02388.
        Liu, Gong, Liu, *Flow Straight and Fast*, arXiv:2209.03003.
    """

    name = "cfm-student"
    Config = StudentConfig
    config: StudentConfig
    teacher_family = "cfm"
    # plain attributes set with object.__setattr__ (not submodules), declared for the type checker
    _teacher: ConditionalFlowMatching | None
    _pairs: dict[str, Tensor] | None
    _prepared: bool

    def __init__(self, geometry: Geometry, config: StudentConfig | dict[str, Any] | None = None):
        super().__init__(geometry, config)
        self._build()
        object.__setattr__(self, "_teacher", None)  # not a submodule: not trained, not saved
        object.__setattr__(self, "_pairs", None)
        object.__setattr__(self, "_prepared", False)

    # ---------------------------------------------------------------- teacher and pairs
    def _load_teacher(self) -> ConditionalFlowMatching:
        if self._teacher is not None:
            return self._teacher
        if not self.config.teacher:
            raise InputError(
                "model 'cfm-student' needs a teacher: set config 'teacher' to a trained cfm model "
                "or run folder, or call student.distill_from(teacher)"
            )
        from caloforge.models.pretrained import resolve
        from caloforge.models.serialization import load_model

        # Building the teacher draws initial weights from torch's global generator; a resumed
        # run loads it inside the training loop, whose random stream must not move.
        with torch.random.fork_rng(devices=[]):
            teacher = load_model(resolve(self.config.teacher), device=self.device)
        if not isinstance(teacher, ConditionalFlowMatching):
            raise InputError(f"the teacher must be a 'cfm' model, not {teacher.name!r}", self.config.teacher)
        object.__setattr__(self, "_teacher", teacher)
        return teacher

    def _pair_meta(self, teacher: ConditionalFlowMatching) -> dict[str, Any]:
        opts = teacher.solver_options(self.config.pair_steps, self.config.pair_solver)
        return {
            "n_pairs": self.config.n_pairs, "seed": self.config.pair_seed,
            "steps": opts["steps"], "solver": opts["solver"],
            "teacher": str(self.config.teacher), "energy_range": [float(teacher.pre.condition.log_min),
                                                                   float(teacher.pre.condition.log_max)],
        }

    def _ensure_pairs(self) -> dict[str, Tensor]:
        if self._pairs is not None:
            return self._pairs
        teacher = self._load_teacher()
        meta = self._pair_meta(teacher)
        path = Path(self.config.pairs_file) if self.config.pairs_file else None
        pairs = None
        if path is not None and path.is_file():
            from safetensors import safe_open
            from safetensors.torch import load_file

            with safe_open(str(path), "pt") as f:
                stored = json.loads((f.metadata() or {}).get("caloforge_pairs", "{}"))
            if stored == meta:
                pairs = load_file(str(path))
        if pairs is None:
            pairs = make_distillation_data(
                teacher, meta["n_pairs"], meta["seed"], meta["steps"], meta["solver"],
                self.config.pair_batch, self.config.pair_bf16,
            )
            if path is not None:
                from safetensors.torch import save_file

                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({k: v.contiguous() for k, v in pairs.items()}, str(path),
                          metadata={"caloforge_pairs": json.dumps(meta)})
        self.set_pairs(pairs)
        # with the train/validation split (the raw pairs lack it); set_pairs has just set it
        return cast(dict[str, Tensor], self._pairs)

    def set_pairs(self, pairs: dict[str, Tensor]) -> None:
        """Use these distillation pairs (from :func:`make_distillation_data`) for the loss."""
        n = len(pairs["e_inc"])
        n_val = min(n - 1, int(round(n * self.config.val_fraction))) if n > 1 else 0
        p = {k: v.cpu() for k, v in pairs.items()}
        p["n_train"] = torch.tensor(n - n_val)
        object.__setattr__(self, "_pairs", p)

    @torch.no_grad()
    def _copy_from_teacher(self, teacher: ConditionalFlowMatching) -> None:
        self.pre.load_state_dict(teacher.pre.state_dict())  # statistics and hit floor alike
        if not self.config.init_from_teacher:
            return
        mine, theirs = self.config.architecture(), teacher.config.architecture()
        differing = [k for k in mine if mine[k] != theirs[k]]
        if differing:
            raise InputError(
                f"cfm-student: init_from_teacher needs the teacher's architecture; config keys "
                f"{differing} differ (set them as the teacher's, or init_from_teacher false)"
            )
        self.energy_net.load_state_dict(teacher.energy_net.state_dict())
        self.shape_net.load_state_dict(teacher.shape_net.state_dict())

    def distill_from(self, teacher: ConditionalFlowMatching, pairs: dict[str, Tensor] | None = None, **pair_options: Any) -> CFMStudent:
        """Attach ``teacher`` (in memory), copy its preprocessing (and weights, with
        ``init_from_teacher``) and make the pair set (``pairs``, or
        :func:`make_distillation_data` with the config's settings overridden by
        ``pair_options``). Train afterwards with :func:`caloforge.training.train` as usual."""
        object.__setattr__(self, "_teacher", teacher.to(self.device).eval())
        self._copy_from_teacher(teacher)
        if pairs is None:
            meta = self._pair_meta(teacher)
            opts = {"n_pairs": meta["n_pairs"], "seed": meta["seed"], "steps": meta["steps"], "solver": meta["solver"],
                    "batch_size": self.config.pair_batch, "bf16": self.config.pair_bf16, **pair_options}
            pairs = make_distillation_data(teacher, **opts)
        self.set_pairs(pairs)
        object.__setattr__(self, "_prepared", True)
        return self

    def fit_preprocessing(self, e_inc: Tensor, showers: Tensor) -> None:
        """Load the teacher, copy its preprocessing (and weights) and make the pairs. The
        showers are not used: the student learns the teacher's map, not the data."""
        if self._prepared:
            return
        self._copy_from_teacher(self._load_teacher())
        self._ensure_pairs()
        object.__setattr__(self, "_prepared", True)

    # ---------------------------------------------------------------- training
    def loss(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """MSE between the one-step student and the teacher's ODE endpoints on a random batch of
        pairs as large as the given batch (training pairs in train mode, held-out ones in eval)."""
        pairs = self._ensure_pairs()
        n_train, n = int(pairs["n_train"]), len(pairs["e_inc"])
        b = int(e_inc.shape[0])
        if self.training or n_train == n:
            idx = torch.randint(0, n_train, (b,))
        else:
            idx = n_train + torch.randint(0, n - n_train, (b,))
        dev = self.device
        L, V = self.geometry.n_layers, self.geometry.n_voxels
        z_e, z_s = pair_noise(_pair_seed(self.config.pair_seed, pairs["index"][idx]), L, V, dev)
        e = pairs["e_inc"][idx].to(dev)
        y_e = pairs["y_energy"][idx].to(dev)
        y_s = pairs["y_shape"][idx].to(dev, torch.float32)
        with torch.no_grad():
            c = self.pre.condition(e)
            e_layer = self.pre.energy_inverse(e, y_e)
            feats = self.pre.layer_features(e, e_layer)
            mask = self.pre.layer_sum.expand(self.pre.nonempty(e_layer)).float()
        t0 = torch.zeros(b, device=dev)
        with autocast_context(dev, self.config.cpu_bf16):
            pe = z_e + self.energy_velocity(z_e, t0, c).float()
            loss_e = ((pe - y_e) ** 2).mean()
            ps = z_s + self.shape_velocity(z_s, t0, c, y_e, feats).float()
            loss_s = ((ps - y_s) ** 2 * mask).sum() / mask.sum().clamp(min=1)
        return self.config.energy_loss_weight * loss_e + loss_s

    # ---------------------------------------------------------------- sampling
    def sample_from_noise(self, e_inc: Tensor, z_energy: Tensor, z_shape: Tensor, bf16: bool | None = None) -> Tensor:
        """Deterministic one-step map (E_inc, noise) -> showers (B, voxels) MeV."""
        bf16 = self.config.sample_bf16 if bf16 is None else bf16
        e = e_inc.reshape(-1).to(z_shape.dtype)
        c = self.pre.condition(e)
        t0 = torch.zeros_like(e)
        with autocast_context(z_shape.device, bool(bf16)):
            y_e = z_energy + self.energy_velocity(z_energy, t0, c).float()
        e_layer = self.pre.energy_inverse(e, y_e)
        feats = self.pre.layer_features(e, e_layer)
        with autocast_context(z_shape.device, bool(bf16)):
            y_s = z_shape + self.shape_velocity(z_shape, t0, c, y_e, feats).float()
        return self.pre.shape_inverse(y_s, e_layer)

    # an explicit keyword option (unknown ones a TypeError) narrows ShowerModel.sample's **options
    @torch.no_grad()
    def sample(  # type: ignore[override]
        self, e_inc: Tensor, generator: torch.Generator | None = None, bf16: bool | None = None
    ) -> Tensor:
        """Showers (B, voxels) MeV for incident energies (B,) MeV, one network evaluation each
        for energies and shape. ``bf16``: bfloat16 autocast on the CPU (default config)."""
        e = self._e_inc(e_inc)
        z_e, z_s = self.draw_noise(e.shape[0], generator)
        return self._in_chunks(self.sample_from_noise, e, z_e, z_s, bf16=bf16)
