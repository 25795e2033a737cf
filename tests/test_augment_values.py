"""DSA and CutMix produce the values of the DSA/IDC code, checked on hand-made tensors.

Each expected value here is computed by hand (or by geometry: where a blob must land after a
rotation or a scale) rather than by calling the transform under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_dd.augment import DSA, augmented_loss, cutmix


def draws(**columns) -> torch.Tensor:
    """A single ``[1, 11]`` draw with named columns set (everything else 0.5)."""
    index = {
        "bright": 0,
        "sat": 1,
        "contrast": 2,
        "crop_x": 3,
        "crop_y": 4,
        "cut_x": 5,
        "cut_y": 6,
        "flip": 7,
        "scale_x": 8,
        "scale_y": 9,
        "rotate": 10,
    }
    u = torch.full((1, 11), 0.5)
    for name, value in columns.items():
        u[0, index[name]] = value
    return u


def test_colour_is_brightness_then_saturation_then_contrast_by_hand():
    # One image, 3 channels of 1x2 pixels: channel k holds (2k+1, 2k+2).
    x = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]], [[5.0, 6.0]]]])
    out = DSA("color").apply(x, draws(bright=0.9, sat=0.25, contrast=0.1))
    # brightness +0.4 -> saturation x0.5 around each pixel's channel mean -> contrast x0.6 around the image mean 3.9
    expected = torch.tensor([[[[3.0, 3.6]], [[3.6, 4.2]], [[4.2, 4.8]]]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_colour_ranges_follow_the_dsa_ratios():
    x = torch.tensor([[[[0.0, 2.0]]]])  # one grey image with mean 1 and spread 1
    dsa = DSA("color")
    # brightness alone spans [-0.5, +0.5] (ratio 1.0): contrast factor c + 0.5 = 1 at c = 0.5
    low = dsa.apply(x, draws(bright=0.0))
    high = dsa.apply(x, draws(bright=1.0))
    torch.testing.assert_close(low, x - 0.5)
    torch.testing.assert_close(high, x + 0.5)
    # contrast spans factors [0.5, 1.5] around the image mean
    torch.testing.assert_close(dsa.apply(x, draws(contrast=0.0)), torch.tensor([[[[0.5, 1.5]]]]))
    torch.testing.assert_close(dsa.apply(x, draws(contrast=1.0)), torch.tensor([[[[-0.5, 2.5]]]]))
    # saturation spans factors [0, 2] around the channel mean: a colour image turns grey at 0
    rgb = torch.tensor([[[[0.0]], [[3.0]], [[6.0]]]])
    torch.testing.assert_close(dsa.apply(rgb, draws(sat=0.0)), torch.full((1, 3, 1, 1), 3.0))
    torch.testing.assert_close(dsa.apply(rgb, draws(sat=1.0)), torch.tensor([[[[-3.0]], [[3.0]], [[9.0]]]]))


def test_per_image_draws_are_applied_row_by_row():
    dsa = DSA("color_crop_cutout_flip_scale_rotate")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 12, 12, generator=g)
    u = dsa.sample(3, g)
    together = dsa.apply(x, u)
    for i in range(3):
        torch.testing.assert_close(together[i : i + 1], dsa.apply(x[i : i + 1], u[i : i + 1]))


def test_flip_is_a_horizontal_mirror_drawn_with_probability_half():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    dsa = DSA("flip")
    torch.testing.assert_close(dsa.apply(x, draws(flip=0.2)), x.flip(-1))
    torch.testing.assert_close(dsa.apply(x, draws(flip=0.7)), x)
    assert DSA("flip", flip_ok=False).names == ()


def _shift_of(out: torch.Tensor, x: torch.Tensor, limit: int) -> tuple[int, int] | None:
    size = x.shape[-1]
    for dy in range(-limit - 1, limit + 2):
        for dx in range(-limit - 1, limit + 2):
            ref = torch.zeros_like(x)
            src_y, src_x = slice(max(-dy, 0), size - max(dy, 0)), slice(max(-dx, 0), size - max(dx, 0))
            dst_y, dst_x = slice(max(dy, 0), size - max(-dy, 0)), slice(max(dx, 0), size - max(-dx, 0))
            ref[..., dst_y, dst_x] = x[..., src_y, src_x]
            if torch.allclose(out, ref, atol=1e-5):
                return dy, dx
    return None


def test_crop_shifts_by_whole_pixels_up_to_an_eighth_of_the_size_each_way():
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    dsa, g = DSA("crop"), torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(150):
        shift = _shift_of(dsa.apply(x, dsa.sample(1, g)), x, limit=2)
        assert shift is not None and max(abs(shift[0]), abs(shift[1])) <= 2  # round(16 * 0.125) = 2
        seen.add(shift)
    assert len(seen) == 25  # every shift in [-2, 2] x [-2, 2] occurs


def _blob(size: int, cy: float, cx: float, sigma: float = 1.2) -> torch.Tensor:
    rows = torch.arange(size, dtype=torch.float64).view(-1, 1)
    cols = torch.arange(size, dtype=torch.float64).view(1, -1)
    return torch.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * sigma**2)).view(1, 1, size, size).float()


def _centroid(img: torch.Tensor) -> tuple[float, float]:
    """Centroid (row, col) relative to the image centre."""
    size = img.shape[-1]
    w = img[0, 0].double()
    rows = torch.arange(size, dtype=torch.float64).view(-1, 1)
    cols = torch.arange(size, dtype=torch.float64).view(1, -1)
    centre = (size - 1) / 2
    return float((w * rows).sum() / w.sum()) - centre, float((w * cols).sum() / w.sum()) - centre


def test_rotation_turns_the_image_by_up_to_15_degrees_each_way():
    size = 41
    x = _blob(size, 20.0, 30.0)  # 10 px right of the centre
    dsa = DSA("rotate")
    angles = {}
    for u in (0.0, 0.5, 1.0):
        dy, dx = _centroid(dsa.apply(x, draws(rotate=u)))
        assert math.hypot(dy, dx) == pytest.approx(10.0, abs=0.3)
        angles[u] = math.degrees(math.atan2(dy, dx))
    assert angles[0.5] == pytest.approx(0.0, abs=0.5)
    assert abs(angles[1.0]) == pytest.approx(15.0, abs=0.3) and abs(angles[0.0]) == pytest.approx(15.0, abs=0.3)
    assert (
        angles[1.0] > 0 > angles[0.0]
    )  # DSA's matrix [[cos, sin], [-sin, cos]]: the top draw turns content downwards (clockwise on screen)


def test_scale_zooms_each_axis_independently_between_1_over_1_2_and_1_2():
    size = 41
    x = _blob(size, 28.0, 28.0)  # 8 px right and 8 px down of the centre
    dsa = DSA("scale")
    # Sampling grid scaled by s: content shrinks by 1/s along that axis.
    dy, dx = _centroid(dsa.apply(x, draws(scale_x=1.0, scale_y=0.0)))
    assert dx == pytest.approx(8.0 / 1.2, abs=0.25) and dy == pytest.approx(8.0 * 1.2, abs=0.25)
    dy, dx = _centroid(dsa.apply(x, draws(scale_x=0.0, scale_y=1.0)))
    assert dx == pytest.approx(8.0 * 1.2, abs=0.25) and dy == pytest.approx(8.0 / 1.2, abs=0.25)


@pytest.mark.parametrize("size", [8, 16, 32])
def test_cutout_square_is_fully_zero_inside_and_untouched_outside(size):
    dsa = DSA("cutout")
    out = dsa.apply(torch.ones(1, 1, size, size), draws(cut_x=0.5, cut_y=0.5))
    zero = out[0, 0] == 0
    rows, cols = torch.nonzero(zero, as_tuple=True)
    # one solid axis-aligned square around the centre; everything else keeps its value
    side_r, side_c = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert side_r == side_c and int(zero.sum()) == side_r * side_c
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert rows.min() <= size // 2 <= rows.max() and cols.min() <= size // 2 <= cols.max()
    # the cut moves with its draw
    moved = dsa.apply(torch.ones(1, 1, size, size), draws(cut_x=0.05, cut_y=0.95))[0, 0] == 0
    r2, c2 = torch.nonzero(moved, as_tuple=True)
    assert float(r2.float().mean()) > float(rows.float().mean()) and float(c2.float().mean()) < float(
        cols.float().mean()
    )


@pytest.mark.parametrize("size", [8, 16, 32])
def test_cutout_side_is_half_the_image_as_in_dsa(size):
    out = DSA("cutout").apply(torch.ones(1, 1, size, size), draws(cut_x=0.5, cut_y=0.5))
    assert int((out == 0).sum()) == (size // 2) ** 2


def test_bilinear_warps_keep_gradients_to_pixels():
    dsa = DSA("crop_scale_rotate")
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    dsa.apply(x, draws(crop_x=0.9, scale_x=0.8, rotate=0.9)).square().sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


# ---------------------------------------------------------------------------------- CutMix
def _labelled_images(n: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is constant with value i, label i: every pixel says where it came from."""
    y = torch.arange(n)
    return y.float().view(n, 1, 1, 1).expand(n, 1, size, size).contiguous(), y


