"""The CLI, in-process (LightningCLI(args=[...])), on a tiny configuration."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_dd.cli import main, run_cli
from lightning_dd.export import load_distilled

from helpers import CLI_TINY, hparams_summaries

TINY = CLI_TINY


def test_fit_end_to_end(tmp_path, capsys):
    args = ["fit", f"--trainer.default_root_dir={tmp_path}", f"--model.pool.cache_dir={tmp_path / 'pools'}", *TINY]
    run_cli(args)
    out = capsys.readouterr().out
    assert "| distilled, 1/class" in out and "| random real, 1/class" in out and "| full training set" in out
    log_dir = tmp_path / "lightning_logs" / "version_0"
    exported = load_distilled(log_dir / "distilled.pt")
    assert exported.images.shape == (10, 1, 8, 8) and exported.factor == 1 and exported.info.name == "digits"
    assert exported.config["model"]["ipc"] == 1 and exported.config["outer_iterations_done"] == 2
    assert (log_dir / "distilled.png").stat().st_size > 0
    results = json.loads((log_dir / "results.json").read_text())
    assert [r["name"].split(",")[0] for r in results["rows"]] == ["distilled", "random real", "full training set"]
    assert len(results["rows"][0]["accuracies"]) == 2 and len(results["history"]) == 2  # after outer 1 and at the end
    assert (log_dir / "config.yaml").exists() and list(log_dir.glob("events.out.tfevents.*"))
    assert len(list((tmp_path / "pools").glob("pool-*.pt"))) == 1

    # What a person opens afterwards: a grid of 64-pixel images (8x8 enlarged), 3 classes per row.
    from PIL import Image

    with Image.open(log_dir / "distilled.png") as grid:
        assert grid.size == (3 * 66 + 2, 4 * 66 + 2)
    # TensorBoard's HPARAMS tab: one session, with the dataset and the final accuracy as its metric.
    (summary,) = hparams_summaries(log_dir)
    assert summary.session_start_info.hparams["dataset"].string_value == "digits"
    assert summary.session_start_info.hparams["ipc"].number_value == 1


def test_print_config_and_shipped_configs_parse(capsys):
    for config in sorted(Path("configs").rglob("*.yaml")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(["fit", "--config", str(config), "--print_config"])
        assert exit_info.value.code == 0
        printed = capsys.readouterr().out
        assert "model:" in printed and "ipc:" in printed, config


def test_bad_value_is_one_sentence_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model.metric=dot", "--trainer.accelerator=cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "dot" in err and "Traceback" not in err


def test_bad_dataset_from_the_shell_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_dd.cli",
            "fit",
            "--data.dataset=imagenet-22k",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown dataset 'imagenet-22k'" in proc.stderr and "Traceback" not in proc.stderr
