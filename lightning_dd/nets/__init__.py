"""Plain ``nn.Module`` networks (no Lightning inside) and the NetSpec that names them, or any other network by import path."""

from lightning_dd.nets.convnet import ConvNet
from lightning_dd.nets.resnet import ResNetAP
from lightning_dd.nets.spec import NetSpec, head_parameter_names

__all__ = ["ConvNet", "NetSpec", "ResNetAP", "head_parameter_names"]
