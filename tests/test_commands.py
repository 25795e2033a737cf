"""Standalone commands (evaluate, pool, export-folder) through ``lightning_dd.cli.main``, in-process."""

import re
import sys

import pytest
import torch
from torchvision.datasets import ImageFolder

from lightning_dd.cli import main
from lightning_dd.export import save_distilled


@pytest.fixture
def export(tmp_path, digits):
    """A random real subset (2/class) of digits in the distilled-set format, with the net it 'came from'."""
    train = digits.train_data
    idx = train.random_subset_indices(2, torch.Generator().manual_seed(0))
    config = {"model": {"net": {"name": "convnet", "depth": 2, "width": 8, "norm": "instance", "pooling": "avg"}}}
    return save_distilled(
        tmp_path / "set.pt", train.images[idx].float() / 255, train.labels[idx], 1, digits.info, config
    )


def table_rows(out: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in out.splitlines()
        if line.startswith("| ") and "---" not in line
    ][1:]


def test_evaluate_prints_the_table(export, capsys):
    main(
        [
            "evaluate",
            str(export),
            "--net.width",
            "8",
            "--net.depth",
            "2",
            "--epochs",
            "5",
            "--repeats",
            "2",
            "--device",
            "cpu",
            "--baselines",
            "true",
            "--progress",
            "false",
        ]
    )
    out = capsys.readouterr().out
    assert "digits (10 classes, 1x8x8)" in out and "width 8" in out
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["distilled, 2/class", "random real, 2/class"]
    assert rows[0][1:4] == ["20", "5", "2"]
    assert re.fullmatch(r"\d+\.\d\d \+- \d+\.\d\d", rows[0][4])


def test_evaluate_defaults_to_the_export_net(export, capsys):
    main(
        [
            "evaluate",
            str(export),
            "--epochs",
            "5",
            "--repeats",
            "1",
            "--device",
            "auto",
            "--augment",
            "none",
            "--progress",
            "false",
        ]
    )
    out = capsys.readouterr().out
    assert "net convnet depth 2 width 8" in out and len(table_rows(out)) == 1
    main(["evaluate", str(export), "--net.width", "4", "--epochs", "1", "--repeats", "1", "--progress", "false"])
    assert "net convnet depth 2 width 4" in capsys.readouterr().out  # depth still from the export


def test_pool_trains_then_loads_from_cache(tmp_path, capsys):
    args = [
        "pool",
        "--dataset",
        "digits",
        "--net.width",
        "8",
        "--net.depth",
        "2",
        "--size",
        "2",
        "--epochs",
        "1",
        "--batch_size",
        "256",
        "--cache_dir",
        str(tmp_path / "pools"),
        "--device",
        "cpu",
        "--progress",
        "false",
    ]
    main(args)
    first = capsys.readouterr().out
    assert "pretrained and cached in" in first and str(tmp_path / "pools") in first
    rows = table_rows(first)
    assert [r[:2] for r in rows] == [["0", "0"], ["1", "1"]] and all(0 <= float(r[2]) <= 100 for r in rows)
    cached = list((tmp_path / "pools").glob("pool-*.pt"))
    assert len(cached) == 1 and str(cached[0]) in first
    main(args)
    second = capsys.readouterr().out
    assert "loaded from" in second and table_rows(second) == rows  # same weights, same accuracies


def test_export_folder(export, tmp_path, capsys):
    main(["export-folder", str(export), str(tmp_path / "png")])
    assert "wrote 20 PNG images" in capsys.readouterr().out
    folder = ImageFolder(str(tmp_path / "png"))
    assert len(folder) == 20 and folder.classes[0] == "0_0"


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "missing.pt"], "no distilled set at missing.pt"),
        (["evaluate", "{export}", "--net.name", "vgg"], "unknown net 'vgg'"),
        (["evaluate", "{export}", "--epochs", "0"], "--epochs must be an integer >= 1, got 0; the default is 300"),
        (["evaluate", "{export}", "--cutmix_p", "1.5"], "--cutmix_p must be a finite number >= 0 and <= 1, got 1.5"),
        (["evaluate", "{export}", "--net.depth", "4"], "--net.depth=4 shrinks 8x8 images to 1x1 feature maps"),
        (
            [
                "evaluate",
                "{export}",
                "--baselines",
                "true",
                "--source_options",
                "{{split_seed: 1, test_fraction: 0.995}}",
            ],
            "asks for more synthetic images per class",
        ),
        (["evaluate", "{export}", "--device", "tpu9"], "unknown device 'tpu9'"),
        (["pool", "--dataset", "imagenet-22k"], "unknown dataset 'imagenet-22k'"),
        (["pool", "--size", "0"], "--size must be an integer >= 1, got 0"),
        (["pool", "--cache_dir", "{export}"], "is a file; choose a folder path"),
        (["pool", "--net.depth", "5"], "use --net.depth <= 3"),
        (["pool", "--source_options", "{{imagesize: 8}}"], "unknown data.source_options key(s) imagesize"),
        (["pool", "--lr", "nan"], "--lr expects a number, got nan"),
        (["pool", "--no_such_flag", "1"], "unknown option --no_such_flag 1"),
        (["export-folder", "{export}", "/proc/lightning-dd-test/png"], "is not writable"),
        (["export-folder", "{export}", "{existing}"], "already exists"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message, export, tmp_path, capsys):
    args = [a.format(export=export, existing=tmp_path) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lightning-dd: error: ") and message in err and err.count("\n") == 1, err


def test_help_and_bad_flags(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lightning-dd"])
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: lightning-dd evaluate" in out and "--net.help" in out and "--baselines" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["pool", "--no_such_flag", "1"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "fit" in out and "evaluate" in out and "export-folder" in out
