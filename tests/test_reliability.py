"""Exact resume, interruption, multi-process distillation and crash-safe writes."""

import os
import signal
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch

from lightning_dd import RealDataModule
from lightning_dd.callbacks.interrupt import CheckpointOnInterrupt

from helpers import mix_module as module, trainer_at as trainer


class InterruptAt(CheckpointOnInterrupt):
    """Simulates SIGTERM arriving during inner step ``step``."""

    def __init__(self, step, dirpath):
        super().__init__(dirpath=dirpath)
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


# Stop in the middle of an outer iteration (step 4) and at the end of one (step 5).
@pytest.mark.parametrize("model_source,stop_step", [("pool", 4), ("random", 5)])
def test_resume_is_bit_identical(tmp_path, pool_dir, model_source, stop_step):
    reference = module(pool_dir, model_source=model_source)
    trainer(tmp_path / "ref").fit(reference, datamodule=RealDataModule("digits"))

    first = module(pool_dir, model_source=model_source)
    stopper = InterruptAt(stop_step, str(tmp_path / "ckpt"))
    trainer(tmp_path / "a", [stopper]).fit(first, datamodule=RealDataModule("digits"))
    assert first.interrupted and stopper.checkpoint_path.exists()
    assert first.outer * 3 + first.inner == stop_step + 1  # the step in flight was finished
    assert signal.getsignal(signal.SIGTERM) is not stopper._handler  # handlers restored

    resumed = module(pool_dir, model_source=model_source)
    trainer(tmp_path / "b").fit(resumed, datamodule=RealDataModule("digits"), ckpt_path=stopper.checkpoint_path)
    assert resumed.outer == 3
    assert torch.equal(resumed.synthetic.images, reference.synthetic.images)


def test_a_python_api_resume_refuses_changed_settings_and_allows_safe_ones(tmp_path, pool_dir):
    """Resume compatibility lives with the module, so trainer.fit(ckpt_path=...) gets the CLI's refusal too."""
    from lightning_dd.utils.errors import ConfigError

    first = module(pool_dir, model_source="random", perturb=False)
    stopper = InterruptAt(2, str(tmp_path / "ckpt"))
    trainer(tmp_path / "a", [stopper]).fit(first, datamodule=RealDataModule("digits"))
    changed = module(pool_dir, model_source="random", perturb=False, lr_img=0.5)
    with pytest.raises(ConfigError, match=r"model\.lr_img=0\.5 differs from 0\.05 in the checkpoint"):
        trainer(tmp_path / "b").fit(changed, datamodule=RealDataModule("digits"), ckpt_path=stopper.checkpoint_path)
    assert changed.outer == 0, "distillation started before the refusal"
    longer = module(pool_dir, model_source="random", perturb=False, outer_iterations=4)  # outer_iterations may change
    trainer(tmp_path / "c").fit(longer, datamodule=RealDataModule("digits"), ckpt_path=stopper.checkpoint_path)
    assert longer.outer == 4


def test_checkpoint_of_other_kind_is_refused(tmp_path, pool_dir):
    from lightning_dd.utils.errors import ConfigError

    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.0"}, path)
    with pytest.raises(ConfigError, match="not written by lightning-dd"):
        module(pool_dir).on_load_checkpoint(torch.load(path))


