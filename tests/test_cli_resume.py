"""Resuming through the CLI: safe settings are applied and announced, the run stays one log folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_dd.cli import main
from lightning_dd.export import load_distilled

from helpers import CLI_TINY as TINY
from helpers import scalars

pytestmark = pytest.mark.slow


def test_resume_applies_safe_settings_logs_in_place_and_prints_no_noise(tmp_path):
    common = [
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.log_every_n_steps=1",
        *TINY,
        "--evaluation.every_n_outer=0",
        "--evaluation.full_set_epochs=0",
    ]
    main(["fit", f"--model.pool.cache_dir={tmp_path / 'pools'}", *common])
    log_dir = tmp_path / "lightning_logs" / "version_0"
    (checkpoint,) = (log_dir / "checkpoints").glob("*.ckpt")
    assert len(scalars(log_dir, "distill/outer_loss")) == 2

    # The resumed run goes through the installed command, as a user types it (tips and warnings visible).
    script = Path(sys.executable).with_name("lightning-dd")
    args = [
        "fit",
        f"--model.pool.cache_dir={tmp_path / 'pools2'}",
        *common,
        "--model.outer_iterations=3",
        f"--ckpt_path={checkpoint}",
    ]
    proc = subprocess.run(
        [str(script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "LIGHTNING_DD_QUIET": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert "resuming with model.outer_iterations=3 instead of the checkpoint's 2" in err
    assert (
        f"resuming with model.pool.cache_dir={tmp_path / 'pools2'} instead of the checkpoint's {tmp_path / 'pools'}"
        in err
    )
    assert list((tmp_path / "pools2").glob("pool-*.pt")), "the new cache folder was used"

    # One run, one folder: the resumed part continues the curves of version_0.
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 2
    steps = [step for step, _ in scalars(log_dir, "distill/outer_loss")]
    assert len(steps) == 3 and steps == sorted(steps) and len(set(steps)) == 3
    assert load_distilled(log_dir / "distilled.pt").config["outer_iterations_done"] == 3

    # Lightning's advertisements and the deprecation/logging notes that print on every run are gone.
    for noise in (
        "Tip:",
        "litlogger",
        "litmodels",
        "weights_only",
        "LeafSpec",
        "is deprecated",
        "smaller than the logging interval",
    ):
        assert noise not in err, (noise, err[-3000:])
