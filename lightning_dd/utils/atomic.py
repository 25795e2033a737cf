"""Atomic file writes: a crash mid-write never leaves a half-written result behind.

Data goes to a temporary file in the destination folder, is flushed to disk, and is then
renamed over the destination (``os.replace`` is atomic on POSIX and Windows), so readers see
either the previous file or the complete new one.

Temporary files and folders are created private (``0600`` / ``0700``) by :mod:`tempfile`; before
they are renamed into place they get the modes an ordinary ``open`` or ``mkdir`` would have
given them under the process's umask, so shared pool caches, exports and results stay readable
by whoever may read the folder they are in.
"""

from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import torch

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read from ``/proc`` where possible, else set and restored at once)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new regular file under the current umask (``0644`` for umask ``022``)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a new folder under the current umask (``0755`` for umask ``022``)."""
    return 0o777 & ~current_umask()


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
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_open`."""
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def make_temp_dir(parent: str | os.PathLike, name: str, suffix: str = ".tmp") -> Path:
    """A hidden temporary folder in ``parent`` with the mode ``mkdir`` would give (see the module docstring)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=suffix, dir=parent))
    os.chmod(tmp, dir_mode())
    return tmp
