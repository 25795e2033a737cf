"""A network template evaluated with weights held outside it.

Distillation works on many networks (pool members, perturbed copies, fresh initialisations)
that must not become parameters of the LightningModule: only the synthetic images are
trainable, so checkpoints, optimisers and DDP see exactly those. The template module is kept
out of the module tree and its weights are passed in through ``torch.func.functional_call``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


class FunctionalNet:
    """Wraps ``module`` (never registered as a submodule) and runs it with given weights.

    Example:
        >>> net = FunctionalNet(nn.Linear(3, 2))
        >>> w = net.clone_weights(net.initial_state())
        >>> net(w, torch.zeros(1, 3)).shape
        torch.Size([1, 2])
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._embedder = _Embedder(module) if hasattr(module, "embed") else None
        self.param_names = [n for n, _ in module.named_parameters()]
        self.buffer_names = [n for n, _ in module.named_buffers()]

    def __call__(self, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, weights, (x,), strict=False)

    def embed(self, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The module's ``embed`` (features before the classifier) with the given weights."""
        if self._embedder is None:
            raise TypeError(f"{type(self.module).__name__} has no embed method")
        return functional_call(self._embedder, {f"net.{k}": v for k, v in weights.items()}, (x,), strict=False)

    def to(self, device: torch.device | str) -> "FunctionalNet":
        self.module.to(device)
        return self

    def initial_state(self) -> dict[str, torch.Tensor]:
        """The template's own parameters and buffers."""
        return {k: v.detach() for k, v in self.module.state_dict().items()}

    def split(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Separate a state dict into (parameters, buffers)."""
        missing = [n for n in self.param_names if n not in state]
        if missing:
            raise KeyError(f"state dict lacks parameters {missing[:3]}")
        return {n: state[n] for n in self.param_names}, {n: state[n] for n in self.buffer_names if n in state}

    def clone_weights(self, state: dict[str, torch.Tensor], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Fresh leaf tensors for training: parameters require grad, buffers do not."""
        params, buffers = self.split(state)
        out = {n: p.detach().to(device or p.device).clone().requires_grad_(True) for n, p in params.items()}
        out.update({n: b.detach().to(device or b.device).clone() for n, b in buffers.items()})
        return out

    def parameters_of(self, weights: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [weights[n] for n in self.param_names]


class _Embedder(nn.Module):
    """Calls ``net.embed`` as ``forward`` so functional_call can run it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x)
