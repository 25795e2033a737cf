"""The evaluation protocol: final-epoch test accuracy, seeds, normalisation, schedule, and its callback."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

import lightning_dd.callbacks.evaluation as callback_module
import lightning_dd.evaluation as evaluation
from lightning_dd.callbacks.evaluation import SyntheticEvaluation
from lightning_dd.classify import TrainSchedule, test_accuracy as measure_accuracy, train_classifier
from lightning_dd.evaluation import EvalResult, evaluate_random_subsets, evaluate_repeats, evaluate_set
from lightning_dd.nets import NetSpec

from helpers import fit, normalise, tiny_distill

NET = NetSpec(width=8, depth=2)


def plain_schedule(**changes) -> TrainSchedule:
    """No augmentation, so what the network sees can be predicted exactly."""
    settings = dict(epochs=3, batch_size=16, augment="none", cutmix_p=0.0)
    settings.update(changes)
    return TrainSchedule(**settings)


def small_real_set(digits, per_class=4):
    train = digits.train_data
    idx = train.random_subset_indices(per_class, torch.Generator().manual_seed(0))
    return train.images[idx], train.labels[idx]


def hand_accuracy(model, test, info) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(normalise(test.images.float() / 255, info.mean, info.std))
    model.train()
    return 100.0 * float((logits.argmax(1) == test.labels).float().mean())


# --------------------------------------------------------------------------- evaluate_set
def test_reported_accuracy_is_the_final_networks_measured_once_on_the_test_set(digits, monkeypatch):
    trained, measured = [], []

    def recording_train(model, *args, **kwargs):
        out = train_classifier(model, *args, **kwargs)
        trained.append(model)
        return out

    def recording_test(*args, **kwargs):
        measured.append(1)
        return measure_accuracy(*args, **kwargs)

    monkeypatch.setattr(evaluation, "train_classifier", recording_train)
    monkeypatch.setattr(evaluation, "test_accuracy", recording_test)
    images, labels = small_real_set(digits)
    schedule = plain_schedule(epochs=6, lr=0.05)
    acc = evaluate_set(images, labels, digits.test_data, NET, schedule, seed=0)
    assert len(trained) == 1 and len(measured) == 1  # one training run of all epochs, one test pass
    assert acc == pytest.approx(hand_accuracy(trained[0], digits.test_data, digits.info), abs=1e-4)


def test_repeats_train_distinct_networks_from_consecutive_seeds(digits, monkeypatch):
    built, generators = [], []
    original_build = NetSpec.build_seeded

    def recording_build(self, seed, *args, **kwargs):
        built.append(seed)
        return original_build(self, seed, *args, **kwargs)

    def recording_train(model, images, labels, schedule, generator, *args, **kwargs):
        generators.append(generator.get_state())
        return train_classifier(model, images, labels, schedule, generator, *args, **kwargs)

    monkeypatch.setattr(NetSpec, "build_seeded", recording_build)
    monkeypatch.setattr(evaluation, "train_classifier", recording_train)
    images, labels = small_real_set(digits)
    result = evaluate_repeats(
        "x", images, labels, digits.test_data, NET, plain_schedule(epochs=1), repeats=3, seed=5, progress=False
    )
    assert built == [5, 6, 7] and len(result.accuracies) == 3
    for seed, state in zip(built, generators):  # training randomness seeded by the same seed
        assert torch.equal(state, torch.Generator().manual_seed(seed).get_state())
    assert result.images == images.shape[0] and result.epochs == 1


@pytest.mark.parametrize("flip_ok", [False, True])
def test_flip_follows_the_dataset(digits, monkeypatch, flip_ok):
    """Horizontal flips are allowed exactly when the dataset's labels survive them."""
    import dataclasses

    from lightning_dd.data.real import RealData
    from lightning_dd.data.sources import ImageSplit

    seen = []
    monkeypatch.setattr(
        evaluation,
        "train_classifier",
        lambda model, images, labels, schedule, generator, flip, *a, **k: seen.append(flip),
    )
    test = digits.test_data
    test = RealData(ImageSplit(test.images, test.labels), dataclasses.replace(test.info, flip_ok=flip_ok))
    images, labels = small_real_set(digits, per_class=1)
    evaluate_set(images, labels, test, NET, plain_schedule(epochs=1), seed=0)
    assert seen == [flip_ok]


def test_same_seed_same_accuracy_and_independent_of_the_global_rng(digits):
    images, labels = small_real_set(digits)
    schedule = plain_schedule(epochs=2, augment="color_crop", cutmix_p=0.5)
    torch.manual_seed(0)
    a = evaluate_set(images, labels, digits.test_data, NET, schedule, seed=3)
    torch.manual_seed(123)
    b = evaluate_set(images, labels, digits.test_data, NET, schedule, seed=3)
    assert a == b


