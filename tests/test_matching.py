import pytest
import torch

from lightning_dd.distill.functional_net import FunctionalNet
from lightning_dd.distill.matching import (
    class_matching_loss,
    gradient_distance,
    layer_distance,
    matched_parameter_names,
)
from lightning_dd.utils.errors import ConfigError
from lightning_dd.nets import ConvNet, head_parameter_names


def test_layer_distances_exact_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert float(layer_distance(a, b, "mse")) == pytest.approx(1 + 1 + 0 + 1)
    assert float(layer_distance(a, b, "l1")) == pytest.approx(1 + 1 + 0 + 1)
    # row 0: orthogonal (1 - 0); row 1: parallel (1 - 1)
    assert float(layer_distance(a, b, "cos")) == pytest.approx(1.0, abs=1e-5)
    assert float(layer_distance(torch.ones(3), torch.zeros(3), "cos")) == 0.0  # DC ignores 1-D tensors
    assert float(gradient_distance([a, a], [b, b], "mse")) == pytest.approx(6.0)
    with pytest.raises(ConfigError, match="unknown metric 'kl'"):
        layer_distance(a, b, "kl")


def test_default_matched_parameters_are_conv_weights():
    net = ConvNet(1, 10, (8, 8), depth=2, width=4)
    shapes = {n: p.shape for n, p in net.named_parameters()}
    heads = head_parameter_names(net)
    assert matched_parameter_names(shapes, heads) == ["features.0.weight", "features.4.weight"]
    with_bias = matched_parameter_names(shapes, heads, include_bias=True)
    assert "features.0.bias" in with_bias and "features.1.weight" in with_bias and "classifier.weight" not in with_bias
    assert "classifier.weight" in matched_parameter_names(shapes, heads, include_head=True)


def _setup(seed=0):
    torch.manual_seed(seed)
    net = FunctionalNet(ConvNet(1, 10, (8, 8), depth=2, width=8))
    weights = net.clone_weights(net.initial_state())
    names = matched_parameter_names({n: w.shape for n, w in weights.items()}, head_parameter_names(net.module))
    return net, weights, [weights[n] for n in names]


@pytest.mark.parametrize("metric", ["mse", "l1", "cos"])
def test_loss_is_zero_for_identical_batches_and_reaches_pixels(metric):
    net, weights, matched = _setup()
    real = torch.randn(6, 1, 8, 8)
    syn = real.clone().requires_grad_(True)
    loss = class_matching_loss(lambda x: net(weights, x), matched, real, syn, 3, metric)
    # cos keeps DC's 1e-6 in the denominator, so identical gradients give ~1e-4 per filter, not 0.
    assert float(loss) == pytest.approx(0.0, abs=1e-2 if metric == "cos" else 1e-5)
    other = torch.randn(4, 1, 8, 8, requires_grad=True)
    loss = class_matching_loss(lambda x: net(weights, x), matched, real, other, 3, metric)
    loss.backward(inputs=[other])  # as DistillModule does: only pixels receive gradients
    assert float(loss) > 0 and other.grad is not None and other.grad.abs().sum() > 0
    assert all(w.grad is None for w in weights.values())


def test_embedding_loss_zero_for_identical_batches_and_reaches_pixels():
    from lightning_dd.distill.matching import class_embedding_loss

    net, weights, _ = _setup()
    real = torch.randn(6, 1, 8, 8)
    assert float(class_embedding_loss(lambda x: net.embed(weights, x), real, real.clone())) == pytest.approx(
        0.0, abs=1e-8
    )
    syn = torch.randn(3, 1, 8, 8, requires_grad=True)
    loss = class_embedding_loss(lambda x: net.embed(weights, x), real, syn)
    expected = torch.sum((net.module.embed(real).mean(0) - net.module.embed(syn).mean(0)) ** 2)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    loss.backward(inputs=[syn])
    assert syn.grad.abs().sum() > 0


def test_bf16_autocast_matching_loss_is_close_to_fp32():
    net, weights, matched = _setup()
    g = torch.Generator().manual_seed(0)
    real, syn = torch.randn(32, 1, 8, 8, generator=g), torch.randn(8, 1, 8, 8, generator=g)
    exact = class_matching_loss(lambda x: net(weights, x), matched, real, syn, 2, "mse")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = class_matching_loss(lambda x: net(weights, x), matched, real, syn, 2, "mse")
    assert fast.dtype == torch.float32
    assert abs(float(fast) - float(exact)) / float(exact) < 0.1


def test_matching_loss_of_a_linear_model_by_hand():
    """logits = x W^T: the CE gradient w.r.t. W is (softmax - onehot)^T x / n, computed by hand."""
    W = torch.tensor([[0.5, -1.0], [1.5, 0.25]], requires_grad=True)
    real = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    syn = torch.tensor([[2.0, 0.5]], requires_grad=True)

    def hand_grad(x, label):
        p = torch.softmax(x @ W.detach().T, dim=1)
        p[:, label] -= 1
        return p.T @ x / x.shape[0]

    g_real, g_syn = hand_grad(real, 1), hand_grad(syn.detach(), 1)
    logits = lambda x: x @ W.T  # noqa: E731
    for metric, expected in (("mse", ((g_real - g_syn) ** 2).sum()), ("l1", (g_real - g_syn).abs().sum())):
        loss = class_matching_loss(logits, [W], real, syn, 1, metric)
        assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    # the label matters: class 0 gives other gradients
    assert float(class_matching_loss(logits, [W], real, syn, 0, "l1")) != pytest.approx(
        float((g_real - g_syn).abs().sum()), rel=1e-3
    )
    loss = class_matching_loss(logits, [W], real, syn, 1, "cos")
    cos = torch.nn.functional.cosine_similarity(g_real, g_syn, dim=1)
    assert float(loss) == pytest.approx(float((1 - cos).sum()), abs=1e-5)
