"""DistilledExport: the distilled set is written at the end, periodically, and after a failure."""

from __future__ import annotations

import lightning as L
import pytest

from lightning_dd.callbacks.export import DistilledExport
from lightning_dd.utils.errors import DivergenceError
from lightning_dd.export import load_distilled

from helpers import fit, tiny_distill


class FailAt(L.Callback):
    """Raises after inner step ``step`` has finished."""

    def __init__(self, step: int, error: BaseException) -> None:
        self.step, self.error = step, error

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            self.snapshot = pl_module.distilled()[0]
            raise self.error


def test_a_crash_still_writes_the_current_set(pool_dir, tmp_path):
    module = tiny_distill(pool_dir, model_source="random", perturb=False, outer_iterations=3, inner_loop=2, lr_img=1.0)
    initial = None

    class Start(L.Callback):
        def on_train_start(self, trainer, pl_module):
            nonlocal initial
            initial = pl_module.distilled()[0]

    fail = FailAt(3, RuntimeError("disk full"))
    with pytest.raises(RuntimeError, match="disk full"):
        fit(module, callbacks=[Start(), fail, DistilledExport(dirpath=str(tmp_path), name="crash")])
    saved = load_distilled(tmp_path / "crash.pt")
    assert (saved.images == fail.snapshot).all()  # the set as it was when training stopped ...
    assert not (saved.images == initial).all()  # ... which is not where it started
    assert saved.config["outer_iterations_done"] == 1 and saved.factor == 1
    assert (tmp_path / "crash.png").exists()


def test_divergence_exports_the_last_good_set(pool_dir, tmp_path):
    module = tiny_distill(pool_dir, model_source="random", perturb=False, outer_iterations=3, inner_loop=2)

    class Poison(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:  # the second outer iteration's first step
                self.good = pl_module.state.good_images.clone()
                pl_module.state.loss_sum = pl_module.state.loss_sum * float("nan")

    poison = Poison()
    with pytest.raises(DivergenceError):
        fit(module, callbacks=[poison, DistilledExport(dirpath=str(tmp_path))])
    saved = load_distilled(tmp_path / "distilled.pt")
    assert (saved.images == poison.good.clamp(0, 1)).all()


def test_periodic_and_final_exports(pool_dir, tmp_path, monkeypatch):
    written = []
    export = DistilledExport(dirpath=str(tmp_path), every_n_outer=2)
    original = export.export

    def recording(trainer, pl_module):
        written.append((pl_module.outer, pl_module.distilled()[0]))
        return original(trainer, pl_module)

    monkeypatch.setattr(export, "export", recording)
    module = tiny_distill(pool_dir, model_source="random", perturb=False, outer_iterations=4, inner_loop=1)
    fit(module, callbacks=[export])
    assert [o for o, _ in written] == [2, 4, 4]  # after outer 2 and 4, and at the end
    saved = load_distilled(tmp_path / "distilled.pt")
    assert (saved.images == module.distilled()[0]).all() and saved.config["outer_iterations_done"] == 4
    assert saved.config["model"]["ipc"] == 1 and saved.info.name == "digits"


def test_the_set_records_its_validation_split_and_evaluation(pool_dir, tmp_path):
    """``evaluate`` reads the held-out images and the evaluation from the file, so it repeats what the run measured."""
    from lightning_dd import RealDataModule
    from lightning_dd.callbacks import SyntheticEvaluation
    from lightning_dd.commands import _validation_of_export
    from helpers import make_trainer

    evaluation = SyntheticEvaluation(epochs=2, repeats=1, baselines=False, progress=False)
    module = tiny_distill(pool_dir, model_source="random", perturb=False)
    make_trainer([evaluation, DistilledExport(dirpath=str(tmp_path), name="set")], default_root_dir=tmp_path).fit(
        module, datamodule=RealDataModule("digits", val_per_class=15, val_seed=3)
    )
    config = load_distilled(tmp_path / "set.pt").config
    assert _validation_of_export(config) == {"val_per_class": 15, "val_seed": 3}
    assert (
        config["evaluation"]["epochs"] == 2 and config["evaluation"]["net"]["width"] == 8
    )  # the distillation network: no evaluation net was given
