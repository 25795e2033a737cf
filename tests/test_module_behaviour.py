"""DistillModule's wiring, driven through ``training_step`` by a tiny Trainer and checked by replay.

Each test records the module's generator state at a point of the step, replays the documented
random draws from that state and recomputes by hand what the step must produce: the network
drawn and perturbed at the start of an outer iteration, the synthetic images after one matching
step, the network weights after its update. A bug in any of these (perturbation off, a
different augmentation draw for real and synthetic images, labels out of line with images, a
missing optimiser step, a dropped learning-rate scaling, ...) changes the numbers.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from lightning_dd.augment import DSA
from lightning_dd.distill.distiller import Distiller
from lightning_dd.distill.synthetic import decode

from helpers import clone, fit, hand_sgd, normalise, reference_perturb, tiny_distill


def template_of(module):
    info = module.info
    return module.net_spec.build(info.channels, info.num_classes, info.image_size)


def param_names(template) -> list[str]:
    return [n for n, _ in template.named_parameters()]


def conv_weight_names(template) -> list[str]:
    """IDC's default matched tensors: weights with more than one dimension outside the head."""
    return [n for n, p in template.named_parameters() if p.ndim > 1 and not n.startswith("classifier.")]


def spy_distiller(monkeypatch, name: str, before=None, after=None) -> list:
    """Wrap ``Distiller.name`` for the distillers a fit builds; ``before(distiller)`` / ``after(distiller, result)`` are recorded."""
    original, records = getattr(Distiller, name), []

    def wrapper(self, *args, **kwargs):
        entry = {"before": before(self) if before else None}
        result = original(self, *args, **kwargs)
        entry["after"] = after(self, result) if after else None
        records.append(entry)
        return result

    monkeypatch.setattr(Distiller, name, wrapper)
    return records


def record_outer_starts(monkeypatch) -> list:
    """Generator state before each outer iteration begins, and the network weights it produced."""
    return spy_distiller(
        monkeypatch,
        "begin_outer",
        before=lambda d: d.state.generator.get_state(),
        after=lambda d, _: clone(d.state.weights),
    )


# ----------------------------------------------------------------------------- networks
def test_each_outer_iteration_matches_on_a_perturbed_uniformly_drawn_pool_member(pool_dir, monkeypatch):
    module = tiny_distill(pool_dir, model_source="pool", perturb=True, rho_min=0.02, rho_max=0.08, outer_iterations=3)
    starts = record_outer_starts(monkeypatch)
    fit(module)
    assert len(starts) == 3
    names = param_names(template_of(module))
    for record in starts:
        g = torch.Generator()
        g.set_state(record["before"])
        member = int(torch.randint(len(module.pool), (1,), generator=g))
        params = {n: module.pool.members[member][n] for n in names}
        expected = reference_perturb(params, 0.02, 0.08, g)
        used = record["after"]
        for n in names:
            torch.testing.assert_close(used[n], expected[n], rtol=1e-5, atol=1e-6, msg=n)
        # the perturbation did move every conv/linear weight and nothing else
        assert not torch.allclose(used["features.0.weight"], params["features.0.weight"])
        assert torch.equal(used["features.0.bias"], params["features.0.bias"])


def test_without_perturbation_the_pool_member_is_used_as_it_is(pool_dir, monkeypatch):
    module = tiny_distill(pool_dir, model_source="pool", perturb=False, outer_iterations=2)
    starts = record_outer_starts(monkeypatch)
    fit(module)
    for record in starts:
        g = torch.Generator()
        g.set_state(record["before"])
        member = int(torch.randint(len(module.pool), (1,), generator=g))
        for n, w in record["after"].items():
            assert torch.equal(w, module.pool.members[member][n]), n


def test_idc_mode_draws_a_fresh_seeded_network_every_outer_iteration(pool_dir, monkeypatch):
    module = tiny_distill(pool_dir, model_source="random", perturb=False, outer_iterations=3)
    starts = record_outer_starts(monkeypatch)
    fit(module)
    assert module.pool is None
    firsts = []
    for record in starts:
        g = torch.Generator()
        g.set_state(record["before"])
        seed = int(torch.randint(2**31 - 1, (1,), generator=g))
        expected = module.net_spec.build_seeded(seed, 1, 10, (8, 8)).state_dict()
        for n, w in record["after"].items():
            assert torch.equal(w, expected[n]), n
        firsts.append(record["after"]["features.0.weight"])
    assert not torch.equal(firsts[0], firsts[1]) and not torch.equal(firsts[1], firsts[2])


