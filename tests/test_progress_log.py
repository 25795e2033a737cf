"""Progress in a log file: plain lines at a steady interval when output is not a terminal.

The reporters take a fake clock, so the interval rule is checked without waiting; one end-to-end
run redirects ``lightning-dd fit``'s output to a file, as ``nohup ... > run.log`` does.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import lightning_dd.utils.progress as progress
from lightning_dd.callbacks import ProgressLog
from lightning_dd.utils.errors import ConfigError
from lightning_dd.utils.progress import LineReporter, format_duration, progress_bar

from helpers import fit, tiny_distill

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loud(monkeypatch):
    """Progress output on (the suite runs with LIGHTNING_DD_QUIET=1) and stdout/stderr not terminals."""
    monkeypatch.setenv("LIGHTNING_DD_QUIET", "0")
    monkeypatch.delenv(progress.INTERVAL_ENV, raising=False)
    monkeypatch.setattr(progress, "interactive", lambda: False)


def test_durations_read_at_a_glance():
    assert [format_duration(s) for s in (0, 45.4, 60, 185, 3600, 7440)] == [
        "0s",
        "45s",
        "1m00s",
        "3m05s",
        "1h00m",
        "2h04m",
    ]


def test_line_reporter_writes_at_the_interval_and_at_the_end():
    clock, out = FakeClock(), io.StringIO()
    reporter = LineReporter(
        total=10, desc="pretraining pool net 2/5", unit="epoch", interval=30, clock=clock, stream=out
    )
    for _ in range(4):  # 4 epochs of 10 s: the 30-second mark is passed at epoch 3
        clock.now += 10
        reporter.update(1)
    clock.now += 5
    reporter.close()
    assert out.getvalue().splitlines() == [
        "lightning-dd: pretraining pool net 2/5: epoch 3/10, elapsed 30s, remaining ~1m10s",
        "lightning-dd: pretraining pool net 2/5: epoch 4/10, elapsed 45s, remaining ~1m08s",
    ]


def test_progress_bar_is_a_line_reporter_off_a_terminal_and_silent_when_quiet(loud, monkeypatch, capsys):
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    with progress_bar(total=3, desc="evaluating distilled (1/2)", unit="epoch") as bar:
        assert isinstance(bar, LineReporter)
        for _ in range(3):
            bar.update(1)
    lines = capsys.readouterr().out.splitlines()
    assert [re.sub(r"elapsed .*", "", line) for line in lines] == [
        f"lightning-dd: evaluating distilled (1/2): epoch {i}/3, " for i in (1, 2, 3)
    ]
    monkeypatch.setenv("LIGHTNING_DD_QUIET", "1")
    with progress_bar(total=3, desc="evaluating", unit="epoch") as bar:
        bar.update(3)
    assert capsys.readouterr() == ("", "")


def test_progress_bar_keeps_the_tqdm_bar_on_a_terminal(loud, monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.setattr(progress, "interactive", lambda: True)
    with progress_bar(total=2, desc="pretraining pool net 1/1", unit="epoch") as bar:
        assert isinstance(bar, tqdm)


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    "stdout_tty, stderr_tty, expected",
    [(True, True, True), (False, True, False), (True, False, False), (False, False, False)],
)
def test_interactive_only_when_both_streams_are_terminals(monkeypatch, stdout_tty, stderr_tty, expected):
    """``> run.log`` (stdout redirected) and ``2> err.log`` both turn bars into lines: either stream would collect redraws."""
    monkeypatch.setattr(sys, "stdout", Stream(stdout_tty))
    monkeypatch.setattr(sys, "stderr", Stream(stderr_tty))
    assert progress.interactive() is expected


def test_a_notebook_keeps_its_widget_bars(monkeypatch):
    notebook_stream = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})
    monkeypatch.setattr(sys, "stdout", notebook_stream())
    monkeypatch.setattr(sys, "stderr", Stream(False))
    assert progress.interactive() is True


def test_interval_setting_is_checked(monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "soon")
    with pytest.raises(
        ConfigError, match="LIGHTNING_DD_PROGRESS_INTERVAL must be a finite number of seconds >= 0, got 'soon'"
    ):
        progress.progress_interval()
    with pytest.raises(ConfigError, match="LIGHTNING_DD_PROGRESS_INTERVAL must be"):
        ProgressLog().check_settings()  # refused at start-up, not after pool pretraining
    with pytest.raises(ConfigError, match="progress.interval must be a finite number of seconds >= 0, got -1"):
        ProgressLog(interval=-1).check_settings()
    with pytest.raises(ConfigError, match="got nan"):
        ProgressLog(interval=float("nan")).check_settings()


def fake_run(outer_iterations: int = 4, inner_loop: int = 5):
    """A module and trainer with the attributes ProgressLog reads (DistillModule's counters, the logged loss)."""
    module = SimpleNamespace(
        outer=0, inner=0, hparams=SimpleNamespace(outer_iterations=outer_iterations, inner_loop=inner_loop)
    )
    trainer = SimpleNamespace(is_global_zero=True, callback_metrics={})
    return module, trainer


def drive(callback: ProgressLog, clock: FakeClock, seconds_per_step: float = 2.0) -> list[str]:
    """Run the fake distillation to its end through the callback's hooks; returns the lines written."""
    module, trainer = fake_run()
    callback.clock, callback.stream = clock, io.StringIO()
    callback.on_train_start(trainer, module)
    for step in range(module.hparams.outer_iterations * module.hparams.inner_loop):
        clock.now += seconds_per_step
        module.inner += 1
        if module.inner == module.hparams.inner_loop:
            module.outer, module.inner = module.outer + 1, 0
        trainer.callback_metrics["distill/match_loss"] = torch.tensor(1.0 / (step + 1))
        callback.on_train_batch_end(trainer, module, None, None, step)
    callback.on_train_end(trainer, module)
    return callback.stream.getvalue().splitlines()


def test_distillation_lines_at_the_interval(loud):
    lines = drive(
        ProgressLog(interval=15), FakeClock()
    )  # 20 steps of 2 s: a line at 16 s and 32 s, then the end at 40 s
    assert lines == [
        "lightning-dd: distillation: outer iterations 1/4, matching steps 8/20, elapsed 16s, remaining ~24s, loss 0.125",
        "lightning-dd: distillation: outer iterations 3/4, matching steps 16/20, elapsed 32s, remaining ~8s, loss 0.0625",
        "lightning-dd: distillation: outer iterations 4/4, matching steps 20/20, elapsed 40s, remaining ~0s, loss 0.05",
    ]


def test_distillation_default_interval_comes_from_the_environment(loud, monkeypatch):
    monkeypatch.setenv(progress.INTERVAL_ENV, "1000")
    assert len(drive(ProgressLog(), FakeClock())) == 1  # only the line at the end
    monkeypatch.setenv(progress.INTERVAL_ENV, "0")
    assert len(drive(ProgressLog(), FakeClock())) == 20  # one per matching step


def test_nothing_when_quiet_on_a_terminal_or_on_other_ranks(loud, monkeypatch):
    monkeypatch.setenv("LIGHTNING_DD_QUIET", "1")
    assert drive(ProgressLog(interval=0), FakeClock()) == []
    monkeypatch.setenv("LIGHTNING_DD_QUIET", "0")
    monkeypatch.setattr("lightning_dd.callbacks.progress_log.interactive", lambda: True)
    assert drive(ProgressLog(interval=0), FakeClock()) == []
    monkeypatch.setattr("lightning_dd.callbacks.progress_log.interactive", lambda: False)
    callback = ProgressLog(interval=0)
    module, trainer = fake_run()
    trainer.is_global_zero = False
    callback.stream = io.StringIO()
    callback.on_train_start(trainer, module)
    callback.on_train_batch_end(trainer, module, None, None, 0)
    callback.on_train_end(trainer, module)
    assert callback.stream.getvalue() == ""


def test_a_real_fit_writes_a_line_per_step_with_interval_zero(loud, pool_dir):
    """With a DistillModule and a Trainer: the counters and the logged loss are where the callback looks."""
    callback = ProgressLog(interval=0)
    callback.stream = io.StringIO()
    fit(tiny_distill(pool_dir, outer_iterations=2, inner_loop=2), callbacks=[callback])
    lines = callback.stream.getvalue().splitlines()
    pattern = r"lightning-dd: distillation: outer iterations (\d)/2, matching steps (\d)/4, elapsed \d+s, remaining (~\d+s|\?), loss [0-9.e+-]+"
    assert [re.fullmatch(pattern, line).group(1, 2) for line in lines] == [
        ("0", "1"),
        ("1", "2"),
        ("1", "3"),
        ("2", "4"),
    ], lines
    assert progress.progress_interval() == progress.DEFAULT_INTERVAL  # the run's interval ends with the run


@pytest.mark.slow
def test_fit_redirected_to_a_file_logs_progress_lines(tmp_path):
    """``lightning-dd fit > run.log 2>&1``: progress lines for the pool, distillation and evaluation, and no bar redraws."""
    script = Path(sys.executable).with_name("lightning-dd")
    tiny = ["--model.net.width=8", "--model.pool.size=1", "--model.pool.epochs=1", "--model.outer_iterations=2", "--model.inner_loop=2", "--model.n_data=32",
            "--evaluation.epochs=1", "--evaluation.repeats=1", "--evaluation.every_n_outer=0", "--evaluation.baselines=false", "--evaluation.full_set_epochs=0"]  # fmt: skip
    args = [
        "fit",
        "--config",
        str(ROOT / "configs" / "digits" / "ipc1.yaml"),
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}",
        f"--model.pool.cache_dir={tmp_path / 'pools'}",
        *tiny,
        "--progress.interval=0",
    ]
    env = {**os.environ, "LIGHTNING_DD_QUIET": "0", "OMP_NUM_THREADS": "1"}
    env.pop(progress.INTERVAL_ENV, None)
    log = tmp_path / "run.log"
    with open(log, "w") as handle:
        proc = subprocess.run(
            [str(script), *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=env,
            timeout=600,
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert re.search(
        r"^lightning-dd: distillation: outer iterations 1/2, matching steps 2/4, elapsed \d+s, remaining ~\d+s, loss \S+$",
        text,
        re.M,
    ), text[-3000:]
    assert re.search(
        r"^lightning-dd: distillation: outer iterations 2/2, matching steps 4/4, elapsed \d+s, remaining ~0s, loss \S+$",
        text,
        re.M,
    ), text[-3000:]
    assert re.search(r"^lightning-dd: pretraining pool net 1/1: epoch 1/1, elapsed \d+s, remaining ~0s$", text, re.M), (
        text[-3000:]
    )
    assert re.search(r"^lightning-dd: evaluating .*: epoch 1/1, elapsed \d+s, remaining ~0s$", text, re.M), text[-3000:]
    assert "\r" not in text  # no progress-bar redraws in the log
