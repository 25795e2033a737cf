"""Any network: torchvision's ResNet-18 or a user's own nn.Module, named by import path, distils and evaluates.

The user's network is defined here and named ``test_any_network.TinyNet`` (pytest puts the tests
folder on ``sys.path``). Digits are grey 8x8 images, so ResNet-18 (RGB, batch norm, 1x1 maps
after its second stage) exercises the grey-to-RGB input, batch-norm running statistics under
functional calls and the generic head.
"""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from lightning_dd.callbacks.evaluation import SyntheticEvaluation
from lightning_dd.cli import main, run_cli
from lightning_dd.distill.functional_net import FunctionalNet
from lightning_dd.distill.matching import class_matching_loss
from lightning_dd.distill.network import MatchNetwork
from lightning_dd.distill.pool import PoolConfig, pool_key_fields
from lightning_dd.utils.errors import ConfigError
from lightning_dd.nets import NetSpec, head_parameter_names
from lightning_dd.nets.imported import RepeatGrey
from lightning_dd.utils.validation import check_net_fits

from helpers import CLI_TINY, fit, tiny_distill


class TinyNet(nn.Module):
    """A user's network: two convolutions, global pooling, a linear head named ``head``."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def not_a_network(num_classes: int) -> int:
    return num_classes


CONSTANT = 3


# Named by import path; built once the module defines what they name.
RESNET18 = NetSpec(name="torchvision.models.resnet18")
TINY = NetSpec(name="test_any_network.TinyNet", kwargs={"width": 4})


# ------------------------------------------------------------------------ the spec
def test_built_in_specs_record_what_they_always_did():
    """Pool and teacher cache keys hash to_dict(): a built-in network's must not change."""
    assert NetSpec().to_dict() == {"name": "convnet", "depth": 3, "width": 128, "norm": "instance", "pooling": "avg"}
    assert NetSpec(name="resnet_ap", depth=10, width=8, norm="batch", kwargs={}).to_dict() == {
        "name": "resnet_ap",
        "depth": 10,
        "width": 8,
        "norm": "batch",
        "pooling": "avg",
    }
    with pytest.raises(ConfigError, match="is built in and takes depth"):
        NetSpec(kwargs={"width": 4})


def test_imported_spec_round_trips_and_ignores_built_in_fields(digits):
    spec = NetSpec(name="torchvision.models.resnet18", depth=2, width=8, kwargs={"zero_init_residual": True})
    assert spec.to_dict() == {"name": "torchvision.models.resnet18", "kwargs": {"zero_init_residual": True}}
    assert NetSpec(**spec.to_dict()) == spec and spec.depth == 3 and spec.width == 128
    assert spec.describe() == "torchvision.models.resnet18(zero_init_residual=True)"
    assert pool_key_fields(spec, PoolConfig(size=1, epochs=0), digits.train_data, 0)["net"] == spec.to_dict()
    with pytest.raises(ConfigError, match="plain values"):
        NetSpec(name="torchvision.models.resnet18", kwargs={"norm_layer": nn.BatchNorm2d})


def test_resnet18_on_grey_digits_repeats_the_channel_and_matches_all_but_its_head(digits):
    info = digits.info
    net = RESNET18.build(info.channels, info.num_classes, info.image_size)
    assert isinstance(net, RepeatGrey) and net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert head_parameter_names(net) == {"net.fc.weight", "net.fc.bias"}
    matched = MatchNetwork.build(RESNET18, info, 0, match_bias=False, match_head=False).matched
    convs = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    assert set(matched) == {f"{n}.weight" for n in convs}  # every convolution, no norm, not the head
    check_net_fits(RESNET18, info.channels, info.num_classes, info.image_size, "model.net")


def test_a_user_network_gets_the_data_facts_it_names_and_a_generic_head(digits):
    info = digits.info
    net = TINY.build(info.channels, info.num_classes, info.image_size)
    assert isinstance(net, TinyNet) and net.features[0].in_channels == 1  # in_channels from the data, no wrapper
    assert head_parameter_names(net) == {"head.weight", "head.bias"}
    assert MatchNetwork.build(TINY, info, 0, False, False).matched == ["features.0.weight", "features.2.weight"]
    functional = FunctionalNet(net)
    x = torch.randn(3, 1, 8, 8)
    features = functional.embed(functional.initial_state(), x)  # the head's input, for distribution matching
    assert torch.allclose(features, net.features(x).flatten(1))