def test_killed_writer_leaves_previous_file_intact(tmp_path):
    from lightning_dd.utils.atomic import atomic_torch_save

    target = tmp_path / "set.pt"
    atomic_torch_save({"generation": 1}, target)
    child = textwrap.dedent(
        f"""
        import time, torch
        import lightning_dd.utils.atomic as atomic
        def slow_save(obj, handle):
            handle.write(b"half-written" * 1000)
            handle.flush()
            print("writing", flush=True)
            time.sleep(60)
        atomic.torch.save = slow_save
        atomic.atomic_torch_save({{"generation": 2}}, {str(target)!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait(timeout=30)
    assert torch.load(target, weights_only=True) == {"generation": 1}


def test_divergence_stops_with_iteration_and_keeps_last_good_set(tmp_path, pool_dir):
    from lightning_dd.utils.errors import DivergenceError

    class Poison(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 4:  # second outer iteration
                pl_module.state.loss_sum = pl_module.state.loss_sum * float("nan")

    bad = module(pool_dir)
    good_after_first_outer = {}

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                # The state the second outer iteration starts from: clamped when it begins (clamp="per_outer").
                good_after_first_outer["images"] = pl_module.synthetic.images.detach().clamp(0, 1)

    with pytest.raises(DivergenceError, match="outer iteration 2"):
        trainer(tmp_path, [Snapshot(), Poison()]).fit(bad, datamodule=RealDataModule("digits"))
    assert torch.equal(bad.synthetic.images.detach(), good_after_first_outer["images"])


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, pool_dir):
    # One image step per inner iteration, on the all-reduced gradient (the per-class step across
    # processes: tests/test_per_class_replay.py).
    single = module(pool_dir, outer_iterations=2, inner_loop=2, image_step="per_iteration")
    trainer(tmp_path / "one").fit(single, datamodule=RealDataModule("digits"))
    double = module(pool_dir, outer_iterations=2, inner_loop=2, image_step="per_iteration")
    trainer(tmp_path / "two", strategy="ddp_distill_spawn", devices=2).fit(double, datamodule=RealDataModule("digits"))
    assert torch.allclose(double.synthetic.images, single.synthetic.images, atol=1e-5)
    dm = RealDataModule("digits")
    initial = module(pool_dir, outer_iterations=2, inner_loop=2)
    initial.attach_data(dm.info, dm.train_data)
    assert not torch.allclose(double.synthetic.images, initial.synthetic.images, atol=1e-3)  # it did distil


@pytest.mark.slow
def test_cli_sigterm_then_resume_gives_the_same_export(tmp_path):
    from pathlib import Path

    from lightning_dd.export import load_distilled

    tiny = [
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--model.ipc=1",
        "--model.factor=1",
        "--model.net.width=8",
        "--model.net.depth=2",
        "--model.pool.size=2",
        "--model.pool.epochs=1",
        f"--model.pool.cache_dir={tmp_path / 'pools'}",
        "--model.outer_iterations=3",
        "--model.inner_loop=3",
        "--model.batch_real=16",
        "--model.n_data=32",
        "--evaluation.epochs=2",
        "--evaluation.repeats=1",
        "--evaluation.baselines=false",
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "LIGHTNING_DD_QUIET": "1"}

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "lightning_dd.cli", "fit", *tiny, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    full = cli(f"--trainer.default_root_dir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr[-2000:]
    killed = cli(
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        "--trainer.callbacks+=signal_helpers.SendSigterm",
        "--trainer.callbacks.at_step=4",
    )
    assert killed.returncode == 128 + signal.SIGTERM, killed.stderr[-2000:]
    ckpt = tmp_path / "run" / "lightning_logs" / "version_0" / "interrupted.ckpt"
    assert ckpt.exists() and "SIGTERM received" in killed.stderr + killed.stdout
    resumed = cli(f"--trainer.default_root_dir={tmp_path / 'run'}", f"--ckpt_path={ckpt}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = load_distilled(tmp_path / "full" / "lightning_logs" / "version_0" / "distilled.pt")
    # The resumed run logs into the interrupted run's version folder.
    assert not (tmp_path / "run" / "lightning_logs" / "version_1").exists()
    got = load_distilled(tmp_path / "run" / "lightning_logs" / "version_0" / "distilled.pt")
    assert torch.equal(got.images, expected.images)


def test_bad_ckpt_path_is_one_sentence(tmp_path, capsys):
    from lightning_dd.cli import main

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(b"PK\x03\x04 not really a checkpoint")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    for path, message in (
        (tmp_path / "missing.ckpt", "no checkpoint at"),
        (truncated, "truncated or foreign"),
        (foreign, "not a checkpoint written by lightning-dd"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}", f"--ckpt_path={path}"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
