"""Grouped (class-vectorised) gradient matching equals the per-class loop."""

from __future__ import annotations

import pytest
import torch

from lightning_dd import NetSpec
from lightning_dd.distill.functional_net import FunctionalNet
from lightning_dd.distill.grouped import GroupedConvNet, grouped_matching_loss, supports_grouped
from lightning_dd.distill.matching import class_matching_loss, matched_parameter_names
from lightning_dd.utils.errors import ConfigError
from lightning_dd.nets import ConvNet, ResNetAP, head_parameter_names

from helpers import fit, tiny_module


@pytest.mark.parametrize("metric", ["mse", "l1", "cos"])
@pytest.mark.parametrize("everything", [False, True])
def test_loss_and_pixel_gradient_equal_the_per_class_loop(metric, everything):
    torch.manual_seed(0)
    template = ConvNet(3, 5, (12, 12), depth=2, width=6).double()
    fnet = FunctionalNet(template)
    weights = fnet.clone_weights(fnet.initial_state())
    names = matched_parameter_names(
        {n: p.shape for n, p in template.named_parameters()}, head_parameter_names(template), everything, everything
    )
    classes = [4, 1, 3]
    real = torch.randn(3, 7, 3, 12, 12, dtype=torch.double)
    pixels = torch.randn(3, 4, 3, 12, 12, dtype=torch.double, requires_grad=True)
    syn = pixels * 1.5  # something between the leaf and the network, as decoding is

    loop = sum(
        class_matching_loss(lambda x: fnet(weights, x), [weights[n] for n in names], real[i], syn[i], c, metric)
        for i, c in enumerate(classes)
    )
    syn = pixels * 1.5  # the loop's backward freed the first graph
    (loop_grad,) = torch.autograd.grad(loop, pixels)
    grouped = grouped_matching_loss(GroupedConvNet(template), weights, names, real, syn, torch.tensor(classes), metric)
    (grouped_grad,) = torch.autograd.grad(grouped, pixels)

    torch.testing.assert_close(grouped, loop)
    torch.testing.assert_close(grouped_grad, loop_grad)
    assert all(weights[n].grad is None for n in names)  # the network's own weights are untouched


def test_only_convnets_with_per_sample_norms_are_supported():
    assert supports_grouped(ConvNet(1, 3, (8, 8), depth=2, width=4, norm="instance"))
    assert supports_grouped(ConvNet(1, 3, (8, 8), depth=2, width=4, norm="none", pooling="max"))
    assert not supports_grouped(ConvNet(1, 3, (8, 8), depth=2, width=4, norm="batch"))
    assert not supports_grouped(ResNetAP(3, 10, (32, 32), depth=10))
    with pytest.raises(TypeError):
        GroupedConvNet(ResNetAP(3, 10, (32, 32), depth=10))


def test_distillation_with_class_chunks_matches_the_loop(pool_dir):
    """10 digit classes in chunks of 4, 4 and 2: same images as one class at a time, to float rounding."""
    results = []
    for chunk in (1, 4):
        module = tiny_module(
            pool_dir,
            model_source="random",
            outer_iterations=1,
            inner_loop=2,
            classes_per_pass=chunk,
            image_step="per_iteration",
        )
        fit(module)
        results.append(module.distilled()[0])
        initial = module.state.good_images.cpu()  # the images when the (only) outer iteration began
        assert (results[-1] - initial).abs().max() > 1e-3  # matching moved them
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=1e-5)


def test_bad_classes_per_pass_is_a_config_error(pool_dir):
    with pytest.raises(ConfigError, match="classes_per_pass"):
        tiny_module(pool_dir, classes_per_pass=0)
    module = tiny_module(
        pool_dir,
        classes_per_pass=2,
        image_step="per_iteration",
        net=NetSpec(depth=2, width=8, norm="batch"),
        model_source="random",
        outer_iterations=1,
        inner_loop=1,
    )  # batch norm: no grouped pass
    with pytest.raises(ConfigError, match="classes_per_pass"):
        fit(module)