@pytest.mark.parametrize("kind", ["uint8 real", "float synthetic"])
def test_training_and_test_inputs_are_normalised_with_the_dataset_statistics(digits, monkeypatch, kind):
    info, test = digits.info, digits.test_data
    images, labels = small_real_set(digits, per_class=2)
    if kind == "float synthetic":
        images = images.float() / 255 * 0.8 + 0.1  # any [0, 1] pixels
    expected_train = normalise(images.float() / 255 if kind == "uint8 real" else images, info.mean, info.std)
    seen = {"train": [], "eval": []}
    original_build = NetSpec.build_seeded

    def hooked_build(self, *args, **kwargs):
        model = original_build(self, *args, **kwargs)
        model.register_forward_pre_hook(
            lambda m, inputs: seen["train" if m.training else "eval"].append(inputs[0].detach().clone())
        )
        return model

    monkeypatch.setattr(NetSpec, "build_seeded", hooked_build)
    evaluate_set(images, labels, test, NET, plain_schedule(epochs=2, batch_size=8), seed=0)
    # every epoch shows each training image once, normalised, in a shuffled order
    epoch = torch.cat(seen["train"][: -(-images.shape[0] // 8)])
    assert epoch.shape == expected_train.shape
    rows = {tuple(r.tolist()) for r in expected_train.flatten(1).round(decimals=4)}
    assert {tuple(r.tolist()) for r in epoch.flatten(1).round(decimals=4)} == rows
    assert not torch.allclose(epoch, expected_train)  # shuffled
    tested = torch.cat(seen["eval"])
    torch.testing.assert_close(tested, normalise(test.images.float() / 255, info.mean, info.std))


def test_random_subsets_are_new_class_balanced_draws_with_new_seeds(digits, monkeypatch):
    calls = []

    def recording(images, labels, test, val, net, schedule, seed, *args, **kwargs):
        calls.append((images.clone(), labels.clone(), seed))
        return {"test": 50.0 + seed}

    monkeypatch.setattr(evaluation, "evaluate_splits", recording)
    result = evaluate_random_subsets(
        3, digits.train_data, digits.test_data, NET, plain_schedule(), draws=3, seed=2, progress=False
    )
    assert [c[2] for c in calls] == [2, 3, 4] and result.accuracies == [52.0, 53.0, 54.0]
    for images, labels, _ in calls:
        assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), 3))
    assert not torch.equal(calls[0][0], calls[1][0]) and not torch.equal(calls[1][0], calls[2][0])
    assert result.images == 30


def test_mean_and_sample_std_of_a_row():
    row = EvalResult("r", [60.0, 70.0, 80.0])
    assert row.mean == pytest.approx(70.0) and row.std == pytest.approx(10.0)  # n - 1 in the denominator
    assert EvalResult("one", [42.0]).std == 0.0


def test_results_table_is_markdown_with_mean_and_std():
    from lightning_dd.evaluation import format_table

    rows = [
        EvalResult("distilled", [60.0, 70.0, 80.0], images=10, epochs=300),
        EvalResult("random", [50.0], images=10, epochs=300),
    ]
    assert format_table(rows, "## digits").splitlines() == [
        "## digits",
        "",
        "| training set | images | epochs | nets | test accuracy (%) |",
        "|---|---:|---:|---:|---|",
        "| distilled | 10 | 300 | 3 | 70.00 +- 10.00 |",
        "| random | 10 | 300 | 1 | 50.00 +- 0.00 |",
    ]
    assert format_table(rows).splitlines()[0].startswith("| training set")


# --------------------------------------------------------------------------- classifier training
def test_classifier_schedule_sgd_settings_and_epochs(monkeypatch):
    lrs, settings = [], []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            group = self.param_groups[0]
            lrs.append(group["lr"])
            settings.append((group["momentum"], group["weight_decay"]))
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    seen = []
    net.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].shape[0]))
    x, y = torch.randn(10, 1, 2, 2), torch.tensor([0, 1] * 5)
    schedule = TrainSchedule(
        epochs=6, lr=0.1, momentum=0.7, weight_decay=1e-3, batch_size=4, augment="none", cutmix_p=0.0
    )
    train_classifier(net, x, y, schedule, torch.Generator().manual_seed(0))
    steps = 3  # ceil(10 / 4)
    assert seen == [4, 4, 2] * 6
    per_epoch = [lrs[e * steps] for e in range(6)]
    # x0.2 at round(2/3 * 6) = 4 and round(5/6 * 6) = 5
    assert per_epoch == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.02, 0.004])
    assert set(settings) == {(0.7, 1e-3)}


