"""The per-class image step as a replay (``per_class_impl="replay"``) equals the authors' loop.

The loop (``per_class_impl="loop"``) zeroes the pixel gradients, back-propagates one class and
steps torch's SGD, class by class. The replay takes every class's gradient at the state the loop
would give it and replays the updates element-wise (:mod:`lightning_dd.distill.replay`). These
tests compare the two after several inner iterations: from a fresh optimiser (the first step
creates the momentum buffer) and from a resumed one, with both clamp rules, multi-formation and
subsampling, grouped passes, and across two processes.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightning_dd import DistillModule, NetSpec, RealDataModule
from lightning_dd.distill.replay import SGDRule, moments, replay

from helpers import fit, tiny_distill

RTOL = 1e-5


def assert_equal(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to ``RTOL`` relative (of the largest magnitude: pixels near zero get the same absolute slack)."""
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * float(expected.abs().max()))


# ------------------------------------------------------------------ the replay maths against torch's SGD
def class_gradient(c: int, rows: torch.Tensor) -> torch.Tensor:
    """A gradient that depends, non-linearly, on the class's own rows only (as a matching loss does)."""
    return torch.sin(3 * rows + c) + 0.5 * rows**2


def sgd_loop(x0, buf0, classes, clamp, **sgd):
    """The authors' loop with torch.optim.SGD: per class, zero the gradient, fill the class's rows, step."""
    p = nn.Parameter(x0.clone())
    optimizer = torch.optim.SGD([p], **sgd)
    if buf0 is not None:
        optimizer.state[p]["momentum_buffer"] = buf0.clone()
    per_class = p.shape[0] // classes
    for c in range(classes):
        p.grad = torch.zeros_like(p)
        rows = slice(c * per_class, (c + 1) * per_class)
        p.grad[rows] = class_gradient(c, p.detach()[rows])
        optimizer.step()
        if clamp:
            with torch.no_grad():
                p.clamp_(0, 1)
    return p.detach(), optimizer.state[p].get("momentum_buffer"), optimizer


SGD_SETTINGS = [
    dict(lr=0.2, momentum=0.5),
    dict(lr=0.2, momentum=0.9),
    dict(lr=0.2, momentum=0.9, dampening=0.3),
    dict(lr=0.2, momentum=0.9, nesterov=True, weight_decay=0.05),
    dict(lr=0.2, momentum=0.5, weight_decay=0.05, maximize=True),
    dict(lr=0.2, momentum=0.0, weight_decay=0.05),
]


