"""Gradient matching for several classes in one pass: the ConvNet replicated as grouped convolutions.

The per-class loop runs, per class, a real forward/backward and a synthetic forward, backward
and double backward. On a GPU these small passes are bound by kernel launches (an H200 reached
about 5 TFLOP/s over the matching step against 50+ TFLOP/s for one convolution). Here the
images of class ``k`` of a chunk go into channel group ``k`` and each group gets its own copy of
the weights (``conv2d(..., groups=K)``, per-channel norms, a batched classifier), so ONE backward
yields every class's gradient: the gradient w.r.t. copy ``k`` is class ``k``'s. The matching
loss is the same sum over classes as the loop's, equal to float rounding.

Supported networks: :class:`~lightning_dd.nets.ConvNet` with instance norm or no norm (batch
norm would update running statistics differently). Every other network, built in or given by
import path, is matched one class at a time (:func:`supports_grouped` says which). Memory grows with the chunk size, so
``DistillModule(classes_per_pass=...)`` bounds it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightning_dd.distill.matching import gradient_distance
from lightning_dd.utils.errors import ConfigError
from lightning_dd.nets import ConvNet
from lightning_dd.nets.pooling import AvgPool2x2


def default_classes_per_pass(device_type: str) -> int:
    """Classes per pass when none is configured: 10 on CUDA (launch-bound loop), 1 elsewhere.

    On the CPU the loop is bound by arithmetic, not launches, and a grouped pass holds every
    class's double-backward graph at once, so the plain loop is kept there.
    """
    return 10 if device_type == "cuda" else 1


def supports_grouped(template: nn.Module) -> bool:
    """Whether :class:`GroupedConvNet` can replicate ``template``."""
    if not isinstance(template, ConvNet):
        return False
    allowed = (nn.Conv2d, nn.GroupNorm, nn.ReLU, AvgPool2x2, nn.AvgPool2d, nn.MaxPool2d, nn.Identity)
    return all(isinstance(m, allowed) for m in template.features)


def check_grouped_pass(classes_per_pass: int | None, supported: bool, match: str, net: str, norm: str) -> None:
    """Several classes per matching pass need the grouped pass: gradient matching on a network it can replicate.

    The grouped pass rebuilds the built-in ConvNet layer by layer; any other network (a ResNet,
    one given by import path) is matched one class at a time, which gives the same loss.
    """
    if classes_per_pass is None or classes_per_pass <= 1 or (supported and match == "grad"):
        return
    got = f"match={match!r}, net={net!r}" + ("" if "." in net else f", norm={norm!r}")
    raise ConfigError(
        f"model.classes_per_pass={classes_per_pass} needs gradient matching on a ConvNet with instance norm or no norm, the only network the grouped pass can replicate (got {got}); use model.classes_per_pass=1, which matches one class at a time"
    )


class GroupedConvNet:
    """Runs a ConvNet template as ``K`` independent copies, one per channel group.

    Args:
        template: the network (only its structure is used; weights are passed in).
    """

    def __init__(self, template: nn.Module) -> None:
        if not supports_grouped(template):
            raise TypeError(
                f"{type(template).__name__} cannot run grouped (ConvNet with instance norm or no norm only)"
            )
        self.layers = [(f"features.{i}", m) for i, m in enumerate(template.features)]

    def replicate(
        self, weights: dict[str, torch.Tensor], groups: int, matched: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """``groups`` stacked copies of every parameter; the matched ones are fresh leaves that require grad."""
        copies = {}
        for name, w in weights.items():
            if name.startswith("classifier."):
                rep = w.detach().unsqueeze(0).expand(groups, *w.shape).contiguous()
            else:
                rep = w.detach().repeat(groups, *([1] * (w.dim() - 1)))
            copies[name] = rep.requires_grad_(name in matched)
        return copies

    def logits(self, copies: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[K, n, C, H, W]`` (class-major, one class per copy) -> logits ``[K, n, classes]``."""
        k, n = x.shape[:2]
        h = x.transpose(0, 1).reshape(n, k * x.shape[2], *x.shape[3:])
        for prefix, m in self.layers:
            if isinstance(m, nn.Conv2d):
                h = F.conv2d(
                    h,
                    copies[f"{prefix}.weight"],
                    copies.get(f"{prefix}.bias"),
                    m.stride,
                    m.padding,
                    m.dilation,
                    k * m.groups,
                )
            elif isinstance(m, nn.GroupNorm):
                h = F.group_norm(
                    h, k * m.num_groups, copies.get(f"{prefix}.weight"), copies.get(f"{prefix}.bias"), m.eps
                )
            elif isinstance(m, nn.ReLU):
                h = F.relu(h)
            elif not isinstance(m, nn.Identity):
                h = m(h)  # pooling acts per channel
        features = h.reshape(n, k, -1).transpose(0, 1)  # [K, n, D]
        return torch.baddbmm(
            copies["classifier.bias"].unsqueeze(1), features, copies["classifier.weight"].transpose(1, 2)
        )

    def class_gradients(
        self,
        copies: dict[str, torch.Tensor],
        matched: Sequence[str],
        x: torch.Tensor,
        labels: torch.Tensor,
        create_graph: bool,
    ) -> list[torch.Tensor]:
        """Per-class gradients of the mean cross-entropy, stacked along the copies' first dimension."""
        k, n = x.shape[:2]
        logits = self.logits(copies, x)
        targets = labels.view(k, 1).expand(k, n).reshape(-1)
        loss = (
            F.cross_entropy(logits.reshape(k * n, -1), targets, reduction="sum") / n
        )  # sum over classes of per-class means
        return list(torch.autograd.grad(loss, [copies[m] for m in matched], create_graph=create_graph))


def grouped_matching_loss(
    net: GroupedConvNet,
    weights: dict[str, torch.Tensor],
    matched: Sequence[str],
    real: torch.Tensor,
    syn: torch.Tensor,
    labels: torch.Tensor,
    metric: str,
) -> torch.Tensor:
    """Sum over the chunk's classes of :func:`~lightning_dd.distill.matching.class_matching_loss`.

    Args:
        real: ``[K, n, C, H, W]`` augmented real images, class-major.
        syn: ``[K, m, C, H, W]`` augmented synthetic images (differentiable w.r.t. the pixels).
        labels: ``[K]`` the chunk's class indices.
    """
    k = real.shape[0]
    copies = net.replicate(weights, k, matched)
    g_real = [g.detach().float() for g in net.class_gradients(copies, matched, real, labels, create_graph=False)]
    g_syn = [g.float() for g in net.class_gradients(copies, matched, syn, labels, create_graph=True)]
    # Rows of the stacked tensors are (class, output unit) pairs, so per-row metrics (cos) and
    # whole-tensor sums (mse, l1) both add up exactly the per-class distances.
    flat = lambda g, name: g.reshape(k * weights[name].shape[0], *weights[name].shape[1:]) if g.dim() > 1 else g  # noqa: E731
    return gradient_distance(
        [flat(g, n) for g, n in zip(g_real, matched)], [flat(g, n) for g, n in zip(g_syn, matched)], metric
    )
