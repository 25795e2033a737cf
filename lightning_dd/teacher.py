"""The teacher of soft-label evaluation: trained once on the real training split, cached on disk.

Training a teacher costs as much as many evaluations, so (like the early-stage pool) it is
cached under a key derived from everything that defines its weights: the network, the training
recipe, the seed, the dataset's name and a hash of the training images and labels (a validation
split held out, or any other change of the training images, gives another teacher). A second
evaluation with the same settings loads it instead of training again. A teacher can also be
read from a file (``checkpoint``): a teacher cache file, or a plain state dict of its network.

**Recipe** (:class:`TeacherConfig`): the evaluation recipe (SGD lr 0.01, momentum 0.9, weight
decay 5e-4, batch 64, lr x0.2 at 2/3 and 5/6 of the epochs, DSA ``color_crop_flip_scale_rotate``
with one spatial transform per minibatch, CutMix p 0.5) for ``epochs`` epochs on the whole
training split, from ``seed``; the network defaults to the (first) evaluation network.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from lightning_dd.utils.atomic import atomic_torch_save
from lightning_dd.augment import check_strategy
from lightning_dd.classify import TrainSchedule, train_classifier
from lightning_dd.data.real import Normalizer, RealData
from lightning_dd.data.real import data_digest
from lightning_dd.distill.pool import pool_key
from lightning_dd.utils.errors import FileFormatError
from lightning_dd.nets.spec import NetSpec
from lightning_dd.utils.validation import TRAINED, check_numbers, defaults_of

TEACHER_FORMAT = "lightning-dd/teacher"
TEACHER_VERSION = 1


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher network of soft-label evaluation and how it is trained.

    Args:
        net: the teacher's network (None: the first evaluation network).
        epochs: training epochs on the real training split.
        lr: SGD learning rate.
        batch_size: SGD minibatch size.
        augment: DSA transforms while training the teacher.
        cutmix_p: CutMix probability while training the teacher.
        seed: seed of the teacher's initial weights and training order.
        checkpoint: read the teacher from this file instead (a teacher cache file, or a state
            dict of ``net``); nothing is trained or cached then.
        cache_dir: where trained teachers are cached; ``~`` and ``$VARS`` are expanded.
    """

    net: Optional[NetSpec] = None
    epochs: int = 30
    lr: float = TrainSchedule.lr
    batch_size: int = TrainSchedule.batch_size
    augment: str = TrainSchedule.augment
    cutmix_p: float = TrainSchedule.cutmix_p
    seed: int = 0
    checkpoint: Optional[str] = None
    cache_dir: str = "~/.cache/lightning-dd/teachers"

    def __post_init__(self) -> None:
        values = {k: v for k, v in asdict(self).items() if k not in ("net", "checkpoint", "cache_dir", "augment")}
        check_numbers(values, "teacher", rules=TRAINED, defaults=defaults_of(TeacherConfig))
        check_strategy("teacher.augment", self.augment)

    def schedule(self) -> TrainSchedule:
        """The teacher's training: these fields, TrainSchedule's defaults for the rest."""
        return TrainSchedule.of(self)


@dataclass
class Teacher:
    """A teacher ready to label: the network, what it is, and where it came from."""

    model: nn.Module
    net: NetSpec
    source: str  # "trained", "cached" or "checkpoint"
    path: Path
    key: str = ""

    def describe(self) -> str:
        where = {"trained": "trained and cached in", "cached": "loaded from the cache", "checkpoint": "read from"}[
            self.source
        ]
        return f"teacher {self.net.describe()}, {where} {self.path}"


def teacher_key_fields(net: NetSpec, config: TeacherConfig, train: RealData) -> dict:
    """Everything that defines a trained teacher's weights (the cache folder does not)."""
    schedule = asdict(config.schedule())
    schedule["milestones"] = list(schedule["milestones"])
    return {
        "format_version": TEACHER_VERSION,
        "dataset": train.info.name,
        "data": data_digest(train.images, train.labels),
        "net": net.to_dict(),
        "schedule": schedule,
        "seed": config.seed,
    }


