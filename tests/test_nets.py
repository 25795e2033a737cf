import pytest
import torch

from lightning_dd.utils.errors import ConfigError
from lightning_dd.nets import ConvNet, NetSpec, ResNetAP, head_parameter_names


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 17, 23)])
def test_convnet_any_input(shape):
    net = ConvNet(shape[0], 7, shape[1:], depth=3, width=8)
    assert net(torch.zeros(2, *shape)).shape == (2, 7)


def test_convnet_28px_pads_to_32px_features():
    net = ConvNet(1, 10, (28, 28), depth=3, width=8)
    assert net.features[0].padding == (3, 3)
    assert net.classifier.in_features == 8 * 4 * 4  # 32 -> 16 -> 8 -> 4


def test_convnet_norms_and_pooling():
    assert isinstance(ConvNet(1, 2, (8, 8), norm="instance", width=4).features[1], torch.nn.GroupNorm)
    assert isinstance(ConvNet(1, 2, (8, 8), norm="batch", width=4).features[1], torch.nn.BatchNorm2d)
    assert ConvNet(1, 2, (8, 8), pooling="none", width=4, depth=1).classifier.in_features == 4 * 8 * 8


@pytest.mark.parametrize("depth", [10, 18])
def test_resnet_ap(depth):
    net = ResNetAP(3, 10, (32, 32), depth=depth, width=8)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_netspec_builds_and_validates():
    spec = NetSpec(width=8)
    a = spec.build_seeded(3, 1, 10, (8, 8))
    b = spec.build_seeded(3, 1, 10, (8, 8))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert head_parameter_names(a) == {"classifier.weight", "classifier.bias"}
    with pytest.raises(ConfigError, match="unknown net 'vgg'"):
        NetSpec(name="vgg")
    with pytest.raises(ConfigError, match="resnet_ap depth"):
        NetSpec(name="resnet_ap", depth=3)
