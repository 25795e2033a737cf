"""DistillModule driven by a real Trainer on tiny settings."""

import lightning as L
import pytest
import torch

from lightning_dd import RealDataModule
from lightning_dd.utils.errors import ConfigError

from helpers import fit, tiny_module


@pytest.mark.parametrize("model_source,perturb", [("pool", True), ("random", False), ("pool", False), ("random", True)])
def test_distillation_runs_and_changes_the_images(pool_dir, model_source, perturb):
    module = tiny_module(pool_dir, model_source=model_source, perturb=perturb)
    trainer = fit(module)
    assert module.outer == 2 and module.inner == 0 and trainer.global_step == 6
    images, labels = module.distilled()
    assert images.shape == (10, 1, 8, 8) and torch.equal(labels, torch.arange(10))
    assert torch.equal(images, module.synthetic.images.detach().clamp(0, 1).cpu())  # the stored set, pixels in [0, 1]
    assert (module.pool is not None) == (model_source == "pool")
    # The images moved away from their real initialisation.
    start = tiny_module(pool_dir, model_source=model_source, perturb=perturb)
    start.attach_data(trainer.datamodule.info, trainer.datamodule.train_data)
    assert not torch.allclose(start.synthetic.images, module.synthetic.images.cpu())


class ImageStepSpy(L.Callback):
    """Before each image step: the images, their gradient and the network's weights."""

    def __init__(self) -> None:
        self.seen = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        images = pl_module.synthetic.images
        self.seen.append(
            (
                images.detach().clone(),
                images.grad.detach().clone(),
                {k: v.detach().clone() for k, v in pl_module.state.weights.items()},
            )
        )


def test_distribution_matching_mode_steps_on_the_mean_embedding_gap(pool_dir, tmp_path):
    """match="embed" follows DM's loss, sum over classes of |mean embedding(real) - mean embedding(syn)|^2.

    Every image of a class is the same, so the real batch's mean embedding is known whatever
    images were sampled; with no augmentation and one image step per iteration, the gradient the
    step uses and the logged loss are computed here from the network's weights alone.
    """
    from PIL import Image

    colours = [(200, 30, 60), (20, 180, 90), (90, 60, 220)]
    for k, colour in enumerate(colours):
        (tmp_path / "data" / f"c{k}").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), colour).save(tmp_path / "data" / f"c{k}" / f"{i}.png")
    datamodule = RealDataModule("image_folder", data_dir=str(tmp_path / "data"), source_options={"image_size": 8})
    module = tiny_module(
        pool_dir,
        match="embed",
        init="noise",
        model_source="random",
        perturb=False,
        outer_iterations=2,
        inner_loop=1,
        batch_real=4,
        n_data=0,
        lr_img=1.0,
        augment="none",
        image_step="per_iteration",
    )
    spy = ImageStepSpy()
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[spy],
    )
    trainer.fit(module, datamodule=datamodule)
    assert module.outer == 2 and len(spy.seen) == 2

    images, grad, weights = spy.seen[-1]
    net = module.net_spec.build(3, 3, (8, 8))
    net.load_state_dict(weights)
    mean, std = torch.tensor(datamodule.info.mean).view(1, 3, 1, 1), torch.tensor(datamodule.info.std).view(1, 3, 1, 1)
    real = (torch.tensor(colours, dtype=torch.float32).view(3, 3, 1, 1).expand(3, 3, 8, 8) / 255 - mean) / std
    syn = images.clone().requires_grad_(True)
    loss = sum(
        torch.sum((net.embed(real[c : c + 1]).mean(0) - net.embed((syn[c : c + 1] - mean) / std).mean(0)) ** 2)
        for c in range(3)
    )
    loss.backward()
    assert float(loss.detach()) > 0 and float(grad.abs().sum()) > 0
    torch.testing.assert_close(grad, syn.grad, rtol=1e-4, atol=1e-6)
    assert float(trainer.callback_metrics["distill/match_loss"]) == pytest.approx(float(loss.detach()), rel=1e-4)
    assert not torch.allclose(spy.seen[0][0], images)  # the first step moved the images


def test_bf16_precision_runs_and_stays_close(pool_dir, monkeypatch):
    monkeypatch.setattr("lightning_dd.distill.module.cpu_bf16_units", lambda: [])
    exact, fast = tiny_module(pool_dir), tiny_module(pool_dir, precision="bf16")
    trainer = fit(exact)
    with pytest.warns(UserWarning, match="bf16 is emulated there"):
        fit(fast)
    start = tiny_module(pool_dir)
    start.attach_data(trainer.datamodule.info, trainer.datamodule.train_data)
    moved = exact.synthetic.images.detach() - start.synthetic.images.detach()
    moved_bf16 = fast.synthetic.images.detach() - start.synthetic.images.detach()
    assert not torch.equal(exact.synthetic.images, fast.synthetic.images)  # bf16 did run
    # Distillation moved the pixels by ~0.03 on average; bf16 lands within a fraction of that
    # movement (measured 5-16 %) and in the same direction.
    assert float(moved.abs().mean()) > 0.01
    assert float((moved_bf16 - moved).norm()) < 0.3 * float(moved.norm())
    assert float(torch.nn.functional.cosine_similarity(moved.flatten(), moved_bf16.flatten(), dim=0)) > 0.95


