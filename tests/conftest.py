"""Shared fixtures: tiny settings that exercise the real code paths in seconds."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("LIGHTNING_DD_QUIET", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


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
