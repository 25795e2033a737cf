"""Image folders whose train and val splits disagree on the classes are refused before any image is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_dd.data import RealDataModule, load_source
from lightning_dd.utils.errors import DataError


def write_class_folders(root: Path, classes: list[str], per_class: int = 2) -> None:
    """``per_class`` 8x8 single-colour PNGs in ``root/<class>/`` for each class."""
    from PIL import Image

    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (40 * k, 255 - 40 * k, 10 * i)).save(folder / f"img{i}.png")


def test_a_val_class_missing_from_train_is_refused_in_one_sentence_naming_it(tmp_path):
    write_class_folders(tmp_path / "train", ["cat", "dog"])
    write_class_folders(tmp_path / "val", ["cat", "dog", "eel"])
    with pytest.raises(DataError) as err:
        load_source("image_folder", data_dir=str(tmp_path), image_size=8)
    message = str(err.value)
    assert (
        message.startswith("class 'eel' is in ")
        and str(tmp_path / "val") in message
        and str(tmp_path / "train") in message
    )
    assert "'cat'" not in message and "'dog'" not in message
    assert "\n" not in message and ". " not in message  # one sentence
    # Through the data module as a fit builds it, and with a class subset chosen from train.
    datamodule = RealDataModule("image_folder", data_dir=str(tmp_path), source_options={"image_size": 8})
    with pytest.raises(DataError, match="class 'eel' is in"):
        datamodule.setup("fit")
    with pytest.raises(DataError, match="class 'eel' is in"):
        load_source("image_folder", data_dir=str(tmp_path), image_size=8, classes=["cat"])


def test_several_unknown_test_classes_are_all_named(tmp_path):
    write_class_folders(tmp_path / "train", ["cat"])
    write_class_folders(tmp_path / "test", ["ant", "cat", "eel"])
    with pytest.raises(DataError, match=r"^classes 'ant', 'eel' are in .*test.* but not in .*train"):
        load_source("image_folder", data_dir=str(tmp_path), image_size=8)


def test_matching_splits_and_a_val_split_with_fewer_classes_still_load(tmp_path):
    write_class_folders(tmp_path / "train", ["cat", "dog"], per_class=3)
    write_class_folders(tmp_path / "val", ["cat", "dog"])
    data = load_source("image_folder", data_dir=str(tmp_path), image_size=8)
    assert (
        data.info.class_names == ("cat", "dog") and len(data.train) == 6 and data.test.labels.tolist() == [0, 0, 1, 1]
    )
    # A val split may hold only the chosen classes: a subset of train is read from it.
    write_class_folders(tmp_path / "train", ["eel"], per_class=3)
    subset = load_source("image_folder", data_dir=str(tmp_path), image_size=8, classes=["cat", "dog"])
    assert subset.info.class_names == ("cat", "dog") and len(subset.test) == 4
