"""Progress of long work outside the Trainer's own bar (pool pretraining, evaluation): a bar or lines.

On an interactive terminal (stdout and stderr both terminals) a tqdm bar with ETA is drawn. When
either goes to a file or a pipe (``lightning-dd fit ... > run.log``, ``nohup``, a batch job) a bar's
carriage-return redraws would pile up into an unreadable log, so a plain line is written to stdout
instead, at a steady interval (:func:`progress_interval`, 30 s by default) and always at the end::

    lightning-dd: pretraining pool net 2/5: epoch 14/50, elapsed 30s, remaining ~1m17s

Nothing is shown when ``LIGHTNING_DD_QUIET=1`` (CI) or when no description is given. Distillation's
own lines come from :class:`~lightning_dd.callbacks.ProgressLog`, which uses the same rules.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

from tqdm.auto import tqdm

from lightning_dd.utils.errors import ConfigError

INTERVAL_ENV = "LIGHTNING_DD_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0  # seconds: often enough to see a run is alive, rare enough to keep a log short
_interval_override: float | None = None  # set for one run by ProgressLog(interval=...)


def quiet() -> bool:
    """True when progress output is switched off with ``LIGHTNING_DD_QUIET=1``."""
    return os.environ.get("LIGHTNING_DD_QUIET", "0") not in ("", "0", "false", "False")


def interactive() -> bool:
    """True when stdout and stderr are both terminals, where bars redraw in place (tqdm writes to
    stderr, Lightning's bar to stdout, so either one redirected would collect the redraws), or in
    a Jupyter notebook, whose streams are no terminals but show tqdm.auto's widget bars."""
    if type(sys.stdout).__module__.split(".")[0] == "ipykernel":
        return True
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def check_interval(seconds: float, name: str) -> float:
    """``seconds`` as a float if it is a finite number >= 0, else a one-sentence ConfigError."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(seconds, bool) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {seconds!r}")
    return value


def progress_interval() -> float:
    """Seconds between two progress lines: the running ProgressLog's ``interval``, else
    ``$LIGHTNING_DD_PROGRESS_INTERVAL``, else :data:`DEFAULT_INTERVAL` (0: a line at every update)."""
    if _interval_override is not None:
        return _interval_override
    text = os.environ.get(INTERVAL_ENV, "").strip()
    return check_interval(text, INTERVAL_ENV) if text else DEFAULT_INTERVAL


def set_progress_interval(seconds: float | None) -> float | None:
    """Make ``seconds`` the interval of every progress line (None: back to the environment); returns the previous setting."""
    global _interval_override
    previous = _interval_override
    _interval_override = None if seconds is None else check_interval(seconds, "progress interval")
    return previous


def format_duration(seconds: float) -> str:
    """A short duration for a log line: ``45s``, ``3m05s``, ``2h04m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def remaining(elapsed: float, done: int, total: int) -> str:
    """Estimated time left at the average rate so far (``?`` before the first unit is done)."""
    if done <= 0:
        return "?"
    return "~" + format_duration(elapsed / done * max(total - done, 0))


class Throttle:
    """Says when a line is due: once ``interval`` seconds have passed since the start or the last line.

    Args:
        interval: seconds between lines.
        clock: seconds from an arbitrary origin (``time.monotonic``; a fake one in tests).
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self.started = self.last = clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def due(self) -> bool:
        """True (and the interval restarts) when a line should be written now."""
        now = self.clock()
        if now - self.last < self.interval:
            return False
        self.last = now
        return True


def emit(line: str, stream: TextIO | None = None) -> None:
    """Write one progress line to ``stream`` (stdout by default, where a redirected run's log goes) and flush it."""
    print(f"lightning-dd: {line}", file=stream or sys.stdout, flush=True)


class LineReporter:
    """The bar's stand-in off a terminal: ``<desc>: <unit> done/total, elapsed, remaining`` lines.

    Args:
        total: units of work.
        desc: what the work is (``pretraining pool net 2/5``).
        unit: name of one unit (``epoch``).
        interval: seconds between lines; one more line is written by :meth:`close`.
        clock: seconds from an arbitrary origin (a fake one in tests).
        stream: where lines go (stdout by default).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.throttle = Throttle(interval, clock)
        self.done, self.postfix = 0, ""
        self._written_at: int | None = None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.throttle.due():
            self._write()

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def close(self) -> None:
        """Write the final line, unless the last update already did."""
        if self._written_at != self.done:
            self._write()

    def _write(self) -> None:
        elapsed = self.throttle.elapsed()
        extra = f", {self.postfix}" if self.postfix else ""
        emit(
            f"{self.desc}: {self.unit} {self.done}/{self.total}, elapsed {format_duration(elapsed)}, remaining {remaining(elapsed, self.done, self.total)}{extra}",
            self.stream,
        )
        self._written_at = self.done


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


@contextmanager
def progress_bar(total: int, desc: str | None, unit: str = "it", leave: bool = False) -> Iterator:
    """A tqdm bar with ETA on a terminal, a :class:`LineReporter` elsewhere, a no-op when quiet or ``desc`` is None."""
    if desc is None or quiet():
        yield _NoBar()
        return
    bar = (
        tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
        if interactive()
        else LineReporter(total, desc, unit, progress_interval())
    )
    try:
        yield bar
    finally:
        bar.close()
