"""NetSpec: a network described by plain values, so configs, cache keys and exports can name it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from lightning_dd.errors import ConfigError, choose
from lightning_dd.nets.convnet import NORMS, POOLINGS, ConvNet
from lightning_dd.nets.resnet import ResNetAP

NET_NAMES = ("convnet", "resnet_ap")


@dataclass(frozen=True)
class NetSpec:
    """Which network to build; the dataset supplies channels, classes and image size.

    Args:
        name: ``convnet`` or ``resnet_ap``.
        depth: ConvNet blocks (default 3), or ResNet depth 10 / 18.
        width: ConvNet channels (default 128); first-stage channels of a ResNet (64).
        norm: ``instance`` (default), ``batch`` or ``none``.
        pooling: ConvNet pooling, ``avg`` (default), ``max`` or ``none``.
    """

    name: str = "convnet"
    depth: int = 3
    width: int = 128
    norm: str = "instance"
    pooling: str = "avg"

    def __post_init__(self) -> None:
        choose("net", self.name, NET_NAMES)
        choose("norm", self.norm, NORMS)
        choose("pooling", self.pooling, POOLINGS)
        if self.name == "resnet_ap" and self.depth not in ResNetAP.BLOCKS:
            raise ConfigError(f"resnet_ap depth must be 10 or 18, got {self.depth}")
        if self.depth < 1 or self.width < 1:
            raise ConfigError(f"net depth and width must be positive, got depth={self.depth} width={self.width}")

    def build(self, channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
        """Instantiate the network (random weights from torch's global RNG)."""
        size = tuple(int(s) for s in image_size)
        if self.name == "convnet":
            return ConvNet(channels, num_classes, size, self.depth, self.width, self.norm, self.pooling)
        return ResNetAP(channels, num_classes, size, self.depth, self.width, self.norm)

    def build_seeded(self, seed: int, channels: int, num_classes: int, image_size) -> nn.Module:
        """Instantiate with weights that depend only on ``seed`` (global RNG left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build(channels, num_classes, image_size)

    def to_dict(self) -> dict:
        return asdict(self)


def head_parameter_names(net: nn.Module) -> set[str]:
    """Names of the classifier head's parameters (excluded from matching by default)."""
    return {f"classifier.{n}" for n, _ in net.classifier.named_parameters()}
