import pytest
import torch

from lightning_dd.distill.synthetic import SyntheticSet, decode, decode_labels
from lightning_dd.utils.errors import ConfigError


def test_decode_factor_one_is_identity():
    x = torch.rand(3, 1, 8, 8)
    assert decode(x, 1) is x


def test_decode_tiles_in_row_major_order():
    # Image 0 has constant quadrants 1, 2 (top) and 3, 4 (bottom); image 1 is 10x that.
    img = torch.zeros(1, 1, 4, 4)
    img[..., :2, :2], img[..., :2, 2:], img[..., 2:, :2], img[..., 2:, 2:] = 1, 2, 3, 4
    out = decode(torch.cat([img, 10 * img]), 2)
    assert out.shape == (8, 1, 4, 4)
    expected = torch.tensor([1, 2, 3, 4, 10, 20, 30, 40], dtype=torch.float32)
    assert torch.allclose(out.flatten(1).mean(1), expected)
    assert torch.allclose(out.flatten(1).std(1), torch.zeros(8))  # upsampled constant tiles stay constant
    assert torch.equal(decode_labels(torch.tensor([0, 5]), 2), torch.tensor([0, 0, 0, 0, 5, 5, 5, 5]))


def test_decode_upsamples_each_tile_bilinearly_by_hand():
    """A 2x2 tile [[a, b], [c, d]] upsampled to 4x4 (half-pixel centres, edges clamped)."""
    a, b, c, d = 1.0, 3.0, 5.0, 13.0
    img = torch.zeros(1, 1, 4, 4)
    img[0, 0, :2, 2:] = torch.tensor([[a, b], [c, d]])  # the top-right tile (decoded image 1)
    out = decode(img, 2)[1, 0]
    weights = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])  # output row -> source rows
    expected = weights @ torch.tensor([[a, b], [c, d]]) @ weights.T
    torch.testing.assert_close(out, expected)
    assert float(out[1, 1]) == 0.75 * 0.75 * a + 0.75 * 0.25 * (b + c) + 0.25 * 0.25 * d
    assert torch.equal(decode(img, 2)[0], torch.zeros(1, 4, 4))


def test_decode_keeps_gradients_to_the_stored_pixels():
    img = torch.rand(2, 1, 8, 8, requires_grad=True)
    out = decode(img, 2)
    out[5].sum().backward()  # decoded image 5 = image 1, tile (0, 1)
    grad = img.grad
    assert float(grad[0].abs().sum()) == 0 and float(grad[1, 0, :4, 4:].sum()) == pytest.approx(64.0)
    assert float(grad[1, 0, 4:, :].abs().sum()) == 0 and float(grad[1, 0, :, :4].abs().sum()) == 0


def test_decode_pads_a_side_the_factor_does_not_divide_with_grey_at_the_bottom_and_right():
    """5x5 at factor 2: tiles of ceil(5 / 2) = 3 pixels cut from the image padded to 6x6 with 0.5."""
    img = (10 * torch.arange(5.0)[:, None] + torch.arange(5.0)).view(1, 1, 5, 5)  # pixel (r, c) = 10 r + c
    out = decode(img, 2)
    assert out.shape == (4, 1, 5, 5)
    g = 0.5
    tiles = torch.tensor(
        [
            [[0, 1, 2], [10, 11, 12], [20, 21, 22]],  # top left: image pixels only
            [[3, 4, g], [13, 14, g], [23, 24, g]],  # top right: grey right column
            [[30, 31, 32], [40, 41, 42], [g, g, g]],  # bottom left: grey bottom row
            [[33, 34, g], [43, 44, g], [g, g, g]],  # bottom right: both
        ]
    )
    # 3 -> 5 bilinear (half-pixel centres): output row i reads source row 0.6 (i + 0.5) - 0.5,
    # i.e. -0.2 (clamped to 0), 0.4, 1.0, 1.6 and 2.2 (clamped to the last row).
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.4, 0.6], [0.0, 0.0, 1.0]])
    for k in range(4):
        torch.testing.assert_close(out[k, 0], weights @ tiles[k] @ weights.T)
    assert float(out[0, 0, 4, 4]) == 22.0 and float(out[0].min()) == 0.0  # no grey reaches the first tile
    assert float(out[1, 0, 0, 4]) == g and float(out[2, 0, 4, 0]) == g and float(out[3, 0, 4, 4]) == g
    # Row weights (0.6, 0.4), column weights (0.4, 0.6) on [[4, g], [14, g]]: 0.6 * 1.9 + 0.4 * 5.9
    assert float(out[1, 0, 1, 3]) == pytest.approx(3.5)
    # Factor 3 at 10x10 (tiles of 4, two grey rows and columns): the last tile's far corner is
    # grey in every channel, the first tile's near corner is the image's.
    x = torch.rand(2, 3, 10, 10)
    out = decode(x, 3)
    assert out.shape == (18, 3, 10, 10)
    assert out[8, :, -1, -1].tolist() == [g] * 3 and out[17, :, -1, -1].tolist() == [g] * 3
    torch.testing.assert_close(out[9, :, 0, 0], x[1, :, 0, 0])


