"""Shared fixtures and the slow rule; the helpers tests import live in ``helpers.py``.

The ``slow`` marker follows a measured rule: a test whose call took more than
:data:`SLOW_SECONDS` in the last ``make durations`` run (recorded in ``tests/durations.json``) is
marked slow at collection, besides the tests marked by hand (several processes, subprocess runs).
``make test-fast`` skips them; ``make test`` and CI run everything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("LIGHTNING_DD_QUIET", "1")
# One intra-op thread: the tests' tensors are tiny, so a second thread has little to share on an idle
# machine, and on a busy one (more runnable processes than cores) the threads wait for each
# other at every parallel region: a one-step digits fit measured 10.9 s with two threads and
# 0.5 s with one.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    """The embedded digits dataset, loaded once."""
    from lightning_dd.data import RealDataModule

    dm = RealDataModule("digits")
    dm.setup()
    return dm


@pytest.fixture
def pool_dir(tmp_path):
    return str(tmp_path / "pools")


@pytest.fixture
def tiny_net():
    from lightning_dd.nets import NetSpec

    return NetSpec(width=16, depth=2)


SLOW_SECONDS = 5.0
DURATIONS = Path(__file__).with_name("durations.json")
_RECORD = os.environ.get("LIGHTNING_DD_RECORD_DURATIONS")  # ``make durations`` sets it to DURATIONS
_measured: dict[str, float] = {}


def pytest_collection_modifyitems(config, items) -> None:
    recorded = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    for item in items:
        if recorded.get(item.nodeid, 0.0) > SLOW_SECONDS and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


def pytest_runtest_logreport(report) -> None:
    if _RECORD and report.when == "call":
        _measured[report.nodeid] = round(report.duration, 2)


def pytest_sessionfinish(session, exitstatus) -> None:
    if _RECORD and _measured:  # merged into the earlier record, so a partial run updates only its tests
        path = Path(_RECORD)
        merged = {**(json.loads(path.read_text()) if path.exists() else {}), **_measured}
        path.write_text(json.dumps(dict(sorted(merged.items())), indent=0) + "\n")