@pytest.mark.parametrize("flip_ok", [False, True])
def test_classifier_training_flips_only_flip_safe_data(flip_ok):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    seen = []
    net.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].detach().clone()))
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]).repeat(8, 1, 1, 1)  # left-right asymmetric
    schedule = TrainSchedule(epochs=4, batch_size=8, augment="flip", cutmix_p=0.0)
    train_classifier(net, x, torch.zeros(8, dtype=torch.long), schedule, torch.Generator().manual_seed(0), flip_ok)
    flipped = torch.cat(seen).flip(-1).eq(x[0]).flatten(1).all(1)
    assert bool(flipped.any()) == flip_ok


def test_test_accuracy_counts_correct_argmax_in_batches():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3]

    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 5.0, 1.0], [0.0, 0.0, 2.0], [3.0, 4.0, 0.0], [0.0, 1.0, 0.5]]).view(
        5, 1, 1, 3
    )
    labels = torch.tensor([0, 1, 2, 0, 2])  # correct, correct, correct, wrong, wrong
    assert measure_accuracy(Fixed(), images, labels, 3, batch_size=2) == pytest.approx(0.6)
    doubled = measure_accuracy(Fixed(), images, labels, 3, transform=lambda t: -t, batch_size=4)
    assert doubled == pytest.approx(0.0)  # the transform is applied before the network


# --------------------------------------------------------------------------- the callback
def test_callback_reports_the_final_evaluation_not_the_best(pool_dir, tmp_path, monkeypatch):
    """Three evaluations score 90, 10, 50: the run's result is 50, the history keeps all three."""
    scores = iter([90.0, 10.0, 50.0])
    calls = []

    def fake_repeats(name, images, labels, test, net, schedule, repeats, seed, device="cpu", progress=True, val=None):
        calls.append(
            dict(images=images.clone(), labels=labels.clone(), repeats=repeats, seed=seed, schedule=schedule, net=net)
        )
        value = next(scores)
        return EvalResult(name, [value, value], images=images.shape[0], epochs=schedule.epochs)

    monkeypatch.setattr(callback_module, "evaluate_repeats", fake_repeats)
    evaluation_cb = SyntheticEvaluation(
        every_n_outer=1,
        repeats=2,
        epochs=7,
        batch_size=32,
        lr=0.02,
        augment="color",
        cutmix_p=0.25,
        baselines=False,
        seed=11,
        progress=False,
    )
    module = tiny_distill(
        pool_dir, ipc=1, factor=2, init="mix", model_source="random", perturb=False, outer_iterations=3
    )
    import lightning as L
    from lightning_dd import RealDataModule

    trainer = L.Trainer(
        default_root_dir=tmp_path,
        logger=L.pytorch.loggers.CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[evaluation_cb],
    )
    trainer.fit(module, datamodule=RealDataModule("digits"))
    assert len(calls) == 3  # after outer 1 and 2, then at the end (not twice for outer 3)
    assert [o for o, _ in evaluation_cb.history] == [1, 2, 3]
    assert evaluation_cb.final_rows[0].mean == 50.0
    results = json.loads((tmp_path / "lightning_logs" / "version_0" / "results.json").read_text())
    assert results["rows"][0]["mean"] == 50.0 and [h["mean"] for h in results["history"]] == [90.0, 10.0, 50.0]
    # the final evaluation trains on the final decoded set (4 tiles per stored image) with the configured protocol
    final_images, final_labels = module.decoded()
    assert torch.equal(calls[-1]["images"], final_images) and torch.equal(calls[-1]["labels"], final_labels)
    assert final_images.shape[0] == 40 and not torch.equal(calls[0]["images"], final_images)
    s = calls[-1]["schedule"]
    assert (s.epochs, s.batch_size, s.lr, s.augment, s.cutmix_p) == (7, 32, 0.02, "color", 0.25)
    assert (
        tuple(s.milestones) == pytest.approx((2 / 3, 5 / 6))
        and s.gamma == 0.2
        and s.momentum == 0.9
        and s.weight_decay == 5e-4
    )
    assert calls[-1]["repeats"] == 2 and calls[-1]["seed"] == 11 and calls[-1]["net"] == module.net_spec


