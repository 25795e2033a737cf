"""A distilled-set file is checked when it is read: one sentence naming the file and the defect.

Each case starts from a valid :func:`save_distilled` file, edits one field of the stored dict as a
damaged disk or a hand edit would, and reads it back through :func:`load_distilled`, the one
reader behind ``lightning-dd evaluate``, ``export-folder`` and SyntheticDataModule.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from lightning_dd.data import DatasetInfo
from lightning_dd.utils.errors import FileFormatError
from lightning_dd.set_format import PIXEL_TOLERANCE, load_distilled, save_distilled

INFO = DatasetInfo("digits", 10, 1, (8, 8), (0.3,), (0.4,), tuple(str(i) for i in range(10)), False)


@pytest.fixture
def valid(tmp_path):
    """A valid IPC-2, factor-2 set of 8x8 grey digits whose config records its ipc and factor."""
    images = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(10).repeat_interleave(2)
    return save_distilled(tmp_path / "valid.pt", images, labels, 2, INFO, {"model": {"ipc": 2, "factor": 2}})


def edited(valid, tmp_path, edit) -> str:
    """A copy of the valid file with ``edit(blob)`` applied to its stored dict."""
    blob = torch.load(valid, weights_only=True)
    edit(blob)
    path = tmp_path / "edited.pt"
    torch.save(blob, path)
    return path


def set_pixel(value: float):
    def edit(blob):
        blob["images"][3, 0, 2, 5] = value

    return edit


def set_label(index: int, value: int):
    def edit(blob):
        blob["labels"][index] = value

    return edit


def set_field(key: str, value):
    def edit(blob):
        blob[key] = value(blob[key]) if callable(value) else value

    return edit


def set_dataset(key: str, value):
    def edit(blob):
        blob["dataset"][key] = value

    return edit


def nine_by_nine_factor_4(blob):
    """Factor 4 cuts 9 pixels into tiles of ceil(9 / 4) = 3: the fourth tile starts past the image."""
    blob["dataset"]["image_size"] = [9, 9]
    blob["images"] = torch.rand(20, 1, 9, 9)
    blob["factor"] = 4
    blob["config"] = json.dumps({"model": {"ipc": 2, "factor": 4}})


DEFECTS = [
    ("nan-pixel", set_pixel(math.nan), "holds 1 pixel value(s) that are not finite numbers (NaN or infinite)"),
    ("inf-pixel", set_pixel(math.inf), "holds 1 pixel value(s) that are not finite numbers"),
    ("pixel-above-one", set_pixel(1.5), "holds 1 pixel(s) outside [0, 1]"),
    ("normalised-pixels", set_field("images", lambda x: (x - 0.3) / 0.4), "outside [0, 1] (from -0.7"),
    ("negative-label", set_label(0, -1), "has label -1, outside the 10 classes 0..9"),
    ("label-too-large", set_label(19, 10), "has label 10, outside the 10 classes 0..9"),
    ("fewer-labels", set_field("labels", lambda y: y[:-1]), "holds 20 images but 19 labels"),
    ("more-labels", set_field("labels", lambda y: torch.cat([y, y[:2]])), "holds 20 images but 22 labels"),
    (
        "image-width",
        set_field("images", lambda x: x[..., :7].contiguous()),
        "holds images of shape 1x8x7 but its dataset record says 1x8x8",
    ),
    (
        "image-channels",
        set_field("images", lambda x: x.repeat(1, 3, 1, 1)),
        "holds images of shape 3x8x8 but its dataset record says 1x8x8",
    ),
    (
        "images-3d",
        set_field("images", lambda x: x[:, 0]),
        "holds images of shape 20x8x8 but its dataset record says 1x8x8",
    ),
    (
        "uneven-classes",
        set_label(0, 1),
        "holds 1 image(s) of class 0 but 3 of class 1; a distilled set stores the same number (ipc) for every class",
    ),
    (
        "config-ipc",
        set_field("config", json.dumps({"model": {"ipc": 3, "factor": 2}})),
        "holds 2 image(s) per class with factor 2 but its config says model.ipc=3",
    ),
    (
        "config-factor",
        set_field("config", json.dumps({"model": {"ipc": 2, "factor": 1}})),
        "but its config says model.factor=1",
    ),
    (
        "images-float64",
        set_field("images", lambda x: x.double()),
        "stores its images as torch.float64; the format stores float32 pixels",
    ),
    ("images-uint8", set_field("images", lambda x: (x * 255).to(torch.uint8)), "stores its images as torch.uint8"),
    ("images-not-tensor", set_field("images", lambda x: x.tolist()), "stores its images as list, not a tensor"),
    (
        "labels-int32",
        set_field("labels", lambda y: y.int()),
        "stores its labels as torch.int32; the format stores int64 class indices",
    ),
    ("labels-float", set_field("labels", lambda y: y.float()), "stores its labels as torch.float32"),
    ("factor-zero", set_field("factor", 0), "records multi-formation factor 0; it must be an integer >= 1"),
    ("factor-float", set_field("factor", 2.0), "records multi-formation factor 2.0; it must be an integer >= 1"),
    (
        "factor-too-large",
        set_field("factor", 5),
        "records multi-formation factor 5, which cuts 8x8 images into 1-pixel tiles",
    ),
    (
        "factor-empty-tile",
        nine_by_nine_factor_4,
        "records multi-formation factor 4, which cuts 9x9 images into tiles of which the last holds no pixel",
    ),
    (
        "config-not-json",
        set_field("config", "{model: ipc=2"),
        "has a config that is not valid JSON (Expecting property name",
    ),
    ("config-json-list", set_field("config", "[1, 2]"), "has a config that is a JSON list, not an object"),
    ("config-not-string", set_field("config", {"model": {}}), "stores its config as dict, not a JSON string"),
    ("missing-images", lambda blob: blob.pop("images"), "lacks the field(s) images of a distilled set"),
    ("dataset-not-dict", set_field("dataset", "digits"), "has a dataset record of type str, not a dictionary"),
    ("dataset-no-classes", lambda blob: blob["dataset"].pop("num_classes"), "has a dataset record without num_classes"),
    (
        "dataset-zero-classes",
        set_dataset("num_classes", 0),
        "has an invalid dataset record: num_classes must be an integer >= 1, got 0",
    ),
    (
        "dataset-image-size",
        set_dataset("image_size", [8]),
        "has an invalid dataset record: image_size must be two integers >= 1, got [8]",
    ),
    (
        "dataset-std-zero",
        set_dataset("std", [0.0]),
        "has an invalid dataset record: std must be one finite number > 0 per channel",
    ),
    (
        "dataset-mean-nan",
        set_dataset("mean", [math.nan]),
        "has an invalid dataset record: mean must be one finite number per channel",
    ),
    (
        "dataset-class-names",
        set_dataset("class_names", ["0", "1"]),
        "has an invalid dataset record: class_names must be one name per class",
    ),
    ("version", set_field("version", 2), "has format version 2; this lightning-dd reads version 1"),
]


@pytest.mark.parametrize("edit, defect", [pytest.param(edit, defect, id=name) for name, edit, defect in DEFECTS])
def test_each_defect_is_one_sentence_naming_the_file(valid, tmp_path, edit, defect):
    path = edited(valid, tmp_path, edit)
    with pytest.raises(FileFormatError) as caught:
        load_distilled(path)
    message = str(caught.value)
    assert message.startswith(f"{path} ") and defect in message, message
    assert "\n" not in message and ". " not in message, message


def test_truncated_file(valid, tmp_path):
    path = tmp_path / "truncated.pt"
    path.write_bytes(valid.read_bytes()[: valid.stat().st_size // 2])
    with pytest.raises(
        FileFormatError, match=r"truncated\.pt is not a readable lightning-dd distilled set \(truncated or foreign file"
    ):
        load_distilled(path)


def test_valid_files_pass_including_rounding_within_the_tolerance(valid, tmp_path):
    """save_distilled's own output, and pixels a rounding error outside [0, 1], are read as they are."""
    loaded = load_distilled(valid)
    assert loaded.ipc == 2 and loaded.factor == 2 and loaded.config == {"model": {"ipc": 2, "factor": 2}}
    path = edited(valid, tmp_path, set_pixel(1 + PIXEL_TOLERANCE / 2))
    assert float(load_distilled(path).images.max()) > 1.0
    shuffled = edited(valid, tmp_path, set_field("labels", lambda y: y.flip(0)))  # class order is free
    assert torch.equal(load_distilled(shuffled).labels, torch.arange(10).repeat_interleave(2).flip(0))


