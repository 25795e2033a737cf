"""Helpers for tests that drive the core through its real code paths and check it independently.

The reference computations here (perturbation, normalisation, SGD) are written from the
algorithm's description, not by calling the code under test, so a wrong core cannot agree
with them by construction.
"""

from __future__ import annotations

import lightning as L
import torch

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


def fit(module: DistillModule, callbacks=(), **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=list(callbacks),
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=RealDataModule("digits"))
    return trainer


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
