"""The Distiller without Lightning, and the image-step strategies it is given.

The Distiller holds one outer iteration's work and imports nothing of Lightning; the image step
is a strategy chosen once from ``image_step`` / ``per_class_impl``, each strategy checking its own
limits (processes, classes per pass, optimiser). DistillModule's results with all of them are
pinned bit for bit by tests/test_fixed_seed_set.py.
"""

from __future__ import annotations

import ast
from types import SimpleNamespace

import pytest
import torch

from lightning_dd import NetSpec
from lightning_dd.classify import TrainSchedule
from lightning_dd.distill.distiller import Distiller, Placement
from lightning_dd.distill.image_step import PerClassLoop, PerClassReplay, PerIteration, image_step_for
from lightning_dd.distill.network import MatchNetwork
from lightning_dd.distill.settings import DistillSettings, Matching, NetworkDraw, NetworkUpdate, Perturbation
from lightning_dd.distill.state import DistillState
from lightning_dd.distill.synthetic import SyntheticSet
from lightning_dd.utils.errors import ConfigError, DivergenceError

from helpers import PACKAGE, fit, import_graph, module_name, tiny_distill

PURE = [
    "lightning_dd.distill.distiller",
    "lightning_dd.distill.image_step",
    "lightning_dd.distill.settings",
    "lightning_dd.distill.state",
    "lightning_dd.distill.network",
]


