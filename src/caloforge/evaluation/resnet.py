"""The 3-D ResNet classifier of the CaloChallenge evaluation (``evaluate.py -m cls-resnet``).

The published DS2/DS3 results rank submissions also by this network (``binary_cls_cnn``), which
sees the voxels as a 3-D image and is much stricter than the MLP. Same protocol as the MLP
classifier (:func:`~caloforge.evaluation.classifier.classifier_test`: low-level inputs
``[log10 E_inc, voxels / E_inc]``, 60/20/20 split, Adam at 2e-4, batches of 1000, up to 50
epochs, best test epoch, isotonic calibration, AUC and JSD on the validation split); only the
network differs. Its structure, as the official code builds it (after the 3-D ResNets of Hara
et al.):

- input: the voxels reshaped to one channel of (layers, alpha, r), (45, 16, 9) for DS2 and
  (45, 50, 18) for DS3; ``log10 E_inc`` goes through a 1-D batch norm and joins the pooled image
  features before the output layer;
- stem: 3-D convolution with 7x7x7 kernels, stride 2, padding 3, no bias, then batch norm, ReLU
  and a 3x3x3 max-pool of stride 2 (padding 1);
- four stages of basic residual blocks (two 3x3x3 convolutions with batch norm, ReLU, identity
  shortcut, or a strided 1x1x1 convolution with batch norm where the shape changes), 32, 64,
  64 and 128 channels, strides 1, 2, 2, 2; depth 18 has two blocks per stage (the official
  default), depth 10 one;
- global average pooling, then one linear layer (128 + 1 inputs) to one logit;
- initialisation: convolutions Kaiming-normal (fan-out, ReLU), 3-D batch norms weight 1, bias 0.

The official code runs in float64; caloforge in float32, as its MLP classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

#: Residual blocks per stage for each supported depth (basic blocks).
BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
#: Channels of the four stages in the official network.
CHANNELS = (32, 64, 64, 128)


@dataclass(frozen=True)
class ResNetConfig:
    """The ResNet classifier's network; training settings come from
    :class:`~caloforge.evaluation.classifier.ClassifierConfig`.

    References:
        Krause et al., "CaloChallenge 2022: A Community Challenge for Fast Calorimeter
        Simulation", arXiv:2410.21611 (the ResNet classifier); Hara, Kataoka, Satoh, "Can
        Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?", CVPR 2018
        (the 3-D ResNet).
    """

    depth: int = 18
    width_factor: float = 1.0  # channels = CHANNELS x width_factor

    @classmethod
    def official(cls, **changes) -> ResNetConfig:
        """The official network: ResNet-18, 32/64/64/128 channels."""
        return replace(cls(), **changes)

    @classmethod
    def tiny(cls, **changes) -> ResNetConfig:
        """For tests and smoke runs: ResNet-10 with a quarter of the channels (8/16/16/32)."""
        return replace(cls(depth=10, width_factor=0.25), **changes)

    def __post_init__(self) -> None:
        if self.depth not in BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS)}, got {self.depth}")
        if self.width_factor <= 0:
            raise ValueError("width_factor must be positive")


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class _BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with batch norm and a residual connection."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv3(cin, cout, stride), nn.BatchNorm3d(cout)
        self.conv2, self.bn2 = _conv3(cout, cout), nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv3d(cin, cout, kernel_size=1, stride=stride, bias=False),
                                          nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet3d(nn.Module):
    """3-D ResNet on ``[log10 E_inc, voxels / E_inc]`` rows of a regular geometry: one logit.

    References:
        Krause et al., arXiv:2410.21611 (CaloChallenge 2022); Hara et al., CVPR 2018.
    """

    def __init__(self, image_shape: tuple[int, int, int], config: ResNetConfig | None = None):
        super().__init__()
        cfg = config or ResNetConfig.official()
        self.image_shape = tuple(int(s) for s in image_shape)
        channels = [max(1, int(c * cfg.width_factor)) for c in CHANNELS]
        self.stem = nn.Sequential(
            nn.Conv3d(1, channels[0], kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm3d(channels[0]), nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=3, stride=2, padding=1),
        )
        stages: list[nn.Module] = []
        cin = channels[0]
        for i, (cout, blocks) in enumerate(zip(channels, BLOCKS[cfg.depth], strict=True)):
            stride = 1 if i == 0 else 2
            for b in range(blocks):
                stages.append(_BasicBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.energy_norm = nn.BatchNorm1d(1)
        self.fc = nn.Linear(cin + 1, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = self.energy_norm(x[:, :1])
        image = x[:, 1:].reshape((-1, 1, *self.image_shape))
        features = self.pool(self.stages(self.stem(image))).flatten(1)
        return self.fc(torch.cat([features, energy], dim=1))


def build_resnet(image_shape: tuple[int, int, int], config: ResNetConfig | None = None) -> ResNet3d:
    """The ResNet classifier for voxels of ``image_shape`` = (layers, alpha, r)."""
    return ResNet3d(image_shape, config)
