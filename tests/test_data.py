import pytest
import torch

from lightning_dd.data import RealDataModule, available_sources
from lightning_dd.utils.errors import ConfigError


def test_digits_split_is_fixed_and_stratified(digits):
    info = digits.info
    assert (info.name, info.num_classes, info.channels, info.image_size, info.flip_ok) == (
        "digits",
        10,
        1,
        (8, 8),
        False,
    )
    train, test = digits.train_data, digits.test_data
    assert len(train) + len(test) == 1797 and 340 < len(test) < 380
    assert min(train.class_counts()) > 130 and min(test.class_counts()) > 30
    again = RealDataModule("digits")
    again.setup()
    assert torch.equal(again.train_data.images, train.images) and torch.equal(again.test_data.labels, test.labels)


def test_class_balanced_batch(digits):
    train = digits.train_data
    g = torch.Generator().manual_seed(0)
    batch = train.class_balanced_batch(16, g)
    assert batch.shape == (10, 16, 1, 8, 8) and batch.dtype == torch.float32
    # each row holds images of its own class: compare with the class's normalised images
    for c in (0, 7):
        pool = train.normalizer.uint8(train.images[train.class_indices[c]])
        for img in batch[c]:
            assert torch.isclose(pool, img).flatten(1).all(1).any()
    # distinct images within a class draw
    idx = train.class_sample_indices(3, 50, torch.Generator().manual_seed(1))
    assert idx.unique().numel() == 50 and (train.labels[idx] == 3).all()


def test_random_batch_and_subset(digits):
    train = digits.train_data
    x, y = train.random_batch(100, torch.Generator().manual_seed(0))
    assert x.shape == (100, 1, 8, 8) and y.shape == (100,)
    idx = train.random_subset_indices(2, torch.Generator().manual_seed(0))
    assert torch.equal(train.labels[idx].bincount(minlength=10), torch.full((10,), 2))


def test_normalisation_uses_training_stats(digits):
    train = digits.train_data
    x = train.normalizer.uint8(train.images)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2


def test_unknown_dataset_is_one_sentence():
    assert "digits" in available_sources()
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet-22k'; choose one of: .*digits"):
        RealDataModule("imagenet-22k")
