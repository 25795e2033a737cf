"""The CPU instance norm equals nn.GroupNorm(C, C) through the second derivative."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_dd.nets import ConvNet, ResNetAP
from lightning_dd.nets.instance_norm import InstanceNorm, instance_norm


def _inputs(shape=(3, 4, 5, 6)):
    torch.manual_seed(0)
    x = (torch.randn(*shape, dtype=torch.double) * 2 + 0.5).requires_grad_()
    weight = (torch.rand(shape[1], dtype=torch.double) + 0.5).requires_grad_()
    bias = torch.randn(shape[1], dtype=torch.double, requires_grad=True)
    return x, weight, bias


def test_gradcheck_and_gradgradcheck():
    x, weight, bias = _inputs((2, 3, 4, 5))
    fn = lambda x, w, b: instance_norm(x, w, b, 1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, weight, bias))
    assert torch.autograd.gradgradcheck(fn, (x, weight, bias))


@pytest.mark.parametrize("use", ["all", "weight_grads_only", "input_grad_only"])
def test_second_derivatives_equal_group_norm(use):
    """Differentiate a function of (grad_x, grad_weight, grad_bias) of both implementations once more."""
    x, weight, bias = _inputs()
    v = torch.randn(3, 4, 5, 6, dtype=torch.double, requires_grad=True)

    def second(norm):
        gx, gw, gb = torch.autograd.grad((norm(x, weight, bias) * v).sum(), (x, weight, bias), create_graph=True)
        terms = {"all": [gx, gw, gb], "weight_grads_only": [gw, gb], "input_grad_only": [gx]}[use]
        loss = sum((t**2).sum() * (k + 1) for k, t in enumerate(terms))
        return [
            g if g is not None else torch.zeros(())
            for g in torch.autograd.grad(loss, (x, weight, v), allow_unused=True)
        ], (gx, gw, gb)

    fast, fast_first = second(lambda x, w, b: instance_norm(x, w, b))
    ref, ref_first = second(lambda x, w, b: F.group_norm(x, x.shape[1], w, b))
    torch.testing.assert_close(instance_norm(x, weight, bias), F.group_norm(x, 4, weight, bias))
    for a, b in zip(fast_first, ref_first):
        torch.testing.assert_close(a, b)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "builder", [lambda: ConvNet(1, 3, (28, 28), depth=2, width=8), lambda: ResNetAP(3, 3, (16, 16), depth=10, width=8)]
)
def test_matching_gradient_equals_stock_group_norm(builder):
    """A network with InstanceNorm vs the same network with nn.GroupNorm: equal image gradient of a matching loss."""
    torch.manual_seed(0)
    net = builder().double()
    stock = builder().double()
    stock.load_state_dict(net.state_dict())
    swapped = 0
    for parent in stock.modules():
        for name, child in parent.named_children():
            if isinstance(child, InstanceNorm):
                plain = nn.GroupNorm(child.num_groups, child.num_channels).double()
                plain.load_state_dict(child.state_dict())
                setattr(parent, name, plain)
                swapped += 1
    assert swapped > 0
    with torch.no_grad():  # non-trivial norm affine parameters
        for name, p in net.named_parameters():
            if p.ndim == 1:
                p.add_(torch.rand_like(p) * 0.3)
        stock.load_state_dict(net.state_dict())
    channels, size = (1, (28, 28)) if isinstance(net, ConvNet) else (3, (16, 16))
    x = torch.rand(4, channels, *size, dtype=torch.double, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0])

    def image_gradient(model):
        params = list(model.parameters())  # weights and the 1-D norm parameters (match_bias)
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
        return torch.autograd.grad(sum((g**2).sum() for g in grads), x)[0]

    torch.testing.assert_close(image_gradient(net), image_gradient(stock))


def test_module_is_a_group_norm_with_the_same_state_dict():
    norm = InstanceNorm(6)
    assert isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels == 6
    assert list(norm.state_dict()) == list(nn.GroupNorm(6, 6).state_dict())


def test_plain_backward_with_frozen_affine_parameters():
    """Only the input needs a gradient: the fused kernel is asked for that alone."""
    x, weight, bias = _inputs()
    weight, bias = weight.detach(), bias.detach()
    v = torch.randn_like(x)
    (gx,) = torch.autograd.grad((instance_norm(x, weight, bias) * v).sum(), (x,))
    (gx_ref,) = torch.autograd.grad((F.group_norm(x, 4, weight, bias) * v).sum(), (x,))
    torch.testing.assert_close(gx, gx_ref)


def test_other_inputs_fall_back_to_group_norm():
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    weight, bias = torch.ones(4), torch.zeros(4)
    assert type(instance_norm(x, weight, bias).grad_fn).__name__ == "_InstanceNormBackward"  # the fast Function
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = instance_norm(x, weight, bias)
    assert "GroupNorm" in type(out.grad_fn).__name__
    torch.testing.assert_close(out.float(), F.group_norm(x, 4, weight, bias), atol=2e-2, rtol=2e-2)
    low = x.detach().bfloat16().requires_grad_()
    assert "GroupNorm" in type(instance_norm(low, weight.bfloat16(), bias.bfloat16()).grad_fn).__name__
    x3 = torch.randn(2, 4, 5)  # 3-D input
    torch.testing.assert_close(instance_norm(x3, weight, bias), F.group_norm(x3, 4, weight, bias))


def test_torch_func_transforms_use_the_composite_path():
    net = ConvNet(1, 3, (8, 8), depth=1, width=4)
    x = torch.randn(5, 2, 1, 8, 8)
    batched = torch.func.vmap(net)(x)
    torch.testing.assert_close(batched, torch.stack([net(xi) for xi in x]))
