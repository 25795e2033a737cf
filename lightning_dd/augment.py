"""Differentiable siamese augmentation (DSA, Zhao & Bilen 2021) and CutMix.

DSA transforms are differentiable with respect to the images, so gradients flow through them to
synthetic pixels. In matching, ONE parameter draw is applied to the real and the synthetic batch
of a class (siamese); for training a classifier, each image gets its own draw. Magnitudes follow
the DSA code and act on normalised tensors (zero padding is the dataset mean). Flip, scale,
rotation and translation ("crop") are composed into a single affine warp, so the whole spatial
part costs one ``grid_sample``.

Classifiers trained on real or synthetic data (pool pretraining, the network update between
matching steps, evaluation) follow the DSA/IDC training code: with ``spatial="single"`` each
minibatch gets colour, flip and cutout as listed plus ONE spatial transform drawn from crop /
scale / rotate, and cutout is dropped whenever CutMix is on (:func:`training_augmentation`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lightning_dd.utils.errors import ConfigError, choose

TRANSFORMS = ("color", "crop", "cutout", "flip", "scale", "rotate")
# Transforms of which ``spatial="single"`` applies one per call (DSA/IDC code's ``single_aug``).
SPATIAL = ("crop", "scale", "rotate")
SPATIAL_MODES = ("all", "single")
# Columns of the uniform draw matrix used by each transform.
_COLUMNS = {"color": (0, 1, 2), "crop": (3, 4), "cutout": (5, 6), "flip": (7,), "scale": (8, 9), "rotate": (10,)}
_N_COLUMNS = 11


def parse_strategy(strategy: str, flip_ok: bool = True) -> tuple[str, ...]:
    """Split ``"color_crop_cutout"`` into names, checking each; drop ``flip`` when ``flip_ok`` is False."""
    if strategy.strip().lower() in ("", "none"):
        return ()
    names = tuple(s for s in strategy.split("_") if s)
    for name in names:
        choose("augmentation", name, TRANSFORMS)
    return tuple(n for n in names if flip_ok or n != "flip")


def check_strategy(setting: str, strategy: str) -> None:
    """Check the transform names of ``strategy``; the error names ``setting``, the key the user wrote.

    Several settings take a strategy (the matching's, the pool's, the evaluation's); an error that
    names only the transform leaves the user guessing which one is wrong.
    """
    try:
        parse_strategy(strategy)
    except ConfigError as err:
        raise ConfigError(f"{setting}: {err}") from None


class DSA:
    """Differentiable augmentation with an explicit, reproducible parameter draw.

    Args:
        strategy: transforms joined by ``_`` (subset of color, crop, cutout, flip, scale, rotate),
            or ``"none"``.
        flip_ok: set False for data whose labels change under a horizontal flip (digits).
        brightness, saturation, contrast: DSA colour ratios (1.0, 2.0, 0.5).
        crop_ratio: maximal translation as a fraction of the image size (0.125).
        cutout_ratio: side of the cut-out square as a fraction of the image size (0.5).
        scale_ratio: scales are drawn in [1/ratio, ratio] per axis (1.2).
        rotate_degrees: maximal rotation (15).
        spatial: ``all`` applies every listed transform on each call; ``single`` applies colour,
            flip and cutout as listed plus ONE of the listed crop / scale / rotate, drawn per call
            (per minibatch in classifier training), as the DSA/IDC training code does.

    Example:
        >>> dsa = DSA("color_crop_cutout")
        >>> g = torch.Generator().manual_seed(0)
        >>> params = dsa.sample(1, g)          # one draw ...
        >>> real, syn = torch.randn(4, 1, 8, 8), torch.randn(2, 1, 8, 8, requires_grad=True)
        >>> out = dsa.apply(torch.cat([real, syn]), params)   # ... applied to both batches
    """

    def __init__(
        self,
        strategy: str = "color_crop_cutout",
        flip_ok: bool = True,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
        crop_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        scale_ratio: float = 1.2,
        rotate_degrees: float = 15.0,
        spatial: str = "all",
    ) -> None:
        self.names = parse_strategy(strategy, flip_ok)
        self.spatial = choose("spatial", spatial, SPATIAL_MODES)
        self.spatial_names = tuple(n for n in self.names if n in SPATIAL)
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast
        self.crop_ratio, self.cutout_ratio = crop_ratio, cutout_ratio
        self.scale_ratio, self.rotate_degrees = scale_ratio, rotate_degrees

    def __bool__(self) -> bool:
        return bool(self.names)

    def __repr__(self) -> str:
        return f"DSA({'_'.join(self.names) or 'none'}, spatial={self.spatial})"

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` parameter draws as a ``[n, 11]`` uniform matrix (CPU); n=1 means siamese/shared."""
        return torch.rand(n, _N_COLUMNS, generator=generator)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment every image with its own draw (classifier training)."""
        if not self.names:
            return x
        return self.apply(x, self.sample(x.shape[0], generator), self.draw_names(generator))

    def draw_names(self, generator: torch.Generator) -> tuple[str, ...]:
        """The transforms of one call: all listed ones, or (``single``) one spatial transform among them."""
        if self.spatial == "all" or len(self.spatial_names) <= 1:
            return self.names
        chosen = self.spatial_names[int(torch.randint(len(self.spatial_names), (1,), generator=generator).item())]
        return tuple(n for n in self.names if n not in SPATIAL or n == chosen)

    def apply(self, x: torch.Tensor, draws: torch.Tensor, names: tuple[str, ...] | None = None) -> torch.Tensor:
        """Apply the transforms ``names`` (default: all listed) with parameters ``draws`` (``[1, 11]`` shared or ``[B, 11]``)."""
        names = self.names if names is None else names
        if not names:
            return x
        u = draws.to(device=x.device, dtype=x.dtype, non_blocking=True)
        if "color" in names:
            x = self._color(x, u)
        if any(n in names for n in ("crop", "flip", "scale", "rotate")):
            x = self._affine(x, u, names)
        if "cutout" in names:
            x = self._cutout(x, u)
        return x

    def _color(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        b, s, c = (u[:, i].view(-1, 1, 1, 1) for i in _COLUMNS["color"])
        x = x + (b - 0.5) * self.brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (s * self.saturation) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (c + self.contrast) + mean

    def _affine(self, x: torch.Tensor, u: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
        n, (h, w) = u.shape[0], x.shape[-2:]
        eye = torch.eye(2, device=x.device, dtype=x.dtype).expand(n, 2, 2)
        matrix = eye
        if "scale" in names:
            lo = 1.0 / self.scale_ratio
            sx, sy = (u[:, i] * (self.scale_ratio - lo) + lo for i in _COLUMNS["scale"])
            matrix = torch.diag_embed(torch.stack([sx, sy], 1)) @ matrix
        if "rotate" in names:
            theta = (u[:, _COLUMNS["rotate"][0]] - 0.5) * 2 * self.rotate_degrees / 180 * math.pi
            cos, sin = torch.cos(theta), torch.sin(theta)
            matrix = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1) @ matrix
        if "flip" in names:
            sign = torch.where(u[:, _COLUMNS["flip"][0]] < 0.5, -1.0, 1.0).to(x.dtype)
            matrix = matrix * torch.stack([sign, torch.ones_like(sign)], 1).unsqueeze(1)
        shift = torch.zeros(n, 2, 1, device=x.device, dtype=x.dtype)
        if "crop" in names:
            # Integer pixel shifts in [-max, max] per axis, in normalised coordinates.
            for axis, (col, size) in enumerate(zip(_COLUMNS["crop"], (w, h))):
                limit = int(size * self.crop_ratio + 0.5)
                pixels = torch.floor(u[:, col] * (2 * limit + 1)).clamp(max=2 * limit) - limit
                shift[:, axis, 0] = pixels * (2.0 / size)
        theta = torch.cat([matrix, shift], 2)
        if n == 1:
            theta = theta.expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _cutout(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        # As DSA's rand_cutout: a square of side int(size * ratio + 0.5) whose centre offset is
        # drawn from [0, size + 1 - side % 2), clipped at the borders.
        h, w = x.shape[-2:]
        side_h, side_w = int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5)
        cx, cy = (
            torch.floor(u[:, i] * (d + 1 - s % 2)) for i, d, s in zip(_COLUMNS["cutout"], (w, h), (side_w, side_h))
        )
        top, left = (cy - side_h // 2).view(-1, 1, 1), (cx - side_w // 2).view(-1, 1, 1)
        rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
        cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
        inside = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
        return x * (~inside).unsqueeze(1).to(x.dtype)


def training_augmentation(
    strategy: str,
    flip_ok: bool = True,
    spatial: str = "single",
    cutmix_p: float = 0.0,
    cutout_with_cutmix: bool = False,
) -> DSA:
    """The per-image DSA of a classifier that trains (pool pretraining, network update, evaluation).

    As in the DSA/IDC/Acc-DD training code, ``cutout`` is removed from ``strategy`` when CutMix is
    on (``cutmix_p > 0``) unless ``cutout_with_cutmix`` keeps it, and ``spatial="single"`` applies
    one of crop / scale / rotate per minibatch.
    """
    if cutmix_p > 0 and not cutout_with_cutmix:
        strategy = "_".join(n for n in parse_strategy(strategy) if n != "cutout") or "none"
    return DSA(strategy, flip_ok=flip_ok, spatial=spatial)


def cutmix(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, p: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al. 2019) with probability ``p``.

    Returns ``(mixed, y_a, y_b, lam)``; the loss is ``lam * CE(out, y_a) + (1 - lam) * CE(out, y_b)``.
    """
    draws = torch.rand(4, generator=generator)
    if p <= 0 or draws[0].item() >= p or x.shape[0] < 2:
        return x, y, y, 1.0
    h, w = x.shape[-2:]
    lam = draws[1].item()  # Beta(1, 1)
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(draws[2].item() * h), int(draws[3].item() * w)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
    return mixed, y, y[perm], lam


def augmented_loss(
    logits_fn, x: torch.Tensor, y: torch.Tensor, dsa: DSA, generator: torch.Generator, cutmix_p: float
) -> torch.Tensor:
    """Cross-entropy of ``logits_fn`` on a DSA-augmented, CutMix-ed batch (classifier training)."""
    x = dsa(x, generator)
    x, y_a, y_b, lam = cutmix(x, y, generator, cutmix_p)
    logits = logits_fn(x)
    if lam >= 1.0:
        return F.cross_entropy(logits, y_a)
    return lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)