def test_callback_evaluates_the_real_set_with_the_same_protocol(pool_dir, monkeypatch, tmp_path):
    """At the end: the distilled row, then random real subsets of the same ipc, then the full set."""
    calls = []

    def fake_repeats(
        name, images, labels, test, net, schedule, repeats, seed, device="cpu", progress=True, val=None, soft=None
    ):
        calls.append((name, images.shape[0], schedule.epochs, repeats, seed))
        return EvalResult(name, [1.0])

    def fake_subsets(
        ipc, train, test, net, schedule, draws, seed, device="cpu", progress=True, val=None, soft=None, name=None
    ):
        calls.append(("random", ipc, schedule.epochs, draws, seed))
        return EvalResult("random", [2.0])

    monkeypatch.setattr(callback_module, "evaluate_repeats", fake_repeats)
    monkeypatch.setattr(evaluation, "evaluate_repeats", fake_repeats)  # the full-set row goes through evaluate_full_set
    monkeypatch.setattr(evaluation, "evaluate_random_subsets", fake_subsets)
    cb = SyntheticEvaluation(
        every_n_outer=0, repeats=2, epochs=3, baselines=True, full_set_epochs=4, seed=9, progress=False
    )
    fit(
        tiny_distill(pool_dir, ipc=2, model_source="random", perturb=False), callbacks=[cb], default_root_dir=tmp_path
    )  # results files go there
    assert calls[0][1:] == (20, 3, 2, 9)
    assert calls[1] == ("random", 2, 3, 2, 9)
    assert calls[2][0] == "full training set" and calls[2][2:] == (4, 2, 9)
    assert [r.mean for r in cb.final_rows] == [1.0, 2.0, 1.0]


def test_interrupted_run_is_not_evaluated(pool_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(callback_module, "evaluate_repeats", lambda *a, **k: calls.append(1) or EvalResult("x", [1.0]))

    class Interrupt(callback_module.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            pl_module.interrupted = True

    fit(
        tiny_distill(pool_dir, model_source="random", perturb=False),
        callbacks=[Interrupt(), SyntheticEvaluation(every_n_outer=0, baselines=False, progress=False)],
    )
    assert calls == []


def test_the_full_set_row_is_the_evaluation_schedule_with_its_own_epochs(monkeypatch):
    """One protocol for the ceiling row (callback, evaluate command, benchmarks): only the epochs change."""
    seen = []
    monkeypatch.setattr(
        evaluation,
        "evaluate_repeats",
        lambda name, images, labels, test, net, schedule, repeats, seed, device="cpu", progress=True, val=None: (
            seen.append((name, images.shape[0], schedule, repeats, seed)) or EvalResult(name, [3.0])
        ),
    )
    train = argparse.Namespace(
        images=torch.zeros(50, 1, 8, 8, dtype=torch.uint8), labels=torch.zeros(50, dtype=torch.long)
    )
    schedule = TrainSchedule(epochs=300, lr=0.02, batch_size=32, augment="color", cutmix_p=0.25)
    row = evaluation.evaluate_full_set(train, None, None, schedule, 5, 2, 7, progress=False)
    ((name, count, used, repeats, seed),) = seen
    assert (name, count, repeats, seed, row.mean) == ("full training set", 50, 2, 7, 3.0)
    assert used == TrainSchedule(epochs=5, lr=0.02, batch_size=32, augment="color", cutmix_p=0.25)


def test_the_evaluation_recipe_defaults_are_the_train_schedule_defaults():
    """The evaluation callback's and the evaluate command's recipe defaults are read from TrainSchedule (the evaluate command trains 300 epochs)."""
    from lightning_dd.callbacks import SyntheticEvaluation
    from lightning_dd.classify import TrainSchedule
    from lightning_dd.commands import evaluate
    from lightning_dd.evaluation import PROTOCOL_FIELDS
    from lightning_dd.utils.validation import defaults_of

    recipe = [name for name in PROTOCOL_FIELDS if name != "net"]
    schedule = TrainSchedule()
    assert {k: defaults_of(SyntheticEvaluation.__init__)[k] for k in recipe} == {
        k: getattr(schedule, k) for k in recipe
    }
    assert {k: defaults_of(evaluate)[k] for k in recipe} == {**{k: getattr(schedule, k) for k in recipe}, "epochs": 300}


def test_the_teacher_schedule_is_its_fields_and_train_schedule_defaults():
    from lightning_dd.classify import TrainSchedule
    from lightning_dd.teacher import TeacherConfig

    teacher = TeacherConfig(epochs=3, lr=0.02, batch_size=5, augment="color", cutmix_p=0.1)
    assert teacher.schedule() == TrainSchedule(epochs=3, lr=0.02, batch_size=5, augment="color", cutmix_p=0.1)
    default = TeacherConfig().schedule()
    assert default == TrainSchedule(epochs=30)
