"""Test-only callback: the process sends itself SIGTERM at a given step (a real `kill -TERM`)."""

import os
import signal

from lightning.pytorch.callbacks import Callback


class SendSigterm(Callback):
    def __init__(self, at_step: int = 3) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGTERM)
