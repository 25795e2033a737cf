"""Where real data comes from: a registry of dataset sources.

A source turns a name into in-memory uint8 image tensors plus the facts that belong to the
dataset (classes, channels, size, normalisation, whether horizontal flips keep labels), so that
nothing downstream needs per-dataset if-chains. Add a dataset with :func:`register_source`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from lightning_dd.utils.errors import choose


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a dataset that every component needs.

    Attributes:
        name: registry name, also stored in exports and cache keys.
        num_classes: number of classes C.
        channels: image channels (1 grey, 3 colour).
        image_size: (H, W) of every image.
        mean: per-channel mean of training pixels in [0, 1], used for normalisation.
        std: per-channel standard deviation of training pixels in [0, 1].
        class_names: human-readable class names, length C.
        flip_ok: whether a horizontal flip keeps the label (False for digits and letters).
    """

    name: str
    num_classes: int
    channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    flip_ok: bool = True


@dataclass
class ImageSplit:
    """A split held in memory: uint8 images ``[N, C, H, W]`` and int64 labels ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError("ImageSplit.images must be a uint8 tensor of shape [N, C, H, W]")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("ImageSplit.labels must have one label per image")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class LoadedDataset:
    """What a source returns: the dataset's facts and its train and test splits."""

    info: DatasetInfo
    train: ImageSplit
    test: ImageSplit


SourceFn = Callable[..., LoadedDataset]
_SOURCES: dict[str, SourceFn] = {}


def register_source(name: str) -> Callable[[SourceFn], SourceFn]:
    """Register ``fn(data_dir: str, download: bool, **options) -> LoadedDataset`` under ``name``."""

    def decorator(fn: SourceFn) -> SourceFn:
        _SOURCES[name] = fn
        return fn

    return decorator


def available_sources() -> list[str]:
    """Names accepted by :func:`load_source`."""
    return sorted(_SOURCES)


def load_source(name: str, /, data_dir: str = "data", download: bool = False, **options) -> LoadedDataset:
    """Load dataset ``name`` into memory (raises a one-sentence ConfigError for unknown names)."""
    choose("dataset", name, _SOURCES)
    return _SOURCES[name](data_dir=data_dir, download=download, **options)


def pixel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    x = images.double().div_(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a class-stratified train/test split that depends only on ``seed``."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def make_dataset(
    name: str,
    train: ImageSplit,
    test: ImageSplit,
    class_names: Sequence[str],
    flip_ok: bool,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> LoadedDataset:
    """Assemble a LoadedDataset, computing mean/std from the training split when not given."""
    if mean is None or std is None:
        mean, std = pixel_stats(train.images)
    _, channels, height, width = train.images.shape
    info = DatasetInfo(
        name=name,
        num_classes=len(class_names),
        channels=channels,
        image_size=(height, width),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        class_names=tuple(class_names),
        flip_ok=flip_ok,
    )
    return LoadedDataset(info=info, train=train, test=test)


@register_source("digits")
def load_digits(
    data_dir: str = "data", download: bool = False, test_fraction: float = 0.2, split_seed: int = 0
) -> LoadedDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).

    The train/test split is class-stratified and fixed by ``split_seed`` so results are comparable
    across runs. Pixel values 0..16 are rescaled to 0..255.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    digits = sk_load_digits()
    images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = stratified_split(digits.target, test_fraction, split_seed)
    train = ImageSplit(images[train_idx], labels[train_idx])
    test = ImageSplit(images[test_idx], labels[test_idx])
    return make_dataset("digits", train, test, [str(i) for i in range(10)], flip_ok=False)
