"""Distilled-set formats: the versioned single file, and an ImageFolder tree of PNGs.

**Single file** (:func:`save_distilled` / :func:`load_distilled`; the native format). A
``torch.save`` dict, loadable with ``weights_only=True``::

    format: "lightning-dd/distilled"     version: 1
    images: float32 [C*ipc, ch, H, W], pixels in [0, 1] (stored, not decoded)
    labels: int64 [C*ipc]                factor: int (multi-formation; decode before training)
    dataset: dict (name, num_classes, channels, image_size, mean, std, class_names, flip_ok)
    config: JSON string of the settings that produced the set     created: ISO time

Files are written atomically; :func:`load_distilled` checks the format and version (a file of
another version is refused with a one-sentence error; the version only grows when the layout
changes incompatibly) and then every field (:func:`check_distilled`): the dtypes above, finite
pixels in [0, 1] (within :data:`PIXEL_TOLERANCE`), the image shape of the dataset record, one
label per image within the classes and the same count for every class, a factor that decode can
cut the images with, a config that is a JSON object agreeing with the file's ipc and factor. A
damaged or hand-edited file is refused with one sentence naming the file and the defect.

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
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

from lightning_dd.atomic import atomic_open, atomic_torch_save, make_temp_dir
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.distill.synthetic import _factor_problem, decode, decode_labels
from lightning_dd.errors import ConfigError, FileFormatError
from lightning_dd.validation import check_writable_dir

FORMAT = "lightning-dd/distilled"
VERSION = 1


@dataclass
class DistilledSet:
    """A distilled set read from disk."""

    images: torch.Tensor
    labels: torch.Tensor
    factor: int
    info: DatasetInfo
    config: dict

    @property
    def ipc(self) -> int:
        return self.images.shape[0] // self.info.num_classes

    def decoded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images (multi-formation decoded, pixels in [0, 1]) and labels."""
        return decode(self.images, self.factor).clamp(0, 1), decode_labels(self.labels, self.factor)


def to_jsonable(value: Any) -> Any:
    """Plain JSON values for configs holding dataclasses, tuples and paths."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def save_distilled(path: str | os.PathLike, images: torch.Tensor, labels: torch.Tensor, factor: int, info: DatasetInfo, config: dict | None = None) -> Path:
    """Write a distilled set atomically (a crash leaves any previous file intact)."""
    path = Path(path)
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "images": images.detach().float().clamp(0, 1).cpu().contiguous(),
        "labels": labels.detach().long().cpu(),
        "factor": int(factor),
        "dataset": to_jsonable(asdict(info)),
        "config": json.dumps(to_jsonable(config or {}), sort_keys=True),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_torch_save(blob, path)
    return path


def load_distilled(path: str | os.PathLike) -> DistilledSet:
    """Read a file written by :func:`save_distilled`, checked field by field (:func:`check_distilled`).

    Every reader of distilled sets (``lightning-dd evaluate``, ``export-folder``,
    :class:`~lightning_dd.data.SyntheticDataModule`) comes through here, so a damaged or
    hand-edited file is refused with one sentence before any training starts.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"no distilled set at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FileFormatError(f"{path} is not a readable lightning-dd distilled set (truncated or foreign file: {type(err).__name__})") from None
    return check_distilled(blob, path)


# A set is stored clamped to [0, 1], so save_distilled never writes a pixel outside; this slack only
# forgives tools that rescale pixels in another precision (x / 255 in float64, then cast) and land a
# rounding error outside, which decode clamps anyway. Normalised pixels (about -0.5 to 3) are refused.
PIXEL_TOLERANCE = 1e-6
FIELDS = ("images", "labels", "factor", "dataset", "config")
DATASET_FIELDS = ("name", "num_classes", "channels", "image_size", "mean", "std", "class_names", "flip_ok")


class _Defect(Exception):
    """What is wrong with a distilled-set file, phrased to follow its path (:func:`check_distilled` adds it)."""