def test_idc_mode_with_perturbation_perturbs_the_fresh_network(pool_dir, monkeypatch):
    module = tiny_distill(pool_dir, model_source="random", perturb=True, rho_min=0.05, rho_max=0.05, outer_iterations=1)
    starts = record_outer_starts(monkeypatch)
    fit(module)
    g = torch.Generator()
    g.set_state(starts[0]["before"])
    seed = int(torch.randint(2**31 - 1, (1,), generator=g))
    fresh = module.net_spec.build_seeded(seed, 1, 10, (8, 8)).state_dict()
    names = param_names(template_of(module))
    expected = reference_perturb({n: fresh[n] for n in names}, 0.05, 0.05, g)
    for n in names:
        torch.testing.assert_close(starts[0]["after"][n], expected[n], rtol=1e-5, atol=1e-6, msg=n)


# ----------------------------------------------------------------------------- matching
def replay_matching(module, state, images_before, weights, *, augment, batch_real, metric, ipc, factor):
    """Per-class gradients of the matching loss w.r.t. the stored images, recomputed from ``state``."""
    info, train = module.info, module.trainer.datamodule.train_data
    g = torch.Generator()
    g.set_state(state)
    # documented order of draws: class-balanced real batch, then one DSA draw per class
    real = train.class_balanced_batch(batch_real, g)
    dsa = DSA(augment, flip_ok=info.flip_ok)
    draws = dsa.sample(info.num_classes, g)
    template = template_of(module)
    names = conv_weight_names(template)
    w = {k: v.detach().clone().requires_grad_(k in names) for k, v in weights.items()}
    logits = lambda x: functional_call(template, w, (x,))  # noqa: E731
    pixels = images_before.clone().requires_grad_(True)
    per_class, losses = [], []
    for c in range(info.num_classes):
        syn = normalise(decode(pixels[c * ipc : (c + 1) * ipc], factor), info.mean, info.std)
        both = dsa.apply(torch.cat([real[c], syn]), draws[c : c + 1])  # ONE draw for both batches
        real_c, syn_c = both[: real.shape[1]], both[real.shape[1] :]
        g_real = torch.autograd.grad(
            F.cross_entropy(logits(real_c), torch.full((real_c.shape[0],), c)), [w[n] for n in names]
        )
        g_syn = torch.autograd.grad(
            F.cross_entropy(logits(syn_c), torch.full((syn_c.shape[0],), c)), [w[n] for n in names], create_graph=True
        )
        if metric == "l1":
            loss = sum((a.detach() - b).abs().sum() for a, b in zip(g_real, g_syn))
        else:
            loss = sum(((a.detach() - b) ** 2).sum() for a, b in zip(g_real, g_syn))
        (grad,) = torch.autograd.grad(loss, pixels)
        per_class.append(grad)
        losses.append(float(loss.detach()))
    return per_class, sum(losses)


def record_matching(monkeypatch) -> list:
    return spy_distiller(
        monkeypatch,
        "matching_step",
        before=lambda d: (d.state.generator.get_state(), d.synthetic.images.detach().clone(), clone(d.state.weights)),
        after=lambda d, loss: (float(loss), d.synthetic.images.detach().clone()),
    )


@pytest.mark.parametrize("metric", ["l1", "mse"])
def test_matching_step_per_iteration_is_one_sgd_step_on_the_siamese_augmented_loss(pool_dir, metric, monkeypatch):
    ipc, factor, lr = 2, 2, 0.5
    module = tiny_distill(
        pool_dir,
        ipc=ipc,
        factor=factor,
        init="mix",
        model_source="random",
        perturb=False,
        metric=metric,
        augment="color_crop_cutout",
        batch_real=6,
        max_syn_per_class=ipc * factor**2,
        lr_img=lr,
        momentum_img=0.5,
        image_step="per_iteration",
        clamp="per_step",
    )
    steps = record_matching(monkeypatch)
    fit(module)
    (state, before, weights), (loss, after) = steps[0]["before"], steps[0]["after"]
    grads, expected_loss = replay_matching(
        module, state, before, weights, augment="color_crop_cutout", batch_real=6, metric=metric, ipc=ipc, factor=factor
    )
    assert loss == pytest.approx(expected_loss, rel=1e-4)
    # one step with lr_img scaled by ipc / 10 (momentum has no history at the first step), then clamped
    expected = (before - lr * ipc / 10 * sum(grads)).clamp(0, 1)
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-6)
    assert (after - before).abs().max() > 1e-3  # the step moved the images


