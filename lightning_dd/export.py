"""Exports of a distilled set for people and other tools: an image grid, and an ImageFolder tree of PNGs.

The set's own file (:func:`save_distilled` / :func:`load_distilled`) and its decode live in
:mod:`lightning_dd.set_format`, a leaf module every layer can read; they stay importable from here.

**Image folder** (:func:`export_image_folder`; for tools outside lightning-dd). One 8-bit PNG
per *decoded* training image (``round(x * 255)``), laid out for
``torchvision.datasets.ImageFolder``::

    <out_dir>/<label>_<class name>/<decoded index>.png      <out_dir>/dataset.json

ImageFolder numbers classes by sorting the folder names as strings (``"10" < "2"``), so the
label prefix is zero-padded to the width of the largest label (``03_cat`` ... ``12_truck``):
the sorted order is the label order and ImageFolder's labels equal the exported labels. File
names are zero-padded decoded indices, so ImageFolder also keeps the decoded order within a
class. Grey images are single-channel PNGs; ImageFolder's default loader converts them to RGB
(three equal channels), pass ``loader=lambda p: PIL.Image.open(p).convert("L")`` to keep one.
``dataset.json`` holds the dataset facts (mean/std for normalisation) and is ignored by
ImageFolder. The tree is written to a temporary sibling folder and renamed into place, so a
crash never leaves a half-written folder.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

from lightning_dd.utils.atomic import atomic_open, make_temp_dir
from lightning_dd.set_format import DistilledSet, load_distilled, save_distilled, to_jsonable
from lightning_dd.utils.errors import ConfigError, FileFormatError
from lightning_dd.utils.validation import check_writable_dir

# The set file lives in lightning_dd.set_format; these names stay importable from here, where they were first.
__all__ = [
    "DistilledSet",
    "load_distilled",
    "save_distilled",
    "to_jsonable",
    "image_grid",
    "save_grid_png",
    "export_image_folder",
    "class_folder_names",
]

GRID_MIN_SIDE = 64  # small images are upscaled (nearest) until their longer side has this many pixels
GRID_MAX_SIDE = 4096  # ... unless the grid would grow beyond this many pixels wide or tall
GRID_PADDING = 2


def grid_columns(num_images: int, ipc: int) -> int:
    """Columns of the grid: whole classes per row, as many as make the grid about square.

    Each row holds ``k`` complete classes of ``ipc`` images, ``k = round(sqrt(classes / ipc))``
    (at least 1): one row per class once ``ipc`` is about the class count (IPC 10 of 10 classes),
    and a near-square block in class order when ``ipc`` is small (IPC 1 of 10 classes: 3 per row).
    """
    ipc = max(int(ipc), 1)
    classes = max(num_images // ipc, 1)
    per_row = max(1, round(math.sqrt(classes / ipc)))
    return max(1, min(num_images, per_row * ipc))


def image_grid(images: torch.Tensor, ipc: int) -> torch.Tensor:
    """A readable grid of the stored images (class by class, pixels in [0, 1], ``[3, H, W]``).

    Rows hold whole classes (:func:`grid_columns`); images smaller than :data:`GRID_MIN_SIDE`
    pixels are enlarged by an integer factor with nearest-neighbour upscaling, so 8x8 digits
    become 64x64 blocks of crisp pixels instead of a strip a few pixels wide. Used for
    ``distilled.png`` and for the grid shown in TensorBoard.
    """
    images = images.detach().float().clamp(0, 1).cpu()
    n, _, height, width = images.shape
    columns = grid_columns(n, ipc)
    rows = math.ceil(n / columns)
    scale = max(1, math.ceil(GRID_MIN_SIDE / max(height, width, 1)))
    while (
        scale > 1
        and max(columns * (width * scale + GRID_PADDING), rows * (height * scale + GRID_PADDING)) > GRID_MAX_SIDE
    ):
        scale -= 1
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    return make_grid(images, nrow=columns, padding=GRID_PADDING, pad_value=1.0)


def save_grid_png(path: str | os.PathLike, images: torch.Tensor, ipc: int) -> Path:
    """Write the class-by-class image grid (:func:`image_grid`) as a PNG, atomically."""
    buffer = io.BytesIO()
    save_image(image_grid(images, ipc), buffer, format="png")
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return Path(path)


def class_folder_names(class_names: tuple[str, ...] | list[str]) -> list[str]:
    """ImageFolder folder names whose string sort order equals the label order.

    ``<zero-padded label>_<class name>`` with characters that are unsafe in file names replaced
    by ``-`` (e.g. ``["cat", "dog/wolf"]`` -> ``["0_cat", "1_dog-wolf"]``).
    """
    width = len(str(max(len(class_names) - 1, 0)))
    names = []
    for label, name in enumerate(class_names):
        safe = re.sub(r"[^A-Za-z0-9._+-]+", "-", str(name)).strip(".-") or "class"
        names.append(f"{label:0{width}d}_{safe}")
    return names


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> uint8 as ``round(x * 255)`` (at most 0.5/255 quantisation error)."""
    return images.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).cpu()


def export_image_folder(
    source: DistilledSet | str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False
) -> Path:
    """Write the decoded set as ``<out_dir>/<label>_<class>/<index>.png`` (see the module docstring).

    Args:
        source: a :class:`DistilledSet` or the path of an exported ``.pt`` file.
        out_dir: the folder to create; it must not exist unless ``overwrite`` is set.
        overwrite: replace an existing ``out_dir`` (the old folder is removed only after the
            new one is complete).

    Returns:
        ``out_dir``. Reading it back::

            ImageFolder(out_dir, transform=torchvision.transforms.ToTensor())   # labels == exported labels
    """
    from PIL import Image

    distilled = source if isinstance(source, DistilledSet) else load_distilled(source)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise ConfigError(
            f"{out_dir} already exists; choose another folder or allow replacing it (overwrite=True, --overwrite true)"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a folder")
    info = distilled.info
    images, labels = distilled.decoded()
    pixels = to_uint8(images)
    folders = class_folder_names(info.class_names)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
        raise FileFormatError(f"the distilled set has labels outside 0..{info.num_classes - 1}")
    mode = {1: "L", 3: "RGB"}.get(info.channels)
    if mode is None:
        raise ConfigError(f"PNG export supports 1 or 3 channels, the set has {info.channels}")
    width = len(str(max(len(labels) - 1, 0)))
    check_writable_dir(out_dir if not out_dir.exists() else out_dir.parent, "out_dir")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(out_dir.parent, out_dir.name)
    try:
        for folder in folders:
            (tmp / folder).mkdir()
        for index, (image, label) in enumerate(zip(pixels, labels.tolist())):
            array = image.permute(1, 2, 0).contiguous().numpy()
            array = array[:, :, 0].copy() if mode == "L" else array
            Image.fromarray(array).save(tmp / folders[label] / f"{index:0{width}d}.png")
        meta = {
            "format": "lightning-dd/image-folder",
            "version": 1,
            "dataset": to_jsonable(asdict(info)),
            "factor": distilled.factor,
            "images": int(len(labels)),
            "folders": folders,
            "config": distilled.config,
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old / "previous")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
