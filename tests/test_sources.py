"""Real-data sources on tiny fake datasets written in the exact on-disk formats their readers expect."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_dd.data import RealDataModule, available_sources, load_source
from lightning_dd.data import torchvision_sources
from lightning_dd.data.idx import encode_idx, parse_idx, read_idx
from lightning_dd.data.sources import pixel_stats
from lightning_dd.utils.errors import ConfigError, DataError

RNG = np.random.default_rng(0)


def one_sentence(message: str) -> bool:
    """One line, and no full stop followed by another sentence."""
    return "\n" not in message and ". " not in message.rstrip(".") and "Traceback" not in message


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX written by hand (independent of lightning_dd.data.idx): uint8 only, as MNIST uses."""
    assert array.dtype == np.uint8
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def fake_mnist_arrays(n_train=20, n_test=10):
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        out[f"{prefix}-images-idx3-ubyte"] = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        out[f"{prefix}-labels-idx1-ubyte"] = (np.arange(n) % 10).astype(np.uint8)
    return out


def write_idx_folder(folder: Path, arrays: dict, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


# ----------------------------------------------------------------------------- registry and IDX


def test_sources_are_registered():
    assert {"mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "image_folder", "digits"} <= set(
        available_sources()
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(dtype, tmp_path):
    array = (RNG.standard_normal((3, 4, 5)) * 100).astype(dtype)
    assert np.array_equal(parse_idx(encode_idx(array)), array) and parse_idx(encode_idx(array)).dtype == np.dtype(dtype)
    (tmp_path / "a.gz").write_bytes(gzip.compress(encode_idx(array)))
    (tmp_path / "a").write_bytes(encode_idx(array))
    assert np.array_equal(read_idx(tmp_path / "a.gz"), array) and np.array_equal(read_idx(tmp_path / "a"), array)


def test_idx_matches_torchvision_reader(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    arrays = fake_mnist_arrays()
    write_idx_folder(tmp_path, arrays, gz=False)
    images = read_idx(tmp_path / "train-images-idx3-ubyte")
    assert np.array_equal(images, read_image_file(str(tmp_path / "train-images-idx3-ubyte")).numpy())
    assert np.array_equal(
        read_idx(tmp_path / "train-labels-idx1-ubyte"),
        read_label_file(str(tmp_path / "train-labels-idx1-ubyte")).numpy(),
    )
    assert images.flags.writeable  # torch.from_numpy without warnings


def test_damaged_idx_is_one_sentence(tmp_path):
    good = encode_idx(np.zeros((2, 3), np.uint8))
    cases = {
        "trunc": good[:-1],
        "magic": b"\x01\x02" + good[2:],
        "type": b"\x00\x00\x07\x02" + good[4:],
        "head": good[:6],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError) as err:
            read_idx(tmp_path / name)
        assert one_sentence(str(err.value)) and name in str(err.value)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(DataError, match="damaged gzip"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(tmp_path / "missing")


# ----------------------------------------------------------------------------- MNIST / Fashion-MNIST


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_torchvision_layout(name, folder, tmp_path):
    # torchvision 0.29: MNIST._check_exists only tests that the 4 uncompressed files exist in <root>/<Class>/raw
    arrays = fake_mnist_arrays()
    write_idx_folder(tmp_path / folder / "raw", arrays, gz=False)
    data = load_source(name, data_dir=str(tmp_path))
    info = data.info
    # Mirrored clothes keep their label (the authors' code keeps flip for Fashion-MNIST); digits do not.
    assert (info.name, info.num_classes, info.channels, info.image_size, info.flip_ok) == (
        name,
        10,
        1,
        (28, 28),
        name == "fashion_mnist",
    )
    assert info.mean == torchvision_sources.STATS[name][0] and info.std == torchvision_sources.STATS[name][1]
    assert data.train.images.shape == (20, 1, 28, 28) and data.test.images.shape == (10, 1, 28, 28)
    assert data.train.images.dtype == torch.uint8 and data.train.labels.dtype == torch.int64
    assert np.array_equal(data.train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert data.test.labels.tolist() == list(range(10))
    assert info.class_names[0] == ("0 - zero" if name == "mnist" else "T-shirt/top")


def test_fashion_mnist_from_debian_dir_option(tmp_path):
    arrays = fake_mnist_arrays(n_train=30, n_test=10)
    write_idx_folder(tmp_path / "deb", arrays, gz=True)
    data = load_source("fashion_mnist", data_dir=str(tmp_path / "elsewhere"), debian_dir=str(tmp_path / "deb"))
    assert data.train.images.shape == (30, 1, 28, 28) and data.test.images.shape == (10, 1, 28, 28)
    assert np.array_equal(data.test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert data.info.class_names[-1] == "Ankle boot" and data.info.flip_ok
    with pytest.raises(DataError) as err:
        load_source("fashion_mnist", debian_dir=str(tmp_path / "nowhere"))
    assert one_sentence(str(err.value)) and "nowhere" in str(err.value)


def test_fashion_mnist_falls_back_to_debian_package_only_without_torchvision_files(tmp_path, monkeypatch):
    deb, data_dir = tmp_path / "deb", tmp_path / "data"
    write_idx_folder(deb, fake_mnist_arrays(n_train=30), gz=True)
    data_dir.mkdir()
    monkeypatch.setattr(torchvision_sources, "DEBIAN_FASHION_MNIST", str(deb))
    assert len(RealDataModule("fashion_mnist", data_dir=str(data_dir)).train_data) == 30
    write_idx_folder(data_dir / "FashionMNIST" / "raw", fake_mnist_arrays(n_train=20), gz=False)
    assert len(load_source("fashion_mnist", data_dir=str(data_dir)).train) == 20  # torchvision files win
    monkeypatch.setattr(torchvision_sources, "DEBIAN_FASHION_MNIST", str(tmp_path / "absent"))
    with pytest.raises(DataError) as err:
        load_source("fashion_mnist", data_dir=str(tmp_path / "empty"))
    message = str(err.value)
    assert (
        one_sentence(message)
        and "data.download=true" in message
        and "dataset-fashion-mnist" in message
        and "FashionMNIST/raw" in message
    )


@pytest.mark.skipif(
    not os.path.isdir(torchvision_sources.DEBIAN_FASHION_MNIST),
    reason="Debian package dataset-fashion-mnist is not installed",
)
def test_real_debian_fashion_mnist(tmp_path):
    data = load_source("fashion_mnist", data_dir=str(tmp_path))
    assert data.train.images.shape == (60000, 1, 28, 28) and data.test.images.shape == (10000, 1, 28, 28)
    assert torch.equal(data.train.labels.bincount(), torch.full((10,), 6000))
    mean, std = pixel_stats(data.test.images[:2000])
    assert abs(mean[0] - 0.2861) < 0.02 and abs(std[0] - 0.3530) < 0.02


# ----------------------------------------------------------------------------- CIFAR / SVHN


def md5_free_check(fpath, md5=None):
    return os.path.isfile(fpath)


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision's CIFAR and SVHN readers compare files with the official md5 sums; fake files cannot
    match, so the tests (only) replace check_integrity in those modules by an existence check."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    monkeypatch.setattr(cifar, "check_integrity", md5_free_check)
    monkeypatch.setattr(svhn, "check_integrity", md5_free_check)


def write_cifar(root: Path, hundred: bool, per_file: int = 6) -> dict:
    labels_key = "fine_labels" if hundred else "labels"
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    files = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    n_classes = 100 if hundred else 10
    written = {}
    for i, name in enumerate(files):
        data = RNG.integers(0, 256, (per_file, 3072), dtype=np.uint8)  # rows are R plane, G plane, B plane
        labels = [(i * per_file + j) % n_classes for j in range(per_file)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, labels_key: labels, "batch_label": name}, f)
        written[name] = (data, labels)
    if hundred:
        meta = {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"c{i}" for i in range(20)],
        }
    else:
        meta = {
            "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        }
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f)
    return written


def test_cifar10(tmp_path, no_md5):
    written = write_cifar(tmp_path, hundred=False)
    data = load_source("cifar10", data_dir=str(tmp_path))
    info = data.info
    assert (info.num_classes, info.channels, info.image_size, info.flip_ok) == (10, 3, (32, 32), True)
    assert (
        info.mean == (0.4914, 0.4822, 0.4465)
        and info.std == (0.2023, 0.1994, 0.2010)
        and info.class_names[1] == "automobile"
    )
    assert (
        data.train.images.shape == (30, 3, 32, 32)
        and data.test.images.shape == (6, 3, 32, 32)
        and data.train.images.dtype == torch.uint8
    )
    first, labels = written["data_batch_1"]
    assert torch.equal(data.train.images[0], torch.from_numpy(first[0].reshape(3, 32, 32)))  # channels-first again
    assert data.train.labels[:6].tolist() == labels and data.test.labels.tolist() == written["test_batch"][1]


def test_cifar100(tmp_path, no_md5):
    written = write_cifar(tmp_path, hundred=True, per_file=8)
    data = load_source("cifar100", data_dir=str(tmp_path))
    assert data.info.num_classes == 100 and data.info.class_names[99] == "fine99" and data.info.flip_ok
    assert data.info.mean == (0.5071, 0.4866, 0.4409) and data.info.std == (0.2673, 0.2564, 0.2762)
    assert data.train.images.shape == (8, 3, 32, 32) and data.test.labels.tolist() == written["test"][1]
    assert torch.equal(data.test.images[3], torch.from_numpy(written["test"][0][3].reshape(3, 32, 32)))


def test_svhn(tmp_path, no_md5):
    sio = pytest.importorskip("scipy.io", reason="SVHN's .mat files need scipy")
    images = {}
    for split, n in (("train", 12), ("test", 5)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # the .mat layout: H, W, C, N
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)  # digit 0 is stored as 10
        sio.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        images[split] = x
    data = load_source("svhn", data_dir=str(tmp_path))
    info = data.info
    assert (info.num_classes, info.channels, info.image_size, info.flip_ok) == (10, 3, (32, 32), False)
    assert info.mean == (0.4377, 0.4438, 0.4728) and info.std == (0.1980, 0.2010, 0.1970)
    assert data.train.images.shape == (12, 3, 32, 32) and data.test.images.shape == (5, 3, 32, 32)
    assert data.train.labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert torch.equal(data.train.images[4], torch.from_numpy(images["train"][:, :, :, 4]).permute(2, 0, 1))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mnist", "MNIST/raw"),
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("svhn", "train_32x32.mat"),
    ],
)
def test_missing_files_are_one_sentence(name, expected, tmp_path):
    with pytest.raises(DataError) as err:
        RealDataModule(name, data_dir=str(tmp_path)).setup()
    message = str(err.value)
    assert (
        one_sentence(message) and expected in message and "data.download=true" in message and str(tmp_path) in message
    )


def test_checksum_failure_and_download_failure_are_one_sentence(tmp_path, monkeypatch):
    write_cifar(tmp_path, hundred=False)  # real md5 check: fake files fail it
    with pytest.raises(DataError, match="not found \\(or failed their checksum\\)") as err:
        load_source("cifar10", data_dir=str(tmp_path))
    assert one_sentence(str(err.value))
    import urllib.error

    import torchvision.datasets.cifar as cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="could not download or read CIFAR-100") as err:
        load_source("cifar100", data_dir=str(tmp_path), download=True)
    assert one_sentence(str(err.value)) and "no network" in str(err.value)


def test_unknown_source_option_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown source option\\(s\\) classes for dataset 'cifar10'; it takes none"):
        load_source("cifar10", data_dir=str(tmp_path), classes=3)


# ----------------------------------------------------------------------------- image folders


COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def write_images(root: Path, per_class: dict[str, int], size=(40, 24)) -> None:
    from PIL import Image

    for k, (name, n) in enumerate(per_class.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", size, COLOURS[k % len(COLOURS)]).save(folder / f"img{i}.png")


def test_image_folder_split_resize_and_stats(tmp_path):
    write_images(tmp_path, {"cat": 5, "dog": 5, "eel": 5})
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    data = load_source("image_folder", data_dir=str(tmp_path), image_size=16, test_fraction=0.2)
    info = data.info
    assert (info.name, info.class_names, info.channels, info.image_size, info.flip_ok) == (
        "image_folder",
        ("cat", "dog", "eel"),
        3,
        (16, 16),
        True,
    )
    assert (
        data.train.images.shape == (12, 3, 16, 16)
        and data.test.images.shape == (3, 3, 16, 16)
        and data.train.images.dtype == torch.uint8
    )
    assert data.train.labels.bincount().tolist() == [4, 4, 4] and data.test.labels.tolist() == [0, 1, 2]
    assert data.train.images[data.train.labels == 1][:, :, 5, 5].unique(dim=0).tolist() == [[0, 255, 0]]
    assert info.mean == pytest.approx(pixel_stats(data.train.images)[0]) and info.mean == pytest.approx(
        (1 / 3, 1 / 3, 1 / 3)
    )
    again = load_source("image_folder", data_dir=str(tmp_path), image_size=16)
    assert torch.equal(again.train.images, data.train.images)
    stretched = load_source("image_folder", data_dir=str(tmp_path), image_size=[8, 12], channels=1, center_crop=False)
    assert stretched.train.images.shape == (12, 1, 8, 12) and stretched.info.channels == 1
    assert stretched.train.images[stretched.train.labels == 0].unique().tolist() == [76]  # PIL grey of pure red


def test_image_folder_class_subsets_and_cap(tmp_path):
    write_images(tmp_path, {name: 6 for name in ["a", "b", "c", "d", "e"]})
    assert load_source("image_folder", data_dir=str(tmp_path), classes=["d", "b"]).info.class_names == ("d", "b")
    assert load_source("image_folder", data_dir=str(tmp_path), classes=2).info.class_names == ("a", "b")
    seeded = [
        load_source("image_folder", data_dir=str(tmp_path), classes=3, class_seed=s).info.class_names for s in (1, 1, 2)
    ]
    assert seeded[0] == seeded[1] and len(seeded[0]) == 3 and list(seeded[0]) == sorted(seeded[0])
    capped = load_source("image_folder", data_dir=str(tmp_path), classes=2, max_per_class=4, test_fraction=0.25)
    assert len(capped.train) == 6 and len(capped.test) == 2
    with pytest.raises(ConfigError, match="class folder\\(s\\) 'zebra' not found") as err:
        load_source("image_folder", data_dir=str(tmp_path), classes=["a", "zebra"])
    assert one_sentence(str(err.value))
    with pytest.raises(ConfigError, match="between 1 and the 5 class folders"):
        load_source("image_folder", data_dir=str(tmp_path), classes=9)


def test_image_folder_train_test_layout_via_datamodule(tmp_path):
    write_images(tmp_path / "train", {"x": 4, "y": 3})
    write_images(tmp_path / "val", {"x": 2, "y": 2})
    dm = RealDataModule("image_folder", data_dir=str(tmp_path), source_options={"image_size": 8})
    assert dm.info.num_classes == 2 and len(dm.train_data) == 7 and len(dm.test_data) == 4
    assert dm.train_data.images.shape[1:] == (3, 8, 8)


def test_image_folder_errors_are_one_sentence(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_source("image_folder", data_dir=str(tmp_path / "missing"))
    assert one_sentence(str(err.value))
    write_images(tmp_path, {"full": 2})
    (tmp_path / "hollow").mkdir()
    with pytest.raises(DataError) as err:
        load_source("image_folder", data_dir=str(tmp_path))
    assert one_sentence(str(err.value)) and str(tmp_path / "hollow") in str(err.value) and "no images" in str(err.value)
    (tmp_path / "hollow" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*broken.png") as err:
        load_source("image_folder", data_dir=str(tmp_path))
    assert one_sentence(str(err.value))
    with pytest.raises(ConfigError, match="channels must be 1"):
        load_source("image_folder", data_dir=str(tmp_path), channels=4)
