"""The distilled-set file format: one versioned file with everything needed to use the set.

Layout (a ``torch.save`` dict, loadable with ``weights_only=True``)::

    format: "lightning-dd/distilled"     version: 1
    images: float32 [C*ipc, ch, H, W], pixels in [0, 1] (stored, not decoded)
    labels: int64 [C*ipc]                factor: int (multi-formation; decode before training)
    dataset: dict (name, num_classes, channels, image_size, mean, std, class_names, flip_ok)
    config: JSON string of the settings that produced the set     created: ISO time

Files are written atomically; :func:`load_distilled` checks the format and version.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid, save_image

from lightning_dd.atomic import atomic_open, atomic_torch_save
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.distill.synthetic import decode, decode_labels
from lightning_dd.errors import FileFormatError

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
    """Read a file written by :func:`save_distilled`, with one-sentence errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"no distilled set at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise FileFormatError(f"{path} is not a readable lightning-dd distilled set (truncated or foreign file: {type(err).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise FileFormatError(f"{path} is not a lightning-dd distilled set")
    if blob.get("version") != VERSION:
        raise FileFormatError(f"{path} has format version {blob.get('version')}; this lightning-dd reads version {VERSION}")
    d = blob["dataset"]
    info = DatasetInfo(
        name=d["name"],
        num_classes=int(d["num_classes"]),
        channels=int(d["channels"]),
        image_size=tuple(d["image_size"]),
        mean=tuple(d["mean"]),
        std=tuple(d["std"]),
        class_names=tuple(d["class_names"]),
        flip_ok=bool(d["flip_ok"]),
    )
    return DistilledSet(blob["images"], blob["labels"], int(blob["factor"]), info, json.loads(blob["config"]))


def image_grid(images: torch.Tensor, ipc: int) -> torch.Tensor:
    """A grid with one row per class (``ipc`` stored images each), pixels in [0, 1]."""
    return make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=max(ipc, 1), padding=1, pad_value=1.0)


def save_grid_png(path: str | os.PathLike, images: torch.Tensor, ipc: int) -> Path:
    """Write the class-by-class image grid as a PNG, atomically."""
    buffer = io.BytesIO()
    save_image(image_grid(images, ipc), buffer, format="png")
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return Path(path)
