"""RealDataModule: the real dataset, in memory, for distillation and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from lightning_dd.data.real import RealData, data_digest
from lightning_dd.data.ticker import StepTicker
import lightning_dd.data.sources as sources
from lightning_dd.data.sources import DatasetInfo, ImageSplit, LoadedDataset, available_sources, load_source
from lightning_dd.utils.errors import ConfigError, DataError, choose
from lightning_dd.utils.validation import check_numbers, check_source_options, defaults_of

# The settings that decide which images a run distils on (not where they are read from, nor how
# the test split is batched): a resumed run must keep them.
DATA_IDENTITY = ("dataset", "source_options", "val_per_class", "val_seed")
# The state entry holding a short hash of the training split, for images that changed under the same settings.
DIGEST_KEY = "train_digest"


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

    The module records which data it served in its :meth:`state_dict`, which Lightning saves in
    every checkpoint; :meth:`load_state_dict` refuses to resume on other data, whether the run is
    resumed by ``lightning-dd fit --ckpt_path`` or by ``trainer.fit(..., ckpt_path=...)``.

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
            raise ConfigError(
                f"data.source_options must be a mapping such as {{image_size: 32}}, got {source_options!r}"
            )
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
        self._digest: str | None = None  # of the training split, computed once per load (see train_digest)

    def check_settings(self) -> None:
        """Start-up check of the numbers (asked by :func:`~lightning_dd.preflight.preflight_fit`)."""
        values = {k: v for k, v in dict(self.hparams).items() if not isinstance(v, Mapping)}
        check_numbers(values, "data", defaults=defaults_of(type(self).__init__))

    def setup(self, stage: str | None = None) -> None:
        """Load the dataset once (later calls are free)."""
        if self._loaded is not None:
            return
        loaded = load_source(
            self.dataset, data_dir=str(Path(self.data_dir).expanduser()), download=self.download, **self.source_options
        )
        empty = [
            loaded.info.class_names[c]
            for c in range(loaded.info.num_classes)
            if not torch.any(loaded.train.labels == c)
        ]
        if empty:
            raise DataError(f"dataset {self.dataset!r} has no training images for class(es) {', '.join(empty)}")
        train, val = split_validation(loaded.train, loaded.info, self.val_per_class, self.val_seed, self.dataset)
        self._loaded = loaded
        self._train = RealData(train, loaded.info)
        self._val = None if val is None else RealData(val, loaded.info)
        self._test = RealData(loaded.test, loaded.info)

    # ------------------------------------------------------------------ checkpoints
    def identity(self) -> dict[str, Any]:
        """The settings that decide which images are served (:data:`DATA_IDENTITY`), as a checkpoint stores them."""
        return {
            "dataset": self.dataset,
            "source_options": dict(self.source_options),
            "val_per_class": self.val_per_class,
            "val_seed": self.val_seed,
        }

    def train_digest(self) -> str:
        """A short sha256 of the training split's images and labels, computed once per load.

        Settings alone miss files replaced under the same name (an image folder edited between
        the run and its resume); the hash of the uint8 images does not.
        """
        if self._digest is None:
            self._digest = data_digest(self.train_data.images, self.train_data.labels)
        return self._digest

    def state_dict(self) -> dict[str, Any]:
        """Which data this module served; Lightning saves it in every checkpoint (``checkpoint["RealDataModule"]``)."""
        return {**self.identity(), DIGEST_KEY: self.train_digest()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Refuse to resume on other data than the checkpoint's (Lightning calls this when it restores one).

        Nothing is restored: the module holds no state besides the data it serves.
        """
        self.check_resume(state_dict)

    def check_resume(self, recorded: Mapping[str, Any], where: str = "the checkpoint") -> None:
        """Refuse other data than ``recorded`` (a :meth:`state_dict`): the synthetic images were learnt on it.

        The settings are compared first (other data may not even load); the training images are
        hashed only when ``recorded`` holds their digest.

        Raises:
            ConfigError: one sentence naming what differs.
        """
        check_same_data(recorded, self.identity(), where)
        if DIGEST_KEY in recorded:
            check_same_data(recorded, self.state_dict(), where)

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


def check_same_data(recorded: Mapping[str, Any], current: Mapping[str, Any], where: str = "the checkpoint") -> None:
    """Refuse, in one sentence, to resume on other data than a checkpoint's run distilled on.

    Only what both sides hold is compared, so a checkpoint from before a field was recorded
    (``datamodule_hyper_parameters`` of older ones, no digest) still resumes.

    Args:
        recorded: the checkpoint's record (:meth:`RealDataModule.state_dict`, or its data hyper-parameters).
        current: the same for the data of the resumed run (settings only before the data is loaded).
        where: how the refusal names the checkpoint (``"the checkpoint run.ckpt"``).

    Raises:
        ConfigError: naming the first setting that differs with both values, or the changed images.
    """
    for key in DATA_IDENTITY:
        if key == "val_seed" and not recorded.get("val_per_class"):
            continue  # no validation split was drawn: its seed chose nothing
        if key in recorded and key in current and _empty_as_none(recorded[key]) != _empty_as_none(current[key]):
            raise ConfigError(
                f"data.{key}={current[key]} differs from {recorded[key]} in {where}; a resumed run must use the data it started on, so set data.{key}: {recorded[key]} or start a new run without ckpt_path"
            )
    if DIGEST_KEY in recorded and DIGEST_KEY in current and recorded[DIGEST_KEY] != current[DIGEST_KEY]:
        raise ConfigError(
            f"the training images of data.dataset={current.get('dataset')} differ from those {where} was distilled on (digest {current[DIGEST_KEY]}, recorded {recorded[DIGEST_KEY]}); a resumed run must use the data it started on, so restore those files or start a new run without ckpt_path"
        )


def _empty_as_none(value: Any) -> Any:
    """``None`` and ``{}`` both mean no source options."""
    return None if value is None or value == {} else value


def split_validation(
    train: ImageSplit, info: DatasetInfo, per_class: int, seed: int, dataset: str
) -> tuple[ImageSplit, ImageSplit | None]:
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
            raise DataError(
                f"data.val_per_class={per_class} leaves no training image of class {info.class_names[c]!r} in {dataset!r} ({members.numel()} images); use at most {members.numel() - 1}"
            )
        held.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    val_index = torch.cat(held).sort().values
    keep = torch.ones(train.labels.numel(), dtype=torch.bool)
    keep[val_index] = False
    return ImageSplit(train.images[keep], train.labels[keep]), ImageSplit(
        train.images[val_index], train.labels[val_index]
    )
