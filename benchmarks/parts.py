"""Seconds spent in DistillModule's parts (the matching step, the network update), summed by a Lightning profiler.

DistillModule runs each inner iteration's matching step and network update inside
``trainer.profiler.profile("matching")`` and ``trainer.profiler.profile("network")``; Lightning's
default profiler does nothing there, so runs that are not measured pay nothing. Benchmarks give
their Trainer a :class:`PartSeconds` (``profiler=PartSeconds()``) and read :attr:`PartSeconds.seconds`;
any other Lightning profiler (``profiler="simple"``) reports the same actions.
"""

from __future__ import annotations

import time

import torch
from lightning.pytorch.profilers import Profiler

PARTS = ("matching", "network")


class PartSeconds(Profiler):
    """Sums the wall seconds of the ``matching`` and ``network`` actions; every other action is ignored.

    Args:
        sync_device: a CUDA device to wait for at both ends of each part, so a part's seconds are its
            kernels' and not the time to queue them (at some cost in overlap); ``None`` (or a CPU)
            takes the clock as it is.
    """

    def __init__(self, sync_device: torch.device | str | None = None) -> None:
        super().__init__()
        self.seconds = {part: 0.0 for part in PARTS}
        self.sync_device = None if sync_device is None else torch.device(sync_device)
        self._started: dict[str, float] = {}

    def _clock(self) -> float:
        """``perf_counter``, after the device's queued kernels ran when ``sync_device`` is a CUDA device."""
        if self.sync_device is not None and self.sync_device.type == "cuda":
            torch.cuda.synchronize(self.sync_device)
        return time.perf_counter()

    def start(self, action_name: str) -> None:
        if action_name in self.seconds:
            self._started[action_name] = self._clock()

    def stop(self, action_name: str) -> None:
        if action_name in self._started:
            self.seconds[action_name] += self._clock() - self._started.pop(action_name)