def check_distilled(blob: Any, path: str | os.PathLike) -> DistilledSet:
    """Check every field of a loaded distilled-set dict and build the :class:`DistilledSet`.

    A file damaged on disk or edited by hand would otherwise fail deep inside training (a shape
    error, a device-side assert on a label) or, worse, train quietly on wrong data; here the
    first defect found is raised as a :class:`~lightning_dd.errors.FileFormatError` whose one
    sentence names the file and the defect.

    Raises:
        FileFormatError: the dict is not a valid distilled set of this format version.
    """
    try:
        _check_header(blob)
        info = _checked_info(blob["dataset"])
        images = _checked_images(blob["images"], info)
        labels = _checked_labels(blob["labels"], images.shape[0], info)
        factor = _checked_factor(blob["factor"], info)
        config = _checked_config(blob["config"], images.shape[0] // info.num_classes, factor)
    except _Defect as defect:
        raise FileFormatError(f"{path} {defect}") from None
    return DistilledSet(images, labels, factor, info, config)


def _check_header(blob: Any) -> None:
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise _Defect("is not a lightning-dd distilled set")
    if blob.get("version") != VERSION:
        raise _Defect(f"has format version {blob.get('version')}; this lightning-dd reads version {VERSION}")
    missing = [key for key in FIELDS if key not in blob]
    if missing:
        raise _Defect(f"lacks the field(s) {', '.join(missing)} of a distilled set (damaged or edited by hand)")


def _is_int(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _checked_info(record: Any) -> DatasetInfo:
    """The dataset record as a DatasetInfo: every fact later code relies on (class count, shape, normalisation)."""
    if not isinstance(record, dict):
        raise _Defect(f"has a dataset record of type {type(record).__name__}, not a dictionary")
    missing = [key for key in DATASET_FIELDS if key not in record]
    if missing:
        raise _Defect(f"has a dataset record without {', '.join(missing)}")
    classes, channels, size = record["num_classes"], record["channels"], record["image_size"]
    rules = {
        "name": (isinstance(record["name"], str) and bool(record["name"]), "a non-empty name"),
        "num_classes": (_is_int(classes), "an integer >= 1"),
        "channels": (_is_int(channels), "an integer >= 1"),
        "image_size": (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) for v in size), "two integers >= 1"),
        "mean": (_is_numbers(record["mean"], channels), "one finite number per channel"),
        "std": (_is_numbers(record["std"], channels) and all(v > 0 for v in record["std"]), "one finite number > 0 per channel"),
        "class_names": (isinstance(record["class_names"], (list, tuple)) and len(record["class_names"]) == classes and all(isinstance(n, str) for n in record["class_names"]), "one name per class"),
        "flip_ok": (isinstance(record["flip_ok"], bool), "true or false"),
    }
    for key, (ok, want) in rules.items():
        if not ok:
            raise _Defect(f"has an invalid dataset record: {key} must be {want}, got {record[key]!r}")
    return DatasetInfo(
        name=record["name"],
        num_classes=classes,
        channels=channels,
        image_size=(size[0], size[1]),
        mean=tuple(float(v) for v in record["mean"]),
        std=tuple(float(v) for v in record["std"]),
        class_names=tuple(record["class_names"]),
        flip_ok=record["flip_ok"],
    )


def _is_numbers(values: Any, count: Any) -> bool:
    return isinstance(values, (list, tuple)) and len(values) == count and all(_is_number(v) for v in values)


def _shape(shape: tuple[int, ...] | torch.Size) -> str:
    return "x".join(str(d) for d in shape)


