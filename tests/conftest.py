"""Shared fixtures and helpers (tiny settings that exercise the real code paths in seconds) and the slow rule.

Tests import the helpers from here (``from conftest import fit, tiny_module``); the reference
computations (perturbation, normalisation, SGD) are written from the algorithm's description,
not by calling the code under test, so a wrong core cannot agree with them by construction.

The ``slow`` marker follows a measured rule: a test whose call took more than
:data:`SLOW_SECONDS` in the last ``make durations`` run (recorded in ``tests/durations.json``) is
marked slow at collection, besides the tests marked by hand (several processes, subprocess runs).
``make test-fast`` skips them; ``make test`` and CI run everything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch

from lightning_dd import DistillModule, NetSpec, PoolConfig, RealDataModule

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


# ------------------------------------------------------------------ helpers the tests import
def tiny_distill(pool_dir: str, **overrides) -> DistillModule:
    """A DistillModule small enough for a one-second fit on digits (10 classes of 8x8 images)."""
    settings = dict(
        ipc=1,
        factor=1,
        init="real",
        net=NetSpec(width=8, depth=2),
        pool=PoolConfig(size=3, epochs=0, cache_dir=pool_dir),
        outer_iterations=1,
        inner_loop=1,
        batch_real=8,
        n_data=0,
        net_batch_size=16,
        lr_img=0.1,
        classes_per_pass=1,
        tune_cpu_allocator=False,
    )
    settings.update(overrides)
    return DistillModule(**settings)


def tiny_module(pool_dir: str, **overrides) -> DistillModule:
    """A tiny module that pretrains a real (2-net, 1-epoch) pool and trains its network between matching steps."""
    settings = dict(
        pool=PoolConfig(size=2, epochs=1, batch_size=256, cache_dir=pool_dir),
        outer_iterations=2,
        inner_loop=3,
        batch_real=16,
        n_data=64,
        net_batch_size=32,
        classes_per_pass=None,
        tune_cpu_allocator=True,
    )
    return tiny_distill(pool_dir, **{**settings, **overrides})


def make_trainer(callbacks=(), **trainer_kwargs) -> L.Trainer:
    """The tests' Trainer: CPU, no logger, checkpointing, progress bar or summary unless asked for."""
    settings = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    return L.Trainer(callbacks=list(callbacks), **{**settings, **trainer_kwargs})


def fit(module: DistillModule, callbacks=(), **trainer_kwargs) -> L.Trainer:
    """Fit ``module`` on the bundled digits with :func:`make_trainer`; returns the trainer."""
    trainer = make_trainer(callbacks, **trainer_kwargs)
    trainer.fit(module, datamodule=RealDataModule("digits"))
    return trainer


# ---------------------------------------------------------------------------- command line
# A tiny ``lightning-dd fit`` on the bundled digits: every part runs (pool, matching, network
# update, evaluation with baselines and the full set, export) in seconds.
CLI_TINY = [
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.ipc=1",
    "--model.factor=1",
    "--model.init=real",
    "--model.net.width=8",
    "--model.net.depth=2",
    "--model.pool.size=2",
    "--model.pool.epochs=1",
    "--model.pool.batch_size=256",
    "--model.outer_iterations=2",
    "--model.inner_loop=2",
    "--model.batch_real=16",
    "--model.n_data=32",
    "--evaluation.epochs=5",
    "--evaluation.repeats=2",
    "--evaluation.every_n_outer=1",
    "--evaluation.full_set_epochs=1",
]


def scalars(log_dir, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a TensorBoard scalar, read from the event files in ``log_dir``."""
    from pathlib import Path

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = []
    for events in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag == tag:
                    out.append((event.step, value.tensor.float_val[0] if value.HasField("tensor") else value.simple_value))
    return out


def spy(obj, name: str, before=None, after=None) -> list:
    """Wrap ``obj.name`` (an instance attribute shadows the method); ``before()``/``after(result)`` results are recorded."""
    original = getattr(obj, name)
    records: list = []

    def wrapper(*args, **kwargs):
        entry = {"before": before() if before else None}
        result = original(*args, **kwargs)
        entry["after"] = after(result) if after else None
        records.append(entry)
        return result

    setattr(obj, name, wrapper)
    return records


def clone(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in weights.items()}


def normalise(x01: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel, written out by hand."""
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x01 - mean) / std


def reference_perturb(params: dict[str, torch.Tensor], rho_min: float, rho_max: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Acc-DD's perturbation from the paper, consuming the generator as documented.

    Four uniforms give |a|, sign(a), |b|, sign(b) (a, b ~ U(rho_min, rho_max) with random signs);
    then for every tensor with ndim > 1, in order, two Gaussian directions whose every filter
    (slice along dim 0) is rescaled to the weight filter's norm. Other tensors stay as they are.
    """
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    a = (rho_min + (rho_max - rho_min) * u[0]) * (1 if u[1] < 0.5 else -1)
    b = (rho_min + (rho_max - rho_min) * u[2]) * (1 if u[3] < 0.5 else -1)
    out = {}
    for name, w in params.items():
        if w.ndim <= 1:
            out[name] = w.clone()
            continue
        directions = []
        for _ in range(2):
            d = torch.randn(w.shape, generator=generator, dtype=torch.float32)
            scaled = torch.empty_like(d)
            for i in range(w.shape[0]):
                scaled[i] = d[i] * (w[i].norm() / d[i].norm())
            directions.append(scaled)
        out[name] = w + a * directions[0] + b * directions[1]
    return out


def hand_sgd(params: dict[str, torch.Tensor], grads_per_step, lr: float, momentum: float, weight_decay: float, buffers: dict | None = None):
    """Plain SGD with momentum and weight decay (PyTorch's convention: the first buffer is the first gradient).

    Each entry of ``grads_per_step`` maps the current weights to their loss gradients (one step
    each). ``buffers`` carries momentum over from earlier steps of the same optimiser; the new
    weights and buffers are returned.
    """
    w = {k: v.detach().clone() for k, v in params.items()}
    buffers = {} if buffers is None else dict(buffers)
    for grads in grads_per_step:
        g_now = grads(w)
        for k in w:
            d = g_now[k] + weight_decay * w[k]
            buffers[k] = d.clone() if k not in buffers else momentum * buffers[k] + d
            w[k] = w[k] - lr * buffers[k]
    return w, buffers
