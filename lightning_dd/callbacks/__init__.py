"""Callbacks: periodic evaluation of the synthetic set, export of the distilled set, progress lines for log files."""

from lightning_dd.callbacks.evaluation import SyntheticEvaluation
from lightning_dd.callbacks.export import DistilledExport
from lightning_dd.callbacks.progress_log import ProgressLog

__all__ = ["DistilledExport", "ProgressLog", "SyntheticEvaluation"]
