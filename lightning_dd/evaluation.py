"""The evaluation protocol: train fresh networks on a small set, report validation and test accuracy.

Every row of a results table (distilled set, random real subsets, full training set) goes
through :func:`evaluate_splits` so the rows differ only in the training images. Accuracy is that
of the *final* epoch. Each network is scored on the validation split (when the data holds one
out) and on the test split; settings are chosen on validation, test is reported for the choice.

One network's report (:func:`evaluate_network`) holds the rows DD-Ranking's scores read
(:mod:`lightning_dd.scores`): the set, random real subsets of its size, the full training set,
the set and random real without augmentation, and both again with a teacher's soft labels
(:mod:`lightning_dd.soft_labels`), all trained with one schedule on one network. Every row
records the seconds each of its networks took to train and test.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import torch

from lightning_dd.classify import TrainSchedule, test_accuracy, train_classifier
from lightning_dd.data.real import Normalizer, RealData
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.utils.errors import ConfigError, choose
from lightning_dd.nets.spec import NetSpec
from lightning_dd.scores import INPUTS, ROLES, ScoreReport, dd_scores
from lightning_dd.utils.validation import TRAINED, check_numbers

if TYPE_CHECKING:
    from lightning_dd.soft_labels import SoftLabeler


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


def check_evaluation_numbers(values: Mapping, prefix: str, defaults: Mapping) -> None:
    """An evaluation's number rules (RULES, with at least one training epoch), each named ``prefix.name``.

    SyntheticEvaluation checks itself with ``prefix="evaluation"``, the CLI a config's
    ``evaluation`` section alike, the evaluate command its flags with ``prefix="--"``.
    """
    check_numbers(values, prefix, rules=TRAINED, defaults=defaults)


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
            raise ConfigError(
                f"{prefix}protocol={protocol} fixes {prefix}{key} to {value!r}, but it is set to {given[key]!r}; drop one of the two"
            )
    return {**given, **fixed}


@dataclass
class EvalResult:
    """Accuracies (in %) of one row, one value per trained network: test, and validation when held out.

    ``seconds`` holds each network's wall time (training and scoring); ``net`` names the
    architecture and ``role`` what the row is for the scores (:data:`~lightning_dd.scores.ROLES`).
    """

    name: str
    accuracies: list[float] = field(default_factory=list)
    images: int = 0
    epochs: int = 0
    val_accuracies: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    net: str = ""
    role: str = ""

    def add(self, scores: dict[str, float], seconds: float | None = None) -> None:
        """Record one network's ``{"test": ..., "val": ...}`` scores (and its wall time)."""
        self.accuracies.append(scores["test"])
        if "val" in scores:
            self.val_accuracies.append(scores["val"])
        if seconds is not None:
            self.seconds.append(seconds)

    @property
    def seconds_mean(self) -> float | None:
        """Mean wall seconds per trained network, or None when not timed."""
        return sum(self.seconds) / len(self.seconds) if self.seconds else None

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
        if self.seconds:
            row.update(seconds_mean=self.seconds_mean, seconds=self.seconds)
        row.update({k: v for k, v in (("net", self.net), ("role", self.role)) if v})
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
    soft: SoftLabeler | None = None,
) -> dict[str, float]:
    """Train one fresh ``net`` (initialised from ``seed``) on ``images``; accuracy in % on ``test`` and, if given, ``val``.

    One trained network is scored on both splits, so choosing on validation costs no extra
    training. With ``soft``, the network learns the teacher's soft labels instead of ``labels``.
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
    targets, loss_fn = labels, None
    if soft is not None:
        targets, loss_fn = soft.to(device).targets(images, labels, transform), soft
    train_classifier(model, images, targets, schedule, generator, info.flip_ok, transform, progress, loss_fn)
    splits = {"test": test} if val is None else {"val": val, "test": test}
    return {
        name: 100.0
        * test_accuracy(model, split.images.to(device), split.labels.to(device), info.num_classes, normalizer.uint8)
        for name, split in splits.items()
    }


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
    soft: SoftLabeler | None = None,
) -> EvalResult:
    """:func:`evaluate_splits` with ``repeats`` network seeds, each network timed."""
    result = EvalResult(name, images=images.shape[0], epochs=schedule.epochs)
    for r in range(repeats):
        desc = f"evaluating {name} ({r + 1}/{repeats})" if progress else None
        start = time.perf_counter()
        scores = evaluate_splits(images, labels, test, val, net, schedule, seed + r, device, desc, soft)
        result.add(scores, time.perf_counter() - start)
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
    soft: SoftLabeler | None = None,
    name: str | None = None,
) -> EvalResult:
    """Random real subsets of ``ipc`` images per class: a different draw (and net seed) per repeat (drawn from ``train`` only).

    The draws depend only on ``seed`` and the repeat, so rows evaluated with other settings
    (no augmentation, soft labels) train on the very same subsets.
    """
    result = EvalResult(
        name or f"random real, {ipc}/class", images=ipc * train.info.num_classes, epochs=schedule.epochs
    )
    for r in range(draws):
        idx = train.random_subset_indices(ipc, torch.Generator().manual_seed(10_000 + seed + r)).cpu()
        desc = f"evaluating random subset ({r + 1}/{draws})" if progress else None
        start = time.perf_counter()
        scores = evaluate_splits(
            train.images.cpu()[idx], train.labels.cpu()[idx], test, val, net, schedule, seed + r, device, desc, soft
        )
        result.add(scores, time.perf_counter() - start)
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
    return evaluate_repeats(
        "full training set", train.images, train.labels, test, net, full, repeats, seed, device, progress, val
    )


def net_label(net: NetSpec) -> str:
    """A network's name in reports: ``convnet depth 3 width 128`` (with the norm when not instance), or its import path and arguments."""
    return net.describe()


