"""ResNet with average-pool downsampling ("ResNet-AP"), as used by IDC and Acc-DD.

Strided convolutions are replaced by a stride-1 convolution followed by 2x2 average pooling,
which the IDC authors found to transfer better to and from synthetic data.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_dd.nets.convnet import make_norm
from lightning_dd.nets.pooling import AvgPool2x2


class BasicBlockAP(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, downsample: bool, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_ch)
        self.pool = AvgPool2x2() if downsample else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if downsample or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, bias=False),
                AvgPool2x2() if downsample else nn.Identity(),
                make_norm(norm, out_ch),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.pool(self.conv1(x))))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetAP(nn.Module):
    """ResNet-10/18 with average-pool downsampling and instance norm by default.

    Args:
        channels: input channels.
        num_classes: output classes.
        image_size: input (H, W); downsampling stops at 1x1.
        depth: 10 (one block per stage) or 18 (two blocks per stage).
        width: channels of the first stage (doubled at each later stage).
        norm: ``instance``, ``batch`` or ``none``.

    Example:
        >>> net = ResNetAP(3, 10, (32, 32), depth=10)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2)}

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        depth: int = 10,
        width: int = 64,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if depth not in self.BLOCKS:
            raise ValueError(f"ResNetAP depth must be one of {sorted(self.BLOCKS)}, got {depth}")
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), make_norm(norm, width), nn.ReLU(inplace=True)
        )
        size = min(image_size)
        blocks: list[nn.Module] = []
        in_ch = width
        for stage, n_blocks in enumerate(self.BLOCKS[depth]):
            out_ch = width * 2**stage
            for b in range(n_blocks):
                downsample = stage > 0 and b == 0 and size >= 2
                if downsample:
                    size //= 2
                blocks.append(BasicBlockAP(in_ch, out_ch, downsample, norm))
                in_ch = out_ch
        self.layers = nn.Sequential(*blocks)
        self.classifier = nn.Linear(in_ch, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
