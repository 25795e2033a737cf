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

from lightning_dd.nets.imported import find_head


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
        self._embedder = _Embedder(module)
        self.param_names = [n for n, _ in module.named_parameters()]
        self.buffer_names = [n for n, _ in module.named_buffers()]

    def __call__(self, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, weights, (x,), strict=False)

    def embed(self, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The features before the classifier with the given weights (the module's ``embed``, else its head's input)."""
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

    def clone_weights(
        self, state: dict[str, torch.Tensor], device: torch.device | str | None = None
    ) -> dict[str, torch.Tensor]:
        """Fresh leaf tensors for training: parameters require grad, buffers do not."""
        params, buffers = self.split(state)
        out = {n: p.detach().to(device or p.device).clone().requires_grad_(True) for n, p in params.items()}
        out.update({n: b.detach().to(device or b.device).clone() for n, b in buffers.items()})
        return out

    def parameters_of(self, weights: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [weights[n] for n in self.param_names]


class _Embedder(nn.Module):
    """Runs ``net``'s features as ``forward`` so functional_call can run them.

    The library's networks say what their features are (``embed``). Any other network's features
    are what its classifier head receives (:func:`~lightning_dd.nets.imported.find_head`), caught
    by a hook on the head while the whole network runs (the head's own output is one small
    layer's work, thrown away).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        head = None if hasattr(net, "embed") else find_head(net)
        self.head_name = None if head is None else head[0]  # a name, so the head is not registered twice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.net, "embed"):
            return self.net.embed(x)
        if self.head_name is None:
            raise TypeError(f"{type(self.net).__name__} has neither an embed method nor a linear or convolutional head")
        seen: list[torch.Tensor] = []
        handle = self.net.get_submodule(self.head_name).register_forward_pre_hook(
            lambda _module, args: seen.append(args[0])
        )
        try:
            self.net(x)
        finally:
            handle.remove()
        return seen[-1].flatten(1)
