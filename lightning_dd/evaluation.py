"""The evaluation protocol: train fresh networks on a small set, report test accuracy.

Every row of a results table (distilled set, random real subsets, full training set) goes
through :func:`evaluate_set` so the rows differ only in the training images. Accuracy is that of
the *final* epoch; nothing is selected on the test set.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from lightning_dd.classify import TrainSchedule, test_accuracy, train_classifier
from lightning_dd.data.real import Normalizer, RealData
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.nets.spec import NetSpec


@dataclass
class EvalResult:
    """Accuracies (in %) of one row, one value per trained network."""

    name: str
    accuracies: list[float] = field(default_factory=list)
    images: int = 0
    epochs: int = 0

    @property
    def mean(self) -> float:
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def std(self) -> float:
        if len(self.accuracies) < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((a - m) ** 2 for a in self.accuracies) / (len(self.accuracies) - 1))

    def to_dict(self) -> dict:
        return {"name": self.name, "mean": self.mean, "std": self.std, "accuracies": self.accuracies, "images": self.images, "epochs": self.epochs}


def evaluate_set(
    images: torch.Tensor,
    labels: torch.Tensor,
    test: RealData,
    net: NetSpec,
    schedule: TrainSchedule,
    seed: int,
    device: torch.device | str = "cpu",
    progress: str | None = None,
) -> float:
    """Train one fresh ``net`` (initialised from ``seed``) on ``images`` and return test accuracy in %.

    Args:
        images: uint8 real images, or float synthetic images with pixels in [0, 1].
    """
    info = test.info
    normalizer = Normalizer(info.mean, info.std, device)
    images, labels = images.to(device), labels.to(device)
    if images.dtype == torch.uint8:
        transform = normalizer.uint8
    else:
        images, transform = normalizer(images.float()), None
    model = net.build_seeded(seed, info.channels, info.num_classes, info.image_size).to(device)
    generator = torch.Generator().manual_seed(seed)
    train_classifier(model, images, labels, schedule, generator, info.flip_ok, transform, progress)
    test_images, test_labels = test.images.to(device), test.labels.to(device)
    return 100.0 * test_accuracy(model, test_images, test_labels, info.num_classes, normalizer.uint8)


def evaluate_repeats(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    test: RealData,
    net: NetSpec,
    schedule: TrainSchedule,
    repeats: int,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> EvalResult:
    """:func:`evaluate_set` with ``repeats`` network seeds."""
    result = EvalResult(name, images=images.shape[0], epochs=schedule.epochs)
    for r in range(repeats):
        desc = f"evaluating {name} ({r + 1}/{repeats})" if progress else None
        result.accuracies.append(evaluate_set(images, labels, test, net, schedule, seed + r, device, desc))
    return result


def evaluate_random_subsets(
    ipc: int,
    train: RealData,
    test: RealData,
    net: NetSpec,
    schedule: TrainSchedule,
    draws: int,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> EvalResult:
    """Random real subsets of ``ipc`` images per class: a different draw (and net seed) per repeat."""
    result = EvalResult(f"random real, {ipc}/class", images=ipc * train.info.num_classes, epochs=schedule.epochs)
    for r in range(draws):
        idx = train.random_subset_indices(ipc, torch.Generator().manual_seed(10_000 + seed + r)).cpu()
        desc = f"evaluating random subset ({r + 1}/{draws})" if progress else None
        result.accuracies.append(evaluate_set(train.images.cpu()[idx], train.labels.cpu()[idx], test, net, schedule, seed + r, device, desc))
    return result


def evaluate_full_set(
    train: RealData,
    test: RealData,
    net: NetSpec,
    schedule: TrainSchedule,
    epochs: int,
    repeats: int,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> EvalResult:
    """The whole training set under ``schedule`` for ``epochs`` epochs: the ceiling row of a table.

    The one protocol for this row everywhere (the evaluation callback, ``lightning-dd evaluate``,
    the benchmarks): the evaluation's own schedule, only fewer epochs, since a pass over the full
    set is tens of thousands of images.
    """
    full = dataclasses.replace(schedule, epochs=epochs)
    return evaluate_repeats("full training set", train.images, train.labels, test, net, full, repeats, seed, device, progress)


def format_table(rows: list[EvalResult], title: str = "") -> str:
    """A Markdown table of results (mean +- std over the trained networks)."""
    lines = [title, ""] if title else []
    lines += ["| training set | images | epochs | nets | test accuracy (%) |", "|---|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row.name} | {row.images} | {row.epochs} | {len(row.accuracies)} | {row.mean:.2f} +- {row.std:.2f} |")
    return "\n".join(lines)


def describe_info(info: DatasetInfo) -> str:
    return f"{info.name} ({info.num_classes} classes, {info.channels}x{info.image_size[0]}x{info.image_size[1]})"
