"""The full preprocessing of the CFM models: condition, layer energies and shape, and back.

``ShowerPreprocessing`` composes the transforms of this package the way CaloDREAM (Favaro et
al., arXiv:2405.09629) prepares showers for its energy and shape networks:

* condition ``c = LogEnergyScale(E_inc)`` in [0, 1] over the training range;
* energy space ``y_E = Standardize(Logit(SequentialFractions(E_layers; E_inc)))`` (B, layers);
* shape space ``y_S = Standardize(Logit(BelowThresholdNoise(ShapeNormalize(showers; E_layers))))``
  (B, voxels; the zero voxels dequantised below the readout threshold when ``dequantize``), the
  standardisation fitted on non-empty layers only (an empty layer's shape is irrelevant), its
  width floored at ``shape_min_std`` logit units (rarely hit voxels would otherwise put their
  hits tens of standard deviations out);
* the readout threshold applied to the input showers and, last, to the generated ones.

:meth:`ShowerPreprocessing.forward_log_det` adds the log-Jacobian of showers (MeV) -> (energy
space, shape space), with which a density of the two spaces becomes one of the showers (see
there for what it is a density of).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from caloforge.geometry import Geometry
from caloforge.transforms.base import Compose, Transform
from caloforge.transforms.elementwise import LogEnergyScale, Logit, Standardize, Threshold
from caloforge.transforms.shower import BelowThresholdNoise, LayerSum, SequentialFractions, ShapeNormalize


class ShowerPreprocessing(nn.Module):
    """Showers (MeV) <-> (condition, energy space, shape space); all statistics are buffers."""

    # buffers (registered in __init__), declared for the type checker
    floor: Tensor

    def __init__(
        self,
        geometry: Geometry,
        shape_alpha: float = 1e-6,
        energy_alpha: float = 1e-6,
        etot_margin: float = 1.1,
        feature_clip: float = 5.0,
        shape_min_std: float = 1.0,
        energy_min_std: float = 0.05,
        dequantize: bool = False,
    ):
        super().__init__()
        n_layers, n_voxels = geometry.n_layers, geometry.n_voxels
        self.threshold_value = float(geometry.readout_threshold)
        self.feature_clip = float(feature_clip)
        self.layer_sum = LayerSum(geometry)
        self.condition = LogEnergyScale()
        self.energy = Compose([SequentialFractions(n_layers, etot_margin), Logit(energy_alpha), Standardize(n_layers, energy_min_std)])
        shape = [ShapeNormalize(geometry), Logit(shape_alpha), Standardize(n_voxels, shape_min_std)]
        self.dequantizer = BelowThresholdNoise(geometry, geometry.readout_threshold) if dequantize else None
        if self.dequantizer is not None:
            shape.insert(1, self.dequantizer)
        self.shape = Compose(shape)
        self.threshold = Threshold(geometry.readout_threshold)
        # log(E_layer / E_inc) of non-empty layers, standardised: the shape network's per-layer input.
        self.layer_log = Standardize(n_layers)
        # Where generated voxels are read out (MeV): a fitted statistic, so a buffer; the
        # dequantizer reads it as a float, synchronised after every load_state_dict.
        self.register_buffer("floor", torch.tensor(self.threshold_value, dtype=torch.float64))
        self.register_load_state_dict_post_hook(ShowerPreprocessing._sync_floor)

    # ------------------------------------------------------------------ helpers
    def nonempty(self, e_layer: Tensor) -> Tensor:
        """A layer counts as hit when it holds at least the readout threshold (a thresholded
        shower has no layer with 0 < E < threshold)."""
        return e_layer >= self.threshold_value if self.threshold_value > 0 else e_layer > 0

    def _log_ratio(self, e_inc: Tensor, e_layer: Tensor) -> Tensor:
        ok = self.nonempty(e_layer)
        safe = torch.where(ok, e_layer, torch.ones_like(e_layer))
        return torch.where(ok, torch.log(safe / e_inc.reshape(-1, 1).to(e_layer.dtype)), torch.zeros_like(e_layer))

    def layer_features(self, e_inc: Tensor, e_layer: Tensor) -> Tensor:
        """(B, 2, layers): standardised log(E_layer / E_inc) (0 for empty layers, clipped at
        +-feature_clip) and the hit flag of every layer."""
        ok = self.nonempty(e_layer)
        z = self.layer_log(self._log_ratio(e_inc, e_layer)).clamp(-self.feature_clip, self.feature_clip)
        z = torch.where(ok, z, torch.zeros_like(z))
        return torch.stack([z, ok.to(z.dtype)], 1)

    def set_hit_floor(self, floor: float | None) -> None:
        """Read generated voxels out from ``floor`` MeV up (None: the readout threshold); only
        with ``dequantize`` (see :class:`BelowThresholdNoise`). The value is the buffer
        ``floor``, saved with the model's weights."""
        value = self.threshold_value if floor is None else max(float(floor), self.threshold_value)
        self.floor.fill_(value)
        self._sync_floor()

    def hit_floor_value(self) -> float:
        """The energy (MeV) generated voxels are read out from."""
        return float(self.floor) if self.dequantizer is not None else self.threshold_value

    def _sync_floor(self, *_: object) -> None:
        if self.dequantizer is not None:
            self.dequantizer.floor = float(self.floor)

    # ------------------------------------------------------------------ fitting
    @torch.no_grad()
    def fit(self, e_inc: Tensor, showers: Tensor) -> None:
        e_inc = e_inc.reshape(-1)
        showers = self.threshold(showers)
        self.condition.fit(e_inc)
        e_layer = self.layer_sum(showers)
        self.energy.fit(e_layer, e_inc)
        ok = self.nonempty(e_layer)
        self.layer_log.fit(self._log_ratio(e_inc, e_layer), mask=ok)
        self.shape.fit(showers, e_layer, mask=self.layer_sum.expand(ok))

    # ------------------------------------------------------------------ transforms
    def forward(self, e_inc: Tensor, showers: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(condition (B,), energy space (B, layers), shape space (B, voxels), layer energies)."""
        e_inc = e_inc.reshape(-1).to(showers.dtype)
        showers = self.threshold(showers)
        e_layer = self.layer_sum(showers)
        return self.condition(e_inc), self.energy(e_layer, e_inc), self.shape(showers, e_layer), e_layer

    def forward_log_det(self, e_inc: Tensor, showers: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """:meth:`forward` plus ``log_det`` (B,): a density ``q(y_E, y_S)`` of the two spaces
        gives ``log q + log_det`` for the showers in MeV (given E_inc).

        What counts, and what that makes the density of:

        * the energy space: ``log |d y_E / d E_layers|`` over the sequential fractions that are
          variables: ``u_0`` and the fraction of every layer with energy (a layer below the
          readout threshold, ``u = 0``, and the fractions after the last hit layer are points,
          which keep the energy flow's density in its own standardised-logit units);
        * the shape space, layer energies fixed: ``-log E_l`` per hit voxel (fraction -> MeV)
          and the logit and standardisation Jacobians over the voxels of non-empty layers;
          voxels of empty layers are constant and count in standardised-logit units;
        * with ``dequantize``: the zero voxels of non-empty layers are drawn (fresh uniform
          noise below the threshold, from torch's global generator) and
          :meth:`BelowThresholdNoise.log_volume` added, so ``log q + log_det`` is a one-draw
          estimate of a *lower bound* on the log of the model's probability of reading out
          zero where the shower has zeros, times its density in MeV at the hits (the
          dequantisation bound). Without ``dequantize`` the zeros count at their point value.
        """
        e_inc = e_inc.reshape(-1).to(showers.dtype)
        showers = self.threshold(showers)
        e_layer = self.layer_sum(showers)
        seq, logit_e, std_e = (cast(Transform, t) for t in self.energy.transforms)
        u = seq(e_layer, e_inc)
        hit_layer = self.nonempty(e_layer)
        # u_0 always; u_{l+1} (layer l's share of what remains) where layer l has energy
        e_mask = torch.cat([torch.ones_like(hit_layer[:, :1]), hit_layer[:, :-1]], 1)
        log_det = seq.log_abs_det_jacobian(e_layer, e_inc, e_mask) + logit_e.log_abs_det_jacobian(u, mask=e_mask)
        z = logit_e(u)
        log_det = log_det + std_e.log_abs_det_jacobian(z, mask=e_mask)
        y_energy = std_e(z)

        members = [cast(Transform, t) for t in self.shape.transforms]
        norm, logit_s, std_s = members[0], members[-2], members[-1]
        vox = self.layer_sum.expand(hit_layer)
        f = norm(showers, e_layer)
        if self.dequantizer is not None:
            log_det = log_det + norm.log_abs_det_jacobian(showers, e_layer, f > 0) + self.dequantizer.log_volume(f, e_layer)
            f = self.dequantizer(f, e_layer)
        else:
            log_det = log_det + norm.log_abs_det_jacobian(showers, e_layer, vox)
        log_det = log_det + logit_s.log_abs_det_jacobian(f, mask=vox)
        z = logit_s(f)
        log_det = log_det + std_s.log_abs_det_jacobian(z, mask=vox)
        return self.condition(e_inc), y_energy, std_s(z), e_layer, log_det

    def energy_inverse(self, e_inc: Tensor, y_energy: Tensor) -> Tensor:
        """Energy space -> layer energies (MeV); layers below the threshold set to zero.

        Computed in float64 (45 numbers a shower: free): the layer-by-layer subtraction of the
        sequential fractions loses float32 precision in the layers after one with u close to 1."""
        y = y_energy.to(torch.float64)
        e_layer = self.energy.inverse(y, e_inc.reshape(-1).to(torch.float64))
        e_layer = torch.where(self.nonempty(e_layer), e_layer, torch.zeros_like(e_layer))
        return e_layer.to(y_energy.dtype)

    def shape_inverse(self, y_shape: Tensor, e_layer: Tensor) -> Tensor:
        """Shape space + layer energies -> showers (MeV), readout threshold (or hit floor) applied.

        The floor is applied to the fractions before the per-layer renormalisation (keeping the
        layer energy) and once more after it (a renormalisation that scales a layer down can
        push a kept voxel just below it)."""
        out = self.threshold(self.shape.inverse(y_shape, e_layer.to(y_shape.dtype)))
        floor = self.dequantizer.floor if self.dequantizer is not None else 0.0
        if floor > self.threshold_value:
            out = torch.where(out >= floor, out, torch.zeros_like(out))
        return out

    def inverse(self, e_inc: Tensor, y_energy: Tensor, y_shape: Tensor) -> Tensor:
        return self.shape_inverse(y_shape, self.energy_inverse(e_inc, y_energy))
