"""RealDataModule: the real dataset, in memory, for distillation and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from lightning_dd.data.real import RealData
from lightning_dd.data.ticker import StepTicker
import lightning_dd.data.sources as sources
from lightning_dd.data.sources import DatasetInfo, ImageSplit, LoadedDataset, available_sources, load_source
from lightning_dd.errors import ConfigError, DataError, choose
from lightning_dd.validation import check_numbers, check_source_options, defaults_of


class RealDataModule(LightningDataModule):
    """Loads a whole real dataset into memory and serves class-balanced batches.

    Distillation needs, at every inner step, a batch of *each* class; this module keeps uint8
    tensors and a per-class index (:class:`~lightning_dd.data.real.RealData`) that the
    distillation module moves to its device and samples with its own seeded generator
    (``train_data.class_balanced_batch``). The test split is served for evaluation.

    With ``val_per_class > 0`` a class-balanced, seeded validation split is held out of the
    training images before anything else sees them: distillation, the pool (whose cache key hashes
    the training images), ``mix``/``real`` initialisation and random-real baselines draw only from
    :attr:`train_data`, so settings can be chosen on :attr:`val_data` and the test split is read
    once, for what was chosen.

    Args:
        dataset: source name (see :func:`lightning_dd.data.available_sources`), e.g. ``"digits"``.
        data_dir: folder with the dataset's files (sources that need files look here).
        download: let torchvision sources download missing files.
        source_options: extra keyword arguments for the source (e.g. ``classes`` for image folders).
        eval_batch_size: batch size of the test dataloader.
        val_per_class: training images of every class held out as the validation split (0: none).
        val_seed: seed of the draw of the validation images (the split depends on nothing else).

    Example:
        >>> dm = RealDataModule("digits")
        >>> dm.setup()
        >>> dm.info.num_classes, dm.train_data.images.shape[1:]
        (10, torch.Size([1, 8, 8]))
    """

    def __init__(
        self,
        dataset: str = "digits",
        data_dir: str = "data",
        download: bool = False,
        source_options: dict | None = None,
        eval_batch_size: int = 512,
        val_per_class: int = 0,
        val_seed: int = 0,
    ) -> None:
        super().__init__()
        choose("dataset", dataset, available_sources())
        if source_options is not None and not isinstance(source_options, dict):
            raise ConfigError(f"data.source_options must be a mapping such as {{image_size: 32}}, got {source_options!r}")
        # Unknown option names are refused here, not as a TypeError deep inside the loader.
        check_source_options(dataset, source_options or {}, sources._SOURCES[dataset])
        self.save_hyperparameters()
        self.dataset = dataset
        self.data_dir = data_dir
        self.download = download
        self.source_options = dict(source_options or {})
        self.eval_batch_size = eval_batch_size
        self.val_per_class = val_per_class
        self.val_seed = val_seed
        self._loaded: LoadedDataset | None = None
        self._train: RealData | None = None
        self._val: RealData | None = None
        self._test: RealData | None = None

    def check_settings(self) -> None:
        """Start-up check of the numbers (asked by :func:`~lightning_dd.preflight.preflight_fit`)."""
        values = {k: v for k, v in dict(self.hparams).items() if not isinstance(v, Mapping)}
        check_numbers(values, "data", defaults=defaults_of(type(self).__init__))

    def setup(self, stage: str | None = None) -> None:
        """Load the dataset once (later calls are free)."""
        if self._loaded is not None:
            return
        loaded = load_source(self.dataset, data_dir=str(Path(self.data_dir).expanduser()), download=self.download, **self.source_options)
        empty = [loaded.info.class_names[c] for c in range(loaded.info.num_classes) if not torch.any(loaded.train.labels == c)]
        if empty:
            raise DataError(f"dataset {self.dataset!r} has no training images for class(es) {', '.join(empty)}")
        train, val = split_validation(loaded.train, loaded.info, self.val_per_class, self.val_seed, self.dataset)
        self._loaded = loaded
        self._train = RealData(train, loaded.info)
        self._val = None if val is None else RealData(val, loaded.info)
        self._test = RealData(loaded.test, loaded.info)

    def _require(self) -> LoadedDataset:
        if self._loaded is None:
            self.setup()
        assert self._loaded is not None
        return self._loaded

    @property
    def info(self) -> DatasetInfo:
        """Facts about the dataset (classes, channels, size, normalisation)."""
        return self._require().info

    @property
    def train_data(self) -> RealData:
        """The training split with its class index."""
        self._require()
        assert self._train is not None
        return self._train

    @property
    def val_data(self) -> RealData | None:
        """The validation split held out of the training images (None when ``val_per_class`` is 0)."""
        self._require()
        return self._val

    @property
    def test_data(self) -> RealData:
        """The test split (used to measure accuracy, never to select results)."""
        self._require()
        assert self._test is not None
        return self._test

    def train_dataloader(self) -> StepTicker | DataLoader:
        """Step ticks for a module that samples real data itself, else shuffled (image, label) batches.

        A module with a ``steps_per_epoch`` attribute (DistillModule) draws class-balanced
        batches from :attr:`train_data` on its own device with a checkpointed generator, so the
        loader only fixes the epoch length. Any other LightningModule gets an ordinary loader.
        """
        module = self.trainer.lightning_module if self.trainer is not None else None
        steps = getattr(module, "steps_per_epoch", None)
        if steps is not None:
            return StepTicker(int(steps))
        train = self.train_data
        images = train.normalizer.uint8(train.images.cpu())
        return DataLoader(TensorDataset(images, train.labels.cpu()), batch_size=self.eval_batch_size, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        test = self.test_data
        images = test.normalizer.uint8(test.images.cpu())
        return DataLoader(TensorDataset(images, test.labels.cpu()), batch_size=self.eval_batch_size)


def split_validation(train: ImageSplit, info: DatasetInfo, per_class: int, seed: int, dataset: str) -> tuple[ImageSplit, ImageSplit | None]:
    """``(train without the validation images, validation)``: ``per_class`` images of every class drawn with ``seed``.

    The draw uses its own generator, so the split is the same whatever else the run seeds; every
    class keeps at least one training image.
    """
    if per_class <= 0:
        return train, None
    generator = torch.Generator().manual_seed(seed)
    held = []
    for c in range(info.num_classes):
        members = torch.nonzero(train.labels == c).flatten()
        if members.numel() <= per_class:
            raise DataError(f"data.val_per_class={per_class} leaves no training image of class {info.class_names[c]!r} in {dataset!r} ({members.numel()} images); use at most {members.numel() - 1}")
        held.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    val_index = torch.cat(held).sort().values
    keep = torch.ones(train.labels.numel(), dtype=torch.bool)
    keep[val_index] = False
    return ImageSplit(train.images[keep], train.labels[keep]), ImageSplit(train.images[val_index], train.labels[val_index])
