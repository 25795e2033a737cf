"""Distillation parts (pure torch, each testable alone) and the DistillModule gluing them."""

from lightning_dd.augment import DSA, cutmix
from lightning_dd.distill.matching import class_matching_loss, gradient_distance
from lightning_dd.distill.module import DistillModule
from lightning_dd.distill.pool import EarlyStagePool, PoolConfig, perturb
from lightning_dd.distill.synthetic import SyntheticSet, decode

__all__ = [
    "DSA",
    "DistillModule",
    "EarlyStagePool",
    "PoolConfig",
    "SyntheticSet",
    "class_matching_loss",
    "cutmix",
    "decode",
    "gradient_distance",
    "perturb",
]
