"""The early-stage pool: what its cache key covers, when it is rebuilt, how members are trained and drawn."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from lightning_dd.classify import TrainSchedule
from lightning_dd.data.real import RealData
from lightning_dd.data.sources import ImageSplit
from lightning_dd.distill import pool as pool_module
from lightning_dd.distill.pool import EarlyStagePool, PoolConfig, pool_key, pool_key_fields
from lightning_dd.nets import NetSpec

NET = NetSpec(width=8, depth=2)


def copy_of(real: RealData, images=None, labels=None) -> RealData:
    split = ImageSplit(
        real.images.clone() if images is None else images, real.labels.clone() if labels is None else labels
    )
    return RealData(split, real.info)


def key(real, config=None, net=NET, seed=0):
    return pool_key(pool_key_fields(net, config or PoolConfig(size=2, epochs=0), real, seed))


@pytest.fixture
def count_pretraining(monkeypatch):
    """Counts how often the pool is actually pretrained (instead of loaded)."""
    calls = []
    original = EarlyStagePool.pretrain.__func__

    def counting(cls, *args, **kwargs):
        calls.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(EarlyStagePool, "pretrain", classmethod(counting))
    return calls


def test_changed_pixels_or_labels_of_the_same_shape_give_another_key(digits):
    train = digits.train_data
    base = key(train)
    assert key(copy_of(train)) == base  # same contents, same key
    images = train.images.clone()
    images[7, 0, 3, 3] = 255 - images[7, 0, 3, 3]
    assert key(copy_of(train, images=images)) != base
    images = train.images.clone()
    images[[0, 1]] = images[[1, 0]]  # same pixels overall, another order
    assert key(copy_of(train, images=images)) != base
    labels = train.labels.clone()
    labels[[0, 1]] = labels[[1, 0]]
    assert labels[0] != labels[1] and key(copy_of(train, labels=labels)) != base


def test_a_changed_dataset_is_pretrained_again_not_loaded_from_the_cache(digits, pool_dir, count_pretraining):
    train, config = digits.train_data, PoolConfig(size=2, epochs=0, cache_dir=pool_dir)
    first = EarlyStagePool.build_or_load(NET, config, train, seed=0, progress=False)
    EarlyStagePool.build_or_load(NET, config, copy_of(train), seed=0, progress=False)
    assert len(count_pretraining) == 1  # identical data: loaded
    images = train.images.clone()
    images[0] = 255 - images[0]
    second = EarlyStagePool.build_or_load(NET, config, copy_of(train, images=images), seed=0, progress=False)
    assert len(count_pretraining) == 2 and second.key != first.key
    assert len(list(Path(pool_dir).glob("pool-*.pt"))) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"size": 3},
        {"epochs": 1},
        {"lr": 0.02},
        {"momentum": 0.5},
        {"weight_decay": 1e-3},
        {"batch_size": 32},
        {"augment": "color"},
        {"cutmix_p": 0.0},
    ],
)
def test_every_training_setting_is_in_the_key(digits, change):
    config = PoolConfig(
        size=2, epochs=0, lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=64, augment="color_crop", cutmix_p=0.5
    )
    assert key(digits.train_data, dataclasses.replace(config, **change)) != key(digits.train_data, config)


def test_seed_and_net_are_in_the_key_and_the_cache_folder_is_not(digits, tmp_path):
    train, config = digits.train_data, PoolConfig(size=2, epochs=0)
    base = key(train, config)
    assert key(train, config, seed=1) != base
    assert key(train, config, net=NetSpec(width=16, depth=2)) != base
    assert key(train, config, net=NetSpec(width=8, depth=3)) != base
    assert key(train, dataclasses.replace(config, cache_dir=str(tmp_path))) == base


def test_cache_file_for_other_settings_under_the_same_name_is_rebuilt_and_replaced(digits, pool_dir, count_pretraining):
    train, config = digits.train_data, PoolConfig(size=2, epochs=0, cache_dir=pool_dir)
    fields = pool_key_fields(NET, config, train, 0)
    path = EarlyStagePool.cache_path(config, pool_key(fields))
    path.parent.mkdir(parents=True)
    stale = {
        "format": "lightning-dd/pool",
        "version": 1,
        "key": pool_key(fields),
        "fields": {**fields, "data": "stale"},
        "members": [{"x": torch.zeros(1)}],
    }
    torch.save(stale, path)
    pool = EarlyStagePool.build_or_load(NET, config, train, seed=0, progress=False)
    assert len(count_pretraining) == 1 and "features.0.weight" in pool.members[0]
    reloaded = EarlyStagePool.load(path, expected_fields=fields)  # the stale file was overwritten
    assert torch.equal(reloaded.members[1]["features.0.weight"], pool.members[1]["features.0.weight"])


def test_loaded_pool_equals_the_one_written(digits, pool_dir, count_pretraining):
    config = PoolConfig(size=2, epochs=1, batch_size=256, cache_dir=pool_dir)
    built = EarlyStagePool.build_or_load(NET, config, digits.train_data, seed=3, progress=False)
    loaded = EarlyStagePool.build_or_load(NET, config, digits.train_data, seed=3, progress=False)
    assert len(count_pretraining) == 1 and loaded.key == built.key and loaded.fields == built.fields
    for a, b in zip(built.members, loaded.members):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_member_m_starts_from_seed_plus_m(digits, pool_dir):
    """With zero epochs the members are the seeded initial networks, one seed per member."""
    pool = EarlyStagePool.build_or_load(
        NET, PoolConfig(size=3, epochs=0, cache_dir=pool_dir), digits.train_data, seed=5, progress=False
    )
    for m in range(3):
        expected = NET.build_seeded(5 + m, 1, 10, (8, 8)).state_dict()
        assert all(torch.equal(pool.members[m][k], expected[k]) for k in expected)


def test_members_are_trained_with_the_configured_schedule_and_their_own_generator(digits, pool_dir, monkeypatch):
    calls = []
    original = pool_module.train_classifier

    def recording(model, images, labels, schedule, generator, flip_ok, transform, progress):
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        calls.append(
            dict(
                initial=initial,
                schedule=copy.deepcopy(schedule),
                generator_state=generator.get_state(),
                flip_ok=flip_ok,
                n=images.shape[0],
            )
        )
        return original(model, images, labels, schedule, generator, flip_ok, transform, progress)

    monkeypatch.setattr(pool_module, "train_classifier", recording)
    config = PoolConfig(
        size=2,
        epochs=1,
        lr=0.03,
        momentum=0.8,
        weight_decay=1e-3,
        batch_size=200,
        augment="color_crop",
        cutmix_p=0.25,
        cache_dir=pool_dir,
    )
    pool = EarlyStagePool.build_or_load(NET, config, digits.train_data, seed=7, progress=False)
    assert len(calls) == 2
    for m, call in enumerate(calls):
        s = call["schedule"]
        assert isinstance(s, TrainSchedule)
        assert (s.epochs, s.lr, s.momentum, s.weight_decay, s.batch_size, s.augment, s.cutmix_p) == (
            1,
            0.03,
            0.8,
            1e-3,
            200,
            "color_crop",
            0.25,
        )
        assert tuple(s.milestones) == ()  # no learning-rate decay in pretraining
        assert call["flip_ok"] is False and call["n"] == len(
            digits.train_data
        )  # every training image; digits never flip
        assert torch.equal(call["generator_state"], torch.Generator().manual_seed(7 + m).get_state())
        expected_init = NET.build_seeded(7 + m, 1, 10, (8, 8)).state_dict()
        assert all(torch.equal(call["initial"][k], expected_init[k]) for k in expected_init)
        # the stored member is the trained network, not its initialisation
        assert not torch.equal(pool.members[m]["features.0.weight"], expected_init["features.0.weight"])


def test_draw_is_uniform_over_members_with_an_exclusive_upper_bound():
    pool = EarlyStagePool([{}] * 4, "k", {})
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([pool.draw(g) for _ in range(4000)]), minlength=5)
    assert counts[4] == 0  # never M
    assert counts[:4].min() > 900 and counts[:4].max() < 1100
    one = EarlyStagePool([{}], "k", {})
    assert {one.draw(g) for _ in range(50)} == {0}


def test_the_key_of_the_default_pool_settings_never_changes():
    """Pools cached by earlier versions stay valid: the key of PoolConfig() on fixed data is pinned."""
    from lightning_dd.data.sources import DatasetInfo

    info = DatasetInfo("fake", 2, 1, (4, 4), (0.5,), (0.25,), ("a", "b"), False)
    images = torch.arange(2 * 16, dtype=torch.uint8).view(2, 1, 4, 4)
    real = RealData(ImageSplit(images, torch.tensor([0, 1])), info)
    fields = pool_key_fields(NetSpec(width=8, depth=2), PoolConfig(), real, 0)
    assert fields["pool"] == {
        "size": 5,
        "epochs": 2,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "batch_size": 64,
        "augment": "color_crop_cutout",
        "cutmix_p": 0.5,
        "spatial": "single",
        "cutout_with_cutmix": False,
    }
    assert pool_key(fields) == "cc59caf517f5eabe9297"


SCHEDULE_FIELDS = {"epochs", "lr", "momentum", "weight_decay", "batch_size", "augment", "cutmix_p", "spatial", "cutout_with_cutmix"}  # fmt: skip


def test_the_pool_schedule_is_its_train_schedule_fields_with_a_constant_learning_rate():
    """PoolConfig spells a TrainSchedule under its own config keys: every shared field reaches schedule()."""
    pool_fields = {f.name for f in dataclasses.fields(PoolConfig)}
    assert {f.name for f in dataclasses.fields(TrainSchedule)} & pool_fields == SCHEDULE_FIELDS
    changed = PoolConfig(
        epochs=3, lr=0.03, momentum=0.5, weight_decay=1e-3, batch_size=7, augment="color_crop", cutmix_p=0.25, spatial="all", cutout_with_cutmix=True
    )  # fmt: skip
    schedule = changed.schedule()
    assert {name: getattr(schedule, name) for name in SCHEDULE_FIELDS} == {
        name: getattr(changed, name) for name in SCHEDULE_FIELDS
    }
    assert schedule.milestones == () and schedule.gamma == TrainSchedule.gamma
    own = {"epochs": 2, "augment": "color_crop_cutout"}  # the pool's own defaults; the rest are TrainSchedule's
    for name in SCHEDULE_FIELDS:
        assert getattr(PoolConfig(), name) == own.get(name, getattr(TrainSchedule(), name)), name
