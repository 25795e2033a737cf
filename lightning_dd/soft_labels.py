"""Soft-label evaluation: a teacher network labels the views a student trains on.

Many recent sets are evaluated with soft labels (a teacher's class probabilities) instead of
their hard labels, which lifts any small set, real or distilled. To report what the labels add
apart from what the set adds, the random-real baseline is evaluated with the very same labeler
(same teacher, temperature, mode and augmentation draws), and the soft-label gain over random
real is reported beside the hard-label one.

**Loss.** Knowledge distillation with temperature ``T`` (Hinton et al. 2015):
``T^2 * KL(p_teacher || q_student)``, batch mean, where ``p = softmax(teacher_logits / T)`` and
``q = softmax(student_logits / T)``. It differs from the soft cross-entropy
``-T^2 * sum(p * log q)`` by the teacher's entropy, a constant, so both give the same gradients;
the ``T^2`` keeps gradient magnitudes comparable across temperatures.

**Modes.** ``per_image``: one soft label per training image, the teacher's output on the
un-augmented image, computed once; a CutMix-ed view gets the labels of its two images mixed by
area (as hard labels are). ``per_view``: the teacher labels each augmented (and CutMix-ed) view
afresh, as SRe2L/RDED-style evaluations do. Both modes draw DSA and CutMix from the generator in
the same order as the hard-label loss, so a soft-label network sees the views its hard-label
twin sees.

**Export.** :func:`attach_soft_labels` adds per-image soft labels to an exported set file (an
optional ``soft_labels`` entry that readers of the format ignore) and :func:`load_soft_labels`
reads them back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lightning_dd.utils.atomic import atomic_torch_save
from lightning_dd.augment import DSA, cutmix
from lightning_dd.utils.errors import ConfigError, FileFormatError, choose
from lightning_dd.set_format import load_distilled

SOFT_LABEL_MODES = ("per_image", "per_view")


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher_probs || softmax(student_logits / T))``, averaged over the batch.

    Args:
        student_logits: ``[B, C]`` raw outputs of the network being trained.
        teacher_probs: ``[B, C]`` target probabilities (already at temperature ``T``).
        temperature: ``T`` > 0.
    """
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return temperature**2 * F.kl_div(log_q, teacher_probs, reduction="batchmean")


class SoftLabeler:
    """A frozen teacher turned into the training loss of an evaluation network.

    Its ``__call__`` has the signature of :func:`~lightning_dd.augment.augmented_loss`, so
    :func:`~lightning_dd.classify.train_classifier` takes it as ``loss_fn``; ``targets`` gives
    what that loop should index per minibatch in place of the hard labels.

    Args:
        teacher: a trained classifier taking normalised images.
        mode: ``per_image`` or ``per_view`` (see the module docstring).
        temperature: softmax temperature ``T`` of teacher and student.
    """

    def __init__(self, teacher: nn.Module, mode: str = "per_view", temperature: float = 4.0) -> None:
        self.mode = choose("soft-label mode", mode, SOFT_LABEL_MODES)
        if not temperature > 0:
            raise ConfigError(f"the soft-label temperature must be > 0, got {temperature}")
        self.teacher, self.temperature = teacher.eval().requires_grad_(False), float(temperature)

    def to(self, device: torch.device | str) -> "SoftLabeler":
        self.teacher = self.teacher.to(device)
        return self

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """The teacher's ``softmax(logits / T)`` of normalised images, in batches."""
        self.teacher.eval()
        parts = [
            F.softmax(self.teacher(x[i : i + batch_size]) / self.temperature, dim=1)
            for i in range(0, x.shape[0], batch_size)
        ]
        return torch.cat(parts)

    def targets(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """What the training loop indexes per minibatch: ``per_image`` soft labels ``[N, C]``, or the labels themselves.

        Args:
            images: the training images as the loop holds them.
            transform: applied before the teacher (e.g. uint8 -> normalised), as the loop applies it.
        """
        if self.mode == "per_view":
            return labels
        x = (
            images
            if transform is None
            else torch.cat([transform(images[i : i + 1024]) for i in range(0, images.shape[0], 1024)])
        )
        return self.probabilities(x)

    def __call__(
        self, logits_fn, x: torch.Tensor, y: torch.Tensor, dsa: DSA, generator: torch.Generator, cutmix_p: float
    ) -> torch.Tensor:
        """The distillation loss of ``logits_fn`` on a DSA-augmented, CutMix-ed batch."""
        x = dsa(x, generator)
        x, y_a, y_b, lam = cutmix(x, y, generator, cutmix_p)
        if self.mode == "per_view":
            target = self.probabilities(x)
        else:
            target = y_a if lam >= 1.0 else lam * y_a + (1.0 - lam) * y_b
        return distillation_loss(logits_fn(x), target, self.temperature)


# ----------------------------------------------------------------------------- export
SOFT_LABELS_KEY = "soft_labels"


def attach_soft_labels(
    path: str | os.PathLike, soft_labels: torch.Tensor, temperature: float, teacher: dict | None = None
) -> Path:
    """Add per-image soft labels to an exported set file (written atomically).

    The entry is optional and ignored by :func:`~lightning_dd.set_format.load_distilled`, so the
    file stays a valid set of its format version for every reader.

    Args:
        path: a file written by :func:`~lightning_dd.set_format.save_distilled`.
        soft_labels: ``[N, C]`` probabilities, one row per decoded training image.
        temperature: the temperature they were computed at.
        teacher: what defines the teacher (its net and cache key), kept beside them.
    """
    blob = _read_blob(path)
    decoded = blob["images"].shape[0] * int(blob["factor"]) ** 2
    if soft_labels.ndim != 2 or soft_labels.shape[0] != decoded:
        raise FileFormatError(
            f"soft labels of shape {tuple(soft_labels.shape)} do not fit the {decoded} decoded images of {path}"
        )
    blob[SOFT_LABELS_KEY] = {
        "probabilities": soft_labels.detach().float().cpu().contiguous(),
        "temperature": float(temperature),
        "teacher": json.dumps(teacher or {}, sort_keys=True, default=str),
    }
    atomic_torch_save(blob, path)
    return Path(path)


def load_soft_labels(path: str | os.PathLike) -> tuple[torch.Tensor, float] | None:
    """The soft labels and their temperature stored with a set, or None when it has none."""
    entry = _read_blob(path).get(SOFT_LABELS_KEY)
    if entry is None:
        return None
    return entry["probabilities"], float(entry["temperature"])


def _read_blob(path: str | os.PathLike) -> dict:
    load_distilled(path)  # the format and version checks, with their one-sentence errors
    return torch.load(path, map_location="cpu", weights_only=True)
