"""Real training data held in memory with a per-class index, sampled class by class.

Distillation draws a real batch of every class at every inner step and a random batch for the
network update; keeping uint8 images on the compute device and indexing them there avoids a
DataLoader round trip per step. All randomness comes from a caller-supplied generator so that a
checkpointed generator state reproduces the exact same batches.
"""

from __future__ import annotations

import hashlib

import torch

from lightning_dd.data.sources import DatasetInfo, ImageSplit


class Normalizer:
    """Maps [0, 1] pixels to the dataset's normalised space and back."""

    def __init__(self, mean, std, device: torch.device | str = "cpu") -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def uint8(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise uint8 images (any device) to float32."""
        return self(images.float().div_(255.0))


class RealData:
    """One split of real data, with the class index needed for class-balanced sampling.

    Args:
        split: images and labels.
        info: dataset facts (normalisation, class count).
    """

    def __init__(self, split: ImageSplit, info: DatasetInfo) -> None:
        self.info = info
        self.images = split.images
        self.labels = split.labels
        self.normalizer = Normalizer(info.mean, info.std, self.images.device)
        self.class_indices = [torch.nonzero(self.labels == c).flatten() for c in range(info.num_classes)]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> "RealData":
        """Move images, labels and the index to ``device`` (in place; returns self)."""
        self.images = self.images.to(device)
        self.labels = self.labels.to(device)
        self.class_indices = [idx.to(device) for idx in self.class_indices]
        self.normalizer = Normalizer(self.info.mean, self.info.std, device)
        return self

    def class_counts(self) -> list[int]:
        return [int(idx.numel()) for idx in self.class_indices]

    def class_sample_indices(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """Indices of ``min(n, count)`` distinct images of class ``c`` drawn at random."""
        pool = self.class_indices[c]
        perm = torch.randperm(pool.numel(), generator=generator)[:n]
        return pool[perm.to(pool.device)]

    def class_balanced_batch(self, n_per_class: int, generator: torch.Generator) -> torch.Tensor:
        """Normalised images ``[C, n, ch, H, W]``: ``n`` random images of every class.

        Every class is drawn (in class order) even if the caller only uses some of them, so that
        processes that match different classes consume random numbers identically.
        """
        n = min([n_per_class, *self.class_counts()])
        idx = torch.stack([self.class_sample_indices(c, n, generator) for c in range(self.info.num_classes)])
        images = self.normalizer.uint8(self.images[idx.flatten()])
        return images.view(self.info.num_classes, n, *images.shape[1:])

    def random_batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` distinct random images (normalised) and their labels."""
        idx = torch.randperm(len(self), generator=generator)[:n].to(self.device)
        return self.normalizer.uint8(self.images[idx]), self.labels[idx]

    def random_subset_indices(self, n_per_class: int, generator: torch.Generator) -> torch.Tensor:
        """Indices of a random class-balanced subset (``n_per_class`` images of every class)."""
        return torch.cat([self.class_sample_indices(c, n_per_class, generator) for c in range(self.info.num_classes)])


def data_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A short sha256 of images and labels (their shape too): what names the data in pool and teacher cache keys and in checkpoints."""
    digest = hashlib.sha256()
    digest.update(str(tuple(images.shape)).encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    digest.update(labels.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
