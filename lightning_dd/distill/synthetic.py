"""The learnable synthetic set with IDC multi-formation.

Each stored image (pixels in [0, 1]) is cut into ``factor x factor`` tiles and every tile is
upsampled back to full size, so ``ipc`` stored images per class train as ``ipc * factor**2``
images: more, lower-resolution examples for the same storage (Kim et al., ICML 2022).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_dd.data.real import RealData
from lightning_dd.utils.errors import ConfigError, choose
from lightning_dd.set_format import check_factor, decode, decode_labels, tile_size  # noqa: F401 (check_factor and decode_labels re-exported with the set they decode)

INITS = ("mix", "real", "noise")
# How ``mix`` shrinks a real image into a tile: ``nearest`` is the authors' ``F.interpolate``
# default; ``antialias`` (bilinear with antialiasing) was lightning-dd's earlier choice.
MIX_DOWNSAMPLES = ("nearest", "antialias")


def assemble_mix(pixels: torch.Tensor, factor: int, mode: str = "nearest") -> torch.Tensor:
    """``mix`` init: every ``factor**2`` consecutive real images (pixels in [0, 1]) become one stored
    image, image ``k`` of a group shrunk into tile ``k`` (row-major), where :func:`decode` cuts it.

    ``mode``: ``nearest`` (the authors' ``F.interpolate(img, size)``) or ``antialias``. Where the
    side is not a multiple of the factor, the authors' init lays tiles of ``s + 1`` and ``s``
    pixels that do not line up with their own decode's ``ceil`` tiles; ours follows the decode.
    """
    choose("mix_downsample", mode, MIX_DOWNSAMPLES)
    f = factor
    n, c, h, w = pixels.shape
    th, tw = tile_size(h, f), tile_size(w, f)
    if mode == "nearest":
        tiles = F.interpolate(pixels, size=(th, tw), mode="nearest")
    else:
        tiles = F.interpolate(pixels, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
    canvas = (
        tiles.reshape(n // (f * f), f, f, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(n // (f * f), c, th * f, tw * f)
    )
    return canvas[:, :, :h, :w].clamp(0.0, 1.0).contiguous()


class SyntheticSet(nn.Module):
    """``ipc`` learnable images per class, stored class by class.

    Args:
        num_classes: C.
        ipc: stored images per class.
        channels, image_size: image shape.
        factor: multi-formation factor (1 = no multi-formation, "IDC-I").

    Example:
        >>> syn = SyntheticSet(10, ipc=2, channels=1, image_size=(8, 8), factor=2)
        >>> syn.decoded_images().shape, syn.decoded_labels().shape
        (torch.Size([80, 1, 8, 8]), torch.Size([80]))
    """

    def __init__(self, num_classes: int, ipc: int, channels: int, image_size: tuple[int, int], factor: int = 1) -> None:
        super().__init__()
        if ipc < 1:
            raise ConfigError(f"ipc (images per class) must be >= 1, got {ipc}")
        check_factor(factor, image_size)
        self.num_classes, self.ipc, self.factor = num_classes, ipc, factor
        self.images = nn.Parameter(torch.rand(num_classes * ipc, channels, *image_size))
        self.register_buffer("labels", torch.arange(num_classes).repeat_interleave(ipc))

    @property
    def per_class_decoded(self) -> int:
        return self.ipc * self.factor**2

    def class_images(self, c: int) -> torch.Tensor:
        """Stored images of class ``c`` (a view of the parameter)."""
        return self.images[c * self.ipc : (c + 1) * self.ipc]

    def decoded_class_images(self, c: int) -> torch.Tensor:
        return decode(self.class_images(c), self.factor)

    def decoded_images(self) -> torch.Tensor:
        return decode(self.images, self.factor)

    def decoded_labels(self) -> torch.Tensor:
        return decode_labels(self.labels, self.factor)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep pixels in [0, 1]."""
        self.images.clamp_(0.0, 1.0)

    @torch.no_grad()
    def initialize(
        self, init: str, real: RealData, generator: torch.Generator, mix_downsample: str = "nearest"
    ) -> None:
        """Fill the images from *randomly sampled* real images of each class.

        ``mix``: each stored image is assembled from ``factor**2`` real images of its class, each
        shrunk into one tile (``mix_downsample``: ``nearest`` as the authors' code, or
        ``antialias``); tiles are laid out where :func:`decode` cuts them. ``real``: one real
        image each. ``noise``: uniform noise.
        """
        choose("init", init, INITS)
        choose("mix_downsample", mix_downsample, MIX_DOWNSAMPLES)
        if init == "noise":
            self.images.copy_(torch.rand(self.images.shape, generator=generator).to(self.images.device))
            return
        per_image = self.factor**2 if init == "mix" else 1
        for c in range(self.num_classes):
            needed = self.ipc * per_image
            idx = real.class_sample_indices(c, needed, generator)
            if idx.numel() < needed:  # fewer real images than needed: sample with repetition
                extra = torch.randint(idx.numel(), (needed - idx.numel(),), generator=generator).to(idx.device)
                idx = torch.cat([idx, idx[extra]])
            pixels = real.images[idx].float().div(255.0).to(self.images.device)
            if init == "mix" and self.factor > 1:
                pixels = assemble_mix(pixels, self.factor, mix_downsample)
            self.images[c * self.ipc : (c + 1) * self.ipc] = pixels
