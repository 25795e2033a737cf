"""The authors' training protocol (defaults) and the options that keep the earlier behaviour.

Each test fails if its option is ignored: it counts optimiser steps and batch sizes, records the
transforms every augmentation call applies, or replays the generator by hand.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import lightning_dd.augment as augment
import lightning_dd.classify as classify
import lightning_dd.distill.distiller as distiller_file
from lightning_dd import DistillModule, NetSpec, PoolConfig
from lightning_dd.augment import DSA, SPATIAL, training_augmentation
from lightning_dd.callbacks import SyntheticEvaluation
from lightning_dd.classify import TrainSchedule, train_classifier
from lightning_dd.distill.image_step import image_step_for
from lightning_dd.distill.strategy import DistillDDPStrategy, check_processes
from lightning_dd.utils.errors import ConfigError

from helpers import fit, tiny_module


def attached(digits, **overrides) -> DistillModule:
    """A module with data attached, its Distiller built and an outer iteration begun, without a Trainer (IDC mode: no pool)."""
    settings = dict(
        ipc=1, factor=1, init="real", net=NetSpec(width=8, depth=2), model_source="random", batch_real=16, n_data=150
    )
    settings.update(overrides)
    module = DistillModule(**settings)
    module.attach_data(digits.info, digits.train_data)
    module._trainer = SimpleNamespace(world_size=1, global_rank=0)
    module.distiller = module.build_distiller()
    module.distiller.begin_outer()
    return module


def drive_matching(module: DistillModule, steps: int, momentum: float = 0.5) -> int:
    """Run ``steps`` matching steps outside a Trainer; returns how often the image optimiser stepped."""
    optimizer = torch.optim.SGD(module.synthetic.parameters(), lr=module.effective_lr_img, momentum=momentum)
    count = [0]
    original = optimizer.step

    def step(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    optimizer.step = step
    lightning_like = SimpleNamespace(step=step, zero_grad=optimizer.zero_grad, optimizer=optimizer)
    for _ in range(steps):
        module.distiller.matching_step(lightning_like, lambda loss, **kw: loss.backward(**kw))
    return count[0]


@pytest.fixture
def applied(monkeypatch):
    """Records the transform names of every DSA.apply call."""
    calls: list[tuple[str, ...]] = []
    original = DSA.apply

    def spy(self, x, draws, names=None):
        calls.append(self.names if names is None else names)
        return original(self, x, draws, names)

    monkeypatch.setattr(DSA, "apply", spy)
    return calls


def spy_batches(monkeypatch, target) -> list[int]:
    """Records the batch size of every ``augmented_loss`` call made through ``target``'s module."""
    sizes: list[int] = []
    original = augment.augmented_loss

    def spy(logits_fn, x, y, *args, **kwargs):
        sizes.append(x.shape[0])
        return original(logits_fn, x, y, *args, **kwargs)

    monkeypatch.setattr(target, "augmented_loss", spy)
    return sizes


# ------------------------------------------------------------------ network update batch


# n_data=150 images in whole batches, as the authors' loop (it stops once 150 have been seen):
# ceil(150 / 16) = 10 batches of 16, ceil(150 / 64) = 3 batches of 64; or exactly 150 images.
@pytest.mark.parametrize(
    "net_batch_size, whole, expected",
    [(None, True, [16] * 10), (64, True, [64] * 3), (None, False, [16] * 9 + [6]), (64, False, [64, 64, 22])],
)
def test_network_update_runs_whole_batches_of_batch_real_by_default(
    digits, monkeypatch, net_batch_size, whole, expected
):
    module = attached(digits, net_batch_size=net_batch_size, net_whole_batches=whole)
    sizes = spy_batches(monkeypatch, distiller_file)
    steps = []
    original = module.state.net_optimizer.step
    module.state.net_optimizer.step = lambda *a, **k: (steps.append(1), original(*a, **k))
    module.distiller.network_step()
    assert sizes == expected and len(steps) == len(expected)


