"""lightning-dd: dataset distillation (Acc-DD on IDC gradient matching) for PyTorch Lightning."""

from lightning_dd.callbacks import DistilledExport, SyntheticEvaluation
from lightning_dd.data import RealDataModule
from lightning_dd.distill import DistillModule, PoolConfig
from lightning_dd.set_format import load_distilled, save_distilled
from lightning_dd.nets import NetSpec
from lightning_dd.data.synthetic_datamodule import SyntheticDataModule
from lightning_dd.utils.lightning_noise import silence_lightning_tips

silence_lightning_tips()  # Python-API fits print no cloud-service tips, as the command line does

__version__ = "0.1.0"

__all__ = [
    "DistillModule",
    "DistilledExport",
    "NetSpec",
    "PoolConfig",
    "RealDataModule",
    "SyntheticDataModule",
    "SyntheticEvaluation",
    "load_distilled",
    "save_distilled",
]
