"""SyntheticDataModule: an exported set as a LightningDataModule for any user model."""

import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from lightning_dd import SyntheticDataModule
from lightning_dd.classify import TrainSchedule
from lightning_dd.data import DatasetInfo
from lightning_dd.utils.errors import ConfigError, FileFormatError
from lightning_dd.evaluation import evaluate_repeats
from lightning_dd.export import save_distilled
from lightning_dd.nets import NetSpec

INFO = DatasetInfo("digits", 10, 1, (8, 8), (0.3,), (0.4,), tuple(str(i) for i in range(10)), False)


class UserClassifier(L.LightningModule):
    """What a user would write: their own LightningModule around a network, plain SGD."""

    def __init__(
        self,
        net: torch.nn.Module,
        num_classes: int,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
    ) -> None:
        super().__init__()
        self.net, self.lr, self.momentum, self.weight_decay = net, lr, momentum, weight_decay
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc(self(x), y)
        self.log("val_acc", self.val_acc)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc(self(x), y)
        self.log("test_acc", self.test_acc)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


def quiet_trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture
def export(tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(20, 1, 8, 8, generator=generator)
    return save_distilled(tmp_path / "set.pt", images, torch.arange(10).repeat_interleave(2), 2, INFO, {"ipc": 2})


def test_decodes_and_normalises_with_the_stored_statistics(export):
    dm = SyntheticDataModule(export, batch_size=16)
    assert dm.num_classes == 10 and dm.info == INFO and dm.class_names == INFO.class_names
    decoded, labels = dm.distilled.decoded()
    assert dm.train_images.shape == (80, 1, 8, 8) and torch.equal(dm.train_labels, labels)
    assert torch.allclose(dm.train_images, (decoded - 0.3) / 0.4)
    batches = list(dm.train_dataloader())
    assert [b[0].shape[0] for b in batches] == [16] * 5
    seen = torch.cat([b[1] for b in batches])
    assert torch.equal(seen.sort().values, labels.sort().values) and not torch.equal(seen, labels)  # shuffled
    assert dm.val_dataloader() == [] and dm.test_dataloader() == []  # no real test split attached


def test_shuffling_and_augmentation_are_seeded(export):
    def first_batch(seed, augment):
        return next(iter(SyntheticDataModule(export, batch_size=80, augment=augment, seed=seed).train_dataloader()))

    plain_x, plain_y = first_batch(0, "none")
    aug_x, aug_y = first_batch(0, "crop_cutout_flip")
    assert torch.equal(plain_y, aug_y)  # augmentation does not change the order
    assert not torch.allclose(plain_x, aug_x) and aug_x.shape == plain_x.shape
    again_x, _ = first_batch(0, "crop_cutout_flip")
    assert torch.equal(aug_x, again_x)
    other_x, other_y = first_batch(1, "crop_cutout_flip")
    assert not torch.equal(other_y, aug_y)
    # Two epochs draw different orders and augmentations.
    loader = SyntheticDataModule(export, batch_size=80, augment="crop", seed=0).train_dataloader()
    (_, y1), (_, y2) = next(iter(loader)), next(iter(loader))
    assert not torch.equal(y1, y2)


def test_augmentation_in_worker_processes(export):
    dm = SyntheticDataModule(export, batch_size=40, augment="crop_cutout", num_workers=2, seed=3)
    a = [x for x, _ in dm.train_dataloader()]
    b = [
        x
        for x, _ in SyntheticDataModule(
            export, batch_size=40, augment="crop_cutout", num_workers=2, seed=3
        ).train_dataloader()
    ]
    assert len(a) == 2 and all(torch.equal(p, q) for p, q in zip(a, b))  # reproducible across runs


def test_real_test_split_is_normalised_like_the_export(export, digits):
    dm = SyntheticDataModule(export, real_test=digits)
    dm.setup("fit")
    x, y = next(iter(dm.test_dataloader()))
    test = digits.test_data
    n = x.shape[0]
    assert torch.allclose(x, (test.images[:n].float() / 255 - 0.3) / 0.4) and torch.equal(y, test.labels[:n])
    by_name = SyntheticDataModule(export, real_test=True)  # the dataset named in the export
    assert len(by_name.val_dataloader().dataset) == len(test)


def test_user_errors_are_one_sentence(tmp_path, export):
    with pytest.raises(FileFormatError, match="no distilled set at"):
        SyntheticDataModule(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="unknown augmentation 'blur'"):
        SyntheticDataModule(export, augment="crop_blur")
    with pytest.raises(ConfigError, match="unknown dataset 'mnist-ish'"):
        SyntheticDataModule(export, real_test="mnist-ish")
    other = DatasetInfo("toy", 3, 3, (6, 6), (0.5,) * 3, (0.2,) * 3, ("a", "b", "c"), True)
    wrong = save_distilled(tmp_path / "rgb.pt", torch.rand(3, 3, 6, 6), torch.arange(3), 1, other)
    with pytest.raises(ConfigError, match="real test set 'digits' has 10 classes of 1x8x8"):
        SyntheticDataModule(wrong, real_test="digits").setup()


def test_fit_without_real_test_split(export):
    dm = SyntheticDataModule(export, batch_size=32, augment="crop")
    model = UserClassifier(NetSpec(width=8, depth=2).build(1, 10, (8, 8)), 10)
    trainer = quiet_trainer(max_epochs=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*across ranks is zero.*")  # the empty validation loader
        trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2 * 3


def test_user_module_matches_lightning_dd_evaluation(tmp_path, digits):
    """Acceptance: a user's own LightningModule trained through SyntheticDataModule reaches the
    accuracy that ``evaluate_repeats`` reports for the same set and the same SGD settings.

    Set: a random real subset of 10 digits per class, saved with ``save_distilled``. Both sides
    train a width-16 ConvNet for 40 epochs (SGD lr 0.01, momentum 0.9, wd 5e-4, batch 32, no
    augmentation, no CutMix, no lr decay), so they differ only in network initialisation and batch
    order. The test split has 360 images (one image = 0.28 points) and 100-image training sets
    give networks whose accuracy varies by a few points from seed to seed; averaging 3 networks
    per side keeps the mean difference well inside 8 points, while a real mismatch (wrong
    normalisation, wrong labels, no shuffling, a broken loader) costs tens of points.
    """
    train = digits.train_data
    idx = train.random_subset_indices(10, torch.Generator().manual_seed(0))
    path = save_distilled(
        tmp_path / "subset.pt",
        train.images[idx].float() / 255,
        train.labels[idx],
        1,
        digits.info,
        {"note": "random real subset"},
    )

    net, epochs, batch, repeats = NetSpec(width=16, depth=2), 40, 32, 3
    schedule = TrainSchedule(epochs=epochs, lr=0.01, batch_size=batch, milestones=(), augment="none", cutmix_p=0.0)
    reference = evaluate_repeats(
        "subset", train.images[idx], train.labels[idx], digits.test_data, net, schedule, repeats, seed=0, progress=False
    )

    accuracies = []
    for seed in range(repeats):
        dm = SyntheticDataModule(path, batch_size=batch, real_test=digits, seed=100 + seed)
        model = UserClassifier(
            net.build_seeded(100 + seed, dm.info.channels, dm.num_classes, dm.info.image_size), dm.num_classes
        )
        trainer = quiet_trainer(max_epochs=epochs, limit_val_batches=0)
        trainer.fit(model, datamodule=dm)
        accuracies.append(100.0 * trainer.test(model, datamodule=dm, verbose=False)[0]["test_acc"])
    mine = sum(accuracies) / len(accuracies)
    assert reference.mean > 50 and mine > 50, (reference.accuracies, accuracies)  # both well above chance (10 %)
    assert abs(mine - reference.mean) <= 8.0, (reference.accuracies, accuracies)