def test_synthetic_datamodule_refuses_a_damaged_file(valid, tmp_path):
    from lightning_dd import SyntheticDataModule

    path = edited(valid, tmp_path, set_label(0, 12))
    with pytest.raises(FileFormatError, match=f"^{path} has label 12, outside the 10 classes 0..9"):
        SyntheticDataModule(path, real_test="digits")


@pytest.mark.parametrize("command", ["evaluate", "export-folder"])
def test_commands_refuse_a_damaged_file_before_training(valid, tmp_path, capsys, monkeypatch, command):
    """``lightning-dd evaluate`` / ``export-folder``: exit status 2, one line, no traceback, no network trained."""
    import lightning_dd.evaluation
    from lightning_dd.cli import main

    def no_training(*args, **kwargs):
        raise AssertionError("a network was trained on a damaged set")

    monkeypatch.setattr(lightning_dd.evaluation, "train_classifier", no_training)
    path = edited(valid, tmp_path, set_pixel(math.nan))
    args = (
        ["evaluate", str(path), "--device", "cpu", "--progress", "false"]
        if command == "evaluate"
        else ["export-folder", str(path), str(tmp_path / "png")]
    )
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        err == f"lightning-dd: error: {path} holds 1 pixel value(s) that are not finite numbers (NaN or infinite)\n"
    ), err
    assert not (tmp_path / "png").exists()
