"""The ImageFolder export: PNGs readable by torchvision with the exported labels and pixels."""

import json

import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms.functional import pil_to_tensor

from lightning_dd.data import DatasetInfo
from lightning_dd.utils.errors import ConfigError
from lightning_dd.export import class_folder_names, export_image_folder, load_distilled, save_distilled

# 12 classes: ImageFolder sorts folder names as strings, so unpadded "10" would sort before "2".
GREY = DatasetInfo("toy", 12, 1, (8, 8), (0.3,), (0.4,), tuple(str(i) for i in range(12)), False)
COLOUR = DatasetInfo("toy-rgb", 3, 3, (6, 6), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2), ("cat", "dog/wolf", "a b"), True)


def read_back(out, grey: bool):
    """ImageFolder's images as float [0, 1] tensors (one channel for grey sets) and its labels."""
    loader = (lambda p: Image.open(p).convert("L")) if grey else None
    folder = ImageFolder(str(out), loader=loader) if grey else ImageFolder(str(out))
    images = torch.stack([pil_to_tensor(img) for img, _ in folder]).float() / 255.0
    return folder, images, torch.tensor(folder.targets)


def test_folder_names_sort_in_label_order():
    names = class_folder_names([str(i) for i in range(12)])
    assert names[2] == "02_2" and names[10] == "10_10"
    assert sorted(names) == names
    assert class_folder_names(["dog/wolf", "..", "a b"]) == ["0_dog-wolf", "1_class", "2_a-b"]


@pytest.mark.parametrize("factor", [1, 2])
def test_grey_round_trip_through_image_folder(tmp_path, factor):
    generator = torch.Generator().manual_seed(factor)
    labels = torch.arange(12).repeat_interleave(2)[torch.randperm(24, generator=generator)]  # unsorted labels
    path = save_distilled(
        tmp_path / "set.pt", torch.rand(24, 1, 8, 8, generator=generator), labels, factor, GREY, {"ipc": 2}
    )
    out = export_image_folder(path, tmp_path / "png")
    expected_images, expected_labels = load_distilled(path).decoded()
    order = torch.sort(expected_labels, stable=True).indices  # ImageFolder order: by class, then file name

    folder, images, targets = read_back(out, grey=True)
    assert folder.classes == class_folder_names(GREY.class_names)
    assert torch.equal(targets, expected_labels[order])
    quantised = torch.round(expected_images[order] * 255) / 255
    assert (images - quantised).abs().max() <= 0.5 / 255
    assert (images - expected_images[order]).abs().max() <= 0.5 / 255 + 1e-6

    # The default loader gives RGB with three equal channels and the same labels.
    default = ImageFolder(str(out))
    img, label = default[0]
    assert img.mode == "RGB" and label == int(expected_labels[order][0])
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["dataset"]["mean"] == [0.3] and meta["factor"] == factor and meta["images"] == len(expected_labels)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_colour_round_trip_from_a_distilled_set_object(tmp_path):
    images, labels = torch.rand(6, 3, 6, 6), torch.tensor([0, 0, 1, 1, 2, 2])
    distilled = load_distilled(save_distilled(tmp_path / "rgb.pt", images, labels, 1, COLOUR))
    out = export_image_folder(distilled, tmp_path / "nested" / "png")
    folder, back, targets = read_back(out, grey=False)
    assert folder.classes == ["0_cat", "1_dog-wolf", "2_a-b"]
    assert torch.equal(targets, labels)
    assert (back - images).abs().max() <= 0.5 / 255 + 1e-6


def test_existing_folder_is_refused_or_replaced_whole(tmp_path):
    path = save_distilled(tmp_path / "set.pt", torch.rand(12, 1, 8, 8), torch.arange(12), 1, GREY)
    out = tmp_path / "png"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(ConfigError, match="already exists"):
        export_image_folder(path, out)
    assert (out / "stale.txt").exists()
    export_image_folder(path, out, overwrite=True)
    assert not (out / "stale.txt").exists() and len(list(out.rglob("*.png"))) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["png", "set.pt"]


def test_a_crash_leaves_no_half_folder(tmp_path, monkeypatch):
    path = save_distilled(tmp_path / "set.pt", torch.rand(12, 1, 8, 8), torch.arange(12), 1, GREY)
    calls = {"n": 0}
    original = Image.Image.save

    def failing_save(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return original(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_image_folder(path, tmp_path / "png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.pt"]


def test_folder_modes_follow_the_umask(tmp_path):
    """The tree is built in a private temporary folder but ends with the umask's modes, like mkdir."""
    import os
    import stat

    path = save_distilled(tmp_path / "set.pt", torch.rand(12, 1, 8, 8), torch.arange(12), 1, GREY)
    previous = os.umask(0o022)
    try:
        out = export_image_folder(path, tmp_path / "png")
        reference = tmp_path / "plain"
        reference.mkdir()  # what the umask gives an ordinary folder, as an independent reference
    finally:
        os.umask(previous)
    assert stat.S_IMODE(reference.stat().st_mode) == 0o755
    for folder in [out, *(p for p in out.iterdir() if p.is_dir())]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    for file in out.rglob("*.*"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file
