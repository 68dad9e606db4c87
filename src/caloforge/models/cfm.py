"""``cfm``: conditional flow matching with CaloDREAM's energy + shape factorisation.

Flow matching (Lipman, Chen, Ben-Hamu, Nickel, Le, arXiv:2210.02747) with the straight
(optimal-transport, "rectified flow") path ``x_t = (1 - t) x_0 + t x_1`` from Gaussian noise
``x_0`` to data ``x_1``: a network ``v(x_t, t | cond)`` regresses the velocity ``x_1 - x_0``, and
sampling integrates ``dx/dt = v`` from t = 0 to 1 with a fixed-step ODE solver (Euler, midpoint,
Heun or RK4; the step count is a sampling option).

As in CaloDREAM (Favaro, Ore, Palacios Schweitzer, Plehn, arXiv:2405.09629) the shower is
generated in two conditional steps (see :mod:`caloforge.transforms`):

1. an **energy network** (a residual MLP, FiLM-conditioned on t and ``log E_inc``) generates the
   layer energies, as standardised logits of the sequential energy fractions;
2. a **shape network** generates the voxels normalised to their layer's energy (standardised
   logits, alpha = 1e-6) given E_inc and the layer energies; the generated fractions are
   renormalised per layer, multiplied by the layer energies, and the readout threshold applied.
   Zero voxels are dequantised below the threshold in training (``dequantize``, after CaloFlow)
   and generated voxels are read out from ``hit_floor`` up, the energy where the training hits
   begin (see :class:`~caloforge.transforms.BelowThresholdNoise`).

The shape network respects the cylinder: a small 2-D U-Net over (layer, alpha) with the radial
bins as channels (the radial bins differ in size and content, so they are features rather than a
translation-invariant axis), circular padding in alpha (periodic), zero padding in depth, stride-2
down-sampling. Each layer's own (log) energy and hit flag enter as input channels; a global
embedding of (t, E_inc, all layer energies) modulates every residual block by FiLM. Training
loss: the two flow-matching losses, the shape one averaged over the voxels of non-empty layers.

On CPUs with bfloat16 matrix units (Intel AMX) the training loss and, optionally, sampling run
under bfloat16 autocast (``cpu_bf16``), several times faster; weights and the ODE state stay
float32.

The pieces live in their own modules: the probability path and the ODE solvers in
:mod:`caloforge.flowmatching`, the networks in :mod:`caloforge.models.networks`, the
preprocessing in :mod:`caloforge.transforms`; this module holds the models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from caloforge.config import preset
from caloforge.errors import InputError
from caloforge.flowmatching import StraightPath, check_solver, odeint
from caloforge.flowmatching.likelihood import ODELikelihoodConfig, ode_log_prob
from caloforge.geometry import Geometry
from caloforge.models._autocast import autocast_context
from caloforge.models.base import ModelConfig, ShowerModel
from caloforge.models.networks import EnergyNet, ShapeNet
from caloforge.models.registry import register_model
from caloforge.transforms import ShowerPreprocessing, hit_floor

# ====================================================================== configs
BF16Mode = bool | Literal["auto"]


@dataclass(frozen=True)
class CFMArchitecture(ModelConfig):
    """The preprocessing and network settings that the teacher and its student share."""

    shape_alpha: float = 1e-6  # logit alpha of the voxel fractions
    energy_alpha: float = 1e-6  # logit alpha of the sequential energy fractions
    dequantize: bool = True  # zero voxels -> uniform noise below the readout threshold (BelowThresholdNoise)
    energy_width: int = 128
    energy_depth: int = 3
    shape_channels: tuple[int, ...] = (48, 96)  # U-Net widths per level, from half resolution (stride 2 between)
    shape_blocks: int = 1  # residual blocks per level, down and up
    shape_mid_blocks: int = 1
    shape_emb: int = 128  # width of the (t, E_inc, layer energies) embedding
    energy_loss_weight: float = 1.0
    cpu_bf16: BF16Mode = "auto"  # bfloat16 autocast in the loss on the CPU: auto (AMX CPUs), true, false
    sample_bf16: bool = False  # bfloat16 autocast in sampling on the CPU (faster, less exact)
    cpu_chunk: int = 100  # sample() on the CPU in slices of this many showers (0: whole batch)

    ARCH_KEYS = ("shape_alpha", "energy_alpha", "energy_width", "energy_depth", "shape_channels", "shape_blocks",
                 "shape_mid_blocks", "shape_emb", "dequantize")

    def validate(self) -> None:
        for key in ("energy_width", "energy_depth", "shape_emb"):
            if getattr(self, key) < 1:
                raise self._error(f"{key} must be at least 1")
        if not self.shape_channels or min(self.shape_channels) < 1:
            raise self._error("shape_channels must be a non-empty list of positive widths")
        if self.cpu_chunk < 0:
            raise self._error("cpu_chunk must not be negative")

    def architecture(self) -> dict[str, Any]:
        """The keys that must agree between a teacher and a student initialised from it."""
        return {k: getattr(self, k) for k in self.ARCH_KEYS}


@dataclass(frozen=True)
class CFMConfig(CFMArchitecture):
    """Config of :class:`ConditionalFlowMatching` (``cfm``)."""

    # generated voxels read out from this energy (MeV) up: "auto" = the hit_floor_quantile of the
    # training hits (fitted once into a buffer), a number = that energy; None = the readout threshold
    hit_floor: float | Literal["auto"] | None = "auto"
    hit_floor_quantile: float = 2e-3
    energy_repeats: int = 4  # energy-flow loss on this many noise/time draws per shower (cheap)
    solver: Literal["euler", "midpoint", "heun", "rk4"] = "midpoint"  # default ODE solver for sampling
    steps: int = 12  # default solver steps (shape and energy flow)

    def validate(self) -> None:
        super().validate()
        if self.steps < 1:
            raise self._error("steps must be at least 1")
        if not 0.0 <= self.hit_floor_quantile < 1.0:
            raise self._error("hit_floor_quantile must lie in [0, 1)")

    @classmethod
    @preset
    def tiny(cls) -> CFMConfig:
        """Small networks, few solver steps: for tests."""
        return cls(energy_width=16, energy_depth=1, shape_channels=(8, 16), shape_emb=16, steps=2, cpu_bf16=False)


# ====================================================================== the models
class _CFMBase(ShowerModel):
    """Shared by the teacher (``cfm``) and its distilled student: preprocessing + the two nets."""

    config: CFMArchitecture

    def _build(self) -> None:
        g: Geometry = self.geometry
        cfg = self.config
        if not g.is_regular:
            raise ValueError(f"model {self.name!r} needs a regular (layer, alpha, r) geometry; {g.name} is not")
        self.pre = ShowerPreprocessing(g, shape_alpha=cfg.shape_alpha, energy_alpha=cfg.energy_alpha,
                                       dequantize=cfg.dequantize)
        L = g.n_layers
        self.energy_net = EnergyNet(L, cfg.energy_width, cfg.energy_depth)
        self.shape_net = ShapeNet(g.shape, 2, 1 + L, cfg.shape_channels, cfg.shape_blocks, cfg.shape_mid_blocks,
                                  cfg.shape_emb)

    # ------------------------------------------------------------------ pieces
    def energy_velocity(self, y: Tensor, t: Tensor, c: Tensor) -> Tensor:
        return self.energy_net(y, t, c)

    def shape_velocity(self, y: Tensor, t: Tensor, c: Tensor, y_energy: Tensor, layer_features: Tensor) -> Tensor:
        return self.shape_net(y, t, layer_features, torch.cat([c.reshape(-1, 1).to(y_energy.dtype), y_energy], 1))

    def noise_shapes(self) -> dict[str, int]:
        return {"z_energy": self.geometry.n_layers, "z_shape": self.geometry.n_voxels}

    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The Gaussian inputs of one batch: (energy noise (n, layers), shape noise (n, voxels))."""
        z_e = torch.randn(n, self.geometry.n_layers, generator=generator, device=self.device)
        z_s = torch.randn(n, self.geometry.n_voxels, generator=generator, device=self.device)
        return z_e, z_s

    def graph_options(self) -> dict[str, Any]:
        return {"bf16": False}

    def readout_floor(self) -> float:
        """The energy (MeV) from which generated voxels are read out (fitted or configured)."""
        return self.pre.hit_floor_value()

    def energy_range(self) -> tuple[float, float]:
        return float(self.pre.condition.log_min.exp()), float(self.pre.condition.log_max.exp())

    def _in_chunks(self, fn: Callable[..., Tensor], e: Tensor, z_e: Tensor, z_s: Tensor, **options: Any) -> Tensor:
        """``fn(e, z_e, z_s, **options)`` over slices of ``cpu_chunk`` showers on the CPU.

        The noise is drawn for the whole batch first, so the showers do not depend on the chunk
        size. Why: on a CPU the activations of a 1000-shower batch (tens of MB per layer) fall
        out of the caches, and the same work in slices of ~100 runs about twice as fast."""
        chunk = self.config.cpu_chunk
        if z_s.device.type != "cpu" or chunk <= 0 or e.shape[0] <= chunk:
            return fn(e, z_e, z_s, **options)
        return torch.cat([fn(e[a : a + chunk], z_e[a : a + chunk], z_s[a : a + chunk], **options)
                          for a in range(0, e.shape[0], chunk)])

    def _e_inc(self, e_inc: Tensor) -> Tensor:
        e = torch.as_tensor(e_inc).reshape(-1).to(self.device, torch.float32)
        if e.numel() and not bool((e > 0).all()):
            raise InputError("incident energies must be positive")
        return e


