"""ProgressLog: plain progress lines of distillation for runs whose output goes to a file.

Lightning's progress bar redraws itself with carriage returns: on a terminal that is a live bar,
in ``run.log`` (``lightning-dd fit ... > run.log``, ``nohup``, a batch job) it is a pile of
half-lines that says little. Off a terminal this callback writes one line instead, at a steady
interval and once more at the end::

    lightning-dd: distillation: outer iterations 3/200, matching steps 250/20000, elapsed 1m30s, remaining ~2h10m, loss 0.1234

It reads the module's counters (``outer``, ``inner``, ``hparams.outer_iterations``,
``hparams.inner_loop``) and the logged ``distill/match_loss``; it writes nothing on a terminal
(the bars are there), with ``LIGHTNING_DD_QUIET=1``, or on ranks other than 0.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from lightning_dd.utils.progress import (
    Throttle,
    check_interval,
    emit,
    format_duration,
    interactive,
    progress_interval,
    quiet,
    remaining,
    set_progress_interval,
)

LOSS_KEY = "distill/match_loss"


class ProgressLog(Callback):
    """Write a distillation progress line every ``interval`` seconds when output is not a terminal.

    Args:
        interval: seconds between two progress lines, for distillation and for this run's pool
            pretraining and evaluations; None: ``$LIGHTNING_DD_PROGRESS_INTERVAL`` or 30 s.
            0 writes a line at every matching step.

    Attributes:
        clock: seconds from an arbitrary origin (``time.monotonic``); tests replace it with a fake clock.
        stream: where lines go (None: stdout).
    """

    def __init__(self, interval: Optional[float] = None) -> None:
        self.interval = interval
        self.clock: Callable[[], float] = time.monotonic
        self.stream: TextIO | None = None
        self.lines = 0
        self._throttle: Throttle | None = None
        self._steps_at_start = 0
        self._written_at: int | None = None
        self._previous_interval: float | None = None

    def check_settings(self) -> None:
        """Start-up check (asked by :func:`~lightning_dd.preflight.preflight_fit`): the interval, or the environment's, is a number of seconds."""
        if self.interval is not None:
            check_interval(self.interval, "progress.interval")
        else:
            progress_interval()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Before the module's setup, which pretrains the pool: its lines follow this interval too.
        if self.interval is not None:
            self._previous_interval = set_progress_interval(self.interval)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.interval is not None:
            set_progress_interval(self._previous_interval)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or quiet() or interactive():
            self._throttle = None
            return
        self._throttle = Throttle(progress_interval() if self.interval is None else float(self.interval), self.clock)
        self._steps_at_start = self._steps_done(pl_module)  # a resumed run estimates from this process's own pace

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self._throttle is not None and self._throttle.due():
            self._write(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._throttle is not None and self._written_at != self._steps_done(pl_module):
            self._write(trainer, pl_module)

    @staticmethod
    def _steps_done(pl_module: pl.LightningModule) -> int:
        return int(pl_module.outer) * int(pl_module.hparams.inner_loop) + int(pl_module.inner)

    def line(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        """The progress line for the module's current position (without the ``lightning-dd:`` prefix)."""
        assert self._throttle is not None
        hp = pl_module.hparams
        done, total = self._steps_done(pl_module), int(hp.outer_iterations) * int(hp.inner_loop)
        elapsed = self._throttle.elapsed()
        loss = trainer.callback_metrics.get(LOSS_KEY)
        text = f"distillation: outer iterations {pl_module.outer}/{hp.outer_iterations}, matching steps {done}/{total}, elapsed {format_duration(elapsed)}"
        text += f", remaining {remaining(elapsed, done - self._steps_at_start, total - self._steps_at_start)}"
        return text + (f", loss {float(loss):.4g}" if loss is not None else "")

    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        emit(self.line(trainer, pl_module), self.stream)
        self._written_at = self._steps_done(pl_module)
        self.lines += 1