@dataclass
class EvalPlan:
    """Which rows one network's evaluation holds beside the set's own.

    Args:
        repeats: networks trained per row (different seeds); also random-subset draws.
        baselines: random real subsets with as many images per class as the set.
        full_set_epochs: epochs of the full-training-set row (0: no such row).
        scores: also the rows DD-Ranking's ARS needs: the set and random real without
            augmentation (and random real with it, even without ``baselines``).
        soft: evaluate the set and random real once more, learning this labeler's soft labels.
    """

    repeats: int
    baselines: bool = False
    full_set_epochs: int = 0
    scores: bool = False
    soft: SoftLabeler | None = None


@dataclass
class NetworkEvaluation:
    """The rows of one network's evaluation by role (:data:`~lightning_dd.scores.ROLES`)."""

    net: NetSpec
    rows: dict[str, EvalResult]

    def table_rows(self) -> list[EvalResult]:
        """The rows in report order: set, random, full, then without augmentation, then soft labels."""
        return [self.rows[role] for role in ROLES if role in self.rows]

    @property
    def seconds(self) -> float:
        """Wall seconds of every network trained for this report."""
        return sum(sum(row.seconds) for row in self.rows.values())

    def scores(self, hints: Mapping[str, str] | None = None) -> ScoreReport:
        """DD-Ranking's scores of these rows (the soft-label ones only when soft labels were evaluated); ``hints`` name the setting that adds a missing row."""
        keys = [key for key in INPUTS if not key.startswith("soft_") or "set_soft" in self.rows]
        return dd_scores(self.rows, hints, keys)

    def to_dict(self, hints: Mapping[str, str] | None = None) -> dict:
        rows = [row.to_dict() for row in self.table_rows()]
        return {
            "net": self.net.to_dict(),
            "label": net_label(self.net),
            "seconds": self.seconds,
            "rows": rows,
            "scores": self.scores(hints).to_dict(),
        }


