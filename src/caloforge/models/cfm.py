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
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from caloforge.errors import InputError
from caloforge.geometry import Geometry
from caloforge.models.base import ShowerModel
from caloforge.models.registry import register_model
from caloforge.transforms import ShowerPreprocessing, hit_floor

SOLVERS = ("euler", "midpoint", "heun", "rk4")
_EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


# ====================================================================== helpers
def cpu_has_bf16_matrix_units() -> bool:
    """True on CPUs where bfloat16 matrix products are fast (Intel AMX-BF16)."""
    try:
        caps = torch._C._cpu._get_cpu_capability()  # private but stable since torch 2.3
    except Exception:  # pragma: no cover - older or other builds
        return False
    return bool(caps.get("amx_bf16", False))


def autocast_context(device: torch.device, mode: Any) -> Any:
    """bfloat16 autocast on the CPU when ``mode`` is True, or "auto" and the CPU has AMX."""
    if device.type != "cpu" or mode in (False, None, "off"):
        return nullcontext()
    if mode == "auto" and not cpu_has_bf16_matrix_units():
        return nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """(B,) in [0, 1] -> (B, dim) sines and cosines of geometrically spaced frequencies."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(1000.0) / max(half - 1, 1)))
    arg = (1000.0 * t.reshape(-1, 1).float()) * freqs[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], 1)


def odeint(f: Callable[[Tensor, Tensor], Tensor], x: Tensor, steps: int, solver: str) -> Tensor:
    """Integrate dx/dt = f(x, t) from t = 0 to 1 with ``steps`` equal steps of ``solver``.

    ``t`` is passed as a (B,) tensor; the loop unrolls into a fixed graph (ONNX export)."""
    if solver not in SOLVERS:
        raise InputError(f"unknown ODE solver {solver!r}; choose from {', '.join(SOLVERS)}")
    if steps < 1:
        raise InputError(f"solver steps must be >= 1, got {steps}")
    h = 1.0 / steps
    ones = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(steps):
        t = ones * (i * h)
        if solver == "euler":
            x = x + h * f(x, t)
        elif solver == "midpoint":
            k1 = f(x, t)
            x = x + h * f(x + 0.5 * h * k1, t + 0.5 * h)
        elif solver == "heun":
            k1 = f(x, t)
            k2 = f(x + h * k1, t + h)
            x = x + 0.5 * h * (k1 + k2)
        else:  # rk4
            k1 = f(x, t)
            k2 = f(x + 0.5 * h * k1, t + 0.5 * h)
            k3 = f(x + 0.5 * h * k2, t + 0.5 * h)
            k4 = f(x + h * k3, t + h)
            x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


# ====================================================================== energy network
class _FiLMResMLPBlock(nn.Module):
    def __init__(self, width: int, emb: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(emb, 2 * width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb).chunk(2, dim=1)
        z = self.norm(h) * (1 + scale) + shift
        return h + self.fc2(F.silu(self.fc1(F.silu(z))))


class EnergyNet(nn.Module):
    """Velocity field of the layer-energy flow: residual MLP, FiLM on (t, log E_inc)."""

    def __init__(self, n_layers: int, width: int = 256, depth: int = 3, t_dim: int = 32):
        super().__init__()
        self.t_dim = t_dim
        self.embed = nn.Sequential(nn.Linear(t_dim + 1, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(n_layers + 1, width)
        self.blocks = nn.ModuleList(_FiLMResMLPBlock(width, width) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, n_layers)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        c = c.reshape(-1, 1).to(x.dtype)
        emb = F.silu(self.embed(torch.cat([sinusoidal_embedding(t, self.t_dim).to(x.dtype), c], 1)))
        h = self.inp(torch.cat([x, c], 1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.out_norm(h)))


# ====================================================================== shape network
class CircularConv(nn.Module):
    """Conv2d over (layer, alpha): circular padding in alpha (periodic), zeros in layer."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.pad = kernel // 2
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(self.pad, 0))

    def forward(self, x: Tensor) -> Tensor:
        p = self.pad
        if p:  # concatenation rather than F.pad(mode="circular"): plain ONNX Slice/Concat
            x = torch.cat([x[..., -p:], x, x[..., :p]], dim=-1)
        return self.conv(x)


def _groups(c: int) -> int:
    for g in (8, 4, 2):
        if c % g == 0:
            return g
    return 1


