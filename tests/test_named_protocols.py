"""Named evaluations: ``published`` is IDC's 1 000-epoch ConvNet-3 w128 evaluation, and a config cannot quietly run another under its name."""

from __future__ import annotations

import pytest

from lightning_dd.callbacks import SyntheticEvaluation
from lightning_dd.utils.errors import ConfigError
from lightning_dd.nets import NetSpec


def test_published_is_idcs_evaluation():
    evaluation = SyntheticEvaluation(protocol="published", progress=False)
    schedule = evaluation.schedule
    # IDC (argument.py, train.py): 1000 epochs for 28-32 px data, SGD 0.01 / 0.9 / 5e-4, batch 64, decay x0.2 at 2/3 and 5/6,
    # DSA color_crop_flip_scale_rotate with one spatial transform per batch, CutMix 0.5; ConvNet-3 width 128, instance norm.
    assert (schedule.epochs, schedule.lr, schedule.momentum, schedule.weight_decay, schedule.batch_size) == (
        1000,
        0.01,
        0.9,
        5e-4,
        64,
    )
    assert schedule.milestones == (2 / 3, 5 / 6) and schedule.gamma == 0.2
    assert (schedule.augment, schedule.spatial, schedule.cutmix_p, schedule.cutout_with_cutmix) == (
        "color_crop_flip_scale_rotate",
        "single",
        0.5,
        False,
    )
    assert evaluation.net == NetSpec(name="convnet", depth=3, width=128, norm="instance", pooling="avg")


def test_long_is_the_300_epoch_evaluation_and_no_protocol_keeps_the_fields():
    assert SyntheticEvaluation(protocol="long", progress=False).schedule.epochs == 300
    plain = SyntheticEvaluation(epochs=7, net=NetSpec(width=16), progress=False)
    assert plain.schedule.epochs == 7 and plain.net == NetSpec(width=16)


def test_a_field_that_contradicts_the_protocol_is_refused():
    with pytest.raises(
        ConfigError, match=r"evaluation.protocol=published fixes evaluation.epochs to 1000, but it is set to 300"
    ):
        SyntheticEvaluation(protocol="published", epochs=300, progress=False)
    with pytest.raises(ConfigError, match=r"fixes evaluation.net"):
        SyntheticEvaluation(protocol="published", net=NetSpec(width=64), progress=False)
    # restating the protocol's own value is fine
    assert (
        SyntheticEvaluation(
            protocol="published", epochs=1000, net=NetSpec(depth=3, width=128), progress=False
        ).schedule.epochs
        == 1000
    )


def test_an_unknown_protocol_is_named():
    with pytest.raises(ConfigError, match=r"evaluation.protocol.*'paper'.*long.*published"):
        SyntheticEvaluation(protocol="paper", progress=False)
