"""The fast 2x2 average pooling equals F.avg_pool2d through the second derivative."""

import pytest
import torch
import torch.nn.functional as F

from lightning_dd.nets import ConvNet
from lightning_dd.nets.pooling import AvgPool2x2, avg_pool2x2


@pytest.mark.parametrize("size", [(8, 8), (5, 7), (2, 3)])
def test_matches_avg_pool2d_with_first_and_second_derivatives(size):
    torch.manual_seed(0)
    x = torch.randn(3, 4, *size, dtype=torch.double, requires_grad=True)
    expected = F.avg_pool2d(x, 2)
    actual = avg_pool2x2(x)
    torch.testing.assert_close(actual, expected)
    # First derivative, and the derivative of the backward w.r.t. the incoming gradient
    # (the path gradient matching differentiates through).
    v = torch.randn_like(expected, requires_grad=True)
    (g_fast,) = torch.autograd.grad((actual * v).sum(), x, create_graph=True)
    (g_ref,) = torch.autograd.grad((expected * v).sum(), x, create_graph=True)
    torch.testing.assert_close(g_fast, g_ref)
    w = torch.randn_like(g_ref)
    (gg_fast,) = torch.autograd.grad((g_fast * w).sum(), v)
    (gg_ref,) = torch.autograd.grad((g_ref * w).sum(), v)
    torch.testing.assert_close(gg_fast, gg_ref)


def test_gradcheck_and_gradgradcheck():
    x = torch.randn(2, 3, 5, 6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(avg_pool2x2, (x,))
    assert torch.autograd.gradgradcheck(avg_pool2x2, (x,))


def test_convnet_matching_gradient_equals_stock_pooling():
    """Same network, stock nn.AvgPool2d vs AvgPool2x2: the double-backward image gradient agrees."""
    torch.manual_seed(0)
    net = ConvNet(1, 3, (28, 28), depth=2, width=8).double()
    stock = ConvNet(1, 3, (28, 28), depth=2, width=8).double()
    stock.load_state_dict(net.state_dict())
    stock.features = torch.nn.Sequential(
        *[torch.nn.AvgPool2d(2) if isinstance(m, AvgPool2x2) else m for m in stock.features]
    )
    assert any(isinstance(m, AvgPool2x2) for m in net.features)
    x = torch.rand(4, 1, 28, 28, dtype=torch.double, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])

    def image_gradient(model):
        weights = [p for p in model.parameters() if p.ndim > 1]
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), weights, create_graph=True)
        return torch.autograd.grad(sum((g**2).sum() for g in grads), x)[0]

    torch.testing.assert_close(image_gradient(net), image_gradient(stock))


def test_module_is_parameter_free_and_other_shapes_fall_back():
    assert list(AvgPool2x2().state_dict()) == []
    x = torch.randn(2, 3, 6)  # 3-D input: handled by F.avg_pool2d
    torch.testing.assert_close(avg_pool2x2(x), F.avg_pool2d(x, 2))
