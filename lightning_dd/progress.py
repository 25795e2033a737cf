"""Progress bars for long work outside the Trainer's own bar (pretraining, evaluation).

Bars are shown on interactive terminals and hidden when ``LIGHTNING_DD_QUIET=1`` (CI) or when
no description is given.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from tqdm.auto import tqdm


def quiet() -> bool:
    """True when progress output is switched off with ``LIGHTNING_DD_QUIET=1``."""
    return os.environ.get("LIGHTNING_DD_QUIET", "0") not in ("", "0", "false", "False")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


@contextmanager
def progress_bar(total: int, desc: str | None, unit: str = "it", leave: bool = False) -> Iterator:
    """A tqdm bar with ETA, or a no-op stand-in when quiet or ``desc`` is None."""
    if desc is None or quiet():
        yield _NoBar()
        return
    bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()
