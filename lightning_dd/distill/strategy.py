"""Multi-process distillation: Lightning's DDP without the DistributedDataParallel wrapper.

Gradient matching differentiates through a gradient (double backward), which DDP's reducer does
not support (pytorch issues 63812, 47562), and matching is naturally split by class. So each
rank matches its own share of the classes and DistillModule sums the synthetic-image gradients
with one explicit ``all_reduce`` before the (identical) optimiser step on every rank. This
strategy is Lightning's DDPStrategy with process-group set-up, launching and collectives
unchanged; it only skips wrapping the module.

Use ``--trainer.strategy ddp_distill`` (``ddp_distill_spawn`` for notebooks and CPU tests) with
``--trainer.devices N`` and, across machines, ``--trainer.num_nodes K``.
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from torch import nn


class DistillDDPStrategy(DDPStrategy):
    """DDPStrategy that leaves the LightningModule unwrapped (gradients are synchronised by the module)."""

    strategy_name = "ddp_distill"

    def _setup_model(self, model: nn.Module) -> nn.Module:
        return model

    def _register_ddp_hooks(self) -> None:  # no DDP wrapper, so no communication hooks
        return None

    @classmethod
    def register_strategies(cls, strategy_registry: dict) -> None:
        strategy_registry.register("ddp_distill", cls, description="DDP for DistillModule (no module wrapping)")
        strategy_registry.register(
            "ddp_distill_spawn", cls, description="DDP for DistillModule, spawned processes", start_method="spawn"
        )


if "ddp_distill" not in StrategyRegistry:
    DistillDDPStrategy.register_strategies(StrategyRegistry)