def test_pool_pretraining_batches_are_64_by_default(digits, monkeypatch, tmp_path):
    from lightning_dd.distill.pool import EarlyStagePool

    sizes = spy_batches(monkeypatch, classify)
    EarlyStagePool.pretrain(
        NetSpec(width=4, depth=1), PoolConfig(size=1, epochs=1, cache_dir=str(tmp_path)), digits.train_data, seed=0
    )
    n = digits.train_data.images.shape[0]
    assert PoolConfig().batch_size == 64
    assert sizes == [64] * (n // 64) + ([n % 64] if n % 64 else [])


# ------------------------------------------------------------------ augmentation of classifiers


def test_cutout_is_dropped_only_when_cutmix_is_on():
    assert "cutout" not in training_augmentation("color_crop_cutout", cutmix_p=0.5).names
    assert "cutout" in training_augmentation("color_crop_cutout", cutmix_p=0.0).names
    assert "cutout" in training_augmentation("color_crop_cutout", cutmix_p=0.5, cutout_with_cutmix=True).names
    assert training_augmentation("cutout", cutmix_p=0.5).names == ()


def test_single_spatial_applies_exactly_the_drawn_transform():
    x = torch.randn(6, 3, 12, 12)
    dsa = DSA("color_crop_flip_scale_rotate", spatial="single")
    seen = set()
    for seed in range(12):
        out = dsa(x, torch.Generator().manual_seed(seed))
        replay = torch.Generator().manual_seed(seed)
        draws = torch.rand(6, 11, generator=replay)  # the per-image draws come first ...
        chosen = ("crop", "scale", "rotate")[int(torch.randint(3, (1,), generator=replay))]  # ... then the transform
        torch.testing.assert_close(out, DSA(f"color_flip_{chosen}").apply(x, draws))
        seen.add(chosen)
    assert seen == {"crop", "scale", "rotate"}
    all_of_them = DSA("color_crop_flip_scale_rotate", spatial="all")
    g, replay = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(all_of_them(x, g), all_of_them.apply(x, torch.rand(6, 11, generator=replay)))


def test_unknown_spatial_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="spatial"):
        DSA("color", spatial="some")
    with pytest.raises(ConfigError, match="spatial"):
        PoolConfig(spatial="some")
    with pytest.raises(ConfigError, match="spatial"):
        SyntheticEvaluation(spatial="some")


def one_spatial_each(calls) -> bool:
    return all(sum(n in SPATIAL for n in names) == 1 for names in calls)


@pytest.mark.parametrize("spatial", ["single", "all"])
def test_evaluation_training_follows_the_spatial_rule(digits, applied, spatial):
    schedule = TrainSchedule(
        epochs=3, batch_size=64, augment="color_crop_cutout_flip_scale_rotate", cutmix_p=0.5, spatial=spatial
    )
    images, labels = digits.train_data.images[:256].float() / 255, digits.train_data.labels[:256]
    train_classifier(
        NetSpec(width=4, depth=1).build_seeded(0, 1, 10, (8, 8)),
        images,
        labels,
        schedule,
        torch.Generator().manual_seed(0),
        flip_ok=False,
    )
    assert len(applied) == 12 and all(
        "cutout" not in names and "flip" not in names and "color" in names for names in applied
    )
    if spatial == "single":
        assert one_spatial_each(applied) and len({names for names in applied}) > 1
    else:
        assert all(set(SPATIAL) <= set(names) for names in applied)


def test_evaluation_callback_passes_its_protocol_on():
    schedule = SyntheticEvaluation(
        augment="color_crop_cutout_scale_rotate", spatial="all", cutout_with_cutmix=True
    ).schedule
    assert (schedule.spatial, schedule.cutout_with_cutmix) == ("all", True)
    assert "cutout" in schedule.augmentation().names and SyntheticEvaluation().schedule.spatial == "single"


def test_network_update_follows_the_rule_and_matching_keeps_the_full_strategy(digits, applied):
    module = attached(digits, augment="color_crop_cutout_scale_rotate")
    module.distiller.network_step()
    update_calls = list(applied)
    assert update_calls and one_spatial_each(update_calls) and all("cutout" not in n for n in update_calls)
    applied.clear()
    drive_matching(module, 1)
    assert len(applied) == 10 and all(names == ("color", "crop", "cutout", "scale", "rotate") for names in applied)


def test_network_update_keeps_the_old_augmentation_one_setting_away(digits, applied):
    module = attached(digits, augment="color_crop_cutout_scale_rotate", net_spatial="all", net_cutout_with_cutmix=True)
    module.distiller.network_step()
    assert applied and all(names == ("color", "crop", "cutout", "scale", "rotate") for names in applied)


@pytest.mark.parametrize("spatial, cutout_with_cutmix", [("single", False), ("all", True)])
def test_pool_pretraining_follows_its_settings(digits, applied, tmp_path, spatial, cutout_with_cutmix):
    from lightning_dd.distill.pool import EarlyStagePool

    config = PoolConfig(
        size=1,
        epochs=1,
        augment="color_crop_cutout_scale_rotate",
        spatial=spatial,
        cutout_with_cutmix=cutout_with_cutmix,
        cache_dir=str(tmp_path),
    )
    EarlyStagePool.pretrain(NetSpec(width=4, depth=1), config, digits.train_data, seed=0)
    if spatial == "single":
        assert applied and one_spatial_each(applied) and all("cutout" not in n for n in applied)
    else:
        assert applied and all(n == ("color", "crop", "cutout", "scale", "rotate") for n in applied)


# ------------------------------------------------------------------ image step and clamping


@pytest.mark.parametrize("image_step, per_inner", [("per_class", 10), ("per_iteration", 1)])
def test_image_optimiser_steps_per_class_or_per_iteration(digits, image_step, per_inner):
    assert drive_matching(attached(digits, image_step=image_step, per_class_impl="loop"), 2) == 2 * per_inner


