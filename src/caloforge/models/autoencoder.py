"""``ae`` and ``ae-pair``: convolutional autoencoders on the cylinder, for anomaly scores.

A shower (layers x alpha x r) is preprocessed voxel by voxel as ``x = log(1 + E / t) / s`` (``t``
the readout threshold, or 1 keV when the geometry has none; ``s`` a scale fitted on the training
showers so that ``x`` is of order one), encoded by 3D convolutions that wrap around in alpha
(circular padding: alpha is an angle) and are zero-padded in depth and radius, squeezed into a
small latent vector, and decoded back. Both halves see the standardised ``log E_inc`` (an input
channel of the encoder, an input of the decoder): the autoencoder learns showers *given* their
incident energy, so a shower that is normal at 50 GeV but not at 5 GeV gets a large error.

The loss of a shower is its mean squared error in ``x`` plus a soft Dice term,
``1 - 2 sum(x r) / (sum x^2 + sum r^2)``: about 90% of the voxels are empty, and the MSE alone is
dominated by reproducing zeros; the Dice term rewards putting the energy where the shower put
it. The anomaly score of a shower is that same per-shower loss (its reconstruction error).

``ae-pair`` trains two such autoencoders together with a DisCo penalty (the squared distance
correlation of their per-shower errors on the background batch) so that their two scores are
nearly independent, as the ABCD background estimate of :mod:`caloforge.anomaly.abcd` needs.

Neither is a generative model of fidelity: ``sample`` decodes latent vectors drawn from a
Gaussian with the running mean and spread of the training latents (tracked on training steps:
``loss`` in training mode with gradients enabled), which gives showers of the right size and
shape class, not Geant4-like ones. The families exist for their scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from caloforge.config import preset
from caloforge.errors import InputError
from caloforge.geometry import Geometry
from caloforge.models.base import ModelConfig, ShowerModel
from caloforge.models.registry import register_model

#: Threshold used in log(1 + E / t) when the geometry has no readout threshold (MeV).
_DEFAULT_T = 1e-3
#: Momentum of the running latent statistics (used by ``sample`` only).
_LATENT_MOMENTUM = 0.01


def distance_correlation_sq(x: Tensor, y: Tensor, weights: Tensor | None = None) -> Tensor:
    """Squared distance correlation dCorr^2(x, y) of two 1-D samples (differentiable).

    Zero if and only if x and y are independent (in the large-sample limit); one for a linear
    relation. O(n^2) memory: for batches, not for whole files (use
    :func:`caloforge.anomaly.scores.distance_correlation` for those).

    References:
        Szekely, Rizzo, Bakirov, *Measuring and testing dependence by correlation of
        distances*, Ann. Statist. 35 (2007) 2769; Kasieczka, Shih, *Robust Jet Classifiers
        through Distance Correlation*, PRL 125 (2020) 122001 (DisCo, this weighted form).
    """
    x = x.reshape(-1).to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    y = y.reshape(-1).to(x.dtype)
    n = x.shape[0]
    w = torch.ones(n, dtype=x.dtype, device=x.device) if weights is None else weights.reshape(-1).to(x.dtype)
    w = w / w.mean()
    a = (x[:, None] - x[None, :]).abs()
    b = (y[:, None] - y[None, :]).abs()
    a_mean = (a * w).mean(1)
    b_mean = (b * w).mean(1)
    a_c = a - a_mean[:, None] - a_mean[None, :] + (a_mean * w).mean()
    b_c = b - b_mean[:, None] - b_mean[None, :] + (b_mean * w).mean()
    ab = ((a_c * b_c * w).mean(1) * w).mean()
    aa = ((a_c * a_c * w).mean(1) * w).mean()
    bb = ((b_c * b_c * w).mean(1) * w).mean()
    return ab / torch.sqrt(torch.clamp(aa * bb, min=1e-30))


class CylinderConv(nn.Module):
    """A 3D convolution on (layers, alpha, r): circular padding in alpha, zeros elsewhere."""

    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, kernel_size=3, stride=stride, padding=(1, 0, 1))

    def forward(self, x: Tensor) -> Tensor:
        # (B, C, layers, alpha, r): alpha wraps around
        return self.conv(torch.cat([x[..., -1:, :], x, x[..., :1, :]], dim=-2))


def _down(n: int) -> int:
    return (n - 1) // 2 + 1  # output size of a stride-2, kernel-3, padding-1 convolution


class _CylinderAE(nn.Module):
    """Encoder and decoder of one autoencoder (internals of :class:`Autoencoder`).

    Every encoder level is a stride-2 cylinder convolution (depth and alpha halved, r halved
    while it has more than 5 bins); the decoder mirrors it with nearest-neighbour upsampling and
    cylinder convolutions, and a transposed convolution back to full resolution (not circular in
    alpha: the one place where the wrap-around is not built in). The standardised log E_inc
    enters the encoder and every decoder level as an extra channel."""

    def __init__(self, shape: tuple[int, int, int], channels: tuple[int, ...], latent: int):
        super().__init__()
        self.shapes = [shape]
        enc: list[nn.Module] = []
        for c_in, c_out in zip((2, *channels[:-1]), channels, strict=True):
            l_, a_, r_ = self.shapes[-1]
            stride = (2, 2 if a_ > 2 else 1, 2 if r_ > 5 else 1)
            enc += [CylinderConv(c_in, c_out, stride), nn.SiLU()]
            self.shapes.append((_down(l_), _down(a_) if stride[1] == 2 else a_, _down(r_) if stride[2] == 2 else r_))
        self.encoder = nn.Sequential(*enc)
        self.channels = channels
        flat = channels[-1] * math.prod(self.shapes[-1])
        self.to_latent = nn.Linear(flat + 1, latent)
        self.from_latent = nn.Linear(latent + 1, flat)
        self.decoder = nn.ModuleList(CylinderConv(c_in + 1, c_out)
                                     for c_in, c_out in zip(channels[::-1][:-1], channels[::-1][1:], strict=True))
        # Back to full resolution with one transposed convolution (a full-resolution convolution
        # with one output channel costs ten times more on a CPU).
        s_l, s_a, s_r = (2 if a != b else 1 for a, b in zip(shape, self.shapes[1], strict=True))
        p_l, p_a, p_r = (n - (m * s - 1 if s == 2 else m)
                         for n, m, s in zip(shape, self.shapes[1], (s_l, s_a, s_r), strict=True))
        self.head = nn.ConvTranspose3d(channels[0] + 1, 1, kernel_size=3, stride=(s_l, s_a, s_r), padding=1,
                                       output_padding=(p_l, p_a, p_r))
        with torch.no_grad():  # a fresh decoder returns the mean shower (its offset)
            self.head.weight.zero_()
            if self.head.bias is not None:
                self.head.bias.zero_()

    @staticmethod
    def _with_condition(h: Tensor, c: Tensor) -> Tensor:
        return torch.cat([h, c.reshape(-1, 1, 1, 1, 1).expand(h.shape[0], 1, *h.shape[2:])], dim=1)

    def encode(self, x: Tensor, c: Tensor) -> Tensor:
        """(B, V) preprocessed showers and (B,) standardised log E_inc -> (B, latent)."""
        b = x.shape[0]
        h = self.encoder(self._with_condition(x.reshape(b, 1, *self.shapes[0]), c))
        return self.to_latent(torch.cat([h.reshape(b, -1), c.reshape(b, 1)], dim=1))

    def decode(self, z: Tensor, c: Tensor, offset: Tensor) -> Tensor:
        """(B, latent) and (B,) -> (B, V) reconstruction in the preprocessed space (>= 0);
        ``offset`` (V,) is added before the final softplus (the mean shower: a fresh decoder
        starts from it and learns the deviations)."""
        b = z.shape[0]
        h = F.silu(self.from_latent(torch.cat([z, c.reshape(b, 1)], dim=1)))
        h = h.reshape(b, self.channels[-1], *self.shapes[-1])
        for conv, shape in zip(self.decoder, self.shapes[::-1][1:-1], strict=True):
            h = F.interpolate(h, size=shape, mode="nearest")
            h = F.silu(conv(self._with_condition(h, c)))
        return F.softplus(self.head(self._with_condition(h, c)).reshape(b, -1) + offset)


@dataclass(frozen=True)
class AutoencoderConfig(ModelConfig):
    """Config of :class:`Autoencoder`."""

    channels: tuple[int, ...] = (16, 32, 32)  # convolution channels, one stride-2 level each
    latent: int = 16  # size of the bottleneck
    dice_weight: float = 0.5  # weight of the soft Dice term in the loss (and score)

    def validate(self) -> None:
        if not self.channels or any(c < 1 for c in self.channels) or len(self.channels) > 5:
            raise self._error(f"channels must be 1 to 5 positive integers, got {self.channels!r}")
        if self.latent < 1:
            raise self._error("latent must be positive")
        if self.dice_weight < 0:
            raise self._error("dice_weight must be >= 0")

    @classmethod
    @preset
    def tiny(cls) -> AutoencoderConfig:
        """A small network for tests."""
        return cls(channels=(2, 4), latent=4)


class _AutoencoderBase(ShowerModel):
    """Preprocessing, conditioning and the per-shower error shared by ``ae`` and ``ae-pair``."""

    log_e_mean: Tensor
    log_e_std: Tensor
    x_scale: Tensor
    e_lo: Tensor
    e_hi: Tensor
    x_mean_logit: Tensor

    def __init__(self, geometry: Geometry, config: Any = None):
        super().__init__(geometry, config)
        if not geometry.is_regular:
            raise InputError(f"model {self.name!r} needs a regular geometry (the same alpha x r bins in every "
                             f"layer); {geometry.name} is not")
        self.register_buffer("log_e_mean", torch.tensor(0.0))
        self.register_buffer("log_e_std", torch.tensor(1.0))
        self.register_buffer("x_scale", torch.tensor(10.0))
        self.register_buffer("e_lo", torch.tensor(1e3))
        self.register_buffer("e_hi", torch.tensor(1e5))
        # the mean preprocessed shower, as the softplus pre-activation the decoders start from
        self.register_buffer("x_mean_logit", torch.full((geometry.n_voxels,), -7.0))

    @property
    def threshold(self) -> float:
        t = float(self.geometry.readout_threshold)
        return t if t > 0 else _DEFAULT_T

    def energy_range(self) -> tuple[float, float]:
        return float(self.e_lo), float(self.e_hi)

    def _condition(self, e_inc: Tensor) -> Tensor:
        return (torch.log(e_inc.reshape(-1).to(torch.float32)) - self.log_e_mean) / self.log_e_std

    def preprocess(self, showers: Tensor) -> Tensor:
        """log(1 + E / t) / s, readout threshold applied (voxels below it count as empty)."""
        s = showers.to(torch.float32)
        s = torch.where(s >= self.threshold, s, torch.zeros_like(s)) if self.geometry.readout_threshold > 0 else s
        return torch.log1p(torch.clamp(s, min=0) / self.threshold) / self.x_scale

    def postprocess(self, x: Tensor) -> Tensor:
        """The inverse of :meth:`preprocess`, readout threshold applied."""
        e = torch.expm1(x * self.x_scale) * self.threshold
        return torch.where(e >= self.threshold, e, torch.zeros_like(e)).to(torch.float32)

    @torch.no_grad()
    def fit_preprocessing(self, e_inc: Tensor, showers: Tensor) -> None:
        log_e = torch.log(e_inc.reshape(-1).to(torch.float64))
        self.log_e_mean.fill_(log_e.mean())
        self.log_e_std.fill_(torch.clamp(log_e.std(unbiased=False), min=1e-3))
        self.e_lo.fill_(float(e_inc.min()))
        self.e_hi.fill_(float(e_inc.max()))
        # scale: the 99th percentile of log(1 + E/t) over hit voxels (a subsample suffices)
        rows = showers[: min(len(showers), 2000)].to(torch.float32)
        x = torch.log1p(torch.clamp(rows, min=0) / self.threshold)
        hits = x[rows >= self.threshold]
        if hits.numel():
            self.x_scale.fill_(max(float(torch.quantile(hits[:1_000_000], 0.99)), 1e-3))
        mean = torch.clamp(self.preprocess(rows).mean(0), min=1e-3)
        self.x_mean_logit.copy_(mean + torch.log(-torch.expm1(-mean)))  # softplus^-1(mean)

    def errors(self, ae: _CylinderAE, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """Per-shower loss (MSE + dice_weight x soft Dice) and the latent vectors."""
        z = ae.encode(x, c)
        r = ae.decode(z, c, self.x_mean_logit)
        mse = ((r - x) ** 2).mean(dim=1)
        dice = 1.0 - (2.0 * (x * r).sum(1) + 1e-6) / ((x * x).sum(1) + (r * r).sum(1) + 1e-6)
        return mse + self.config.dice_weight * dice, z


def _latent_buffers(module: nn.Module, prefix: str, latent: int) -> None:
    module.register_buffer(f"{prefix}_mean", torch.zeros(latent))
    module.register_buffer(f"{prefix}_std", torch.ones(latent))


@torch.no_grad()
def _track(mean: Tensor, std: Tensor, z: Tensor) -> None:
    mean.lerp_(z.mean(0).to(mean.dtype), _LATENT_MOMENTUM)
    if len(z) > 1:
        std.lerp_(z.std(0, unbiased=False).to(std.dtype), _LATENT_MOMENTUM)


@register_model
class Autoencoder(_AutoencoderBase):
    """A conditional convolutional autoencoder on the cylinder; anomaly score = reconstruction error.

    Capabilities: trained by its loss; an anomaly score (:class:`~caloforge.models.capabilities.
    HasAnomalyScore`). Trained on background only, its score is large for showers unlike the
    training ones at the same incident energy.

    References:
        Heimel, Kasieczka, Plehn, Thompson, *QCD or What?*, SciPost Phys. 6 (2019) 030;
        Farina, Nakai, Shih, *Searching for New Physics with Deep Autoencoders*, PRD 101 (2020)
        075021 (autoencoder reconstruction error as an anomaly score); Milletari, Navab, Ahmadi,
        *V-Net*, 3DV 2016 (the soft Dice loss for sparse volumes).
    """

    name = "ae"
    Config = AutoencoderConfig
    config: AutoencoderConfig
    z_mean: Tensor
    z_std: Tensor

    def __init__(self, geometry: Geometry, config: AutoencoderConfig | dict[str, Any] | None = None):
        super().__init__(geometry, config)
        self.net = _CylinderAE(geometry.shape, self.config.channels, self.config.latent)
        _latent_buffers(self, "z", self.config.latent)

    def loss(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """Mean per-shower reconstruction loss of the batch (raw MeV showers)."""
        err, z = self.errors(self.net, self.preprocess(showers), self._condition(e_inc))
        if self.training and torch.is_grad_enabled():  # a training step, not a validation or check
            _track(self.z_mean, self.z_std, z)
        return err.mean()

    def score_names(self) -> tuple[str, ...]:
        return ("ae",)

    @torch.no_grad()
    def anomaly_score(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """(B,) reconstruction error (MSE + dice_weight x soft Dice) of each shower."""
        return self.errors(self.net, self.preprocess(showers), self._condition(e_inc))[0]

    @torch.no_grad()
    def sample(self, e_inc: Tensor, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        if options:
            raise InputError(f"model {self.name!r} takes no sampling option(s) {', '.join(sorted(options))}")
        c = self._condition(e_inc.to(self.device))
        eps = torch.randn(len(c), self.config.latent, generator=generator, device=self.device)
        return self.postprocess(self.net.decode(self.z_mean + self.z_std * eps, c, self.x_mean_logit))


@dataclass(frozen=True)
class AutoencoderPairConfig(AutoencoderConfig):
    """Config of :class:`AutoencoderPair`."""

    decorrelate: float = 1.0  # weight of the DisCo penalty between the two errors (0: independent training)
    decorrelate_groups: int = 4  # DisCo within this many groups of similar E_inc per batch (1: over the batch)
    decorrelate_detrend: bool = False  # DisCo on the errors less their linear trend in log E_inc within each group
    second_channels: tuple[int, ...] = (16, 32, 32)  # the second autoencoder's channels
    second_latent: int = 4  # the second autoencoder's bottleneck (different capacity: different errors)

    def validate(self) -> None:
        super().validate()
        if self.decorrelate < 0:
            raise self._error("decorrelate must be >= 0")
        if self.decorrelate_groups < 1:
            raise self._error("decorrelate_groups must be >= 1")
        if not self.second_channels or any(c < 1 for c in self.second_channels) or len(self.second_channels) > 5:
            raise self._error(f"second_channels must be 1 to 5 positive integers, got {self.second_channels!r}")
        if self.second_latent < 1:
            raise self._error("second_latent must be positive")

    @classmethod
    @preset
    def tiny(cls) -> AutoencoderPairConfig:
        """Small networks for tests."""
        return cls(channels=(2, 4), latent=4, second_channels=(2, 4), second_latent=2)


def _detrend(y: Tensor, x: Tensor) -> Tensor:
    """``y`` less its least-squares line in ``x`` (differentiable; ``x`` is taken as given)."""
    x = x.detach().to(y.dtype)
    xc = x - x.mean()
    slope = (xc * (y - y.mean())).sum() / torch.clamp((xc * xc).sum(), min=1e-12)
    return y - y.mean() - slope * xc


@register_model
class AutoencoderPair(_AutoencoderBase):
    """Two conditional autoencoders trained together, their errors decorrelated with DisCo.

    Loss: the sum of both mean reconstruction losses plus ``decorrelate`` x dCorr^2 of the two
    per-shower errors on the (background) batch, within groups of similar incident energy. Its two scores (``ae1``, ``ae2``) are nearly
    independent on background, so cuts on both define the regions of an ABCD background estimate
    (:mod:`caloforge.anomaly.abcd`).

    References:
        Mikuni, Nachman, Shih, *Online-compatible unsupervised nonresonant anomaly detection*,
        PRD 105 (2022) 055006 (a DisCo-decorrelated autoencoder pair and ABCD); Kasieczka, Shih,
        *Robust Jet Classifiers through Distance Correlation*, PRL 125 (2020) 122001 (DisCo).
    """

    name = "ae-pair"
    Config = AutoencoderPairConfig
    config: AutoencoderPairConfig
    z1_mean: Tensor
    z1_std: Tensor
    z2_mean: Tensor
    z2_std: Tensor

    def __init__(self, geometry: Geometry, config: AutoencoderPairConfig | dict[str, Any] | None = None):
        super().__init__(geometry, config)
        cfg = self.config
        self.first = _CylinderAE(geometry.shape, cfg.channels, cfg.latent)
        self.second = _CylinderAE(geometry.shape, cfg.second_channels, cfg.second_latent)
        _latent_buffers(self, "z1", cfg.latent)
        _latent_buffers(self, "z2", cfg.second_latent)

    def pair_errors(self, e_inc: Tensor, showers: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x, c = self.preprocess(showers), self._condition(e_inc)
        e1, z1 = self.errors(self.first, x, c)
        e2, z2 = self.errors(self.second, x, c)
        return e1, e2, z1, z2

    def loss(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """Both reconstruction losses + decorrelate x dCorr^2(error 1, error 2) on the batch."""
        e1, e2, z1, z2 = self.pair_errors(e_inc, showers)
        if self.training and torch.is_grad_enabled():  # a training step, not a validation or check
            _track(self.z1_mean, self.z1_std, z1)
            _track(self.z2_mean, self.z2_std, z2)
        total = e1.mean() + e2.mean()
        if self.config.decorrelate > 0 and len(e1) > 2:
            total = total + self.config.decorrelate * self.disco(e_inc, e1, e2)
        return total

    def disco(self, e_inc: Tensor, e1: Tensor, e2: Tensor) -> Tensor:
        """dCorr^2 of the two errors, averaged over ``decorrelate_groups`` groups of the batch with
        similar incident energies: independence at fixed energy, which the ABCD method needs
        (over the whole batch, two errors can be uncorrelated through opposite trends in E_inc
        and still strongly correlated at each energy). With ``decorrelate_detrend`` each error
        first loses its linear trend in log E_inc within the group: the penalty then acts on what
        an energy calibration leaves, not on errors that can keep opposite trends inside a group
        (measured: the grouped penalty alone leaves the calibrated scores anti-correlated)."""
        order = torch.argsort(e_inc.reshape(-1))
        groups = [g for g in order.chunk(self.config.decorrelate_groups) if len(g) > 2] or [order]
        if not self.config.decorrelate_detrend:
            return torch.stack([distance_correlation_sq(e1[g], e2[g]) for g in groups]).mean()
        c = self._condition(e_inc)
        return torch.stack([distance_correlation_sq(_detrend(e1[g], c[g]), _detrend(e2[g], c[g])) for g in groups]).mean()

    def score_names(self) -> tuple[str, ...]:
        return ("ae1", "ae2")

    @torch.no_grad()
    def anomaly_score(self, e_inc: Tensor, showers: Tensor) -> Tensor:
        """(B, 2): the reconstruction errors of the first and the second autoencoder."""
        e1, e2, _, _ = self.pair_errors(e_inc, showers)
        return torch.stack([e1, e2], dim=1)

    @torch.no_grad()
    def sample(self, e_inc: Tensor, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """Decodes random latents of the first autoencoder (see the module docstring)."""
        if options:
            raise InputError(f"model {self.name!r} takes no sampling option(s) {', '.join(sorted(options))}")
        c = self._condition(e_inc.to(self.device))
        eps = torch.randn(len(c), self.config.latent, generator=generator, device=self.device)
        return self.postprocess(self.first.decode(self.z1_mean + self.z1_std * eps, c, self.x_mean_logit))