def test_matching_step_per_class_steps_after_every_class_with_momentum(pool_dir, monkeypatch):
    ipc, lr, momentum = 1, 2.0, 0.5
    module = tiny_distill(
        pool_dir,
        ipc=ipc,
        factor=1,
        model_source="random",
        perturb=False,
        metric="mse",
        augment="color_crop",
        batch_real=6,
        lr_img=lr,
        momentum_img=momentum,
        image_step="per_class",
        clamp="per_outer",
    )
    steps = record_matching(monkeypatch)
    fit(module)
    (state, before, weights), (loss, after) = steps[0]["before"], steps[0]["after"]
    grads, expected_loss = replay_matching(
        module, state, before, weights, augment="color_crop", batch_real=6, metric="mse", ipc=ipc, factor=1
    )
    assert loss == pytest.approx(expected_loss, rel=1e-4)
    # Class c's loss only sees class c's images, which earlier classes' steps leave alone (their
    # gradients are zero there), so each class's gradient is taken at the starting images.
    expected, buffer = before.clone(), None
    for grad in grads:
        buffer = grad.clone() if buffer is None else momentum * buffer + grad
        expected = expected - lr * ipc / 10 * buffer
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-6)


def test_image_optimiser_uses_the_ipc_scaled_learning_rate_and_momentum(pool_dir, digits):
    for ipc, scale, lr in ((5, True, 0.5), (20, True, 0.5), (5, False, 0.5)):
        module = tiny_distill(pool_dir, ipc=ipc, lr_img=lr, momentum_img=0.3, scale_lr_with_ipc=scale)
        module.attach_data(digits.info, digits.train_data)
        group = module.configure_optimizers().param_groups[0]
        assert group["lr"] == pytest.approx(lr * ipc / 10 if scale else lr)
        assert group["momentum"] == 0.3
        assert group["params"][0] is module.synthetic.images


def test_matching_subsamples_decoded_images_per_class_when_over_the_cap(pool_dir, monkeypatch):
    """With more decoded images than ``max_syn_per_class``, each class matches a random subset of them."""
    module = tiny_distill(
        pool_dir,
        ipc=2,
        factor=2,
        model_source="random",
        perturb=False,
        max_syn_per_class=3,
        augment="none",
        batch_real=4,
        image_step="per_iteration",
        clamp="per_step",
    )
    seen = []
    original = DSA.apply

    def watch(self, x, draws, *args, **kwargs):
        seen.append(x.shape[0])
        return original(self, x, draws, *args, **kwargs)

    monkeypatch.setattr(DSA, "apply", watch)
    fit(module)
    assert seen[:10] == [4 + 3] * 10  # 4 real + 3 of the 8 decoded synthetic images, per class


# ----------------------------------------------------------------------------- network update
def test_network_update_is_sgd_on_the_drawn_real_batch_with_its_own_labels(pool_dir, monkeypatch):
    lr, momentum, wd, n_data, batch = 0.05, 0.9, 5e-4, 40, 16
    drawn = 48  # the authors' loop runs whole batches until n_data images are seen: 3 x 16
    module = tiny_distill(
        pool_dir,
        model_source="random",
        perturb=False,
        augment="none",
        net_cutmix_p=0.0,
        n_data=n_data,
        net_batch_size=batch,
        net_lr=lr,
        net_momentum=momentum,
        net_weight_decay=wd,
        inner_loop=2,
    )
    updates = spy_distiller(
        monkeypatch,
        "network_step",
        before=lambda d: (d.state.generator.get_state(), clone(d.state.weights)),
        after=lambda d, _: clone(d.state.weights),
    )
    trainer = fit(module)
    train = trainer.datamodule.train_data
    template = template_of(module)
    names = param_names(template)
    assert len(updates) == 2
    buffers = None  # one optimiser per outer iteration: momentum carries over between inner steps
    for record in updates:
        state, weights = record["before"]
        g = torch.Generator()
        g.set_state(state)
        idx = torch.randperm(len(train), generator=g)[:drawn]  # distinct random images, whole batches
        x = normalise(train.images[idx].float() / 255, module.info.mean, module.info.std)
        y = train.labels[idx]

        def batch_grads(k):
            def grads(w):
                w = {n: t.clone().requires_grad_(True) for n, t in w.items()}
                loss = F.cross_entropy(functional_call(template, w, (x[k : k + batch],)), y[k : k + batch])
                return dict(zip(names, torch.autograd.grad(loss, [w[n] for n in names])))

            return grads

        expected, buffers = hand_sgd(
            {n: weights[n] for n in names}, [batch_grads(k) for k in range(0, drawn, batch)], lr, momentum, wd, buffers
        )
        for n in names:
            torch.testing.assert_close(record["after"][n], expected[n], rtol=1e-4, atol=1e-6, msg=n)
        assert not torch.allclose(record["after"]["classifier.weight"], weights["classifier.weight"])
    for n in names:  # matching leaves the network alone: the second update starts where the first ended
        assert torch.equal(updates[1]["before"][1][n], updates[0]["after"][n])