def teacher_cache_path(config: TeacherConfig, key: str) -> Path:
    return Path(os.path.expandvars(config.cache_dir)).expanduser() / f"teacher-{key}.pt"


def load_or_train_teacher(
    config: TeacherConfig,
    default_net: NetSpec,
    train: RealData,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Teacher:
    """The teacher of ``config``: read from ``config.checkpoint``, loaded from the cache, or trained and cached.

    A cache file whose stored key fields differ from the requested ones is ignored and rebuilt.
    """
    net = config.net or default_net
    info = train.info
    if config.checkpoint:
        model, net = read_teacher(
            config.checkpoint,
            net,
            info.channels,
            info.num_classes,
            info.image_size,
            explicit_net=config.net is not None,
        )
        return Teacher(model.to(device), net, "checkpoint", Path(config.checkpoint))
    fields = teacher_key_fields(net, config, train)
    key = pool_key(fields)
    path = teacher_cache_path(config, key)
    if path.exists():
        try:
            model, _ = read_teacher(path, net, info.channels, info.num_classes, info.image_size, expected_fields=fields)
            return Teacher(model.to(device), net, "cached", path, key)
        except FileFormatError as err:
            print(f"lightning-dd: retraining the teacher: {err}", flush=True)
    model = train_teacher(net, config, train, device, progress)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_torch_save(
        {
            "format": TEACHER_FORMAT,
            "version": TEACHER_VERSION,
            "key": key,
            "fields": fields,
            "net": net.to_dict(),
            "state_dict": state,
        },
        path,
    )
    return Teacher(model, net, "trained", path, key)


def train_teacher(
    net: NetSpec, config: TeacherConfig, train: RealData, device: torch.device | str = "cpu", progress: bool = True
) -> nn.Module:
    """Train the teacher on the whole training split with :meth:`TeacherConfig.schedule`."""
    info = train.info
    model = net.build_seeded(config.seed, info.channels, info.num_classes, info.image_size).to(device)
    normalizer = Normalizer(info.mean, info.std, device)
    generator = torch.Generator().manual_seed(config.seed)
    desc = f"training the teacher ({config.epochs} epochs)" if progress else None
    train_classifier(
        model,
        train.images.to(device),
        train.labels.to(device),
        config.schedule(),
        generator,
        info.flip_ok,
        normalizer.uint8,
        desc,
    )
    return model.eval()


def read_teacher(
    path: str | os.PathLike,
    net: NetSpec,
    channels: int,
    num_classes: int,
    image_size,
    expected_fields: dict | None = None,
    explicit_net: bool = True,
) -> tuple[nn.Module, NetSpec]:
    """A teacher network (and its NetSpec) from a teacher cache file or a plain state dict, with one-sentence errors.

    A teacher file names its own network, used unless ``explicit_net`` insists on ``net``.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # missing, truncated or foreign file
        raise FileFormatError(f"{path} is not a readable teacher file or state dict ({type(err).__name__})") from None
    if isinstance(blob, dict) and blob.get("format") == TEACHER_FORMAT:
        if blob.get("version") != TEACHER_VERSION:
            raise FileFormatError(
                f"{path} has teacher format version {blob.get('version')}, this version reads {TEACHER_VERSION}"
            )
        if expected_fields is not None and blob.get("fields") != expected_fields:
            raise FileFormatError(f"{path} was trained for other settings than requested")
        net = net if explicit_net else NetSpec(**blob["net"])
        blob = blob["state_dict"]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise FileFormatError(f"{path} holds neither a teacher file nor a state dict of a network")
    model = net.build(channels, num_classes, image_size)
    try:
        model.load_state_dict(blob)
    except RuntimeError:
        raise FileFormatError(
            f"{path} does not hold weights of {net.describe()} for {num_classes} classes; set teacher.net to the network it was trained as"
        ) from None
    return model.eval(), net
