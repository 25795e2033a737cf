"""What a new user meets around a run: file modes, TensorBoard's hparams, log folders, noise, help."""

from __future__ import annotations

import logging
import os
import stat
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_dd.callbacks.interrupt import LOG_LOCATION_KEY, CheckpointOnInterrupt
from lightning_dd.cli import _resume_version, main, run_cli, silence_lightning_noise
from lightning_dd.distill.pool import EarlyStagePool, PoolConfig
from lightning_dd.utils.logger import DistillTensorBoardLogger
from lightning_dd.nets import NetSpec

from helpers import CLI_TINY, hparams_summaries, scalars

README = Path(__file__).resolve().parents[1] / "README.md"


def test_pool_cache_follows_the_umask(tmp_path, digits):
    previous = os.umask(0o022)
    try:
        EarlyStagePool.build_or_load(
            NetSpec(width=4, depth=1), PoolConfig(size=1, epochs=0, cache_dir=str(tmp_path)), digits.train_data, seed=0
        )
    finally:
        os.umask(previous)
    (cache,) = tmp_path.glob("pool-*.pt")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o644  # readable by the team sharing the cache


def test_one_hparams_summary_with_dataset_settings_and_final_accuracy(tmp_path):
    """Lightning's calls in the order a run makes them: settings at the start, the result at the end."""
    logger = DistillTensorBoardLogger(str(tmp_path), version=0)
    logger.log_hyperparams(
        {
            "ipc": 1,
            "net": {"depth": 2},
            "dataset": "digits",
            "_instantiator": "lightning.pytorch.cli.instantiate_module",
        }
    )
    logger.log_metrics({"distill/outer_loss": 1.5}, step=7)
    logger.log_hyperparams({"ipc": 1, "net": {"depth": 2}}, {"eval/final_acc_mean": 61.5, "eval/final_acc_std": 1.25})
    logger.finalize("success")
    summaries = hparams_summaries(Path(logger.log_dir))
    assert len(summaries) == 1, "one summary per run, not a placeholder plus the result"
    settings = summaries[0].session_start_info.hparams
    assert (
        settings["dataset"].string_value == "digits"
        and settings["ipc"].number_value == 1
        and settings["net/depth"].number_value == 2
    )
    assert "_instantiator" not in settings
    assert scalars(Path(logger.log_dir), "eval/final_acc_mean") == [(7, 61.5)]  # at the run's last step
    assert scalars(Path(logger.log_dir), "hp_metric") == []  # no -1 placeholder


def test_lightning_default_logger_would_write_two(tmp_path):
    """The reference behaviour the logger replaces: a placeholder summary, then the result's."""
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), version=0)
    logger.log_hyperparams({"ipc": 1})
    logger.log_hyperparams({"ipc": 1}, {"eval/final_acc_mean": 61.5})
    logger.finalize("success")
    assert len(hparams_summaries(Path(logger.log_dir))) == 2


def test_resume_finds_the_version_folder(tmp_path):
    root = tmp_path / "runs"
    version = root / "lightning_logs" / "version_3"
    (version / "checkpoints").mkdir(parents=True)
    record = {LOG_LOCATION_KEY: {"log_dir": str(version), "name": "lightning_logs", "version": 3}}
    assert (
        _resume_version(record, str(tmp_path / "elsewhere" / "interrupted.ckpt"), str(root)) == 3
    )  # moved checkpoint, recorded folder
    assert (
        _resume_version({}, str(version / "checkpoints" / "epoch=1-step=4.ckpt"), str(root)) == 3
    )  # older checkpoint: its location
    assert _resume_version({}, str(version / "interrupted.ckpt"), str(root)) == 3
    assert (
        _resume_version(record, str(version / "interrupted.ckpt"), str(tmp_path / "other_root")) is None
    )  # another log root: a new folder
    assert _resume_version({}, str(tmp_path / "x.ckpt"), str(root)) is None


def test_checkpoints_record_the_log_folder_and_save_the_full_state(tmp_path):
    """Interrupt checkpoints ask for the full state explicitly (no weights_only note from Lightning)."""
    saved = {}
    logger = SimpleNamespace(log_dir=str(tmp_path / "lightning_logs" / "version_2"), name="lightning_logs", version=2)
    trainer = SimpleNamespace(
        world_size=1,
        log_dir=logger.log_dir,
        default_root_dir=str(tmp_path),
        logger=logger,
        should_stop=False,
        save_checkpoint=lambda path, **kwargs: saved.update(path=path, **kwargs),
    )
    callback = CheckpointOnInterrupt()
    callback.signal_received = 15
    module = SimpleNamespace(interrupted=False)
    callback.on_train_batch_end(trainer, module, None, None, 0)
    assert saved["weights_only"] is False and module.interrupted and trainer.should_stop
    checkpoint = {}
    callback.on_save_checkpoint(trainer, module, checkpoint)
    assert checkpoint[LOG_LOCATION_KEY]["version"] == 2 and checkpoint[LOG_LOCATION_KEY]["log_dir"] == str(
        Path(logger.log_dir).resolve()
    )