def external_imports(path) -> set[str]:
    """Top-level names of the packages a source file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_distiller_and_what_it_imports_reach_no_lightning():
    graph, files = import_graph(), {module_name(p): p for p in PACKAGE.rglob("*.py")}
    seen, todo = set(), list(PURE)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    reaching = sorted(n for n in seen if {"lightning", "pytorch_lightning"} & external_imports(files[n]))
    assert not reaching, f"these import Lightning: {reaching}"
    assert "lightning_dd.distill.module" not in seen and "lightning_dd.distill.strategy" not in seen


# ------------------------------------------------------------------ the strategies: chosen once, each with its limits
@pytest.mark.parametrize(
    "image_step, per_class_impl, expected",
    [
        ("per_iteration", "replay", PerIteration),
        ("per_iteration", "loop", PerIteration),
        ("per_class", "loop", PerClassLoop),
        ("per_class", "replay", PerClassReplay),
    ],
)
def test_the_settings_choose_the_image_step(image_step, per_class_impl, expected):
    step = image_step_for(image_step, per_class_impl, clamp_each_step=True)
    assert type(step) is expected and step.clamp_each_step


def test_unknown_image_step_settings_are_refused_by_name():
    with pytest.raises(ConfigError, match="image_step"):
        image_step_for("per_batch", "replay", False)
    with pytest.raises(ConfigError, match="per_class_impl"):
        image_step_for("per_class", "unrolled", False)


def test_each_image_step_owns_its_limits():
    loop, replay, summed = PerClassLoop(False), PerClassReplay(False), PerIteration(False)
    assert (loop.several_processes, replay.several_processes, summed.several_processes) == (False, True, True)
    assert (loop.several_classes_per_pass, replay.several_classes_per_pass, summed.several_classes_per_pass) == (
        False,
        True,
        True,
    )
    with pytest.raises(ConfigError, match="classes_per_pass must be 1"):
        loop.check_classes_per_pass(2)
    for step, allowed in ((loop, 1), (replay, 4), (summed, 4)):
        step.check_classes_per_pass(allowed)
    with pytest.raises(ConfigError, match="cannot run on several processes"):
        loop.check_processes(2)
    for step, processes in ((loop, 1), (replay, 8), (summed, 8)):
        step.check_processes(processes)
    images = torch.nn.Parameter(torch.zeros(2))
    adam = torch.optim.Adam([images])
    with pytest.raises(ConfigError, match="replays torch.optim.SGD"):
        replay.check_optimizer(adam)
    replay.check_optimizer(torch.optim.SGD([images], lr=0.1))
    for step in (loop, summed):
        step.check_optimizer(adam)  # they only call the optimiser's step


def test_the_image_step_resolves_classes_per_pass():
    convnet, batch_norm = NetSpec(width=8, depth=2), NetSpec(width=8, depth=2, norm="batch")
    replay, loop = PerClassReplay(False), PerClassLoop(False)
    assert replay.classes_per_pass(None, True, "grad", convnet, "cuda") == 10  # launch-bound: all classes at once
    assert replay.classes_per_pass(None, True, "grad", convnet, "cpu") == 1
    assert replay.classes_per_pass(None, True, "embed", convnet, "cuda") == 1  # only gradient matching runs grouped
    assert replay.classes_per_pass(None, False, "grad", batch_norm, "cuda") == 1
    assert replay.classes_per_pass(3, True, "grad", convnet, "cpu") == 3
    assert loop.classes_per_pass(None, True, "grad", convnet, "cuda") == 1  # the loop steps after every class
    with pytest.raises(ConfigError, match="classes_per_pass=3 needs gradient matching on a ConvNet"):
        replay.classes_per_pass(3, False, "grad", batch_norm, "cpu")


# ------------------------------------------------------------------ the Distiller on its own
def bare_distiller(digits, inner_loop: int = 2) -> Distiller:
    """A Distiller built from its parts by hand: no DistillModule, no Trainer."""
    info, real = digits.info, digits.train_data
    settings = DistillSettings(
        inner_loop=inner_loop,
        draw=NetworkDraw(source="random", perturbation=Perturbation(enabled=True, rho_min=0.01, rho_max=0.05)),
        matching=Matching(batch_real=8, max_syn_per_class=128, match="grad", metric="mse", augment="color_crop_cutout"),
        update=NetworkUpdate(
            images=32,
            schedule=TrainSchedule(
                epochs=1,
                lr=0.01,
                momentum=0.9,
                weight_decay=5e-4,
                batch_size=16,
                milestones=(),
                augment="color_crop_cutout",
                cutmix_p=0.5,
                spatial="single",
                cutout_with_cutmix=False,
            ),
        ),
        bf16=False,
    )
    state = DistillState(generator=torch.Generator().manual_seed(0))
    synthetic = SyntheticSet(info.num_classes, 1, info.channels, info.image_size, 1)
    synthetic.initialize("real", real, state.generator)
    network = MatchNetwork.build(NetSpec(width=8, depth=2), info, 0, match_bias=False, match_head=False)
    placement = Placement(torch.device("cpu"), range(info.num_classes))
    return Distiller(
        settings, state, synthetic, real, info, network, None, PerIteration(clamp_each_step=False), placement
    )


def sgd_for(distiller: Distiller) -> SimpleNamespace:
    optimizer = torch.optim.SGD([distiller.synthetic.images], lr=0.1, momentum=0.5)
    return SimpleNamespace(step=optimizer.step, zero_grad=optimizer.zero_grad, optimizer=optimizer)


def backward(loss, **kwargs):
    loss.backward(**kwargs)


def test_a_distiller_runs_outer_iterations_without_lightning(digits):
    distiller = bare_distiller(digits)
    state, optimizer = distiller.state, sgd_for(distiller)
    start = distiller.synthetic.images.detach().clone()
    means = []
    for _ in range(2 * 2):
        if state.inner == 0:
            distiller.begin_outer()
            assert state.member == -1 and state.weights is not None and state.good_images is not None
        loss = distiller.matching_step(optimizer, backward)
        distiller.network_step()
        means.append(distiller.end_inner(loss))
    assert [m is not None for m in means] == [False, True, False, True]
    assert (state.outer, state.inner, state.weights, state.net_optimizer) == (2, 0, None, None)
    assert (distiller.synthetic.images - start).abs().max() > 1e-3  # the images moved


def test_a_diverged_outer_iteration_rolls_the_images_back(digits):
    distiller = bare_distiller(digits, inner_loop=2)
    optimizer = sgd_for(distiller)
    distiller.begin_outer()
    began = distiller.state.good_images.clone()
    assert distiller.end_inner(distiller.matching_step(optimizer, backward)) is None
    moved = distiller.synthetic.images.detach().clone()
    assert not torch.equal(moved, began)
    with pytest.raises(DivergenceError, match="outer iteration 1"):
        distiller.end_inner(torch.tensor(float("nan")))
    assert torch.equal(distiller.synthetic.images.detach(), began) and distiller.state.outer == 0


def test_a_pool_distiller_needs_its_pool(digits):
    distiller = bare_distiller(digits)
    pool_settings = DistillSettings(
        distiller.settings.inner_loop,
        NetworkDraw("pool", Perturbation(False, 0.01, 0.09)),
        distiller.settings.matching,
        distiller.settings.update,
        False,
    )
    with pytest.raises(ValueError, match="pool"):
        Distiller(
            pool_settings,
            distiller.state,
            distiller.synthetic,
            distiller.real,
            distiller.info,
            distiller.network,
            None,
            distiller.image_step,
            distiller.placement,
        )


# ------------------------------------------------------------------ what the module derives from it
def test_finished_outer_is_true_right_after_the_step_that_ended_an_outer_iteration(pool_dir):
    import lightning as L

    seen = []
    record = L.pytorch.callbacks.LambdaCallback(
        on_train_batch_end=lambda trainer, module, *_: seen.append((module.outer, module.inner, module.finished_outer))
    )
    fit(tiny_distill(pool_dir, model_source="random", outer_iterations=2, inner_loop=3), callbacks=[record])
    assert seen == [(0, 1, False), (0, 2, False), (1, 0, True), (1, 1, False), (1, 2, False), (2, 0, True)]


def test_the_checkpoint_entry_keeps_the_keys_older_checkpoints_have():
    state = DistillState(generator=torch.Generator().manual_seed(0), outer=3, inner=1, member=2)
    entry = state.checkpoint()
    assert set(entry) == {
        "outer",
        "inner",
        "member",
        "generator",
        "weights",
        "net_optimizer",
        "loss_sum",
        "good_images",
    }
    again = DistillState()
    again.restore(entry)
    assert (again.outer, again.inner, again.member, again.restored) == (3, 1, 2, None)
    assert torch.equal(again.generator.get_state(), state.generator.get_state())
