"""MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100 and SVHN, read with torchvision's dataset readers.

Files live where torchvision puts them under ``data_dir`` (``data.download=true`` lets
torchvision fetch them):

========================  ===========================================================
``mnist``                 ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
``fashion_mnist``         ``FashionMNIST/raw/...`` (same names), or the Debian package
                          ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``)
``cifar10``               ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
``cifar100``              ``cifar-100-python/{train,test,meta}``
``svhn``                  ``{train,test}_32x32.mat`` (needs scipy)
========================  ===========================================================

Normalisation uses the published per-dataset mean/std constants (the ones the DC/DSA/IDC code
bases use), so results do not depend on how the data was stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lightning_dd.data.idx import read_idx
from lightning_dd.data.sources import ImageSplit, LoadedDataset, make_dataset, register_source
from lightning_dd.utils.errors import ConfigError, DataError, LightningDDError

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# Published per-channel statistics of the training sets (in [0, 1] units).
STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


def _reject_options(dataset: str, options: dict, accepted: Sequence[str] = ()) -> None:
    if options:
        allowed = f"it accepts {', '.join(accepted)}" if accepted else "it takes none"
        raise ConfigError(f"unknown source option(s) {', '.join(sorted(options))} for dataset {dataset!r}; {allowed}")


def _torchvision():
    try:
        import torchvision.datasets as tv_datasets
    except ImportError:
        raise DataError(
            "this dataset is read with torchvision, which is not installed; run `pip install torchvision`"
        ) from None
    return tv_datasets


def _read(label: str, expected: str, data_dir: str, download: bool, build: Callable[[], object]) -> object:
    """Run a torchvision reader, turning every failure into a one-sentence DataError."""
    try:
        return build()
    except LightningDDError:
        raise
    except ImportError as err:
        raise DataError(
            f"reading {label} needs the missing module {err.name or err}; install it (e.g. `pip install scipy`)"
        ) from None
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError, pickle/assert errors
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if download:
            raise DataError(
                f"could not download or read {label} into {expected} under {data_dir!r} ({reason}); check the network connection, or place the files there yourself"
            ) from None
        if "not found" in reason.lower():
            damaged = " (or failed their checksum)" if "corrupted" in reason.lower() else ""
            raise DataError(
                f"{label} files not found{damaged}: expected {expected} under {data_dir!r}; set data.download=true to download them"
            ) from None
        raise DataError(
            f"{label} files under {data_dir!r} could not be read ({type(err).__name__}: {reason}); delete {expected} and set data.download=true to fetch fresh copies"
        ) from None


def _split(images: torch.Tensor | np.ndarray, labels) -> ImageSplit:
    images = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images.contiguous()
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return ImageSplit(images.to(torch.uint8), labels)


def _mnist_like(name: str, cls_name: str, label: str, data_dir: str, download: bool) -> LoadedDataset:
    tv = _torchvision()
    cls = getattr(tv, cls_name)
    expected = f"{cls_name}/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte"
    train = _read(label, expected, data_dir, download, lambda: cls(root=data_dir, train=True, download=download))
    test = _read(label, expected, data_dir, download, lambda: cls(root=data_dir, train=False))
    mean, std = STATS[name]
    return make_dataset(
        name,
        _split(train.data.unsqueeze(1), train.targets),
        _split(test.data.unsqueeze(1), test.targets),
        list(getattr(train, "classes", [str(i) for i in range(10)])),
        flip_ok=name
        == "fashion_mnist",  # clothes keep their label mirrored (the authors keep flip for Fashion-MNIST); digits do not
        mean=mean,
        std=std,
    )


@register_source("mnist")
def load_mnist(data_dir: str = "data", download: bool = False, **options) -> LoadedDataset:
    """MNIST (60000 + 10000 grey 28x28 digits) from ``<data_dir>/MNIST/raw``."""
    _reject_options("mnist", options)
    return _mnist_like("mnist", "MNIST", "MNIST", data_dir, download)


def _idx_files_in(folder: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST IDX files in ``folder`` (``.gz`` or plain), or None if any is missing."""
    found = {}
    for stem in MNIST_FILES:
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            return None
    return found


def _load_idx_fashion_mnist(folder: Path) -> LoadedDataset:
    files = _idx_files_in(folder)
    if files is None:
        raise DataError(
            f"Fashion-MNIST IDX files not found in {str(folder)!r}: expected {{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz] (install the Debian package dataset-fashion-mnist or fix source_options.debian_dir)"
        )
    splits = []
    for prefix in ("train", "t10k"):
        images = read_idx(files[f"{prefix}-images-idx3-ubyte"])
        labels = read_idx(files[f"{prefix}-labels-idx1-ubyte"])
        if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1 or len(labels) != len(images):
            raise DataError(
                f"Fashion-MNIST files in {str(folder)!r} do not hold uint8 [N, H, W] images with one label each ({prefix} images {images.shape}, labels {labels.shape})"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"Fashion-MNIST labels in {str(files[f'{prefix}-labels-idx1-ubyte'])!r} are outside 0..9")
        splits.append(_split(images[:, None], labels))
    mean, std = STATS["fashion_mnist"]
    class_names = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    return make_dataset("fashion_mnist", splits[0], splits[1], class_names, flip_ok=True, mean=mean, std=std)


