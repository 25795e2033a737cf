"""Instance normalisation with a hand-written double backward for the CPU.

Gradient matching differentiates the network twice. ``nn.GroupNorm`` (the DC/IDC instance norm,
one group per channel) has a fused first-order backward, but with ``create_graph=True`` PyTorch
swaps it for a composite of ~15 elementwise ops and reductions and then differentiates that
composite again, each op a pass over activations like ``[40, 128, 32, 32]`` (20 MB) that no
longer fit in the CPU's caches. Here the first-order backward is one autograd
Function (:class:`_InstanceNormGrad`) whose own backward is written out in closed form
(derivation in its docstring): a few reductions and three linear combinations of full tensors.
Forward and a backward that is not differentiated further use PyTorch's fused kernels. It took
2-11 % (typically about 4 %) off a ConvNet-3 class step in interleaved trials.
Results equal ``nn.GroupNorm(C, C)`` to float rounding. Other devices, other dtypes, autocast
regions and ``torch.func`` transforms (``vmap``, ``grad``) use ``F.group_norm``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def _per_instance(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``[N, C]`` statistics as ``[N, C, 1, 1]`` for broadcasting against ``shape``."""
    return t.view(shape[0], shape[1], 1, 1)


def _mean_hw(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=(2, 3), keepdim=True)


def _dot_hw(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-instance mean of ``a * b`` over H, W."""
    return torch.linalg.vecdot(a.flatten(2), b.flatten(2)).unsqueeze(-1).unsqueeze(-1) / (a.shape[2] * a.shape[3])


class _InstanceNorm(torch.autograd.Function):
    """``y = weight * (x - mean) * rstd + bias`` per (sample, channel)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.contiguous()
        y, mean, rstd = torch.ops.aten.native_group_norm(x, weight, bias, n, c, h * w, c, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        x, weight, mean, rstd = ctx.saved_tensors
        if not torch.is_grad_enabled():  # plain backward: the fused kernel
            n, c, h, w = x.shape
            mask = list(ctx.needs_input_grad[:3])
            gx, gw, gb = torch.ops.aten.native_group_norm_backward(
                grad.contiguous(), x, mean, rstd, weight, n, c, h * w, c, mask
            )
            return gx, gw, gb, None
        gx, gw, gb = _InstanceNormGrad.apply(grad, x, weight, mean, rstd)
        return gx, gw, gb, None


class _InstanceNormGrad(torch.autograd.Function):
    """The first-order backward as a differentiable function of ``(grad, x, weight)``.

    Per instance, with ``<.>`` the mean over H x W, ``xh = (x - mean) * r`` and ``r = rstd``:

    * ``gx = r w (g - <g> - xh <g xh>)``, ``gw = sum_n,hw g xh``, ``gb = sum_n,hw g``.

    Given cotangents ``a`` (of ``gx``), ``aw`` and ``ab`` (per channel), and using
    ``d xh = r P(dx)`` with the self-adjoint ``P(v) = v - <v> - xh <xh v>`` and
    ``d r = -r^2 <xh dx>``:

    * ``grad_g = r w P(a) + aw xh + ab``;
    * ``grad_w = sum_n r M <a Q>`` with ``Q = P(g)`` and ``M = H W``, so
      ``<a Q> = <a g> - <a><g> - <a xh><g xh>``;
    * ``grad_x = r P(u) - w r^2 <a Q> xh`` with ``u = -w r (<g xh> a + <a xh> g) + aw g``.
    """

    @staticmethod
    def forward(
        ctx: Any, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
    ):
        # xh is never materialised: every "alpha * xh + beta" is written as
        # "(alpha r) * x + (beta - alpha r mean)", and <v xh> as r (<v x> - mean <v>).
        shape = x.shape
        grad = grad.contiguous()
        r, mu = _per_instance(rstd, shape), _per_instance(mean, shape)
        g_mean = _mean_hw(grad)
        gxh_mean = r * (_dot_hw(grad, x) - mu * g_mean)
        k = r * weight.view(1, -1, 1, 1)
        coef_x = -k * gxh_mean * r
        gx = torch.addcmul(-k * g_mean - coef_x * mu, grad, k).addcmul_(x, coef_x)
        hw = shape[2] * shape[3]
        gw = gxh_mean.sum(dim=0).flatten() * hw
        gb = g_mean.sum(dim=0).flatten() * hw
        ctx.save_for_backward(grad, x, weight, mu, r, g_mean, gxh_mean)
        return gx, gw, gb

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, a: torch.Tensor | None, aw: torch.Tensor | None, ab: torch.Tensor | None):
        grad, x, weight, mu, r, g_mean, gxh_mean = ctx.saved_tensors
        w = weight.view(1, -1, 1, 1)
        aw4 = torch.zeros_like(w) if aw is None else aw.view(1, -1, 1, 1)
        ab4 = torch.zeros_like(w) if ab is None else ab.view(1, -1, 1, 1)
        if a is None:
            a_mean = axh_mean = ag_mean = torch.zeros_like(r)
        else:
            a = a.contiguous()
            a_mean, ag_mean = _mean_hw(a), _dot_hw(a, grad)
            axh_mean = r * (_dot_hw(a, x) - mu * a_mean)
        wr = w * r
        # grad_g = wr a + alpha xh + beta
        alpha, beta = aw4 - wr * axh_mean, ab4 - wr * a_mean
        grad_g = torch.addcmul(beta - alpha * r * mu, x, alpha * r)
        if a is not None:
            grad_g.addcmul_(a, wr)
        aq_mean = ag_mean - a_mean * g_mean - axh_mean * gxh_mean
        u_mean = -wr * (gxh_mean * a_mean + axh_mean * g_mean) + aw4 * g_mean
        xhu_mean = -2 * wr * axh_mean * gxh_mean + aw4 * gxh_mean
        # grad_x = -r wr <g xh> a + r (aw - wr <a xh>) g + alpha xh + beta
        alpha, beta = r * (-xhu_mean - wr * aq_mean), -r * u_mean
        grad_x = torch.addcmul(beta - alpha * r * mu, x, alpha * r)
        grad_x.addcmul_(grad, r * (aw4 - wr * axh_mean))
        if a is not None:
            grad_x.addcmul_(a, -r * wr * gxh_mean)
        hw = x.shape[2] * x.shape[3]
        grad_w = (r * aq_mean).sum(dim=0).flatten() * hw
        return grad_g, grad_x, grad_w, None, None


def instance_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``F.group_norm(x, C, weight, bias, eps)`` with the fast double backward on CPU float tensors."""
    fast = (
        x.device.type == "cpu"
        and x.dim() == 4
        and x.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
        and not torch._C._are_functorch_transforms_active()  # vmap / torch.func.grad: the composite path
    )
    if not fast or weight is None or bias is None:
        return F.group_norm(x, x.shape[1], weight, bias, eps)
    return _InstanceNorm.apply(x, weight, bias, eps)


class InstanceNorm(nn.GroupNorm):
    """Affine instance norm: ``nn.GroupNorm(channels, channels)`` (same parameters and state dict) with :func:`instance_norm`."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm(x, self.weight, self.bias, self.eps)