def test_cutmix_pastes_one_box_from_the_partner_whose_label_is_y_b():
    x, y = _labelled_images(6)
    g = torch.Generator().manual_seed(0)
    mixed_any = 0
    for _ in range(30):
        mixed, y_a, y_b, lam = cutmix(x, y, g, p=1.0)
        assert torch.equal(y_a, y)
        pasted = mixed != x  # pixels that came from another image
        if lam == 1.0:
            assert not pasted.any()
            continue
        mixed_any += 1
        box = pasted.any(0)[0]  # same box for every image of the batch
        rows, cols = torch.nonzero(box, as_tuple=True)
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        area = height * width
        # square images get square boxes (both sides scale with sqrt(1 - lam)); borders only clip them
        if rows.min() > 0 and rows.max() < 7:
            assert width <= height
        if cols.min() > 0 and cols.max() < 7:
            assert height <= width
        for i in range(6):
            if int(y_b[i]) == i:
                continue
            inside = mixed[i, 0][box]
            assert torch.all(inside == float(y_b[i]))  # the pasted content is y_b's image
            assert torch.all(mixed[i, 0][~box] == float(i))
        assert lam == pytest.approx(1 - area / 64)  # label weight = share of own pixels
    assert mixed_any >= 20


def test_cutmix_probability_and_no_mixing_for_p_zero():
    x, y = _labelled_images(4)
    g = torch.Generator().manual_seed(1)
    mixed = sum(cutmix(x, y, g, p=0.3)[3] < 1.0 for _ in range(1000))
    assert 240 <= mixed <= 360
    out, y_a, y_b, lam = cutmix(x, y, g, p=0.0)
    assert lam == 1.0 and torch.equal(out, x) and torch.equal(y_b, y)


def test_augmented_loss_weights_the_two_labels_by_lam():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 6))
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    for seed in range(8):
        loss = augmented_loss(net, x, y, DSA("none"), torch.Generator().manual_seed(seed), 1.0)
        mixed, y_a, y_b, lam = cutmix(x, y, torch.Generator().manual_seed(seed), 1.0)
        logits = net(mixed)
        expected = lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)
        torch.testing.assert_close(loss, expected)
    plain = augmented_loss(net, x, y, DSA("none"), torch.Generator().manual_seed(0), 0.0)
    torch.testing.assert_close(plain, F.cross_entropy(net(x), y))


def test_augmented_loss_draws_dsa_per_image_before_cutmix():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    dsa = DSA("color_crop")
    loss = augmented_loss(net, x, y, dsa, torch.Generator().manual_seed(2), 0.0)
    g = torch.Generator().manual_seed(2)
    expected = F.cross_entropy(net(dsa.apply(x, dsa.sample(4, g))), y)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, F.cross_entropy(net(x), y))