@register_model
class ConditionalFlowMatching(_CFMBase):
    """CaloDREAM-style conditional flow matching: energy CFM (MLP) + shape CFM (cylindrical U-Net).

    Capabilities: trained by its loss, a noise map (ONNX export, distillation), solver steps, a
    likelihood (:meth:`log_prob`, an ODE estimate with its error: :meth:`log_prob_estimate`).

    References:
        Lipman, Chen, Ben-Hamu, Nickel, Le, *Flow Matching for Generative Modeling*,
        arXiv:2210.02747.
        Favaro, Ore, Palacios Schweitzer, Plehn, *CaloDREAM: Detector Response Emulation via
        Attentive flow Matching*, arXiv:2405.09629.
        Grathwohl et al., *FFJORD*, ICLR 2019, and Theis, van den Oord, Bethge,
        arXiv:1511.01844 (the likelihood: Hutchinson along the ODE; the dequantisation bound).
    """

    name = "cfm"
    Config = CFMConfig
    config: CFMConfig

    def __init__(self, geometry: Geometry, config: CFMConfig | dict[str, Any] | None = None):
        super().__init__(geometry, config)
        self._build()
        self.path = StraightPath()
        if not isinstance(self.config.hit_floor, str):  # a number, or None: known before any fit
            self.pre.set_hit_floor(self.config.hit_floor)

    # ---------------------------------------------------------------- training
    def fit_preprocessing(self, e_inc: Tensor, showers: Tensor) -> None:
        self.pre.fit(e_inc.to(self.device, torch.float32), showers.to(self.device, torch.float32))
        if self.config.hit_floor == "auto":  # fitted into the preprocessing's buffer, not the config
            self.pre.set_hit_floor(hit_floor(showers, self.geometry.readout_threshold, self.config.hit_floor_quantile))

    def loss(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """Flow-matching loss of the energy flow (mean over layers) plus that of the shape flow
        (mean over the voxels of non-empty layers)."""
        e = e_inc.reshape(-1).to(self.device, torch.float32)
        with torch.no_grad():
            c, y_e, y_s, e_layer = self.pre(e, showers.to(self.device, torch.float32))
            features = self.pre.layer_features(e, e_layer)
            voxel_mask = self.pre.layer_sum.expand(self.pre.nonempty(e_layer)).float()
        b = e.shape[0]
        k = max(1, self.config.energy_repeats)
        with autocast_context(self.device, self.config.cpu_bf16):
            # energy flow, k draws of (noise, time) per shower
            x1 = y_e.repeat(k, 1)
            x0 = torch.randn_like(x1)
            t = torch.rand(x1.shape[0], device=self.device)
            xt, ut = self.path.sample(x0, x1, t)
            v = self.energy_velocity(xt, t, c.repeat(k)).float()
            loss_e = ((v - ut) ** 2).mean()
            # shape flow
            x0 = torch.randn_like(y_s)
            t = torch.rand(b, device=self.device)
            xt, ut = self.path.sample(x0, y_s, t)
            v = self.shape_velocity(xt, t, c, y_e, features).float()
            err = ((v - ut) ** 2 * voxel_mask).sum() / voxel_mask.sum().clamp(min=1)
        return self.config.energy_loss_weight * loss_e + err

    # ---------------------------------------------------------------- sampling
    def solver_options(self, steps: int | None = None, solver: str | None = None) -> dict[str, Any]:
        opts: dict[str, Any] = {"steps": int(self.config.steps if steps is None else steps),
                "solver": self.config.solver if solver is None else solver}
        check_solver(opts["solver"], opts["steps"])
        return opts

    def sample_from_noise(
        self, e_inc: Tensor, z_energy: Tensor, z_shape: Tensor, steps: int | None = None,
        solver: str | None = None, energy_steps: int | None = None, bf16: bool | None = None,
    ) -> Tensor:
        """Deterministic map (E_inc, noise) -> showers (B, voxels) MeV: the two ODEs solved with
        ``steps`` (shape; ``energy_steps`` for the energy flow, default the same) of ``solver``."""
        n_steps = int(self.config.steps if steps is None else steps)
        n_energy = n_steps if energy_steps is None else int(energy_steps)
        method = self.config.solver if solver is None else solver
        use_bf16 = self.config.sample_bf16 if bf16 is None else bf16
        e = e_inc.reshape(-1).to(z_shape.dtype)
        c = self.pre.condition(e)
        with autocast_context(z_shape.device, bool(use_bf16)):
            y_e = odeint(lambda x, t: self.energy_velocity(x, t, c).float(), z_energy.float(), n_energy, method)
        e_layer = self.pre.energy_inverse(e, y_e)
        features = self.pre.layer_features(e, e_layer)
        with autocast_context(z_shape.device, bool(use_bf16)):
            y_s = odeint(
                lambda x, t: self.shape_velocity(x, t, c, y_e, features).float(), z_shape.float(), n_steps, method
            )
        return self.pre.shape_inverse(y_s, e_layer)

    # explicit keyword options (unknown ones a TypeError) narrow ShowerModel.sample's **options
    @torch.no_grad()
    def sample(  # type: ignore[override]
        self, e_inc: Tensor, generator: torch.Generator | None = None, steps: int | None = None,
        solver: str | None = None, energy_steps: int | None = None, bf16: bool | None = None,
    ) -> Tensor:
        """Showers (B, voxels) MeV for incident energies (B,) MeV. Options: ``steps`` (solver
        steps, default config ``steps``), ``solver`` (euler, midpoint, heun, rk4),
        ``energy_steps`` (energy flow; default ``steps``), ``bf16`` (bfloat16 autocast on CPU)."""
        e = self._e_inc(e_inc)
        z_e, z_s = self.draw_noise(e.shape[0], generator)
        return self._in_chunks(self.sample_from_noise, e, z_e, z_s, steps=steps, solver=solver,
                               energy_steps=energy_steps, bf16=bf16)

    # ---------------------------------------------------------------- likelihood
    def log_prob(self, e_inc: Tensor, showers: Tensor, options: ODELikelihoodConfig | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """``log p(shower | E_inc)`` (B,) of showers (B, voxels) MeV: see :meth:`log_prob_estimate`."""
        return self.log_prob_estimate(e_inc, showers, options, generator)[0]

    def log_prob_estimate(self, e_inc: Tensor, showers: Tensor, options: ODELikelihoodConfig | None = None,
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(log p, its standard error)`` (B,) each, for showers (B, voxels) MeV given e_inc (B,).

        ``log p = log q_E(y_E | E_inc) + log q_S(y_S | E_inc, y_E) + log_det``: the two flows'
        densities by the instantaneous change of variables along their probability-flow ODEs
        (:func:`~caloforge.flowmatching.likelihood.ode_log_prob`, settings ``options``,
        default :class:`~caloforge.flowmatching.likelihood.ODELikelihoodConfig`: the energy
        flow's divergence exact, the shape flow's by Hutchinson for DS2) plus the
        preprocessing's log-Jacobian (:meth:`~caloforge.transforms.ShowerPreprocessing.forward_log_det`).

        **What it is a density of.** With ``dequantize`` (the default and the shipped teacher)
        the model is a density of the *dequantised* shower, whose zero voxels are uniform noise
        below the readout threshold: the zeros are drawn afresh (torch's global generator) and
        the noise box's log volume added, so the result is a one-draw estimate of a lower bound
        (Jensen) on ``log [P(zero where the shower reads zero) x density in MeV at the hits]``,
        given the layer energies, times the density of the layer energies in MeV. The shape
        flow models all voxels, so the layer sums of the voxels are not constrained to the
        layer energies (the density lives in layers + voxels dimensions), and layers below the
        threshold and the voxels of empty layers count in the flows' own units (points, not
        variables). Comparable between showers of one model, not between models.

        The standard error combines the Hutchinson spread of both flows (std over probes /
        sqrt(probes); 0 for an exact divergence); the dequantisation draw is not included.
        Computed in float32 without autocast, in slices of ``cpu_chunk`` showers on the CPU.
        """
        opts = options or ODELikelihoodConfig()
        e = self._e_inc(e_inc)
        x = showers.to(self.device, torch.float32)
        if x.ndim != 2 or x.shape[0] != e.shape[0] or x.shape[1] != self.geometry.n_voxels:
            raise InputError(f"log_prob needs showers of shape ({e.shape[0]}, {self.geometry.n_voxels}), "
                             f"got {tuple(x.shape)}")
        chunk = self.config.cpu_chunk if x.device.type == "cpu" and self.config.cpu_chunk > 0 else max(1, len(e))
        parts = [self._log_prob_chunk(e[a : a + chunk], x[a : a + chunk], opts, generator)
                 for a in range(0, max(1, len(e)), chunk)] if len(e) else [(x.new_zeros(0), x.new_zeros(0))]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _log_prob_chunk(self, e: Tensor, x: Tensor, opts: ODELikelihoodConfig,
                        generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            c, y_e, y_s, e_layer, log_det = self.pre.forward_log_det(e, x)
            features = self.pre.layer_features(e, e_layer)
        total, var = log_det, torch.zeros_like(log_det)
        flows = ((lambda z, t: self.energy_velocity(z, t, c), y_e),
                 (lambda z, t: self.shape_velocity(z, t, c, y_e, features), y_s))
        for v_fn, y in flows:
            est = opts.estimator_for(y.shape[1])
            r = ode_log_prob(v_fn, y, opts.steps, opts.solver, est, opts.probes, generator)
            total = total + r.log_prob
            if r.spread is not None:
                var = var + r.spread**2 / opts.probes
        return total, var.sqrt()