def test_no_bf16_warning_on_a_cpu_with_bf16_units(pool_dir, monkeypatch, recwarn):
    monkeypatch.setattr("lightning_dd.distill.module.cpu_bf16_units", lambda: ["amx_bf16"])
    fit(tiny_module(pool_dir, precision="bf16", outer_iterations=1, inner_loop=1))
    assert not [w for w in recwarn if "emulated" in str(w.message)]


def test_only_synthetic_images_are_parameters(pool_dir):
    module = tiny_module(pool_dir)
    fit(module)
    assert [n for n, _ in module.named_parameters()] == ["synthetic.images"]


def test_same_seed_same_result_and_other_seed_differs(pool_dir):
    a, b, c = tiny_module(pool_dir), tiny_module(pool_dir), tiny_module(pool_dir, seed=1)
    for m in (a, b, c):
        fit(m)
    assert torch.equal(a.synthetic.images, b.synthetic.images)
    assert not torch.equal(a.synthetic.images, c.synthetic.images)


def test_bad_settings_fail_at_construction(pool_dir):
    with pytest.raises(ConfigError, match="ipc"):
        tiny_module(pool_dir, ipc=0)
    with pytest.raises(ConfigError, match="unknown metric"):
        tiny_module(pool_dir, metric="dot")
    with pytest.raises(ConfigError, match="unknown model_source"):
        tiny_module(pool_dir, model_source="zoo")
    with pytest.raises(ConfigError, match="unknown match 'feature'"):
        tiny_module(pool_dir, match="feature")
    with pytest.raises(ConfigError, match="rho_min"):
        tiny_module(pool_dir, rho_min=0.5, rho_max=0.1)


def test_fit_without_datamodule_says_what_to_do(pool_dir):
    from torch.utils.data import DataLoader

    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ConfigError, match="needs a RealDataModule"):
        trainer.fit(tiny_module(pool_dir), train_dataloaders=DataLoader(range(3)))


def test_the_module_reports_its_matched_parameters_update_size_and_times_its_parts(pool_dir):
    """What benchmarks read instead of re-deriving: matched names, images per network update, and seconds per part through the trainer's profiler."""
    from lightning.pytorch.profilers import SimpleProfiler

    from benchmarks.parts import PartSeconds

    whole = tiny_module(pool_dir, model_source="random", perturb=False, n_data=70, net_batch_size=32)
    exact = tiny_module(
        pool_dir, model_source="random", perturb=False, n_data=70, net_batch_size=32, net_whole_batches=False
    )
    assert (whole.update_images, exact.update_images) == (96, 70)  # 70 images in whole batches of 32: 3 x 32
    assert whole.matched_names == ()
    parts = PartSeconds()
    fit(whole, profiler=parts)
    # ConvNet-2: two conv weights are matched; biases, norm parameters and the linear head are not
    assert whole.matched_names == ("features.0.weight", "features.4.weight")
    assert parts.seconds["matching"] > 0 and parts.seconds["network"] > 0
    quiet, quiet_parts = tiny_module(pool_dir, model_source="random", perturb=False, n_data=0), PartSeconds()
    fit(quiet, profiler=quiet_parts)
    assert quiet_parts.seconds["network"] < quiet_parts.seconds["matching"] / 10  # no update: only the call itself
    simple = SimpleProfiler()  # any Lightning profiler sees the two parts, once per inner iteration
    fit(tiny_module(pool_dir, model_source="random", perturb=False), profiler=simple)
    assert len(simple.recorded_durations["matching"]) == len(simple.recorded_durations["network"]) == 6


def test_the_network_update_reads_the_net_settings_into_one_train_schedule():
    """The flat net_* settings (their config and checkpoint names) become one TrainSchedule in the Distiller's settings."""
    from lightning_dd import DistillModule
    from lightning_dd.classify import TrainSchedule

    module = DistillModule(
        net_lr=0.03, net_momentum=0.5, net_weight_decay=1e-3, net_batch_size=7, net_cutmix_p=0.25, net_spatial="all",
        net_cutout_with_cutmix=True, augment="color_crop", n_data=10, net_whole_batches=True,
    )  # fmt: skip
    update = module.settings.update
    assert update.schedule == TrainSchedule(
        epochs=1, lr=0.03, momentum=0.5, weight_decay=1e-3, batch_size=7, milestones=(), augment="color_crop",
        cutmix_p=0.25, spatial="all", cutout_with_cutmix=True,
    )  # fmt: skip
    assert update.batch == module.net_batch == 7 and update.images == module.update_images == 14
    assert DistillModule(batch_real=9).settings.update.schedule.batch_size == 9  # net_batch_size None: batch_real
    default = DistillModule().settings.update.schedule
    for name in ("lr", "momentum", "weight_decay", "cutmix_p", "spatial", "cutout_with_cutmix"):
        assert getattr(default, name) == getattr(TrainSchedule(), name), name
