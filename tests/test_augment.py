import pytest
import torch

from lightning_dd.augment import DSA, augmented_loss, cutmix, parse_strategy
from lightning_dd.utils.errors import ConfigError

ALL = "color_crop_cutout_flip_scale_rotate"


@pytest.mark.parametrize("strategy", ["color", "crop", "cutout", "flip", "scale", "rotate", ALL])
def test_one_draw_is_applied_identically_to_real_and_synthetic(strategy):
    dsa = DSA(strategy)
    g = torch.Generator().manual_seed(0)
    real = torch.randn(5, 3, 16, 16)
    syn = real[:2].clone().requires_grad_(True)
    out = dsa.apply(torch.cat([real, syn]), dsa.sample(1, g))
    assert torch.allclose(out[:2], out[5:], atol=1e-6)
    assert not torch.allclose(out[:5], real)  # the transform did something
    out[5:].sum().backward()
    assert syn.grad is not None and syn.grad.abs().sum() > 0


def test_per_image_draws_differ():
    dsa = DSA(ALL)
    x = torch.randn(1, 1, 16, 16).expand(4, 1, 16, 16).contiguous()
    out = dsa(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(out[0], out[1])


def test_draws_are_reproducible():
    dsa, x = DSA(ALL), torch.randn(3, 3, 8, 8)
    a = dsa(x, torch.Generator().manual_seed(5))
    b = dsa(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_crop_is_an_integer_pixel_shift():
    dsa = DSA("crop")
    x = torch.randn(1, 1, 16, 16)
    for seed in range(10):
        draws = dsa.sample(1, torch.Generator().manual_seed(seed))
        out = dsa.apply(x, draws)
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
        matches = []
        for dy, dx in shifts:
            ref = torch.zeros_like(x)
            ys, xs = slice(max(dy, 0), 16 + min(dy, 0)), slice(max(dx, 0), 16 + min(dx, 0))
            yd, xd = slice(max(-dy, 0), 16 + min(-dy, 0)), slice(max(-dx, 0), 16 + min(-dx, 0))
            ref[..., yd, xd] = x[..., ys, xs]
            matches.append(torch.allclose(out, ref, atol=1e-5))
        assert any(matches)


def test_cutout_zeroes_a_square():
    dsa = DSA("cutout")
    out = dsa.apply(torch.ones(1, 1, 16, 16), dsa.sample(1, torch.Generator().manual_seed(0)))
    zero = out[0, 0] == 0
    rows, cols = torch.nonzero(zero, as_tuple=True)
    side = int(rows.max() - rows.min() + 1)
    # one solid square (its exact side is pinned in test_augment_values), everything else untouched
    assert int(zero.sum()) == side * side and int(cols.max() - cols.min() + 1) == side and 6 <= side <= 8
    assert set(out.unique().tolist()) == {0.0, 1.0}


def test_color_brightness_matches_dsa_formula():
    dsa = DSA("color")
    x = torch.randn(2, 3, 4, 4)
    draws = torch.zeros(1, 11)
    draws[0, 0], draws[0, 1], draws[0, 2] = 0.75, 0.5, 0.5  # brightness +0.25, saturation x1, contrast x1
    assert torch.allclose(dsa.apply(x, draws), x + 0.25, atol=1e-6)


def test_strategy_parsing():
    assert parse_strategy("color_flip", flip_ok=False) == ("color",)
    assert parse_strategy("none") == ()
    assert not DSA("none")
    with pytest.raises(ConfigError, match="unknown augmentation 'blur'"):
        DSA("color_blur")


def test_cutmix_mixes_labels_by_area():
    g = torch.Generator().manual_seed(0)
    x, y = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous(), torch.arange(4)
    for _ in range(20):
        mixed, ya, yb, lam = cutmix(x, y, g, p=1.0)
        assert 0.0 <= lam <= 1.0 and torch.equal(ya, y)
        own = (mixed == x).float().flatten(1).mean(1)
        same = yb == ya
        assert torch.allclose(own[~same], torch.full_like(own[~same], lam))
    assert cutmix(x, y, g, p=0.0)[3] == 1.0


def test_augmented_loss_is_finite_and_differentiable():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    loss = augmented_loss(
        net, torch.randn(8, 1, 8, 8), torch.randint(3, (8,)), DSA(ALL), torch.Generator().manual_seed(0), 0.5
    )
    loss.backward()
    assert torch.isfinite(loss) and net[1].weight.grad is not None
