"""Helpers the tests import (``from helpers import fit, tiny_module``): tiny settings that exercise the real code paths in seconds.

The reference computations (perturbation, normalisation, SGD) are written from the algorithm's
description, not by calling the code under test, so a wrong core cannot agree with them by
construction. Fixtures and the slow rule live in ``conftest.py``; no test file imports another.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lightning as L
import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from lightning_dd import DistillModule, NetSpec, PoolConfig, RealDataModule


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
    settings = dict(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
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
                    out.append(
                        (event.step, value.tensor.float_val[0] if value.HasField("tensor") else value.simple_value)
                    )
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


def reference_perturb(
    params: dict[str, torch.Tensor], rho_min: float, rho_max: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
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


def hand_sgd(
    params: dict[str, torch.Tensor],
    grads_per_step,
    lr: float,
    momentum: float,
    weight_decay: float,
    buffers: dict | None = None,
):
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


def hparams_summaries(log_dir: Path) -> list:
    """Every session-start hparams summary in the folder's event files (TensorBoard's own reader)."""
    found = []
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    found.append(plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content))
    return found


def mix_module(pool_dir, **overrides):
    """The tiny module with factor 2 and the mix init, three outer iterations: resume in the middle of one."""
    return tiny_module(
        pool_dir, **{"ipc": 2, "factor": 2, "init": "mix", "outer_iterations": 3, "lr_img": 0.05, **overrides}
    )


def trainer_at(tmp_path, callbacks=(), **kwargs):
    """The tests' Trainer logging under ``tmp_path`` (resume tests find their checkpoints there)."""
    return make_trainer(callbacks, default_root_dir=tmp_path, **kwargs)


PACKAGE = Path(__file__).resolve().parents[1] / "lightning_dd"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (``from a import b`` names ``a`` and, if it is one, ``a.b``)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in files and t != name)
    return graph
