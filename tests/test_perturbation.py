"""Acc-DD's weight perturbation: the directions' distribution, per-filter norms, magnitudes and signs.

The replay test pins the exact numbers against a reference written from the paper; the others
check properties that any correct implementation has, without replaying its random draws.
"""

from __future__ import annotations

import math

import pytest
import torch

from lightning_dd.distill.pool import filter_normalized_direction, perturb
from lightning_dd.utils.errors import ConfigError
from lightning_dd.nets import ConvNet

from helpers import reference_perturb


def varied_filters(shape=(24, 16, 3, 3), seed=0) -> torch.Tensor:
    """A weight tensor whose filters' norms span two orders of magnitude."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-1, 1, shape[0]).view(-1, *([1] * (len(shape) - 1)))
    return torch.randn(shape, generator=g) * scales


@pytest.mark.parametrize("seed", range(12))
def test_perturbation_equals_the_papers_formula_replayed_from_the_generator(seed):
    net = ConvNet(1, 10, (8, 8), depth=2, width=8)
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    out = perturb(params, 0.01, 0.09, torch.Generator().manual_seed(seed))
    expected = reference_perturb(params, 0.01, 0.09, torch.Generator().manual_seed(seed))
    assert out.keys() == params.keys()
    for name in params:
        torch.testing.assert_close(out[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_direction_has_the_weight_filters_norms_whatever_their_scale():
    w = varied_filters()
    d = filter_normalized_direction(w, torch.Generator().manual_seed(1))
    assert d.shape == w.shape and d.dtype == w.dtype
    torch.testing.assert_close(d.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-5, atol=0)
    # a direction, not the weights themselves (nor a rescaled copy of them)
    cosine = torch.nn.functional.cosine_similarity(d.flatten(1), w.flatten(1), dim=1)
    assert cosine.abs().max() < 0.5


def test_direction_is_gaussian_within_each_filter():
    w = varied_filters(shape=(64, 32, 3, 3))
    d = filter_normalized_direction(w, torch.Generator().manual_seed(2))
    # rescale each filter to unit variance: the entries should then look standard normal
    z = (d.flatten(1) / d.flatten(1).norm(dim=1, keepdim=True) * math.sqrt(d[0].numel())).flatten()
    assert abs(float(z.mean())) < 0.03
    assert abs(float((z < 0).float().mean()) - 0.5) < 0.02  # symmetric: both signs
    kurtosis = float((z**4).mean() / (z**2).mean() ** 2)
    assert kurtosis == pytest.approx(3.0, abs=0.25)  # a uniform draw would give 1.8
    # independent draws from one generator differ
    g = torch.Generator().manual_seed(3)
    assert not torch.allclose(filter_normalized_direction(w, g), filter_normalized_direction(w, g))


def test_every_filter_moves_by_the_same_relative_amount():
    """Filter normalisation: ||w' - w|| / ||w|| is the same for small and large filters."""
    w = varied_filters(shape=(24, 64, 3, 3))
    out = perturb({"w": w}, 0.05, 0.05, torch.Generator().manual_seed(4))["w"]
    ratio = (out - w).flatten(1).norm(dim=1) / w.flatten(1).norm(dim=1)
    # |a| = |b| = 0.05 and two nearly orthogonal unit-norm directions: ratio ~ 0.05 * sqrt(2)
    assert float(ratio.min()) > 0.05 * math.sqrt(2) * 0.8 and float(ratio.max()) < 0.05 * math.sqrt(2) * 1.2


def test_magnitudes_cover_the_range():
    """Across draws the relative displacement spans sqrt(a^2 + b^2) for a, b in [rho_min, rho_max]."""
    w = varied_filters(shape=(4, 2000))  # long filters: the two directions are nearly orthogonal
    ratios = []
    g = torch.Generator().manual_seed(5)
    for _ in range(300):
        out = perturb({"w": w}, 0.01, 0.09, g)["w"]
        r = ((out - w).flatten(1).norm(dim=1) / w.flatten(1).norm(dim=1)).mean()
        ratios.append(float(r))
    low, high = min(ratios), max(ratios)
    assert 0.01 * math.sqrt(2) * 0.9 < low < 0.03 and 0.1 < high < 0.09 * math.sqrt(2) * 1.1
    # E[a^2] for a ~ U(0.01, 0.09): (0.09^3 - 0.01^3) / (3 * 0.08)
    mean_sq = sum(r * r for r in ratios) / len(ratios)
    assert mean_sq == pytest.approx(2 * (0.09**3 - 0.01**3) / (3 * 0.08), rel=0.12)


def test_signs_of_a_and_b_are_independent_and_fair():
    """Replayed draws: all four sign combinations of (a, b) occur about equally often."""
    w = {"w": torch.randn(2, 5)}
    counts = {}
    for seed in range(400):
        g = torch.Generator().manual_seed(seed)
        u = torch.rand(4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        out = perturb(w, 0.01, 0.09, g)["w"]
        expected = reference_perturb(w, 0.01, 0.09, torch.Generator().manual_seed(seed))["w"]
        torch.testing.assert_close(out, expected)
        key = (bool(u[1] < 0.5), bool(u[3] < 0.5))
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 4 and min(counts.values()) > 70


def test_one_dimensional_and_integer_tensors_are_not_moved():
    params = {
        "conv.weight": torch.randn(4, 2, 3, 3),
        "conv.bias": torch.randn(4),
        "norm.weight": torch.ones(4),
        "count": torch.tensor([3, 4]),
        "table": torch.arange(6).view(2, 3),
    }
    out = perturb(params, 0.01, 0.09, torch.Generator().manual_seed(0))
    for name in ("conv.bias", "norm.weight", "count", "table"):
        assert torch.equal(out[name], params[name]), name
    assert not torch.allclose(out["conv.weight"], params["conv.weight"])
    out["conv.bias"].add_(1)  # a copy, not the caller's tensor
    assert not torch.equal(out["conv.bias"], params["conv.bias"])


def test_zero_range_gives_the_weights_back_and_bad_ranges_are_refused():
    w = {"w": torch.randn(3, 4)}
    assert torch.equal(perturb(w, 0.0, 0.0, torch.Generator())["w"], w["w"])
    with pytest.raises(ConfigError, match="rho_min"):
        perturb(w, 0.1, 0.01, torch.Generator())
    with pytest.raises(ConfigError, match="rho_min"):
        perturb(w, -0.1, 0.01, torch.Generator())
