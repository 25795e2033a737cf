"""The per-class image step as a replay: the authors' loop of C SGD steps from gradients taken at once.

The authors' loop, for each class c = 0 .. C-1 in turn: zero the pixel gradients, back-propagate
class c's matching loss, take one SGD step on all stored images (then clamp them to [0, 1], with
``clamp: per_step``). Why the same result can come from one pass of gradients:

* Class c's matching loss depends only on class c's stored images (rows ``c*ipc .. (c+1)*ipc-1``)
  and on the network, the real batch, the augmentation draws and the subsample indices, all fixed
  for the inner iteration. So its gradient is zero outside those rows.
* While class k != c is stepped, class c's rows therefore get a zero gradient and move only by
  SGD's rule for a zero gradient (momentum, weight decay if any, then the clamp if per step), an
  element-wise map. Their state when the loop takes class c's gradient, its *moment*, is the start
  state after c such zero-gradient steps: :func:`moments`.
* With every class's rows at their moment, all gradients can be taken in any grouping (one grouped
  pass, a loop, several processes and one all-reduce): each lands on its own rows only, with the
  value the loop sees. :func:`replay` then runs the loop's C steps, step c with class c's gradient.

Each step is :func:`sgd_step`, torch.optim.SGD's single-tensor update with the optimiser's own
hyper-parameters (:class:`SGDRule`), first step included: SGD creates a missing momentum buffer as
the whole first direction, so the rows of classes after the first start from a zero buffer (or
weight decay's term). The result equals the loop's up to float rounding (bit for bit where the
optimiser runs the single-tensor update and the gradients are computed alike, as on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class SGDRule:
    """The hyper-parameters of one torch.optim.SGD parameter group."""

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    maximize: bool = False

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> "SGDRule":
        """Read from the optimiser (the replay must step as it does); only plain one-group SGD is replayable."""
        if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
            raise TypeError(
                f"the per-class replay needs a torch.optim.SGD with one parameter group, got {type(optimizer).__name__} with {len(optimizer.param_groups)} group(s)"
            )
        group = optimizer.param_groups[0]
        return cls(
            float(group["lr"]),
            float(group["momentum"]),
            float(group["dampening"]),
            float(group["weight_decay"]),
            bool(group["nesterov"]),
            bool(group["maximize"]),
        )


@torch.no_grad()
def sgd_step(x: Tensor, buf: Tensor | None, grad: Tensor, rule: SGDRule) -> Tensor | None:
    """torch.optim.SGD's single-tensor update of ``x`` in place, same operations in the same order.

    ``buf`` is the momentum buffer (``None`` before the first step, when SGD creates it as the
    whole first direction); it is updated in place and returned (``None`` without momentum).
    """
    direction = -grad if rule.maximize else grad
    if rule.weight_decay != 0:
        direction = direction.add(x, alpha=rule.weight_decay)
    if rule.momentum != 0:
        if buf is None:
            buf = direction.detach().clone()
        else:
            buf.mul_(rule.momentum).add_(direction, alpha=1 - rule.dampening)
        direction = direction.add(buf, alpha=rule.momentum) if rule.nesterov else buf
    x.add_(direction, alpha=-rule.lr)
    return buf


def _rows(t: Tensor, classes: int) -> Tensor:
    """``[classes, rest]`` view: stored images are class-major, ``ipc`` consecutive rows per class."""
    return t.view(classes, -1)


@torch.no_grad()
def moments(x: Tensor, buf: Tensor | None, classes: int, rule: SGDRule, clamp: bool) -> Tensor:
    """The stored images with each class's rows as they stand when the loop takes that class's gradient.

    Class c's rows at their moment: the start state after c zero-gradient steps (each followed by
    the clamp when ``clamp``). ``x`` and ``buf`` are left unchanged.
    """
    x, buf = x.detach().clone(), None if buf is None else buf.detach().clone()
    out = torch.empty_like(x)
    zero = torch.zeros_like(x)
    for c in range(classes):
        _rows(out, classes)[c] = _rows(x, classes)[c]
        if c < classes - 1:
            buf = sgd_step(x, buf, zero, rule)
            if clamp:
                x.clamp_(0.0, 1.0)
    return out


@torch.no_grad()
def replay(
    x: Tensor, buf: Tensor | None, grad: Tensor, classes: int, rule: SGDRule, clamp: bool
) -> tuple[Tensor, Tensor | None]:
    """The loop's C steps from the start state ``(x, buf)``: step c with class c's rows of ``grad``.

    ``grad`` holds every class's gradient, each taken at its moment (:func:`moments`). Returns the
    final images and momentum buffer (new tensors; the inputs are left unchanged).
    """
    x, buf = x.detach().clone(), None if buf is None else buf.detach().clone()
    step_grad = torch.zeros_like(x)
    for c in range(classes):
        if c > 0:
            _rows(step_grad, classes)[c - 1] = 0.0
        _rows(step_grad, classes)[c] = _rows(grad, classes)[c]
        buf = sgd_step(x, buf, step_grad, rule)
        if clamp:
            x.clamp_(0.0, 1.0)
    return x, buf
