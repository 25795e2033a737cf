"""Atomic file writes: a crash mid-write never leaves a half-written result behind.

Data goes to a temporary file in the destination folder, is flushed to disk, and is then
renamed over the destination (``os.replace`` is atomic on POSIX and Windows), so readers see
either the previous file or the complete new one.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import torch


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_open`."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)