def test_lightning_noise_is_silenced_and_nothing_else():
    silence_lightning_noise()

    def passes(logger_name: str, message: str) -> bool:
        record = logging.LogRecord(logger_name, logging.INFO, __file__, 1, message, None, None)
        return bool(logging.getLogger(logger_name).filter(record))

    tip = "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](https://pypi.org/project/litlogger/)"
    assert not passes("lightning.pytorch.utilities.rank_zero", tip)
    assert not passes(
        "lightning.pytorch.utilities.rank_zero",
        "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]",
    )
    assert not passes(
        "lightning.pytorch.trainer.connectors.checkpoint_connector",
        "`weights_only` was not set, defaulting to `False`.",
    )
    assert passes("lightning.pytorch.utilities.rank_zero", "GPU available: False, used: False")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_lightning_noise()
        from lightning.pytorch.utilities._pytree import _tree_flatten

        _tree_flatten({"a": torch.zeros(1)})  # Lightning's own call that triggers torch's deprecation warning
        warnings.warn("a warning about a real setting", UserWarning)
    messages = [str(w.message) for w in caught]
    assert messages == ["a warning about a real setting"], messages


def test_every_fit_option_has_help(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lightning-dd"])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    body = text[text.index("--model.ipc IPC ") :]
    blocks = {}
    current = None
    for line in body.splitlines():
        stripped = line.strip()
        if line.startswith("  --") and not line.startswith("    "):
            current = stripped.split()[0]
            blocks[current] = (
                stripped[len(current) :].strip().split("  ", 1)[-1] if "  " in stripped[len(current) :].strip() else ""
            )
        elif current and stripped:
            blocks[current] += " " + stripped
    sections = ("--model.", "--evaluation.", "--data.", "--export.", "--interrupt.")
    missing = [
        name
        for name, help_ in blocks.items()
        if name.startswith(sections) and not name.endswith(".help") and help_.lstrip().startswith("(type:")
    ]
    assert not missing, f"options without a help text: {missing}"
    assert "--model.rho_min" in blocks and "--optimizer" not in text and "{fit,validate" not in text


def test_readme_says_how_to_reach_the_command():
    text = README.read_text()
    assert ".venv/bin/lightning-dd" in text and "source .venv/bin/activate" in text


def test_digits_configs_pass_the_start_up_checks(tmp_path, monkeypatch):
    """The checks refuse bad input, not the configs we ship (the README's demo included)."""
    from lightning_dd.preflight import preflight_fit

    monkeypatch.chdir(tmp_path)
    configs = sorted((Path(__file__).resolve().parents[1] / "configs" / "digits").glob("*.yaml"))
    assert configs
    for config in configs:
        cli = run_cli(
            ["--config", str(config), f"--model.pool.cache_dir={tmp_path / 'pools'}", "--trainer.accelerator=cpu"],
            run=False,
        )
        preflight_fit(cli.trainer, cli.model, cli.datamodule)
    assert not list(tmp_path.rglob("version_*")) and not list(tmp_path.rglob("pool-*.pt"))


def test_a_run_that_fails_inside_fit_leaves_no_empty_version_folder(tmp_path, monkeypatch, capsys):
    """A user error raised after the logger made its folder (past the start-up checks) removes it again."""
    from lightning_dd.distill import DistillModule
    from lightning_dd.utils.errors import ConfigError

    def failing_setup(self, stage):
        raise ConfigError("a setting that only the module itself can judge is wrong")

    monkeypatch.setattr(DistillModule, "setup", failing_setup)
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["fit", f"--trainer.default_root_dir={tmp_path}", f"--model.pool.cache_dir={tmp_path / 'pools'}", *CLI_TINY]
        )
    assert exit_info.value.code == 2
    assert "a setting that only the module itself can judge is wrong" in capsys.readouterr().err
    assert not (tmp_path / "lightning_logs").exists()  # neither the version folder nor the root it made