def test_batch_norm_statistics_move_under_functional_matching(digits):
    """IDC matches batch-norm networks in training mode: each class's batch moves the running statistics."""
    info = digits.info
    functional = FunctionalNet(RESNET18.build_seeded(0, info.channels, info.num_classes, info.image_size))
    weights = functional.clone_weights(functional.initial_state())
    before = weights["net.bn1.running_mean"].clone()
    syn = torch.randn(4, 1, 8, 8, requires_grad=True)
    matched = [weights[n] for n in MatchNetwork.build(RESNET18, info, 0, False, False).matched]
    loss = class_matching_loss(lambda x: functional(weights, x), matched, torch.randn(8, 1, 8, 8), syn, 3, "mse")
    (grad,) = torch.autograd.grad(loss, syn)
    assert torch.isfinite(loss) and grad.abs().sum() > 0
    assert not torch.equal(weights["net.bn1.running_mean"], before) and int(weights["net.bn1.num_batches_tracked"]) == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            NetSpec(name="torch.nn.Conv2d", kwargs={"in_channels": 2, "out_channels": 10, "kernel_size": 8}),
            "takes 2-channel images but the data has 1",
        ),
        (NetSpec(name="torch.nn.Flatten"), r"gives \(2, 64\) for a batch of 2 images"),
        (NetSpec(name="test_any_network.not_a_network"), "returned a int, not an nn.Module"),
        (
            NetSpec(name="test_any_network.TinyNet", kwargs={"depth": 2}),
            "could not be built with .*unexpected keyword argument 'depth'",
        ),
    ],
)
def test_networks_that_cannot_run_on_the_data_are_refused_in_one_sentence(digits, spec, message):
    info = digits.info
    with pytest.raises(ConfigError, match=message) as err:
        check_net_fits(spec, info.channels, info.num_classes, info.image_size, "model.net")
    assert str(err.value).startswith("model.net") and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("torchvision.models.resnet99", "torchvision.models has no attribute 'resnet99'"),
        ("no_such_package.Net", "there is no module named 'no_such_package'"),
        ("test_any_network.CONSTANT", "names a int, not an nn.Module class"),
        ("collections.OrderedDict", "not an nn.Module"),
        ("vgg", "unknown net 'vgg'; choose one of: convnet, resnet_ap, or give an import path"),
    ],
)
def test_bad_import_paths_are_refused_when_named(name, message):
    with pytest.raises(ConfigError, match=message):
        NetSpec(name=name)


# ------------------------------------------------------------------ distillation
def any_net_module(pool_dir: str, net: NetSpec, **overrides):
    """1 outer x 1 inner on digits with a pool of one untrained member, 2 stored images per class, a network update."""
    settings = dict(net=net, ipc=2, pool=PoolConfig(size=1, epochs=0, cache_dir=pool_dir), n_data=16, net_batch_size=8)
    return tiny_distill(pool_dir, **{**settings, **overrides})


@pytest.mark.parametrize("net", [RESNET18, TINY], ids=["torchvision-resnet18", "user-module"])
def test_an_imported_network_distils_and_evaluates(pool_dir, tmp_path, net):
    module = any_net_module(pool_dir, net)
    evaluation = SyntheticEvaluation(every_n_outer=0, repeats=1, epochs=1, baselines=False, progress=False)
    start = []

    class Remember(Callback):
        def on_train_start(self, trainer, pl_module):
            start.append(pl_module.synthetic.images.detach().clone())

    fit(module, callbacks=[Remember(), evaluation], default_root_dir=tmp_path)  # results files go there
    assert module.network.grouped is None and module.outer == 1
    assert not torch.equal(module.synthetic.images, start[0])  # the matching gradient reached the pixels
    (row,) = evaluation.final_rows
    assert row.net == net.describe() and len(row.accuracies) == 1 and 0.0 <= row.accuracies[0] <= 100.0