def test_default_factor_is_no_multi_formation():
    syn = SyntheticSet(10, ipc=3, channels=1, image_size=(8, 8))
    assert syn.factor == 1 and syn.per_class_decoded == 3 and syn.decoded_images().shape == (30, 1, 8, 8)


def test_synthetic_set_shapes():
    syn = SyntheticSet(10, ipc=3, channels=1, image_size=(8, 8), factor=2)
    assert syn.images.shape == (30, 1, 8, 8)
    assert syn.decoded_images().shape == (120, 1, 8, 8)
    assert torch.equal(syn.decoded_labels(), torch.arange(10).repeat_interleave(12))
    assert syn.decoded_class_images(4).shape == (12, 1, 8, 8)
    assert [n for n, _ in syn.named_parameters()] == ["images"]


def test_real_init_uses_random_real_images_of_the_class(digits):
    train = digits.train_data
    syn = SyntheticSet(10, ipc=2, channels=1, image_size=(8, 8), factor=1)
    syn.initialize("real", train, torch.Generator().manual_seed(0))
    real = train.images.float() / 255
    chosen = []
    for i, img in enumerate(syn.images.detach()):
        match = torch.nonzero((real - img).abs().flatten(1).max(1).values < 1e-6).flatten()
        assert match.numel() >= 1 and int(train.labels[match[0]]) == i // 2
        chosen.append(int(match[0]))
    first = [int(train.class_indices[c][k]) for c in range(10) for k in range(2)]
    assert chosen != first  # a random sample, not the first images of each class
    other = SyntheticSet(10, ipc=2, channels=1, image_size=(8, 8), factor=1)
    other.initialize("real", train, torch.Generator().manual_seed(1))
    assert not torch.equal(other.images, syn.images)


def nearest_half(images: torch.Tensor) -> torch.Tensor:
    """8x8 -> 4x4 by nearest-neighbour, by hand: output pixel i reads input pixel 2i."""
    return images.float()[..., ::2, ::2] / 255


