"""A real, short Fashion-MNIST distillation from the Debian package's files (installed by .ci/run)."""

from pathlib import Path

import pytest

from lightning_dd.cli import run_cli
from lightning_dd.export import load_distilled

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_end_to_end(tmp_path, capsys):
    run_cli(
        [
            "fit",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
            "--data.dataset=fashion_mnist",
            f"--data.data_dir={tmp_path / 'no-torchvision-files-here'}",
            "--model.ipc=1",
            "--model.factor=2",
            "--model.net.width=4",
            "--model.pool.size=2",
            "--model.pool.epochs=1",
            "--model.pool.batch_size=512",
            f"--model.pool.cache_dir={tmp_path / 'pools'}",
            "--model.outer_iterations=2",
            "--model.inner_loop=2",
            "--model.batch_real=16",
            "--model.n_data=64",
            "--evaluation.epochs=3",
            "--evaluation.repeats=1",
        ]
    )
    assert "| distilled, 1/class (x4 decoded)" in capsys.readouterr().out
    exported = load_distilled(tmp_path / "lightning_logs" / "version_0" / "distilled.pt")
    assert exported.info.name == "fashion_mnist" and exported.images.shape == (10, 1, 28, 28) and exported.factor == 2
