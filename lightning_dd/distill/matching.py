"""Per-class gradient matching (Zhao et al. 2021; IDC's distances).

For one class, the loss compares the gradient of the cross-entropy with respect to the
network's matched weights on a real batch (detached) and on the synthetic batch (kept in the
graph with ``create_graph=True`` so the loss can be differentiated w.r.t. synthetic pixels).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from lightning_dd.utils.errors import choose

METRICS = ("mse", "l1", "cos")


def layer_distance(g_real: torch.Tensor, g_syn: torch.Tensor, metric: str) -> torch.Tensor:
    """Distance between two gradients of one weight tensor.

    ``mse``: sum of squared differences; ``l1``: sum of absolute differences (IDC);
    ``cos``: DC's layer-wise distance, sum over output units of ``1 - cosine`` between the
    per-unit gradient rows (1-D tensors contribute 0, as in DC).
    """
    if metric == "mse":
        return torch.sum((g_real - g_syn) ** 2)
    if metric == "l1":
        return torch.sum(torch.abs(g_real - g_syn))
    if metric == "cos":
        if g_real.ndim == 1:
            return g_real.new_zeros(())
        a, b = g_real.reshape(g_real.shape[0], -1), g_syn.reshape(g_syn.shape[0], -1)
        cosine = torch.sum(a * b, dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6)
        return torch.sum(1 - cosine)
    choose("metric", metric, METRICS)
    raise AssertionError  # unreachable


def gradient_distance(g_real: Sequence[torch.Tensor], g_syn: Sequence[torch.Tensor], metric: str) -> torch.Tensor:
    """Sum of :func:`layer_distance` over matched tensors."""
    return torch.stack([layer_distance(r, s, metric) for r, s in zip(g_real, g_syn)]).sum()


def matched_parameter_names(
    named_shapes: Mapping[str, torch.Size], head_names: set[str], include_bias: bool = False, include_head: bool = False
) -> list[str]:
    """Which parameters' gradients are matched.

    Default: weight tensors with ``ndim > 1`` outside the classifier head (conv weights), as in
    IDC. ``include_bias`` adds 1-D tensors (biases, norm affine); ``include_head`` adds the head.
    """
    names = []
    for name, shape in named_shapes.items():
        if name in head_names and not include_head:
            continue
        if len(shape) <= 1 and not include_bias:
            continue
        names.append(name)
    return names


def class_matching_loss(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    matched: Sequence[torch.Tensor],
    real: torch.Tensor,
    syn: torch.Tensor,
    label: int,
    metric: str,
) -> torch.Tensor:
    """Gradient-matching loss of one class.

    Args:
        logits_fn: the network as a function of its input (weights closed over).
        matched: the weight tensors whose gradients are compared (must require grad).
        real: augmented real images of the class.
        syn: augmented synthetic images of the class (differentiable w.r.t. the pixels).
        label: the class index.
        metric: ``mse``, ``l1`` or ``cos``.
    """
    y_real = torch.full((real.shape[0],), label, dtype=torch.long, device=real.device)
    y_syn = torch.full((syn.shape[0],), label, dtype=torch.long, device=syn.device)
    g_real = torch.autograd.grad(F.cross_entropy(logits_fn(real), y_real), matched)
    g_real = [g.detach().float() for g in g_real]
    g_syn = torch.autograd.grad(F.cross_entropy(logits_fn(syn), y_syn), matched, create_graph=True)
    # Distances in fp32 even when the network ran under bf16 autocast (no-op for fp32 tensors).
    return gradient_distance(g_real, [g.float() for g in g_syn], metric)


def class_embedding_loss(
    embed_fn: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, syn: torch.Tensor
) -> torch.Tensor:
    """Distribution matching (DM, Zhao & Bilen 2023): squared distance of mean embeddings.

    The real embeddings are computed without a graph; the loss is differentiable w.r.t. ``syn``.
    """
    with torch.no_grad():
        target = embed_fn(real).mean(0)
    return torch.sum((target - embed_fn(syn).mean(0)) ** 2)
