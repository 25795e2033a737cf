"""Where a distillation stands, and its current network: everything a checkpoint holds besides the images.

The module owns one :class:`DistillState` from construction, so a checkpoint can be read before any
data is attached (``load_from_checkpoint``, or Lightning restoring before ``on_fit_start``); the
:class:`~lightning_dd.distill.distiller.Distiller` built for a fit works on it. The checkpoint
keys are those DistillModule has always written under ``checkpoint["lightning_dd"]``, so older
checkpoints resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

Tensor = torch.Tensor


@dataclass
class DistillState:
    """Position, random stream and the current outer iteration's network and accumulators.

    ``generator`` stays ``None`` until data is attached or a checkpoint read: a state holding no
    tensors pickles cleanly to spawned DDP workers. ``restored`` holds a checkpoint's network
    weights and optimiser state (on the CPU) until a Distiller places them on its device.
    """

    outer: int = 0
    inner: int = 0
    member: int = -1  # the pool member drawn for the current outer iteration (-1: a fresh network)
    generator: torch.Generator | None = None
    weights: dict[str, Tensor] | None = None
    net_optimizer: torch.optim.SGD | None = None
    loss_sum: Tensor | None = None
    good_images: Tensor | None = None  # the images when the outer iteration began: the rollback target
    restored: tuple[dict[str, Tensor], dict[str, Any]] | None = None

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint entry (tensors on the CPU)."""
        assert self.generator is not None
        return {
            "outer": self.outer,
            "inner": self.inner,
            "member": self.member,
            "generator": self.generator.get_state(),
            "weights": None if self.weights is None else {n: w.detach().cpu() for n, w in self.weights.items()},
            "net_optimizer": None if self.net_optimizer is None else self.net_optimizer.state_dict(),
            "loss_sum": None if self.loss_sum is None else self.loss_sum.detach().cpu(),
            "good_images": None if self.good_images is None else self.good_images.cpu(),
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from a checkpoint entry written by :meth:`checkpoint`."""
        self.outer, self.inner, self.member = saved["outer"], saved["inner"], saved["member"]
        if self.generator is None:
            self.generator = torch.Generator()
        self.generator.set_state(saved["generator"])
        self.restored = (saved["weights"], saved["net_optimizer"]) if saved["weights"] is not None else None
        self.loss_sum = saved["loss_sum"]
        self.good_images = saved["good_images"]
