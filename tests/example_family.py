"""A whole model family in one module: a tiny conditional GAN, to show (and test) that adding a
family needs this module, its ``@register_model`` entry and nothing else.

It declares its capabilities by implementing them: it owns its training step (two optimisers,
alternating discriminator and generator updates, which the default one-loss step cannot do) and
has a noise map, so ``caloforge train`` trains, checkpoints and resumes it and
``caloforge export`` writes it to ONNX, with no line of caloforge changed.

The generator maps (z, log E_inc) to a softmax over the voxels times a learned fraction of
E_inc; the discriminator sees log(1 + E_voxel / 1 MeV) and log E_inc. Not a good shower model: a
contract exercise.

References:
    Goodfellow et al., *Generative Adversarial Networks*, arXiv:1406.2661.
    Paganini, de Oliveira, Nachman, *CaloGAN*, arXiv:1705.02355.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from caloforge.config import preset
from caloforge.models import ShowerModel, register_model
from caloforge.models.base import ModelConfig


@dataclass(frozen=True)
class TinyGANConfig(ModelConfig):
    """Config of :class:`TinyGAN`."""

    latent: int = 8
    width: int = 32

    def validate(self) -> None:
        if self.latent < 1 or self.width < 1:
            raise self._error("latent and width must be at least 1")

    @classmethod
    @preset
    def tiny(cls) -> TinyGANConfig:
        return cls(latent=4, width=16)


@register_model
class TinyGAN(ShowerModel):
    """Tiny conditional GAN (example family for the contract test).

    References:
        Goodfellow et al., *Generative Adversarial Networks*, arXiv:1406.2661.
    """

    name = "example-tiny-gan"
    Config = TinyGANConfig
    config: TinyGANConfig

    def __init__(self, geometry, config=None):
        super().__init__(geometry, config)
        c, v = self.config, geometry.n_voxels
        self.generator = nn.Sequential(nn.Linear(c.latent + 1, c.width), nn.SiLU(), nn.Linear(c.width, v + 1))
        self.discriminator = nn.Sequential(nn.Linear(v + 1, c.width), nn.SiLU(), nn.Linear(c.width, 1))
        self.register_buffer("log_e_range", torch.tensor([math.log(1e3), math.log(1e6)]))

    def fit_preprocessing(self, e_inc: Tensor, showers: Tensor) -> None:
        log_e = torch.log(e_inc.reshape(-1).double())
        self.log_e_range.copy_(torch.stack([log_e.min(), log_e.max()]).float())

    def energy_range(self) -> tuple[float, float]:
        return float(self.log_e_range[0].exp()), float(self.log_e_range[1].exp())

    def _cond(self, e_inc: Tensor) -> Tensor:
        lo, hi = self.log_e_range
        return ((torch.log(e_inc.reshape(-1, 1).float()) - lo) / (hi - lo).clamp(min=1e-6)).to(self.log_e_range.dtype)

    # ---------------------------------------------------------------- noise map
    def noise_shapes(self) -> dict[str, int]:
        return {"z": self.config.latent}

    def draw_noise(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor]:
        return (torch.randn(n, self.config.latent, generator=generator, device=self.device),)

    def graph_options(self) -> dict[str, Any]:
        return {}

    def sample_from_noise(self, e_inc: Tensor, z: Tensor) -> Tensor:
        out = self.generator(torch.cat([z, self._cond(e_inc)], 1))
        frac = torch.softmax(out[:, :-1], 1) * torch.sigmoid(out[:, -1:])
        x = frac * e_inc.reshape(-1, 1).to(frac.dtype)
        thr = float(self.geometry.readout_threshold)
        return torch.where(x >= thr, x, torch.zeros_like(x))

    @torch.no_grad()
    def sample(self, e_inc: Tensor, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        e = e_inc.reshape(-1).to(self.device, torch.float32)
        return self.sample_from_noise(e, *self.draw_noise(len(e), generator))

    # ---------------------------------------------------------------- own training step
    def _critic(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        return self.discriminator(torch.cat([torch.log1p(showers.clamp(min=0)), self._cond(e_inc)], 1)).squeeze(1)

    def _fake(self, e_inc: Tensor) -> Tensor:
        (z,) = self.draw_noise(len(e_inc))
        out = self.generator(torch.cat([z, self._cond(e_inc)], 1))
        # no read-out threshold while training: it would cut the gradient
        return torch.softmax(out[:, :-1], 1) * torch.sigmoid(out[:, -1:]) * e_inc.reshape(-1, 1)

    def configure_optimizers(self, lr: float, weight_decay: float) -> Sequence[torch.optim.Optimizer]:
        return (torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.9)),
                torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.9)))

    def training_step(self, e_inc: Tensor, showers: Tensor, optimizers: Sequence[torch.optim.Optimizer],
                      step: int) -> Tensor:
        opt_d, opt_g = optimizers
        bce = nn.functional.binary_cross_entropy_with_logits
        # discriminator: real -> 1, fake -> 0
        fake = self._fake(e_inc).detach()
        real_logit, fake_logit = self._critic(e_inc, showers), self._critic(e_inc, fake)
        loss_d = bce(real_logit, torch.ones_like(real_logit)) + bce(fake_logit, torch.zeros_like(fake_logit))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # generator: non-saturating loss
        logit = self._critic(e_inc, self._fake(e_inc))
        loss_g = bce(logit, torch.ones_like(logit))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return (loss_d + loss_g).detach()

    def loss(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """Validation: the discriminator's loss plus the generator's (no update)."""
        bce = nn.functional.binary_cross_entropy_with_logits
        real_logit, fake_logit = self._critic(e_inc, showers), self._critic(e_inc, self._fake(e_inc))
        return (bce(real_logit, torch.ones_like(real_logit)) + bce(fake_logit, torch.zeros_like(fake_logit))
                + bce(fake_logit, torch.ones_like(fake_logit)))
