"""Callbacks: periodic evaluation of the synthetic set and export of the distilled set."""

from lightning_dd.callbacks.evaluation import SyntheticEvaluation
from lightning_dd.callbacks.export import DistilledExport

__all__ = ["DistilledExport", "SyntheticEvaluation"]
