"""The evaluation protocol: train fresh networks on a small set, report validation and test accuracy.

Every row of a results table (distilled set, random real subsets, full training set) goes
through :func:`evaluate_splits` so the rows differ only in the training images. Accuracy is that
of the *final* epoch. Each network is scored on the validation split (when the data holds one
out) and on the test split; settings are chosen on validation, test is reported for the choice.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from lightning_dd.classify import TrainSchedule, test_accuracy, train_classifier
from lightning_dd.data.real import Normalizer, RealData
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.errors import ConfigError, choose
from lightning_dd.nets.spec import NetSpec


# Named evaluations: the settings each one fixes (everything else is TrainSchedule's default, which
# is already DC/DSA/IDC's: SGD 0.01, momentum 0.9, wd 5e-4, batch 64, lr x0.2 at 2/3 and 5/6, DSA
# color_crop_flip_scale_rotate with one spatial transform per batch, CutMix p 0.5, final epoch).
PROTOCOLS: dict[str, dict] = {
    # The cheap one used by the CPU configs' periodic and candidate evaluations.
    "long": {"epochs": 300, "net": NetSpec(depth=3, width=128, norm="instance")},
    # IDC's evaluation of 28x28 and 32x32 data (their argument.py: epochs 1000 for every dataset but ImageNet).
    "published": {"epochs": 1000, "net": NetSpec(depth=3, width=128, norm="instance")},
}
PROTOCOL_FIELDS = ("epochs", "net", "batch_size", "lr", "augment", "cutmix_p", "spatial", "cutout_with_cutmix")


def apply_protocol(protocol: str | None, given: dict, defaults: dict, prefix: str) -> dict:
    """``given`` evaluation settings with those of the named ``protocol`` filled in.

    A protocol fixes the fields of :data:`PROTOCOL_FIELDS`; a field set to something other than
    both its default and the protocol's value is refused, so a config never silently runs a
    different evaluation under the protocol's name.
    """
    if protocol is None:
        return dict(given)
    choose(f"{prefix}protocol", protocol, tuple(PROTOCOLS))
    schedule_defaults = {f.name: f.default for f in dataclasses.fields(TrainSchedule)}
    fixed = {k: PROTOCOLS[protocol].get(k, schedule_defaults.get(k)) for k in PROTOCOL_FIELDS}
    for key, value in fixed.items():
        if key in given and given[key] != defaults.get(key) and given[key] != value:
            raise ConfigError(f"{prefix}protocol={protocol} fixes {prefix}{key} to {value!r}, but it is set to {given[key]!r}; drop one of the two")
    return {**given, **fixed}


@dataclass
class EvalResult:
    """Accuracies (in %) of one row, one value per trained network: test, and validation when held out."""

    name: str
    accuracies: list[float] = field(default_factory=list)
    images: int = 0
    epochs: int = 0
    val_accuracies: list[float] = field(default_factory=list)

    def add(self, scores: dict[str, float]) -> None:
        """Record one network's ``{"test": ..., "val": ...}`` scores."""
        self.accuracies.append(scores["test"])
        if "val" in scores:
            self.val_accuracies.append(scores["val"])

    @property
    def val_mean(self) -> float | None:
        return sum(self.val_accuracies) / len(self.val_accuracies) if self.val_accuracies else None

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
        row = {"name": self.name, "images": self.images, "epochs": self.epochs}
        if self.accuracies:  # an evaluation during a run with a validation split has none
            row.update(mean=self.mean, std=self.std, accuracies=self.accuracies)
        if self.val_accuracies:
            row.update(val_mean=self.val_mean, val_accuracies=self.val_accuracies)
        return row


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
    return evaluate_splits(images, labels, test, None, net, schedule, seed, device, progress)["test"]


def evaluate_splits(
    images: torch.Tensor,
    labels: torch.Tensor,
    test: RealData,
    val: RealData | None,
    net: NetSpec,
    schedule: TrainSchedule,
    seed: int,
    device: torch.device | str = "cpu",
    progress: str | None = None,
) -> dict[str, float]:
    """Train one fresh ``net`` (initialised from ``seed``) on ``images``; accuracy in % on ``test`` and, if given, ``val``.

    One trained network is scored on both splits, so choosing on validation costs no extra training.
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
    splits = {"test": test} if val is None else {"val": val, "test": test}
    return {name: 100.0 * test_accuracy(model, split.images.to(device), split.labels.to(device), info.num_classes, normalizer.uint8) for name, split in splits.items()}


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
    val: RealData | None = None,
) -> EvalResult:
    """:func:`evaluate_splits` with ``repeats`` network seeds."""
    result = EvalResult(name, images=images.shape[0], epochs=schedule.epochs)
    for r in range(repeats):
        desc = f"evaluating {name} ({r + 1}/{repeats})" if progress else None
        result.add(evaluate_splits(images, labels, test, val, net, schedule, seed + r, device, desc))
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
    val: RealData | None = None,
) -> EvalResult:
    """Random real subsets of ``ipc`` images per class: a different draw (and net seed) per repeat (drawn from ``train`` only)."""
    result = EvalResult(f"random real, {ipc}/class", images=ipc * train.info.num_classes, epochs=schedule.epochs)
    for r in range(draws):
        idx = train.random_subset_indices(ipc, torch.Generator().manual_seed(10_000 + seed + r)).cpu()
        desc = f"evaluating random subset ({r + 1}/{draws})" if progress else None
        result.add(evaluate_splits(train.images.cpu()[idx], train.labels.cpu()[idx], test, val, net, schedule, seed + r, device, desc))
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
    val: RealData | None = None,
) -> EvalResult:
    """The whole training set under ``schedule`` for ``epochs`` epochs: the ceiling row of a table.

    The one protocol for this row everywhere (the evaluation callback, ``lightning-dd evaluate``,
    the benchmarks): the evaluation's own schedule, only fewer epochs, since a pass over the full
    set is tens of thousands of images.
    """
    full = dataclasses.replace(schedule, epochs=epochs)
    return evaluate_repeats("full training set", train.images, train.labels, test, net, full, repeats, seed, device, progress, val)


def format_table(rows: list[EvalResult], title: str = "") -> str:
    """A Markdown table of results (mean +- sample std over the trained networks); a validation column when any row has one."""
    val = any(row.val_accuracies for row in rows)
    lines = [title, ""] if title else []
    lines += ["| training set | images | epochs | nets |" + (" validation accuracy (%) |" if val else "") + " test accuracy (%) |", "|---|---:|---:|---:|" + ("---|" if val else "") + "---|"]
    for row in rows:
        val_cell = (f" {mean_std_text(row.val_accuracies)} |" if row.val_accuracies else " - |") if val else ""
        lines.append(f"| {row.name} | {row.images} | {row.epochs} | {len(row.accuracies)} |{val_cell} {row.mean:.2f} +- {row.std:.2f} |")
    return "\n".join(lines)


def mean_std_text(values: list[float]) -> str:
    """``mean +- sample std`` of ``values``, two decimals."""
    row = EvalResult("", list(values))
    return f"{row.mean:.2f} +- {row.std:.2f}"


def describe_info(info: DatasetInfo) -> str:
    return f"{info.name} ({info.num_classes} classes, {info.channels}x{info.image_size[0]}x{info.image_size[1]})"