def antialiased_half(images: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.interpolate(
        images.float() / 255, size=(4, 4), mode="bilinear", antialias=True, align_corners=False
    )


@pytest.mark.parametrize("mode, shrink", [("nearest", nearest_half), ("antialias", antialiased_half)])
def test_mix_init_builds_each_tile_from_a_real_image_of_the_class(digits, mode, shrink):
    train = digits.train_data
    syn = SyntheticSet(10, ipc=2, channels=1, image_size=(8, 8), factor=2)
    syn.initialize("mix", train, torch.Generator().manual_seed(0), mix_downsample=mode)
    tiles = syn.images.detach().unfold(2, 4, 4).unfold(3, 4, 4)  # [20, 1, 2, 2, 4, 4]
    real_small = shrink(train.images)
    for c in range(10):
        sources = []
        for k in range(2):
            for i in range(2):
                for j in range(2):
                    tile = tiles[c * 2 + k, :, i, j]
                    dist = (real_small - tile).abs().flatten(1).max(1).values
                    best = int(dist.argmin())
                    assert float(dist[best]) < 1e-5 and int(train.labels[best]) == c, (c, k, i, j)
                    sources.append(tuple(train.images[best].flatten().tolist()))
        assert len(set(sources)) == 8  # eight different real images per class, one per tile
    other = SyntheticSet(10, ipc=2, channels=1, image_size=(8, 8), factor=2)
    other.initialize("mix", train, torch.Generator().manual_seed(1), mix_downsample=mode)
    assert not torch.equal(other.images, syn.images)


def test_mix_init_defaults_to_nearest_and_refuses_other_modes(digits):
    train = digits.train_data
    default, nearest = (SyntheticSet(10, ipc=1, channels=1, image_size=(8, 8), factor=2) for _ in range(2))
    default.initialize("mix", train, torch.Generator().manual_seed(0))
    nearest.initialize("mix", train, torch.Generator().manual_seed(0), mix_downsample="nearest")
    assert torch.equal(default.images, nearest.images)
    with pytest.raises(ConfigError, match="mix_downsample"):
        nearest.initialize("mix", train, torch.Generator(), mix_downsample="bicubic")


def test_mix_init_fills_the_tiles_decode_cuts_when_the_side_is_not_a_multiple_of_the_factor(digits):
    """8 px, factor 3: tiles of ceil(8/3) = 3 px at 0, 3, 6; the last holds 2 image pixels."""
    syn = SyntheticSet(10, ipc=1, channels=1, image_size=(8, 8), factor=3)
    syn.initialize("mix", digits.train_data, torch.Generator().manual_seed(0))
    small = torch.nn.functional.interpolate(digits.train_data.images.float() / 255, size=(3, 3), mode="nearest")
    for i, j in [(0, 0), (1, 2), (2, 2)]:
        tile = syn.images.detach()[0, :, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3]
        h, w = tile.shape[-2:]
        dist = (small[..., :h, :w] - tile).abs().flatten(1).max(1).values
        assert float(dist.min()) < 1e-6, (i, j)  # a real image's 3x3 shrink, cropped to what fits


def test_decode_pads_grey_and_uses_every_pixel_when_the_side_is_not_a_multiple_of_the_factor():
    """5x5, factor 2: padded to 6x6 with 0.5, tiles of 3 px (the authors' decode_zoom)."""
    img = torch.zeros(1, 1, 5, 5)
    img[..., :3, :3], img[..., :3, 3:], img[..., 3:, :3], img[..., 3:, 3:] = 0.1, 0.3, 0.7, 0.9
    out = decode(img, 2)[:, 0]
    assert out.shape == (4, 5, 5)
    assert torch.allclose(out[0], torch.full((5, 5), 0.1))  # a whole 3x3 tile of the image
    # Top-right tile: image columns 3-4 (0.3) then one grey pad column; bilinear with half-pixel
    # centres maps the output's first / last column exactly onto the tile's first / last column.
    assert torch.allclose(out[1][:, 0], torch.full((5,), 0.3)) and torch.allclose(out[1][:, -1], torch.full((5,), 0.5))
    assert float(out[1].min()) >= 0.3 - 1e-6 and float(out[3].max()) <= 0.9 + 1e-6 and float(out[3].min()) >= 0.5 - 1e-6
    stored = torch.rand(2, 1, 5, 5, requires_grad=True)
    decode(stored, 2).sum().backward()
    assert bool((stored.grad != 0).all())  # no stored pixel is dropped


def test_noise_init_and_clamp(digits):
    syn = SyntheticSet(10, ipc=1, channels=1, image_size=(8, 8))
    syn.initialize("noise", digits.train_data, torch.Generator().manual_seed(0))
    with torch.no_grad():
        syn.images.mul_(3).sub_(1)
    syn.clamp_()
    assert float(syn.images.detach().min()) == 0.0 and float(syn.images.detach().max()) == 1.0


def test_bad_sizes_are_one_sentence():
    with pytest.raises(ConfigError, match="ipc"):
        SyntheticSet(10, ipc=0, channels=1, image_size=(8, 8))
    with pytest.raises(ConfigError, match="factor 5 cuts 8x8 images into 1-pixel tiles"):
        SyntheticSet(10, ipc=1, channels=1, image_size=(8, 8), factor=5)
    with pytest.raises(
        ConfigError,
        match="factor 5 cuts 12x12 images into tiles of which the last holds no pixel of the image; use a factor of at most 4",
    ):
        SyntheticSet(
            10, ipc=1, channels=1, image_size=(12, 12), factor=5
        )  # tiles of 3 px at 0..12: the fifth starts past the image
    with pytest.raises(ConfigError, match="unknown init"):
        SyntheticSet(10, ipc=1, channels=1, image_size=(8, 8)).initialize("zeros", None, torch.Generator())
