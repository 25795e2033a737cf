"""Real data: dataset sources and the RealDataModule."""

from lightning_dd.data.datamodule import RealDataModule
from lightning_dd.data.real import Normalizer, RealData
from lightning_dd.data.sources import (
    DatasetInfo,
    ImageSplit,
    LoadedDataset,
    available_sources,
    load_source,
    register_source,
)

# Importing these modules registers their sources (mnist, fashion_mnist, cifar10, cifar100, svhn,
# image_folder); they import torchvision and PIL only when such a dataset is loaded.
from lightning_dd.data import image_folder as _image_folder  # noqa: E402,F401
from lightning_dd.data import torchvision_sources as _torchvision_sources  # noqa: E402,F401
from lightning_dd.data.idx import read_idx  # noqa: E402

__all__ = [
    "DatasetInfo",
    "ImageSplit",
    "LoadedDataset",
    "Normalizer",
    "RealData",
    "RealDataModule",
    "available_sources",
    "load_source",
    "read_idx",
    "register_source",
]
