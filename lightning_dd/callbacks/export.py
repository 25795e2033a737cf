"""DistilledExport: write the distilled set (single file + PNG grid) during and after training."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lightning_dd.export import save_grid_png
from lightning_dd.set_format import save_distilled, to_jsonable
from lightning_dd.utils.validation import check_numbers, check_writable_dir


class DistilledExport(Callback):
    """Saves ``<dirpath>/<name>.pt`` and ``<name>.png`` at the end of training (and on failure).

    Files are written atomically. If training stops with an exception (including a diverged
    matching loss, after which the module has restored the last good images), the current set
    is still exported so no work is lost.

    Args:
        dirpath: output folder (None: the trainer's log directory, e.g. ``lightning_logs/version_0``).
        name: file stem.
        every_n_outer: also export after every this many outer iterations (0: only at the end).
    """

    def __init__(self, dirpath: str | None = None, name: str = "distilled", every_n_outer: int = 0) -> None:
        self.dirpath, self.name, self.every_n_outer = dirpath, name, every_n_outer
        self.last_path: Path | None = None

    def check_settings(self) -> None:
        """Start-up checks (asked by :func:`~lightning_dd.preflight.preflight_fit`): the number and the export folder."""
        check_numbers({"every_n_outer": self.every_n_outer}, "export")
        if self.dirpath:
            check_writable_dir(self.dirpath, "export.dirpath")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if (
            self.every_n_outer > 0
            and getattr(pl_module, "finished_outer", False)
            and pl_module.outer % self.every_n_outer == 0
        ):
            self.export(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.export(trainer, pl_module)
        if path is not None:
            rank_zero_info(f"lightning-dd: distilled set written to {path} (grid: {path.with_suffix('.png')})")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if getattr(pl_module, "synthetic", None) is not None:
            path = self.export(trainer, pl_module)
            if path is not None:
                rank_zero_info(
                    f"lightning-dd: training stopped ({type(exception).__name__}); the current set was saved to {path}"
                )

    def output_dir(self, trainer: pl.Trainer) -> Path:
        return Path(self.dirpath or trainer.log_dir or trainer.default_root_dir)

    def export(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        if not trainer.is_global_zero or pl_module.synthetic is None or pl_module.info is None:
            return None
        images, labels = pl_module.distilled()
        out = self.output_dir(trainer)
        config = {"model": to_jsonable(dict(pl_module.hparams)), "outer_iterations_done": pl_module.outer}
        data = getattr(trainer, "datamodule", None)
        if data is not None and hasattr(data, "hparams"):  # which images were held out for validation, for `evaluate`
            config["data"] = to_jsonable(dict(data.hparams))
        evaluation = next((cb for cb in trainer.callbacks if hasattr(cb, "recorded_settings")), None)
        if (
            evaluation is not None
        ):  # `evaluate` then repeats the evaluation the run printed, not the distillation network's
            config["evaluation"] = to_jsonable(evaluation.recorded_settings(pl_module))
        path = save_distilled(out / f"{self.name}.pt", images, labels, pl_module.hparams.factor, pl_module.info, config)
        save_grid_png(out / f"{self.name}.png", images, pl_module.hparams.ipc)
        self.last_path = path
        return path
