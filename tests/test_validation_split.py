"""The validation split: held out of the training images before anything distils, pretrains, initialises or draws from them.

Every image of the ``indexed`` source carries its own index in two pixels, so a test can tell
from any uint8 batch which source images it holds, independently of how the library indexes them.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import fit, tiny_module

import lightning_dd.data.sources as sources
import lightning_dd.evaluation as evaluation_module
from lightning_dd import RealDataModule
from lightning_dd.callbacks import SyntheticEvaluation
from lightning_dd.classify import TrainSchedule
from lightning_dd.data.real import Normalizer, RealData
from lightning_dd.data.sources import ImageSplit, LoadedDataset, make_dataset
from lightning_dd.distill.pool import PoolConfig, pool_key, pool_key_fields
from lightning_dd.utils.errors import DataError
from lightning_dd.evaluation import evaluate_random_subsets
from lightning_dd.nets import NetSpec

PER_CLASS, CLASSES = 30, 10


def indexed_images(count: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 8x8 images whose pixels (0, 0) and (0, 1) spell their index (low byte, high byte)."""
    images = torch.randint(0, 256, (count, 1, 8, 8), generator=generator, dtype=torch.uint8)
    index = torch.arange(count)
    images[:, 0, 0, 0] = (index % 256).to(torch.uint8)
    images[:, 0, 0, 1] = (index // 256).to(torch.uint8)
    return images


def index_of(images: torch.Tensor) -> set[int]:
    """The source indices of a uint8 batch ``[N, 1, 8, 8]`` (written by :func:`indexed_images`)."""
    flat = images.reshape(-1, *images.shape[-3:])
    return set((flat[:, 0, 0, 0].long() + 256 * flat[:, 0, 0, 1].long()).tolist())


@pytest.fixture
def indexed_source():
    """Register ``indexed``: 30 training images per class in class-interleaved order, 10 test images per class."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(PER_CLASS * CLASSES) % CLASSES
    train = ImageSplit(indexed_images(labels.numel(), generator), labels)
    test = ImageSplit(
        torch.randint(0, 256, (100, 1, 8, 8), generator=generator, dtype=torch.uint8), torch.arange(100) % CLASSES
    )

    def load(data_dir: str = "data", download: bool = False) -> LoadedDataset:
        return make_dataset("indexed", train, test, [str(c) for c in range(CLASSES)], flip_ok=False)

    sources._SOURCES["indexed"] = load
    yield train
    del sources._SOURCES["indexed"]


def split_of(val_per_class: int, val_seed: int = 0) -> RealDataModule:
    dm = RealDataModule("indexed", val_per_class=val_per_class, val_seed=val_seed)
    dm.setup()
    return dm


def test_the_split_is_a_seeded_class_balanced_partition(indexed_source):
    dm = split_of(7)
    train, val = index_of(dm.train_data.images), index_of(dm.val_data.images)
    assert not train & val and train | val == set(range(PER_CLASS * CLASSES))
    assert dm.val_data.class_counts() == [7] * CLASSES and dm.train_data.class_counts() == [PER_CLASS - 7] * CLASSES
    # labels travel with their images: index i has label i % 10 in the source
    for split in (dm.train_data, dm.val_data):
        pairs = zip(
            (split.images[:, 0, 0, 0].long() + 256 * split.images[:, 0, 0, 1].long()).tolist(), split.labels.tolist()
        )
        assert all(i % CLASSES == y for i, y in pairs)
    assert index_of(split_of(7).val_data.images) == val  # same seed, same split
    assert index_of(split_of(7, val_seed=1).val_data.images) != val
    assert split_of(0).val_data is None and len(split_of(0).train_data) == PER_CLASS * CLASSES


def test_a_split_that_empties_a_class_is_refused(indexed_source):
    with pytest.raises(DataError, match=r"val_per_class=30 leaves no training image of class '0'.*use at most 29"):
        split_of(PER_CLASS)


def test_distillation_pool_init_and_random_real_never_see_validation_images(indexed_source, tmp_path, monkeypatch):
    """Every uint8 batch that is normalised for training (pool, matching, network update, random-real
    training) and every image the initialisation reads comes from the training split."""
    dm = split_of(10)
    val = index_of(dm.val_data.images)
    seen: set[int] = set()
    normalise = Normalizer.uint8
    monkeypatch.setattr(
        Normalizer, "uint8", lambda self, images: seen.update(index_of(images)) or normalise(self, images)
    )
    draw = RealData.class_sample_indices

    def spied_draw(self, c, n, generator):
        idx = draw(self, c, n, generator)
        seen.update(index_of(self.images[idx]))
        return idx

    monkeypatch.setattr(RealData, "class_sample_indices", spied_draw)
    for init, factor in (("real", 1), ("mix", 2)):
        module = tiny_module(str(tmp_path / "pools"), init=init, factor=factor, n_data=32)
        L.Trainer(
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
        ).fit(module, datamodule=dm)
    assert seen and not seen & val, "a validation image reached distillation, the pool or the initialisation"
    assert (
        len(seen) > PER_CLASS * CLASSES // 2
    )  # the spy saw the training images, so an empty intersection means something

    seen.clear()
    trained: set[int] = set()
    train_classifier = evaluation_module.train_classifier
    monkeypatch.setattr(
        evaluation_module,
        "train_classifier",
        lambda net, images, *a, **k: trained.update(index_of(images)) or train_classifier(net, images, *a, **k),
    )
    row = evaluate_random_subsets(
        3,
        dm.train_data,
        dm.test_data,
        NetSpec(width=8, depth=2),
        TrainSchedule(epochs=1, augment="none", cutmix_p=0.0),
        4,
        0,
        progress=False,
        val=dm.val_data,
    )
    assert len(trained) > 3 * CLASSES  # four draws of 30 images, not all the same
    assert not trained & val
    assert len(row.val_accuracies) == 4 and len(row.accuracies) == 4


def test_the_pool_cache_key_changes_with_the_split(indexed_source):
    net, config = NetSpec(width=8, depth=2), PoolConfig(size=2, epochs=1)
    keys = {
        pool_key(pool_key_fields(net, config, split_of(v, s).train_data, 0))
        for v, s in ((0, 0), (5, 0), (5, 1), (6, 0))
    }
    assert len(keys) == 4
    assert (
        pool_key(pool_key_fields(net, config, split_of(5, 0).train_data, 0)) in keys
    )  # and is stable for the same split


def test_evaluation_during_the_run_scores_validation_only(tmp_path, monkeypatch):
    """With a split, the periodic evaluations never train-and-score on the test split; the final one reports both."""
    import lightning_dd.callbacks.evaluation as callback_module

    dm = RealDataModule("digits", val_per_class=20)
    dm.setup()
    calls = []
    original = callback_module.evaluate_repeats

    def spied(name, images, labels, test, net, schedule, repeats, seed, device, progress, val=None):
        calls.append((test is dm.test_data, val is dm.val_data))
        return original(name, images, labels, test, net, schedule, repeats, seed, device, progress, val)

    monkeypatch.setattr(callback_module, "evaluate_repeats", spied)
    evaluation = SyntheticEvaluation(every_n_outer=1, repeats=1, epochs=1, baselines=False, progress=False)
    module = tiny_module(str(tmp_path / "pools"), outer_iterations=3, inner_loop=1, n_data=0)
    L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[evaluation],
        default_root_dir=tmp_path,
    ).fit(module, datamodule=dm)
    assert calls == [
        (False, False),
        (False, False),
        (True, True),
    ]  # two during the run (on validation), then the final one
    during = [result for _, result in evaluation.history[:-1]]
    assert all(r.val_accuracies and not r.accuracies for r in during)
    final = evaluation.history[-1][1]
    assert len(final.accuracies) == 1 and len(final.val_accuracies) == 1


def test_without_a_split_the_evaluation_scores_test_as_before(tmp_path):
    evaluation = SyntheticEvaluation(every_n_outer=1, repeats=1, epochs=1, baselines=False, progress=False)
    fit(
        tiny_module(str(tmp_path / "pools"), outer_iterations=2, inner_loop=1, n_data=0),
        callbacks=[evaluation],
        default_root_dir=tmp_path,
    )
    assert all(r.accuracies and not r.val_accuracies for _, r in evaluation.history)
