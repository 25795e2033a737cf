"""``image_folder``: a dataset stored as one sub-folder of images per class.

Layouts accepted under ``data_dir``::

    data_dir/<class>/<image>                         (test split carved out, seeded and stratified)
    data_dir/train/<class>/<image>                   (same, from train/)
    data_dir/train/<class>/... + data_dir/test/<class>/...   (or val/ instead of test/)

With a test (or val) folder, every class in it must also be a training class.

Images are decoded with PIL, converted to RGB (or grey with ``channels=1``) and resized to a
fixed size, so ImageNet subsets such as the papers' ImageNet-10 / ImageNet-100 can be used by
pointing ``data_dir`` at an ImageNet-style folder and choosing ``classes``.

Example (source options go in ``data.source_options``)::

    data:
      dataset: image_folder
      data_dir: /datasets/imagenet
      source_options: {classes: 10, class_seed: 0, image_size: 32, max_per_class: 500}
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lightning_dd.data.sources import ImageSplit, LoadedDataset, make_dataset, register_source, stratified_split
from lightning_dd.utils.errors import ConfigError, DataError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jfif"}
)
TEST_FOLDERS = ("test", "val")


def _class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _select_classes(available: list[str], classes, class_seed: int | None, where: Path) -> list[str]:
    if not available:
        raise DataError(f"{str(where)!r} has no class sub-folders; put the images of each class in their own folder")
    if classes is None:
        return available
    if isinstance(classes, bool):
        raise ConfigError(
            f"source option classes must be a list of class folder names or a number of classes, got {classes!r}"
        )
    if isinstance(classes, int):
        if not 1 <= classes <= len(available):
            raise ConfigError(
                f"source option classes={classes} must be between 1 and the {len(available)} class folders in {str(where)!r}"
            )
        if class_seed is None:
            return available[:classes]
        chosen = np.random.default_rng(class_seed).choice(len(available), size=classes, replace=False)
        return sorted(available[i] for i in chosen)
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ConfigError(
            f"source option classes must be a list of class folder names or a number of classes, got {classes!r}"
        )
    names = [str(c) for c in classes]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"source option classes must list distinct class folder names, got {names}")
    present = set(available)
    missing = [n for n in names if n not in present]
    if missing:
        examples = ", ".join(available[:5]) + (", ..." if len(available) > 5 else "")
        raise ConfigError(
            f"class folder(s) {', '.join(map(repr, missing))} not found in {str(where)!r}, which has {len(available)} class folders ({examples})"
        )
    return names


def _check_test_classes(train_classes: list[str], test_root: Path, train_root: Path) -> None:
    """Refuse a test split holding a class that the training split lacks (its label would exist in no training image)."""
    known = set(train_classes)
    extra = [name for name in _class_folders(test_root) if name not in known]
    if extra:
        listed = ", ".join(map(repr, extra[:5])) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        which = f"class {listed} is" if len(extra) == 1 else f"classes {listed} are"
        raise DataError(
            f"{which} in {str(test_root)!r} but not in {str(train_root)!r}; every {test_root.name} class needs training images, so add its folder under {train_root.name}/ or remove it from {test_root.name}/"
        )


def _load_image(path: Path, size: tuple[int, int], mode: str, center_crop: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            height, width = size
            if center_crop:
                # shorter side to the target size, then the central crop (torchvision Resize + CenterCrop)
                scale = max(height / img.height, width / img.width)
                new_w, new_h = max(width, round(img.width * scale)), max(height, round(img.height * scale))
                img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
                left, top = (new_w - width) // 2, (new_h - height) // 2
                img = img.crop((left, top, left + width, top + height))
            else:
                img = img.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"cannot read image {str(path)!r} ({type(err).__name__}); remove or replace the file") from None
    return array[:, :, None] if array.ndim == 2 else array


def _read_split(
    root: Path, class_names: list[str], size, mode, center_crop, cap: int | None, rng
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"class folder {str(folder)!r} is missing; every split needs a folder for each class")
        files = _image_files(folder)
        if not files:
            raise DataError(
                f"class folder {str(folder)!r} contains no images (accepted: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        if cap is not None and len(files) > cap:
            files = [files[i] for i in np.sort(rng.choice(len(files), size=cap, replace=False))]
        images.extend(_load_image(f, size, mode, center_crop) for f in files)
        labels.extend([label] * len(files))
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _to_split(images: np.ndarray, labels: np.ndarray) -> ImageSplit:
    return ImageSplit(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), torch.from_numpy(labels))


def _size(image_size) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif isinstance(image_size, Sequence) and not isinstance(image_size, str) and len(image_size) == 2:
        size = tuple(image_size)
    else:
        raise ConfigError(f"source option image_size must be an int or [height, width], got {image_size!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ConfigError(f"source option image_size must hold positive integers, got {image_size!r}")
    return size  # type: ignore[return-value]


@register_source("image_folder")
def load_image_folder(
    data_dir: str = "data",
    download: bool = False,
    image_size: int | Sequence[int] = 32,
    channels: int = 3,
    classes: int | Sequence[str] | None = None,
    class_seed: int | None = None,
    max_per_class: int | None = None,
    sample_seed: int = 0,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    center_crop: bool = True,
    flip_ok: bool = True,
    name: str = "image_folder",
) -> LoadedDataset:
    """Load a class-per-folder image dataset into memory.

    Args:
        data_dir: the folder with class sub-folders, or with ``train/`` (and ``test/`` or ``val/``).
        download: ignored (there is nothing to download).
        image_size: output size, an int or ``[height, width]``.
        channels: 3 (RGB) or 1 (grey).
        classes: class folder names to use, or a number N: the first N sorted folders, or N
            random folders when ``class_seed`` is set (labels follow the sorted chosen names).
        class_seed: seed of the random class choice.
        max_per_class: read at most this many images per class from the training folder,
            chosen at random with ``sample_seed`` (before the test split is carved out when there
            is no test folder); test folders are read in full.
        test_fraction: share of each class held out as test set when there is no test folder.
        split_seed: seed of that held-out split.
        center_crop: keep the aspect ratio (resize the shorter side, then crop the centre);
            False stretches images to ``image_size``.
        flip_ok: whether horizontal flips keep labels (True for natural images).
        name: dataset name recorded in exports and reports.
    """
    root = Path(data_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(
            f"data.data_dir {str(root)!r} is a file; point it at a folder with one sub-folder of images per class"
        )
    if not root.is_dir():
        raise DataError(
            f"image folder {str(root)!r} does not exist; point data.data_dir at a folder with one sub-folder of images per class"
        )
    if channels not in (1, 3):
        raise ConfigError(f"source option channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"source option test_fraction must be between 0 and 1, got {test_fraction!r}")
    if max_per_class is not None and (
        isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class < 1
    ):
        raise ConfigError(f"source option max_per_class must be a positive integer, got {max_per_class!r}")
    size, mode = _size(image_size), "RGB" if channels == 3 else "L"

    train_root = root / "train" if (root / "train").is_dir() else root
    test_root = next((root / t for t in TEST_FOLDERS if train_root != root and (root / t).is_dir()), None)
    available = _class_folders(train_root)
    if test_root is not None:
        _check_test_classes(available, test_root, train_root)
    class_names = _select_classes(available, classes, class_seed, train_root)
    rng = np.random.default_rng(sample_seed)
    images, labels = _read_split(train_root, class_names, size, mode, center_crop, max_per_class, rng)
    if test_root is not None:
        train = _to_split(images, labels)
        test = _to_split(*_read_split(test_root, class_names, size, mode, center_crop, None, rng))
    else:
        train_idx, test_idx = stratified_split(labels, test_fraction, split_seed)
        train, test = _to_split(images[train_idx], labels[train_idx]), _to_split(images[test_idx], labels[test_idx])
    return make_dataset(name, train, test, class_names, flip_ok=flip_ok)