@register_source("fashion_mnist")
def load_fashion_mnist(
    data_dir: str = "data", download: bool = False, debian_dir: str | None = None, **options
) -> LoadedDataset:
    """Fashion-MNIST (60000 + 10000 grey 28x28 clothing images).

    Read from ``debian_dir`` when given (a folder with the four IDX files, gzip-compressed or
    not); otherwise from torchvision's ``<data_dir>/FashionMNIST/raw``; and when those files are
    absent and ``download`` is off, from the Debian package ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist``) if it is installed.
    """
    _reject_options("fashion_mnist", options, ["debian_dir"])
    if debian_dir is not None:
        return _load_idx_fashion_mnist(Path(debian_dir).expanduser())
    raw = Path(data_dir) / "FashionMNIST" / "raw"
    torchvision_present = all((raw / stem).is_file() for stem in MNIST_FILES)
    if not torchvision_present and not download and _idx_files_in(Path(DEBIAN_FASHION_MNIST)) is not None:
        return _load_idx_fashion_mnist(Path(DEBIAN_FASHION_MNIST))
    try:
        return _mnist_like("fashion_mnist", "FashionMNIST", "Fashion-MNIST", data_dir, download)
    except DataError as err:
        if download or torchvision_present:
            raise
        raise DataError(
            f"{err} (or install the Debian package dataset-fashion-mnist, read from {DEBIAN_FASHION_MNIST})"
        ) from None


def _cifar(name: str, cls_name: str, label: str, expected: str, data_dir: str, download: bool) -> LoadedDataset:
    tv = _torchvision()
    cls = getattr(tv, cls_name)
    train = _read(label, expected, data_dir, download, lambda: cls(root=data_dir, train=True, download=download))
    test = _read(label, expected, data_dir, download, lambda: cls(root=data_dir, train=False))
    mean, std = STATS[name]
    # torchvision keeps CIFAR as numpy uint8 [N, 32, 32, 3]
    return make_dataset(
        name,
        _split(train.data.transpose(0, 3, 1, 2), train.targets),
        _split(test.data.transpose(0, 3, 1, 2), test.targets),
        list(train.classes),
        flip_ok=True,
        mean=mean,
        std=std,
    )


@register_source("cifar10")
def load_cifar10(data_dir: str = "data", download: bool = False, **options) -> LoadedDataset:
    """CIFAR-10 (50000 + 10000 colour 32x32 images, 10 classes) from ``<data_dir>/cifar-10-batches-py``."""
    _reject_options("cifar10", options)
    return _cifar(
        "cifar10",
        "CIFAR10",
        "CIFAR-10",
        "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
        data_dir,
        download,
    )


@register_source("cifar100")
def load_cifar100(data_dir: str = "data", download: bool = False, **options) -> LoadedDataset:
    """CIFAR-100 (50000 + 10000 colour 32x32 images, 100 fine classes) from ``<data_dir>/cifar-100-python``."""
    _reject_options("cifar100", options)
    return _cifar("cifar100", "CIFAR100", "CIFAR-100", "cifar-100-python/{train,test,meta}", data_dir, download)


@register_source("svhn")
def load_svhn(data_dir: str = "data", download: bool = False, **options) -> LoadedDataset:
    """SVHN cropped digits (73257 + 26032 colour 32x32 images) from ``<data_dir>/{train,test}_32x32.mat``.

    torchvision maps the digit 0 (label 10 in the .mat files) to class 0. The ``extra`` split is
    not used, as in DC/DSA/IDC.
    """
    _reject_options("svhn", options)
    tv = _torchvision()
    expected = "train_32x32.mat and test_32x32.mat"
    splits = [
        _read(
            "SVHN",
            expected,
            data_dir,
            download,
            lambda split=split: tv.SVHN(root=data_dir, split=split, download=download),
        )
        for split in ("train", "test")
    ]
    mean, std = STATS["svhn"]
    return make_dataset(
        "svhn",
        *(_split(ds.data, ds.labels) for ds in splits),
        [str(i) for i in range(10)],
        flip_ok=False,
        mean=mean,
        std=std,
    )


__all__ = [
    "DEBIAN_FASHION_MNIST",
    "STATS",
    "load_cifar10",
    "load_cifar100",
    "load_fashion_mnist",
    "load_mnist",
    "load_svhn",
]