class _ResBlock(nn.Module):
    def __init__(self, c: int, emb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c), c)
        self.conv1 = CircularConv(c, c)
        self.norm2 = nn.GroupNorm(_groups(c), c, affine=False)
        self.film = nn.Linear(emb, 2 * c)
        self.conv2 = CircularConv(c, c)
        nn.init.zeros_(self.conv2.conv.weight)
        nn.init.zeros_(self.conv2.conv.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(F.silu(h))


class ShapeNet(nn.Module):
    """Velocity field of the shape flow: a 2-D U-Net over (layer, alpha), radial bins as channels.

    Input (B, voxels) in (layer, alpha, r) order, per-layer features (B, k, layers) (appended as
    input channels to every voxel of the layer) and a global condition vector (B, n_global)
    (embedded with t; FiLM in every residual block). A stride-2 circular convolution takes the
    (layers, alpha) grid to half resolution (no full-resolution activations: on a CPU those cost
    mostly memory traffic), ``channels[i]`` is the width of level i (stride 2 between levels),
    ``blocks`` residual blocks per level down and up, ``mid_blocks`` at the bottom. The output
    head predicts every 2 x 2 cell of the full grid from its coarse position ("pixel shuffle"),
    plus a per-voxel linear skip from the input.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        n_layer_features: int,
        n_global: int,
        channels: tuple[int, ...] = (48, 96),
        blocks: int = 1,
        mid_blocks: int = 1,
        emb: int = 128,
        t_dim: int = 32,
    ):
        super().__init__()
        self.n_layers, self.n_alpha, self.n_r = shape
        self.t_dim = t_dim
        self.s_alpha = 2 if self.n_alpha % 2 == 0 else 1  # keep the alpha ring intact
        self.coarse = ((self.n_layers + 1) // 2, self.n_alpha // self.s_alpha)
        c_in = self.n_r + n_layer_features
        c0 = channels[0]
        self.embed = nn.Sequential(nn.Linear(t_dim + n_global, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.stem = CircularConv(c_in, c0, stride=1)
        self.stem.conv.stride = (2, self.s_alpha)
        self.layer_pos = nn.Parameter(torch.zeros(1, c0, self.coarse[0], 1))
        self.down_blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, c in enumerate(channels):
            self.down_blocks.append(nn.ModuleList(_ResBlock(c, emb) for _ in range(blocks)))
            if i + 1 < len(channels):
                self.downs.append(CircularConv(c, channels[i + 1], stride=2))
        self.mid_blocks = nn.ModuleList(_ResBlock(channels[-1], emb) for _ in range(mid_blocks))
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(len(channels) - 1)):
            self.ups.append(CircularConv(channels[i + 1], channels[i]))
            self.up_blocks.append(nn.ModuleList(_ResBlock(channels[i], emb) for _ in range(blocks)))
        self.out_norm = nn.GroupNorm(_groups(c0), c0)
        self.out = nn.Conv2d(c0, self.n_r * 2 * self.s_alpha, 1)
        self.skip = nn.Conv2d(c_in, self.n_r, 1)
        for layer in (self.out, self.skip):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor, t: Tensor, layer_features: Tensor, global_cond: Tensor) -> Tensor:
        b = x.shape[0]
        L, A, R = self.n_layers, self.n_alpha, self.n_r
        emb = F.silu(self.embed(torch.cat([sinusoidal_embedding(t, self.t_dim).to(x.dtype), global_cond.to(x.dtype)], 1)))
        h = x.reshape(b, L, A, R).permute(0, 3, 1, 2)  # (B, r, layer, alpha)
        lf = layer_features.to(x.dtype)[:, :, :, None].expand(b, layer_features.shape[1], L, A)
        inp = torch.cat([h, lf], 1)
        h = self.stem(inp) + self.layer_pos
        skips = []
        for i, level in enumerate(self.down_blocks):
            for block in level:
                h = block(h, emb)
            if i < len(self.downs):
                skips.append(h)
                h = self.downs[i](h)
        for block in self.mid_blocks:
            h = block(h, emb)
        for up, level in zip(self.ups, self.up_blocks):
            skip = skips.pop()
            h = F.interpolate(h, size=(int(skip.shape[2]), int(skip.shape[3])), mode="nearest")
            h = up(h) + skip
            for block in level:
                h = block(h, emb)
        h = self.out(F.silu(self.out_norm(h)))  # (B, r * 2 * s_alpha, L2, A2)
        l2, a2 = self.coarse
        h = h.reshape(b, R, 2, self.s_alpha, l2, a2).permute(0, 1, 4, 2, 5, 3)
        h = h.reshape(b, R, 2 * l2, self.s_alpha * a2)[:, :, :L, :]
        h = h + self.skip(inp)
        return h.permute(0, 2, 3, 1).reshape(b, L * A * R)


# ====================================================================== the model
class _CFMBase(ShowerModel):
    """Shared by the teacher (``cfm``) and its distilled student: preprocessing + the two nets."""

    def _build(self) -> None:
        g: Geometry = self.geometry
        cfg = self.config
        if not g.is_regular:
            raise ValueError(f"model {self.name!r} needs a regular (layer, alpha, r) geometry; {g.name} is not")
        if cfg.get("solver", "euler") not in SOLVERS:
            raise ValueError(f"model {self.name!r}: solver must be one of {', '.join(SOLVERS)}")
        self.pre = ShowerPreprocessing(
            g, shape_alpha=cfg["shape_alpha"], energy_alpha=cfg["energy_alpha"], dequantize=bool(cfg.get("dequantize", False))
        )
        self.pre.set_hit_floor(cfg.get("hit_floor"))
        L = g.n_layers
        self.energy_net = EnergyNet(L, cfg["energy_width"], cfg["energy_depth"])
        self.shape_net = ShapeNet(
            g.shape, 2, 1 + L, tuple(cfg["shape_channels"]), cfg["shape_blocks"], cfg["shape_mid_blocks"], cfg["shape_emb"]
        )

    # ------------------------------------------------------------------ pieces
    def fit_preprocessing(self, e_inc: Tensor, showers: Tensor) -> None:
        self.pre.fit(e_inc.to(self.device, torch.float32), showers.to(self.device, torch.float32))
        if self.config.get("hit_floor") == "auto":  # resolved once, then saved in the config
            q = float(self.config.get("hit_floor_quantile", 2e-3))
            self.config["hit_floor"] = hit_floor(showers, self.geometry.readout_threshold, q)
            self.pre.set_hit_floor(self.config["hit_floor"])

    def energy_velocity(self, y: Tensor, t: Tensor, c: Tensor) -> Tensor:
        return self.energy_net(y, t, c)

    def shape_velocity(self, y: Tensor, t: Tensor, c: Tensor, y_energy: Tensor, layer_features: Tensor) -> Tensor:
        return self.shape_net(y, t, layer_features, torch.cat([c.reshape(-1, 1).to(y_energy.dtype), y_energy], 1))

    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The Gaussian inputs of one batch: (energy noise (n, layers), shape noise (n, voxels))."""
        z_e = torch.randn(n, self.geometry.n_layers, generator=generator, device=self.device)
        z_s = torch.randn(n, self.geometry.n_voxels, generator=generator, device=self.device)
        return z_e, z_s

    def energy_range(self) -> tuple[float, float]:
        return float(self.pre.condition.log_min.exp()), float(self.pre.condition.log_max.exp())

    def _in_chunks(self, fn: Callable[..., Tensor], e: Tensor, z_e: Tensor, z_s: Tensor, **options: Any) -> Tensor:
        """``fn(e, z_e, z_s, **options)`` over slices of ``cpu_chunk`` showers on the CPU.

        The noise is drawn for the whole batch first, so the showers do not depend on the chunk
        size. Why: on a CPU the activations of a 1000-shower batch (tens of MB per layer) fall
        out of the caches, and the same work in slices of ~100 runs about twice as fast."""
        chunk = int(self.config.get("cpu_chunk") or 0)
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
    """CaloDREAM-style conditional flow matching: energy CFM (MLP) + shape CFM (cylindrical U-Net)."""

    name = "cfm"
    default_config: dict[str, Any] = {
        "shape_alpha": 1e-6,  # logit alpha of the voxel fractions
        "energy_alpha": 1e-6,  # logit alpha of the sequential energy fractions
        "dequantize": True,  # zero voxels -> uniform noise below the readout threshold (BelowThresholdNoise)
        # generated voxels read out from this energy (MeV) up: "auto" = the hit_floor_quantile of
        # the training hits (fitted once, then a number); None = the readout threshold
        "hit_floor": "auto",
        "hit_floor_quantile": 2e-3,
        "energy_width": 128,
        "energy_depth": 3,
        "shape_channels": [48, 96],  # U-Net widths per level, from half resolution (stride 2 between)
        "shape_blocks": 1,  # residual blocks per level, down and up
        "shape_mid_blocks": 1,
        "shape_emb": 128,  # width of the (t, E_inc, layer energies) embedding
        "energy_loss_weight": 1.0,
        "energy_repeats": 4,  # energy-flow loss on this many noise/time draws per shower (cheap)
        "solver": "midpoint",  # default ODE solver for sampling
        "steps": 12,  # default solver steps (shape and energy flow)
        "cpu_bf16": "auto",  # bfloat16 autocast in the loss on the CPU: auto (AMX CPUs), true, false
        "sample_bf16": False,  # bfloat16 autocast in sampling on the CPU (faster, less exact)
        "cpu_chunk": 100,  # sample() on the CPU in slices of this many showers (0: whole batch)
    }

    def __init__(self, geometry: Geometry, config: dict[str, Any] | None = None):
        super().__init__(geometry, config)
        self._build()

    # ---------------------------------------------------------------- training
    def loss(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """Flow-matching loss of the energy flow (mean over layers) plus that of the shape flow
        (mean over the voxels of non-empty layers)."""
        e = e_inc.reshape(-1).to(self.device, torch.float32)
        with torch.no_grad():
            c, y_e, y_s, e_layer = self.pre(e, showers.to(self.device, torch.float32))
            features = self.pre.layer_features(e, e_layer)
            voxel_mask = self.pre.layer_sum.expand(self.pre.nonempty(e_layer)).float()
        b = e.shape[0]
        k = max(1, int(self.config["energy_repeats"]))
        with autocast_context(self.device, self.config["cpu_bf16"]):
            # energy flow, k draws of (noise, time) per shower
            x1 = y_e.repeat(k, 1)
            x0 = torch.randn_like(x1)
            t = torch.rand(x1.shape[0], device=self.device)
            xt = (1 - t[:, None]) * x0 + t[:, None] * x1
            v = self.energy_velocity(xt, t, c.repeat(k)).float()
            loss_e = ((v - (x1 - x0)) ** 2).mean()
            # shape flow
            x0 = torch.randn_like(y_s)
            t = torch.rand(b, device=self.device)
            xt = (1 - t[:, None]) * x0 + t[:, None] * y_s
            v = self.shape_velocity(xt, t, c, y_e, features).float()
            err = ((v - (y_s - x0)) ** 2 * voxel_mask).sum() / voxel_mask.sum().clamp(min=1)
        return float(self.config["energy_loss_weight"]) * loss_e + err

    # ---------------------------------------------------------------- sampling
    def sample_from_noise(
        self, e_inc: Tensor, z_energy: Tensor, z_shape: Tensor, steps: int | None = None,
        solver: str | None = None, energy_steps: int | None = None, bf16: bool | None = None,
    ) -> Tensor:
        """Deterministic map (E_inc, noise) -> showers (B, voxels) MeV: the two ODEs solved with
        ``steps`` (shape; ``energy_steps`` for the energy flow, default the same) of ``solver``."""
        steps = int(self.config["steps"] if steps is None else steps)
        energy_steps = steps if energy_steps is None else int(energy_steps)
        solver = self.config["solver"] if solver is None else solver
        bf16 = self.config["sample_bf16"] if bf16 is None else bf16
        e = e_inc.reshape(-1).to(z_shape.dtype)
        c = self.pre.condition(e)
        with autocast_context(z_shape.device, bool(bf16)):
            y_e = odeint(lambda x, t: self.energy_velocity(x, t, c).float(), z_energy.float(), energy_steps, solver)
        e_layer = self.pre.energy_inverse(e, y_e)
        features = self.pre.layer_features(e, e_layer)
        with autocast_context(z_shape.device, bool(bf16)):
            y_s = odeint(
                lambda x, t: self.shape_velocity(x, t, c, y_e, features).float(), z_shape.float(), steps, solver
            )
        return self.pre.shape_inverse(y_s, e_layer)

    @torch.no_grad()
    def sample(
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
