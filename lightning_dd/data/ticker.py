"""StepTicker: the train "dataloader" of distillation (see RealDataModule.train_dataloader).

Real batches are sampled on the device inside the module from a checkpointed generator, so the
loader only has to say how many steps an epoch has (one epoch = one outer iteration, which
gives the progress bar its inner position and ETA). It is stateless, so resuming needs nothing
from it.
"""

from __future__ import annotations

from typing import Iterator


class StepTicker:
    """An iterable of ``length`` step numbers."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.length))

    # Stateless, hence trivially resumable: these tell Lightning so (no "not resumable" warning
    # when resuming mid-epoch); the module's checkpointed counters and generator carry the state.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        return None
