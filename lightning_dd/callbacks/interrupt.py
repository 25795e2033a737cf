"""CheckpointOnInterrupt: SIGTERM / Ctrl-C finish the current step, save a checkpoint, stop.

Cluster schedulers send SIGTERM before killing a job; a plain KeyboardInterrupt can land in the
middle of an update. This callback turns both into a request that is honoured between two
inner steps, so the checkpoint is always consistent and ``fit --ckpt_path <file>`` continues
exactly where the run stopped. A second Ctrl-C interrupts immediately.

Every checkpoint the run writes (this callback's and ModelCheckpoint's) also records the run's
log folder under :data:`LOG_LOCATION_KEY`, so that a resumed ``lightning-dd fit`` keeps logging
into the same ``version_N`` folder and one run's curves stay one TensorBoard run.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from lightning_dd.utils.validation import check_writable_dir

LOG_LOCATION_KEY = "lightning_dd_log"


class CheckpointOnInterrupt(Callback):
    """Save ``<dirpath>/<filename>`` and stop cleanly on SIGTERM or SIGINT.

    Args:
        dirpath: folder for the checkpoint (None: the trainer's log directory).
        filename: checkpoint file name.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "interrupted.ckpt") -> None:
        self.dirpath, self.filename = dirpath, filename
        self.signal_received: int | None = None
        self.checkpoint_path: Path | None = None
        self._previous: dict[int, object] = {}

    def check_settings(self) -> None:
        """Start-up check (asked by :func:`~lightning_dd.preflight.preflight_fit`): the checkpoint folder can be written."""
        if self.dirpath:
            check_writable_dir(self.dirpath, "interrupt.dirpath")

    def _handler(self, signum, frame) -> None:
        if self.signal_received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signal_received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        requested = self.signal_received is not None
        if trainer.world_size > 1:  # every rank must stop at the same step
            requested = bool(trainer.strategy.reduce_boolean_decision(requested, all=False))
        if not requested:
            return
        path = Path(self.dirpath or trainer.log_dir or trainer.default_root_dir) / self.filename
        trainer.save_checkpoint(path, weights_only=False)  # the full state: resuming needs the optimisers
        self.checkpoint_path = path
        pl_module.interrupted = True
        trainer.should_stop = True
        name = signal.Signals(self.signal_received).name if self.signal_received else "signal"
        rank_zero_info(f"lightning-dd: {name} received; checkpoint saved to {path}; resume with --ckpt_path {path}")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        logger = trainer.logger
        if logger is not None and getattr(logger, "log_dir", None):
            checkpoint[LOG_LOCATION_KEY] = {
                "log_dir": str(Path(logger.log_dir).resolve()),
                "name": logger.name,
                "version": logger.version,
            }

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
