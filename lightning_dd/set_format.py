"""The distilled-set format: multi-formation decode and the versioned single file, in one leaf module.

Everything that reads or writes a set (the distillation's synthetic set, exports, the synthetic
data module, soft labels, the commands) agrees on what a stored image means through this module,
which imports nothing above the data sources, so no layer has to reach up to another for it.

**Decode** (IDC's multi-formation): each stored image (pixels in [0, 1]) is cut into
``factor x factor`` tiles and every tile is upsampled back to full size.

**File** (:func:`save_distilled` / :func:`load_distilled`). A ``torch.save`` dict, loadable with
``weights_only=True``::

    format: "lightning-dd/distilled"     version: 1
    images: float32 [C*ipc, ch, H, W], pixels in [0, 1] (stored, not decoded)
    labels: int64 [C*ipc]                factor: int (multi-formation; decode before training)
    dataset: dict (name, num_classes, channels, image_size, mean, std, class_names, flip_ok)
    config: JSON string of the settings that produced the set     created: ISO time

Files are written atomically; :func:`load_distilled` checks every field (a file of another version,
or a damaged or hand-edited one, is refused with one sentence naming the file and the defect).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lightning_dd.utils.atomic import atomic_torch_save
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.utils.errors import ConfigError, FileFormatError

MIN_TILE = 2
PAD_VALUE = 0.5  # grey, in [0, 1] pixels: what the authors' decode pads a non-divisible image with


def tile_size(size: int, factor: int) -> int:
    """Side of one multi-formation tile: ``ceil(size / factor)``, as the authors' ``decode_zoom``."""
    return -(-size // factor)


def _factor_problem(factor: int, image_size: tuple[int, int]) -> str | None:
    """Why ``factor`` cannot cut ``image_size`` images into tiles, or None."""
    tile = min(image_size) // factor  # the smallest tile holds this many real pixels
    if tile < MIN_TILE:
        return f"cuts {image_size[0]}x{image_size[1]} images into {tile}-pixel tiles"
    if any((factor - 1) * tile_size(size, factor) >= size for size in image_size):
        return f"cuts {image_size[0]}x{image_size[1]} images into tiles of which the last holds no pixel of the image"
    return None


def check_factor(factor: int, image_size: tuple[int, int]) -> None:
    """Refuse factors that leave tiles too small to carry an image, or empty (one sentence)."""
    if factor < 1:
        raise ConfigError(f"factor must be >= 1, got {factor}")
    problem = _factor_problem(factor, image_size)
    if problem is not None:
        usable = max(g for g in range(1, factor) if g == 1 or _factor_problem(g, image_size) is None)
        raise ConfigError(f"factor {factor} {problem}; use a factor of at most {usable}")


def decode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Multi-formation decode: ``[N, C, H, W] -> [N * factor**2, C, H, W]``.

    The ``factor**2`` tiles of stored image ``i`` become decoded images
    ``i * factor**2 ... (i + 1) * factor**2 - 1`` (row-major tile order), so images of one
    class stay contiguous. As the authors' ``decode_zoom`` (IDC, Acc-DD): tiles are
    ``ceil(H / factor)`` pixels, and when ``H`` is not a multiple of the factor (e.g. factor 3
    at 64 or 224 px) the image is first padded at the bottom and right with grey
    (:data:`PAD_VALUE`), so every stored pixel reaches a decoded image.
    """
    if factor == 1:
        return images
    n, c, h, w = images.shape
    th, tw = tile_size(h, factor), tile_size(w, factor)
    if (th * factor, tw * factor) != (h, w):
        images = F.pad(images, (0, tw * factor - w, 0, th * factor - h), value=PAD_VALUE)
    tiles = images.reshape(n, c, factor, th, factor, tw)
    tiles = tiles.permute(0, 2, 4, 1, 3, 5).reshape(n * factor * factor, c, th, tw)
    return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)


def decode_labels(labels: torch.Tensor, factor: int) -> torch.Tensor:
    """Labels of :func:`decode`'s output."""
    return labels.repeat_interleave(factor * factor)


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


def save_distilled(
    path: str | os.PathLike,
    images: torch.Tensor,
    labels: torch.Tensor,
    factor: int,
    info: DatasetInfo,
    config: dict | None = None,
) -> Path:
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
        raise FileFormatError(
            f"{path} is not a readable lightning-dd distilled set (truncated or foreign file: {type(err).__name__})"
        ) from None
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
    first defect found is raised as a :class:`~lightning_dd.utils.errors.FileFormatError` whose one
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
        "image_size": (
            isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) for v in size),
            "two integers >= 1",
        ),
        "mean": (_is_numbers(record["mean"], channels), "one finite number per channel"),
        "std": (
            _is_numbers(record["std"], channels) and all(v > 0 for v in record["std"]),
            "one finite number > 0 per channel",
        ),
        "class_names": (
            isinstance(record["class_names"], (list, tuple))
            and len(record["class_names"]) == classes
            and all(isinstance(n, str) for n in record["class_names"]),
            "one name per class",
        ),
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
        raise _Defect(
            f"holds images of shape {_shape(images.shape[1:]) if images.ndim == 4 else _shape(images.shape)} but its dataset record says {_shape(expected)}"
        )
    if images.shape[0] == 0:
        raise _Defect("holds no images")
    not_finite = int((~torch.isfinite(images)).sum())
    if not_finite:
        raise _Defect(f"holds {not_finite} pixel value(s) that are not finite numbers (NaN or infinite)")
    outside = (images < -PIXEL_TOLERANCE) | (images > 1 + PIXEL_TOLERANCE)
    if bool(outside.any()):
        low, high = float(images.min()), float(images.max())
        raise _Defect(
            f"holds {int(outside.sum())} pixel(s) outside [0, 1] (from {low:.4g} to {high:.4g}); the format stores pixels in [0, 1], not normalised ones"
        )
    return images


def _checked_labels(labels: Any, count: int, info: DatasetInfo) -> torch.Tensor:
    """Labels: int64, one per image, within the classes, and the same number (ipc) for every class."""
    if not isinstance(labels, torch.Tensor):
        raise _Defect(f"stores its labels as {type(labels).__name__}, not a tensor")
    if labels.dtype != torch.int64:
        raise _Defect(f"stores its labels as {labels.dtype}; the format stores int64 class indices")
    if labels.ndim != 1 or labels.shape[0] != count:
        raise _Defect(
            f"holds {count} images but {labels.numel()} labels of shape {tuple(labels.shape)}; the format stores one label per image"
        )
    classes = info.num_classes
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise _Defect(
            f"has label {low if low < 0 else high}, outside the {classes} classes 0..{classes - 1} of its dataset record"
        )
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
        raise _Defect(
            f"has a config that is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from None
    if not isinstance(config, dict):
        raise _Defect(f"has a config that is a JSON {type(config).__name__}, not an object")
    model = config.get("model")
    recorded = {"ipc": ipc, "factor": factor}
    for key, value in recorded.items():
        said = model.get(key) if isinstance(model, dict) else None
        if _is_int(said, minimum=0) and said != value:
            raise _Defect(f"holds {ipc} image(s) per class with factor {factor} but its config says model.{key}={said}")
    return config
