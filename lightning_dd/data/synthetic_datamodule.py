"""SyntheticDataModule: train any LightningModule on an exported distilled set.

The distilled set replaces the real training split; the real test split of the same dataset can
be attached for validation and testing, normalised exactly like the synthetic images.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset, get_worker_info

from lightning_dd.augment import DSA, check_strategy
from lightning_dd.data.datamodule import RealDataModule
from lightning_dd.data.real import Normalizer
from lightning_dd.data.sources import DatasetInfo
from lightning_dd.utils.errors import ConfigError
from lightning_dd.set_format import DistilledSet, load_distilled


class AugmentingCollate:
    """Stacks ``(image, label)`` pairs and applies DSA with a fresh draw for every image.

    In the main process (``num_workers=0``) the draws come from one generator seeded with
    ``seed``; in a worker process from a generator seeded with the worker's own seed (which the
    DataLoader derives from its seeded generator), so runs are reproducible either way and
    workers never repeat each other's draws.
    """

    def __init__(self, dsa: DSA, seed: int) -> None:
        self.dsa, self.seed = dsa, seed
        self.generator = torch.Generator().manual_seed(seed)
        self._worker_seed: int | None = None

    def _current_generator(self) -> torch.Generator:
        worker = get_worker_info()
        if worker is None:
            return self.generator
        if self._worker_seed != worker.seed:
            self._worker_seed = worker.seed
            self.generator = torch.Generator().manual_seed(worker.seed % 2**63)
        return self.generator

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([item[0] for item in batch])
        labels = torch.stack([item[1] for item in batch])
        with torch.no_grad():
            images = self.dsa(images, self._current_generator())
        return images, labels


class SyntheticDataModule(LightningDataModule):
    """Serves an exported distilled set (``.pt`` from :func:`~lightning_dd.set_format.save_distilled`) for training.

    The stored images are decoded (multi-formation: ``ipc * factor**2`` training images per
    class) and normalised with the mean and std stored in the export, so a model trained here
    sees the same inputs as lightning-dd's own evaluation. Training batches are shuffled by a
    generator seeded with ``seed``; ``augment`` applies DSA transforms with an independent draw
    per image (``flip`` is dropped automatically for flip-sensitive data such as digits).

    Validation and test batches come from the *test* split of the real dataset when
    ``real_test`` is given (there is no separate validation split: do not select models or
    hyper-parameters on it if you report test accuracy). Without ``real_test`` the validation
    and test loaders are empty.

    Args:
        path: an exported distilled set.
        batch_size: training batch size.
        augment: DSA transforms joined by ``_`` (e.g. ``"color_crop_cutout_scale_rotate"``) or ``"none"``.
        real_test: ``None`` (no real data), ``True`` (the dataset named in the export), a
            dataset name such as ``"digits"``, or a :class:`~lightning_dd.data.RealDataModule`.
        data_dir: where a dataset given by name is read from (``RealDataModule``'s ``data_dir``).
        num_workers: DataLoader worker processes.
        seed: seeds shuffling and augmentation.
        eval_batch_size: batch size of the validation and test loaders.

    Example:
        >>> import lightning as L
        >>> dm = SyntheticDataModule("lightning_logs/version_0/distilled.pt", real_test="digits")
        >>> dm.info.num_classes, dm.train_images.shape          # decoded, normalised
        (10, torch.Size([40, 1, 8, 8]))
        >>> trainer = L.Trainer(max_epochs=300)
        >>> trainer.fit(my_model, datamodule=dm)                 # any LightningModule
        >>> trainer.test(my_model, datamodule=dm)                # accuracy on the real test split
    """

    def __init__(
        self,
        path: str | os.PathLike,
        batch_size: int = 64,
        augment: str = "none",
        real_test: RealDataModule | str | bool | None = None,
        data_dir: str = "data",
        num_workers: int = 0,
        seed: int = 0,
        eval_batch_size: int = 512,
    ) -> None:
        super().__init__()
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(
                f"batch sizes must be >= 1, got batch_size={batch_size} eval_batch_size={eval_batch_size}"
            )
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
        self.path = path
        self.batch_size, self.num_workers, self.seed, self.eval_batch_size = (
            batch_size,
            num_workers,
            seed,
            eval_batch_size,
        )
        self.distilled: DistilledSet = load_distilled(path)
        check_strategy("augment", augment)
        self.dsa = DSA(augment, flip_ok=self.distilled.info.flip_ok)
        self.normalizer = Normalizer(self.info.mean, self.info.std)
        images, labels = self.distilled.decoded()
        self.train_images: torch.Tensor = self.normalizer(images.float())
        self.train_labels: torch.Tensor = labels.long()
        self.real_test = self._real_test_module(real_test, data_dir)
        self._test: TensorDataset | None = None

    # ------------------------------------------------------------------ facts
    @property
    def info(self) -> DatasetInfo:
        """Facts about the dataset the set was distilled from (classes, shape, normalisation)."""
        return self.distilled.info

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    def _real_test_module(self, real_test, data_dir: str) -> RealDataModule | None:
        if real_test is None or real_test is False:
            return None
        if real_test is True:
            real_test = self.info.name
        if isinstance(real_test, str):
            return RealDataModule(real_test, data_dir=data_dir)
        if isinstance(real_test, RealDataModule):
            return real_test
        raise ConfigError(
            f"real_test must be a dataset name, True, None or a RealDataModule, got {type(real_test).__name__}"
        )

    # ---------------------------------------------------------------- loading
    def setup(self, stage: str | None = None) -> None:
        """Load the real test split once when one is attached (checks that it fits the export)."""
        if self.real_test is None or self._test is not None:
            return
        self.real_test.setup(stage)
        real, mine = self.real_test.info, self.info
        if (real.num_classes, real.channels, tuple(real.image_size)) != (
            mine.num_classes,
            mine.channels,
            tuple(mine.image_size),
        ):
            raise ConfigError(
                f"the real test set {real.name!r} has {real.num_classes} classes of {real.channels}x{real.image_size[0]}x{real.image_size[1]} "
                f"but the distilled set has {mine.num_classes} classes of {mine.channels}x{mine.image_size[0]}x{mine.image_size[1]}"
            )
        test = self.real_test.test_data
        images = self.normalizer(test.images.cpu().float().div_(255.0))  # the export's normalisation
        self._test = TensorDataset(images, test.labels.cpu().long())

    def train_dataloader(self) -> DataLoader:
        """Shuffled (normalised image, label) batches of the decoded set, DSA-augmented if asked."""
        collate: Callable | None = AugmentingCollate(self.dsa, self.seed) if self.dsa else None
        return DataLoader(
            TensorDataset(self.train_images, self.train_labels),
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=collate,
            num_workers=self.num_workers,
        )

    def _eval_loader(self) -> DataLoader | list:
        self.setup()
        if self._test is None:
            return []
        return DataLoader(self._test, batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        """The real test split (normalised like the training images), or nothing if none is attached."""
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader | list:
        """The real test split (normalised like the training images), or nothing if none is attached."""
        return self._eval_loader()
