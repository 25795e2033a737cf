"""Multi-process distillation: Lightning's DDP without the DistributedDataParallel wrapper.

Gradient matching differentiates through a gradient (double backward), which DDP's reducer does
not support (pytorch issues 63812, 47562), and matching is naturally split by class. So each
rank matches its own share of the classes and the Distiller sums the synthetic-image gradients
with one explicit ``all_reduce`` (:func:`sum_across_processes`, handed to it by DistillModule)
before the (identical) optimiser step on every rank. This
strategy is Lightning's DDPStrategy with process-group set-up, launching and collectives
unchanged; it only skips wrapping the module.

Use ``--trainer.strategy ddp_distill`` (``ddp_distill_spawn`` for notebooks and CPU tests) with
``--trainer.devices N`` and, across machines, ``--trainer.num_nodes K``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_dd.data.real import RealData
from lightning_dd.distill.image_step import ImageStep
from lightning_dd.distill.pool import EarlyStagePool, PoolConfig
from lightning_dd.nets.spec import NetSpec
from lightning_dd.utils.errors import ConfigError


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


def check_processes(trainer: Any, image_step: ImageStep) -> None:
    """What several processes need, refused in one sentence (the start-up checks and ``setup`` share it).

    DDP's wrapper cannot differentiate through gradients, and the image step must be able to
    share its classes among processes (:meth:`~lightning_dd.distill.image_step.ImageStep.check_processes`).
    """
    if trainer.world_size <= 1:
        return
    if not isinstance(trainer.strategy, DistillDDPStrategy):
        raise ConfigError(
            "multi-process distillation needs trainer.strategy=ddp_distill (or ddp_distill_spawn): DDP's wrapper cannot differentiate through gradients"
        )
    image_step.check_processes(trainer.world_size)


def build_pool(trainer: Any, net: NetSpec, config: PoolConfig, real: RealData, seed: int) -> EarlyStagePool:
    """The early-stage pool: built (or read from its cache) by rank 0 while the others wait, then read by them."""
    device = trainer.strategy.root_device
    if trainer.is_global_zero:
        rank_zero_info(
            f"lightning-dd: early-stage pool of {config.size} nets, {config.epochs} epoch(s) each (cached under {config.cache_dir})"
        )
        pool = EarlyStagePool.build_or_load(net, config, real, seed, device)
    trainer.strategy.barrier("lightning_dd_pool")
    if not trainer.is_global_zero:
        pool = EarlyStagePool.build_or_load(net, config, real, seed, device, progress=False)
    return pool


def sum_across_processes(tensor: torch.Tensor) -> None:
    """Sum ``tensor`` in place over every process of the default process group."""
    dist.all_reduce(tensor)


if "ddp_distill" not in StrategyRegistry:
    DistillDDPStrategy.register_strategies(StrategyRegistry)
