"""Training and testing plain classifiers: shared by pool pretraining and evaluation.

A plain PyTorch loop (no nested Lightning Trainer) keeps evaluation callable from inside a
running fit, deterministic under a seeded generator, and cheap on tiny synthetic sets.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_dd.augment import DSA, augmented_loss, training_augmentation
from lightning_dd.utils.progress import progress_bar

# A minibatch loss: (network, images, targets, augmentation, generator, cutmix_p) -> scalar.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, DSA, torch.Generator, float], torch.Tensor]


@dataclass
class TrainSchedule:
    """How a classifier is trained (defaults: the evaluation protocol of DC/DSA/IDC).

    Args:
        epochs: passes over the training images.
        lr, momentum, weight_decay: SGD settings.
        batch_size: minibatch size.
        milestones: fractions of ``epochs`` at which the learning rate is multiplied by ``gamma``.
        gamma: learning-rate decay factor.
        augment: DSA transforms for every image (``flip`` is dropped for flip-sensitive data).
        cutmix_p: probability of CutMix per minibatch.
        spatial: ``single`` (the DSA/IDC training code: colour and flip plus ONE of crop / scale /
            rotate per minibatch) or ``all`` (every listed transform on every minibatch).
        cutout_with_cutmix: keep ``cutout`` in ``augment`` when CutMix is on (the authors' code
            removes it; False).
    """

    epochs: int = 1000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    milestones: tuple[float, ...] = field(default=(2 / 3, 5 / 6))
    gamma: float = 0.2
    augment: str = "color_crop_flip_scale_rotate"
    cutmix_p: float = 0.5
    spatial: str = "single"
    cutout_with_cutmix: bool = False

    @classmethod
    def of(cls, settings: Any, **fixed: Any) -> "TrainSchedule":
        """The schedule that ``settings`` spells out: every field of this class that ``settings`` has
        as an attribute (e.g. :class:`~lightning_dd.distill.pool.PoolConfig`'s ``lr``), the others
        their defaults, then ``fixed``."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{**{n: getattr(settings, n) for n in names if hasattr(settings, n)}, **fixed})

    def augmentation(self, flip_ok: bool = True) -> DSA:
        """The per-image augmentation this schedule trains with."""
        return training_augmentation(self.augment, flip_ok, self.spatial, self.cutmix_p, self.cutout_with_cutmix)

    def without_augmentation(self) -> "TrainSchedule":
        """This schedule with no DSA transform (``augment="none"``) and no CutMix: ARS's plain evaluation."""
        return dataclasses.replace(self, augment="none", cutmix_p=0.0)


def train_classifier(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    schedule: TrainSchedule,
    generator: torch.Generator,
    flip_ok: bool = True,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: str | None = None,
    loss_fn: LossFn | None = None,
) -> nn.Module:
    """Train ``net`` in place on ``images`` (already on the net's device) and return it.

    Args:
        labels: per-image targets the loss indexes per minibatch: class indices for the default
            loss, or whatever ``loss_fn`` reads (e.g. per-image soft labels ``[N, C]``).
        transform: applied to each minibatch before augmentation (e.g. uint8 -> normalised).
        progress: description for a progress bar, or None for none.
        loss_fn: the minibatch loss, called as :func:`~lightning_dd.augment.augmented_loss` is
            (the default: cross-entropy on DSA + CutMix views); soft-label evaluation passes a
            :class:`~lightning_dd.soft_labels.SoftLabeler`.
    """
    loss_fn = augmented_loss if loss_fn is None else loss_fn
    net.train()
    dsa = schedule.augmentation(flip_ok)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay
    )
    milestones = sorted({max(1, int(round(schedule.epochs * m))) for m in schedule.milestones})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=schedule.gamma)
    n = images.shape[0]
    steps_per_epoch = math.ceil(n / schedule.batch_size)
    with progress_bar(total=schedule.epochs, desc=progress, unit="epoch") as bar:
        for _ in range(schedule.epochs):
            order = torch.randperm(n, generator=generator).to(images.device)
            for s in range(steps_per_epoch):
                idx = order[s * schedule.batch_size : (s + 1) * schedule.batch_size]
                x = images[idx]
                if transform is not None:
                    x = transform(x)
                loss = loss_fn(net, x, labels[idx], dsa, generator, schedule.cutmix_p)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            scheduler.step()
            bar.update(1)
    return net


@torch.no_grad()
def test_accuracy(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy (in [0, 1]) of ``net`` on a labelled set, via torchmetrics."""
    net.eval()
    metric = MulticlassAccuracy(num_classes=num_classes, average="micro").to(images.device)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        if transform is not None:
            x = transform(x)
        metric.update(net(x), labels[start : start + batch_size])
    net.train()
    return float(metric.compute())