def evaluate_network(
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    ipc: int,
    train: RealData,
    test: RealData,
    net: NetSpec,
    schedule: TrainSchedule,
    plan: EvalPlan,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
    val: RealData | None = None,
    set_row: EvalResult | None = None,
) -> NetworkEvaluation:
    """Every row of ``plan`` for one network, all trained with ``schedule`` from the same seeds.

    The rows without augmentation use :meth:`TrainSchedule.without_augmentation`; the soft-label
    rows the same schedule with the labeler's loss. Random-real rows share their draws.

    Args:
        name: the set's row name.
        ipc: images per class of the random-real rows.
        set_row: the set's row when already evaluated (the callback's final evaluation).
    """
    common = dict(device=device, progress=progress, val=val)
    rows = {
        "set": set_row
        if set_row is not None
        else evaluate_repeats(name, images, labels, test, net, schedule, plan.repeats, seed, **common)
    }
    if plan.baselines or plan.scores:
        rows["random"] = evaluate_random_subsets(ipc, train, test, net, schedule, plan.repeats, seed, **common)
    if plan.full_set_epochs > 0:
        rows["full"] = evaluate_full_set(train, test, net, schedule, plan.full_set_epochs, plan.repeats, seed, **common)
    if plan.scores:
        plain, suffix = schedule.without_augmentation(), "no augmentation"
        rows["set_plain"] = evaluate_repeats(
            f"{name}, {suffix}", images, labels, test, net, plain, plan.repeats, seed, **common
        )
        rows["random_plain"] = evaluate_random_subsets(
            ipc, train, test, net, plain, plan.repeats, seed, **common, name=f"random real, {ipc}/class, {suffix}"
        )
    if plan.soft is not None:
        suffix = f"soft labels ({plan.soft.mode.replace('_', ' ')})"
        rows["set_soft"] = evaluate_repeats(
            f"{name}, {suffix}", images, labels, test, net, schedule, plan.repeats, seed, **common, soft=plan.soft
        )
        rows["random_soft"] = evaluate_random_subsets(
            ipc,
            train,
            test,
            net,
            schedule,
            plan.repeats,
            seed,
            **common,
            soft=plan.soft,
            name=f"random real, {ipc}/class, {suffix}",
        )
    for role, row in rows.items():
        row.role, row.net = role, net_label(net)
    return NetworkEvaluation(net, rows)


def format_table(rows: list[EvalResult], title: str = "") -> str:
    """A Markdown table of results (mean +- sample std over the trained networks).

    A validation column appears when any row has one, a network column when the rows span
    several networks, and a seconds column (mean wall time per trained network) when rows are timed.
    """
    val = any(row.val_accuracies for row in rows)
    nets = len({row.net for row in rows}) > 1
    timed = any(row.seconds for row in rows)
    lines = [title, ""] if title else []
    head = (
        ["training set"]
        + (["network"] if nets else [])
        + ["images", "epochs", "nets"]
        + (["validation accuracy (%)"] if val else [])
        + ["test accuracy (%)"]
        + (["seconds/net"] if timed else [])
    )
    align = (
        ["---"]
        + (["---"] if nets else [])
        + ["---:"] * 3
        + (["---"] if val else [])
        + ["---"]
        + (["---:"] if timed else [])
    )
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        cells = [row.name] + ([row.net] if nets else []) + [str(row.images), str(row.epochs), str(len(row.accuracies))]
        if val:
            cells.append(mean_std_text(row.val_accuracies) if row.val_accuracies else "-")
        cells.append(f"{row.mean:.2f} +- {row.std:.2f}")
        if timed:
            cells.append(f"{row.seconds_mean:.2f}" if row.seconds else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_std_text(values: list[float]) -> str:
    """``mean +- sample std`` of ``values``, two decimals."""
    row = EvalResult("", list(values))
    return f"{row.mean:.2f} +- {row.std:.2f}"


def describe_info(info: DatasetInfo) -> str:
    return f"{info.name} ({info.num_classes} classes, {info.channels}x{info.image_size[0]}x{info.image_size[1]})"