def test_matching_by_embedding_uses_the_head_input(pool_dir):
    module = any_net_module(pool_dir, TINY, match="embed")
    fit(module)
    assert module.outer == 1


def test_several_classes_per_pass_are_refused_for_an_imported_network(pool_dir):
    with pytest.raises(
        ConfigError, match="classes_per_pass=2 needs gradient matching on a ConvNet.*net='test_any_network.TinyNet'"
    ):
        fit(any_net_module(pool_dir, TINY, classes_per_pass=2))


def test_batch_norm_on_one_image_per_class_is_refused_before_the_run(pool_dir):
    with pytest.raises(ConfigError, match=r"cannot train on 1 image\(s\) of 8x8 at a time .*model.ipc >= 2"):
        fit(any_net_module(pool_dir, RESNET18, ipc=1))


# ------------------------------------------------------------------ evaluation over several networks
def test_networks_are_refused_beside_net_or_a_protocol_or_empty():
    with pytest.raises(ConfigError, match="evaluation.net and evaluation.networks"):
        SyntheticEvaluation(net=NetSpec(), networks=[TINY])
    with pytest.raises(ConfigError, match="evaluation.protocol=long fixes the evaluation network"):
        SyntheticEvaluation(protocol="long", networks=[TINY])
    with pytest.raises(ConfigError, match="evaluation.networks is empty"):
        SyntheticEvaluation(networks=[])


def test_cli_evaluates_two_architectures_from_one_config(tmp_path, capsys):
    config = tmp_path / "two.yaml"
    config.write_text(
        "evaluation:\n  networks:\n  - {name: convnet, depth: 2, width: 8}\n  - {name: torchvision.models.resnet18, kwargs: {num_classes: 10}}\n"
    )
    quick = [
        "--model.ipc=2",
        "--model.pool.size=1",
        "--model.pool.epochs=0",
        "--model.outer_iterations=1",
        "--model.inner_loop=1",
        "--model.n_data=0",
    ]
    quick += [
        "--evaluation.epochs=1",
        "--evaluation.repeats=1",
        "--evaluation.every_n_outer=0",
        "--evaluation.baselines=false",
        "--evaluation.progress=false",
    ]
    run_cli(
        [
            "fit",
            "--config",
            str(config),
            f"--trainer.default_root_dir={tmp_path}",
            f"--model.pool.cache_dir={tmp_path / 'pools'}",
            *CLI_TINY,
            *quick,
        ]
    )
    out = capsys.readouterr().out
    assert "| convnet depth 2 width 8 |" in out and "| torchvision.models.resnet18(num_classes=10) |" in out
    assert "DD-Ranking scores (torchvision.models.resnet18(num_classes=10))" in out
    results = json.loads((tmp_path / "lightning_logs" / "version_0" / "results.json").read_text())
    assert [n["net"] for n in results["networks"]] == [
        {"name": "convnet", "depth": 2, "width": 8, "norm": "instance", "pooling": "avg"},
        {"name": "torchvision.models.resnet18", "kwargs": {"num_classes": 10}},
    ]
    assert [(r["net"], r["role"]) for r in results["rows"]] == [
        ("convnet depth 2 width 8", "set"),
        ("torchvision.models.resnet18(num_classes=10)", "set"),
    ]


def test_cli_bad_import_path_is_one_sentence_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model.net.name=torchvision.models.resnet99", "--trainer.accelerator=cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "lightning-dd: error: net 'torchvision.models.resnet99' cannot be imported: torchvision.models has no attribute 'resnet99'"
    )


def test_class_path_syntax_gets_the_supported_form(capsys):
    """jsonargparse reserves class_path/init_args; a user who writes them is told the form that works."""
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--model.net={class_path: torchvision.models.resnet18, init_args: {num_classes: 10}}",
                "--trainer.accelerator=cpu",
            ]
        )
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err.strip()
        == "lightning-dd: error: a network is given as {name: <import path>, kwargs: {...}} (e.g. {name: torchvision.models.resnet18}), not with class_path/init_args"
    )
