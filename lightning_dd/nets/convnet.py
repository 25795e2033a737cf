"""ConvNet-D, the standard network of dataset distillation (DC, DSA, IDC, Acc-DD)."""

from __future__ import annotations

import torch
from torch import nn

from lightning_dd.utils.errors import choose
from lightning_dd.nets.instance_norm import InstanceNorm
from lightning_dd.nets.pooling import AvgPool2x2

NORMS = ("instance", "batch", "none")
POOLINGS = ("avg", "max", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    """Instance norm is GroupNorm with one group per channel (affine), as in the DC/IDC code.

    It is :class:`~lightning_dd.nets.instance_norm.InstanceNorm`, an ``nn.GroupNorm`` with the
    same parameters whose double backward is fast on the CPU.
    """
    if kind == "instance":
        return InstanceNorm(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class ConvNet(nn.Module):
    """``[conv3x3 - norm - ReLU - pool2] x depth`` followed by a linear classifier.

    For 28x28 inputs the first convolution pads by 3 so feature maps are 32x32-shaped, as in the
    authors' code; pooling stops once the feature map is 1x1 so small inputs (8x8 digits) work at
    any depth.

    Args:
        channels: input channels.
        num_classes: output classes.
        image_size: input (H, W).
        depth: number of conv blocks.
        width: channels of every conv block.
        norm: ``instance``, ``batch`` or ``none``.
        pooling: ``avg``, ``max`` or ``none``.

    Example:
        >>> net = ConvNet(1, 10, (28, 28))
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        depth: int = 3,
        width: int = 128,
        norm: str = "instance",
        pooling: str = "avg",
    ) -> None:
        super().__init__()
        choose("norm", norm, NORMS)
        choose("pooling", pooling, POOLINGS)
        if depth < 1 or width < 1:
            raise ValueError("ConvNet depth and width must be positive")
        height, wide = image_size
        layers: list[nn.Module] = []
        in_ch = channels
        for d in range(depth):
            pad = 3 if (d == 0 and tuple(image_size) == (28, 28)) else 1
            layers += [nn.Conv2d(in_ch, width, 3, padding=pad), make_norm(norm, width), nn.ReLU(inplace=True)]
            if d == 0 and pad == 3:
                height, wide = height + 4, wide + 4
            if pooling != "none" and min(height, wide) >= 2:
                layers.append(AvgPool2x2() if pooling == "avg" else nn.MaxPool2d(2))
                height, wide = height // 2, wide // 2
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * height * wide, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features before the classifier (used by distribution matching)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