def test_the_per_class_replay_writes_the_steps_and_calls_the_optimiser_once_for_lightning(digits):
    """The replay's steps equal the loop's (tests/test_per_class_replay.py); Lightning still counts one step."""
    assert drive_matching(attached(digits, image_step="per_class", per_class_impl="replay"), 2) == 2


@pytest.mark.parametrize("image_step", ["per_class", "per_iteration"])
def test_one_global_step_per_inner_iteration(pool_dir, image_step):
    trainer = fit(
        tiny_module(pool_dir, model_source="random", outer_iterations=1, inner_loop=2, n_data=0, image_step=image_step)
    )
    assert trainer.global_step == 2


def test_per_class_steps_equal_the_summed_step_without_momentum_and_differ_with_it(digits):
    """Class c's loss depends only on class c's images, so without momentum the order of steps cannot matter."""
    results = {}
    for momentum in (0.0, 0.5):
        for image_step in ("per_class", "per_iteration"):
            module = attached(digits, image_step=image_step, lr_img=0.1)
            drive_matching(module, 3, momentum)
            results[momentum, image_step] = module.synthetic.images.detach().clone()
    torch.testing.assert_close(results[0.0, "per_class"], results[0.0, "per_iteration"], rtol=0, atol=1e-5)
    assert (results[0.5, "per_class"] - results[0.5, "per_iteration"]).abs().max() > 1e-4


@pytest.mark.parametrize("clamp", ["per_outer", "per_step"])
def test_clamping_once_per_outer_iteration_or_after_every_step(digits, clamp):
    # A large image learning rate pushes pixels far outside [0, 1] within one outer iteration.
    module = attached(digits, lr_img=1e4, clamp=clamp)
    drive_matching(module, 2)
    raw = module.synthetic.images.detach()
    assert bool(((raw < 0) | (raw > 1)).any()) == (clamp == "per_outer")
    module.distiller.begin_outer()  # the next outer iteration starts from clamped pixels
    assert float(module.synthetic.images.min()) >= 0 and float(module.synthetic.images.max()) <= 1


def test_only_the_per_class_loop_refuses_class_chunks_and_several_processes(pool_dir, digits):
    """The replay takes every class's gradient at once, so chunks and class sharding are fine with it."""
    with pytest.raises(ConfigError, match="classes_per_pass"):
        tiny_module(pool_dir, classes_per_pass=2, image_step="per_class", per_class_impl="loop")
    tiny_module(pool_dir, classes_per_pass=2, image_step="per_class", per_class_impl="replay")
    two_processes = SimpleNamespace(world_size=2, strategy=DistillDDPStrategy.__new__(DistillDDPStrategy))
    check_processes(two_processes, image_step_for("per_class", "replay", clamp_each_step=False))
    check_processes(two_processes, image_step_for("per_iteration", "loop", clamp_each_step=False))
    with pytest.raises(ConfigError, match="per_class_impl=replay"):
        check_processes(two_processes, image_step_for("per_class", "loop", clamp_each_step=False))
    module = tiny_module(pool_dir, image_step="per_class", per_class_impl="loop")
    module._trainer = SimpleNamespace(datamodule=digits, **vars(two_processes))
    module.validated = True  # a stand-in trainer: only setup's own multi-process check is under test
    with pytest.raises(ConfigError, match="per_class_impl=replay"):
        module.setup("fit")


@pytest.mark.parametrize("mode", ["nearest", "antialias"])
def test_mix_downsample_reaches_the_initial_images(digits, mode):
    """digits 8x8, factor 2: nearest tiles are every other real pixel, antialiased ones are not."""
    module = attached(digits, init="mix", factor=2, mix_downsample=mode)
    tiles = module.synthetic.images.detach().unfold(2, 4, 4).unfold(3, 4, 4).reshape(-1, 4, 4)
    nearest = digits.train_data.images.float()[:, 0, ::2, ::2] / 255
    matched = [bool(((nearest - tile).abs().flatten(1).max(1).values < 1e-6).any()) for tile in tiles]
    assert all(matched) if mode == "nearest" else not any(matched)


def test_defaults_are_the_authors_protocol():
    hp = DistillModule().hparams
    assert hp.mix_downsample == "nearest" and hp.net_whole_batches is True
    assert (hp.net_batch_size, hp.net_spatial, hp.net_cutout_with_cutmix, hp.clamp, hp.image_step) == (
        None,
        "single",
        False,
        "per_outer",
        "per_class",
    )
    pool = PoolConfig()
    assert (pool.batch_size, pool.spatial, pool.cutout_with_cutmix) == (64, "single", False)
    assert pool.schedule().augmentation().names == ("color", "crop")  # the matching strategy minus cutout
    schedule = TrainSchedule()
    assert (schedule.spatial, schedule.cutout_with_cutmix) == ("single", False)
    assert math.isclose(schedule.cutmix_p, 0.5)