@pytest.mark.parametrize("sgd", SGD_SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed"])
@pytest.mark.parametrize("clamp", [False, True], ids=["per_outer", "per_step"])
def test_replay_equals_torch_sgd_stepped_class_by_class(sgd, resumed, clamp):
    classes, per_class = 5, 3
    g = torch.Generator().manual_seed(0)
    x = torch.rand(classes * per_class, 2, 4, 4, generator=g) * 1.4 - 0.2  # some pixels outside [0, 1]
    buf = torch.randn(x.shape, generator=g) if resumed and sgd["momentum"] else None
    expected_x, expected_buf, optimizer = sgd_loop(x, buf, classes, clamp, **sgd)

    rule = SGDRule.of(optimizer)
    at = moments(x, buf, classes, rule, clamp)
    grad = torch.cat([class_gradient(c, at[c * per_class : (c + 1) * per_class]) for c in range(classes)])
    got_x, got_buf = replay(x, buf, grad, classes, rule, clamp)

    assert_equal(got_x, expected_x)
    if sgd["momentum"]:
        assert_equal(got_buf, expected_buf)
    else:
        assert got_buf is None and expected_buf is None
    assert (got_x - x).abs().max() > 0.1  # the steps moved the images
    if resumed and sgd["momentum"]:  # classes after the first were taken where momentum had moved them
        assert (at[per_class:] - x[per_class:]).abs().max() > 0.05


def test_the_rule_is_read_from_the_optimiser():
    p = nn.Parameter(torch.zeros(3))
    rule = SGDRule.of(torch.optim.SGD([p], lr=0.3, momentum=0.7, dampening=0.1, weight_decay=0.01, maximize=True))
    assert rule == SGDRule(lr=0.3, momentum=0.7, dampening=0.1, weight_decay=0.01, nesterov=False, maximize=True)
    with pytest.raises(TypeError, match="SGD"):
        SGDRule.of(torch.optim.Adam([p]))


# ------------------------------------------------------------------ DistillModule: replay vs loop
def attached(digits, **overrides) -> DistillModule:
    """A module with data attached and an outer iteration begun (IDC mode: no pool)."""
    settings = dict(
        ipc=2,
        factor=1,
        init="mix",
        net=NetSpec(width=8, depth=2),
        model_source="random",
        batch_real=8,
        n_data=32,
        net_batch_size=16,
        lr_img=1.0,
        tune_cpu_allocator=False,
    )
    settings.update(overrides)
    module = DistillModule(**settings)
    module.attach_data(digits.info, digits.train_data)
    module._trainer = SimpleNamespace(world_size=1, global_rank=0)
    module.distiller = module.build_distiller()
    module.distiller.begin_outer()
    return module


def drive(module: DistillModule, steps: int, optimizer_state: dict | None = None):
    """``steps`` inner iterations (matching + network update) outside a Trainer; returns the image optimiser and the losses."""
    optimizer = module.configure_optimizers()
    if optimizer_state is not None:
        optimizer.load_state_dict(copy.deepcopy(optimizer_state))  # as a resumed fit restores it
    lightning_like = SimpleNamespace(step=optimizer.step, zero_grad=optimizer.zero_grad, optimizer=optimizer)
    losses = []
    for _ in range(steps):
        losses.append(module.distiller.matching_step(lightning_like, lambda loss, **kw: loss.backward(**kw)))
        module.distiller.network_step()
    return optimizer, torch.stack(losses)


def resumed_state(module: DistillModule) -> dict:
    """An image optimiser's state as a checkpoint holds it mid-run: a momentum buffer already there."""
    optimizer = module.configure_optimizers()
    images = module.synthetic.images
    optimizer.state[images]["momentum_buffer"] = 0.3 * torch.randn(
        images.shape, generator=torch.Generator().manual_seed(1)
    )
    return optimizer.state_dict()


def loop_and_replay(digits, steps: int, resumed: bool, **settings):
    """Final images, momentum buffers and per-iteration losses of the loop and of the replay."""
    results = {}
    for impl in ("loop", "replay"):
        module = attached(digits, per_class_impl=impl, **settings)
        optimizer, losses = drive(module, steps, resumed_state(module) if resumed else None)
        images = module.synthetic.images
        results[impl] = (
            images.detach().clone(),
            optimizer.state[images]["momentum_buffer"].clone(),
            losses,
            module.state.good_images,
        )
    return results["loop"], results["replay"]


SHAPES = {
    "factor1": dict(factor=1, ipc=2),
    "factor2": dict(factor=2, ipc=1),
    "factor1_subsampled": dict(factor=1, ipc=3, max_syn_per_class=2),
    "factor2_subsampled": dict(factor=2, ipc=2, max_syn_per_class=3),
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("clamp", ["per_outer", "per_step"])
@pytest.mark.parametrize("resumed", [False, True], ids=["fresh", "resumed"])
@pytest.mark.parametrize("momentum", [0.5, 0.9])
def test_replay_equals_the_loop_after_several_inner_iterations(digits, shape, clamp, resumed, momentum):
    loop, replayed = loop_and_replay(digits, 3, resumed, clamp=clamp, momentum_img=momentum, **SHAPES[shape])
    assert_equal(replayed[0], loop[0])  # images
    assert_equal(replayed[1], loop[1])  # momentum buffer
    assert_equal(replayed[2], loop[2])  # the logged matching loss of every iteration
    assert (loop[0] - loop[3]).abs().max() > 0.1  # the steps moved the images
    if clamp == "per_step":
        assert float(loop[0].min()) == 0.0 and float(loop[0].max()) == 1.0  # the clamp was at work


def test_replay_with_grouped_passes_equals_the_loop(digits):
    """Chunks of 4, 4 and 2 classes (the CUDA default groups all 10), against one class per step."""
    results = {}
    for impl, chunk in (("loop", 1), ("replay", 4)):
        module = attached(
            digits, per_class_impl=impl, classes_per_pass=chunk, factor=2, max_syn_per_class=6, clamp="per_step"
        )
        optimizer, losses = drive(module, 3)
        assert module.distiller.placement.classes_per_pass == chunk
        results[impl] = (
            module.synthetic.images.detach().clone(),
            optimizer.state[module.synthetic.images]["momentum_buffer"],
            losses,
        )
    for got, expected in zip(results["replay"], results["loop"]):
        assert_equal(got, expected)


def test_replay_under_bf16_autocast_follows_the_loop(digits):
    """The matching runs in bf16 in both; the replay's own arithmetic stays fp32."""
    results = {}
    for impl in ("loop", "replay"):
        module = attached(digits, per_class_impl=impl, precision="bf16", momentum_img=0.9)
        optimizer, losses = drive(module, 2)  # the Distiller runs matching and update under bf16 autocast
        images = module.synthetic.images
        assert images.dtype == optimizer.state[images]["momentum_buffer"].dtype == torch.float32
        results[impl] = (images.detach().clone(), losses)
    torch.testing.assert_close(results["replay"][0], results["loop"][0], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(results["replay"][1], results["loop"][1], rtol=1e-3, atol=0)


def test_a_fit_with_the_replay_equals_a_fit_with_the_loop(pool_dir):
    """Under a Trainer: one global step per inner iteration, and the optimiser state the loop leaves."""
    ends = {}
    for impl in ("loop", "replay"):
        module = tiny_distill(
            pool_dir,
            model_source="random",
            ipc=2,
            factor=2,
            init="mix",
            outer_iterations=2,
            inner_loop=2,
            n_data=16,
            lr_img=1.0,
            momentum_img=0.9,
            per_class_impl=impl,
        )
        trainer = fit(module)
        assert trainer.global_step == 4
        images = module.synthetic.images
        ends[impl] = (images.detach().clone(), trainer.optimizers[0].state[images]["momentum_buffer"].clone())
    assert_equal(ends["replay"][0], ends["loop"][0])
    assert_equal(ends["replay"][1], ends["loop"][1])


@pytest.mark.slow
def test_two_processes_replay_the_per_class_step_of_one_process(tmp_path, pool_dir):
    """Each process takes its classes' gradients, one all-reduce, and every process replays the same steps."""
    from helpers import mix_module as module, trainer_at as trainer

    single = module(
        pool_dir,
        outer_iterations=2,
        inner_loop=2,
        image_step="per_class",
        per_class_impl="loop",
        momentum_img=0.9,
        clamp="per_step",
    )
    trainer(tmp_path / "one").fit(single, datamodule=RealDataModule("digits"))
    double = module(
        pool_dir,
        outer_iterations=2,
        inner_loop=2,
        image_step="per_class",
        per_class_impl="replay",
        momentum_img=0.9,
        clamp="per_step",
    )
    trainer(tmp_path / "two", strategy="ddp_distill_spawn", devices=2).fit(double, datamodule=RealDataModule("digits"))
    assert_equal(double.synthetic.images.detach(), single.synthetic.images.detach())
    dm = RealDataModule("digits")
    initial = module(pool_dir, outer_iterations=2, inner_loop=2)
    initial.attach_data(dm.info, dm.train_data)
    assert not torch.allclose(double.synthetic.images, initial.synthetic.images, atol=1e-3)  # it did distil