def test_network_update_trains_on_augmented_images(pool_dir, monkeypatch):
    """With augmentation on, the update's inputs are not the plain normalised real images."""
    module = tiny_distill(
        pool_dir,
        model_source="random",
        perturb=False,
        augment="color_crop",
        net_cutmix_p=0.0,
        n_data=16,
        net_batch_size=16,
    )
    inputs = []
    updates = spy_distiller(monkeypatch, "network_step", before=lambda d: d.state.generator.get_state())
    import lightning_dd.distill.functional_net as fn

    original = fn.FunctionalNet.__call__

    def watch(self, weights, x):
        inputs.append(x.detach().clone())
        return original(self, weights, x)

    monkeypatch.setattr(fn.FunctionalNet, "__call__", watch)
    trainer = fit(module)
    train = trainer.datamodule.train_data
    g = torch.Generator()
    g.set_state(updates[0]["before"])
    idx = torch.randperm(len(train), generator=g)[:16]
    plain = normalise(train.images[idx].float() / 255, module.info.mean, module.info.std)
    update_input = inputs[-1]  # the last forward pass of the step is the update's
    assert update_input.shape == plain.shape and not torch.allclose(update_input, plain, atol=1e-3)


def test_no_network_update_when_n_data_is_zero(pool_dir, monkeypatch):
    module = tiny_distill(pool_dir, model_source="random", perturb=False, n_data=0, inner_loop=2)
    weights = spy_distiller(monkeypatch, "matching_step", before=lambda d: clone(d.state.weights))
    fit(module)
    for n, w in weights[0]["before"].items():
        assert torch.equal(w, weights[1]["before"][n]), n


@pytest.mark.parametrize("match_bias,match_head", [(False, False), (True, False), (False, True), (True, True)])
def test_matched_tensors_follow_the_bias_and_head_switches(pool_dir, digits, match_bias, match_head):
    module = tiny_distill(pool_dir, match_bias=match_bias, match_head=match_head)
    module.attach_data(digits.info, digits.train_data)
    template = template_of(module)
    expected = [
        n
        for n, p in template.named_parameters()
        if (match_head or not n.startswith("classifier.")) and (match_bias or p.ndim > 1)
    ]
    assert list(module.matched_names) == expected


# ----------------------------------------------------------------------------- processes
@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 10, 12])
def test_class_shards_cover_every_class_exactly_once(pool_dir, world_size):
    module = tiny_distill(pool_dir)
    module.info = SimpleNamespace(num_classes=10)
    shards = []
    for rank in range(world_size):
        module._trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
        shards.append(list(module.rank_classes))
    covered = sorted(c for shard in shards for c in shard)
    assert covered == list(range(10))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1  # balanced


def test_the_trainer_runs_exactly_the_outer_iterations_and_reports_them_as_epochs(pool_dir):
    """The Trainer's epoch limit becomes outer_iterations (progress bars read it), whatever it was built with."""
    module = tiny_distill(pool_dir, outer_iterations=3, model_source="random", perturb=False)
    trainer = fit(module, max_epochs=1)
    assert module.outer == 3 and trainer.current_epoch == 3
    assert trainer.max_epochs == 3


def test_the_python_api_gets_the_start_up_checks_before_any_pool_work(pool_dir, tmp_path):
    """trainer.fit without the CLI refuses bad settings in one sentence, before pretraining a pool."""
    from lightning_dd.utils.errors import ConfigError

    module = tiny_distill(str(tmp_path / "pools"), ipc=500)  # more images per class than digits has
    with pytest.raises(ConfigError, match="model.ipc=500"):
        fit(module)
    assert not list((tmp_path / "pools").glob("*")), "a pool was pretrained before the refusal"


def test_every_fit_of_a_module_is_checked_once(pool_dir, monkeypatch):
    """A module fitted twice (e.g. under another Trainer) is validated for each fit, not only the first."""
    import lightning_dd.distill.module as module_file

    calls = []
    real = module_file.preflight_fit
    monkeypatch.setattr(module_file, "preflight_fit", lambda *args: calls.append(args[0]) or real(*args))
    module = tiny_distill(pool_dir, model_source="random", perturb=False)
    first, second = fit(module), fit(module)
    assert calls == [first, second]