def _checked_images(images: Any, info: DatasetInfo) -> torch.Tensor:
    """Stored images: float32 ``[N, channels, H, W]`` of the recorded shape, finite pixels in [0, 1]."""
    if not isinstance(images, torch.Tensor):
        raise _Defect(f"stores its images as {type(images).__name__}, not a tensor")
    if images.dtype != torch.float32:
        raise _Defect(f"stores its images as {images.dtype}; the format stores float32 pixels in [0, 1]")
    expected = (info.channels, *info.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise _Defect(f"holds images of shape {_shape(images.shape[1:]) if images.ndim == 4 else _shape(images.shape)} but its dataset record says {_shape(expected)}")
    if images.shape[0] == 0:
        raise _Defect("holds no images")
    not_finite = int((~torch.isfinite(images)).sum())
    if not_finite:
        raise _Defect(f"holds {not_finite} pixel value(s) that are not finite numbers (NaN or infinite)")
    outside = (images < -PIXEL_TOLERANCE) | (images > 1 + PIXEL_TOLERANCE)
    if bool(outside.any()):
        low, high = float(images.min()), float(images.max())
        raise _Defect(f"holds {int(outside.sum())} pixel(s) outside [0, 1] (from {low:.4g} to {high:.4g}); the format stores pixels in [0, 1], not normalised ones")
    return images


def _checked_labels(labels: Any, count: int, info: DatasetInfo) -> torch.Tensor:
    """Labels: int64, one per image, within the classes, and the same number (ipc) for every class."""
    if not isinstance(labels, torch.Tensor):
        raise _Defect(f"stores its labels as {type(labels).__name__}, not a tensor")
    if labels.dtype != torch.int64:
        raise _Defect(f"stores its labels as {labels.dtype}; the format stores int64 class indices")
    if labels.ndim != 1 or labels.shape[0] != count:
        raise _Defect(f"holds {count} images but {labels.numel()} labels of shape {tuple(labels.shape)}; the format stores one label per image")
    classes = info.num_classes
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise _Defect(f"has label {low if low < 0 else high}, outside the {classes} classes 0..{classes - 1} of its dataset record")
    per_class = torch.bincount(labels, minlength=classes)
    fewest, most = int(per_class.argmin()), int(per_class.argmax())
    if per_class[fewest] != per_class[most]:
        raise _Defect(
            f"holds {int(per_class[fewest])} image(s) of class {fewest} but {int(per_class[most])} of class {most}; a distilled set stores the same number (ipc) for every class"
        )
    return labels


def _checked_factor(factor: Any, info: DatasetInfo) -> int:
    """The multi-formation factor: an integer >= 1 that :func:`decode` can cut the recorded image size with."""
    if not _is_int(factor):
        raise _Defect(f"records multi-formation factor {factor!r}; it must be an integer >= 1")
    problem = _factor_problem(factor, info.image_size)
    if problem is not None:
        raise _Defect(f"records multi-formation factor {factor}, which {problem}")
    return factor


def _checked_config(text: Any, ipc: int, factor: int) -> dict:
    """The settings that produced the set: a JSON object whose ``model.ipc``/``model.factor``, if recorded, match the file."""
    if not isinstance(text, str):
        raise _Defect(f"stores its config as {type(text).__name__}, not a JSON string")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise _Defect(f"has a config that is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(config, dict):
        raise _Defect(f"has a config that is a JSON {type(config).__name__}, not an object")
    model = config.get("model")
    recorded = {"ipc": ipc, "factor": factor}
    for key, value in recorded.items():
        said = model.get(key) if isinstance(model, dict) else None
        if _is_int(said, minimum=0) and said != value:
            raise _Defect(f"holds {ipc} image(s) per class with factor {factor} but its config says model.{key}={said}")
    return config


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
    while scale > 1 and max(columns * (width * scale + GRID_PADDING), rows * (height * scale + GRID_PADDING)) > GRID_MAX_SIDE:
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


def export_image_folder(source: DistilledSet | str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
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
        raise ConfigError(f"{out_dir} already exists; choose another folder or allow replacing it (overwrite=True, --overwrite true)")
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
